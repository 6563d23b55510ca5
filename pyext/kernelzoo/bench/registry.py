"""The benchmark registry, the timer and the runner behind ``kernelzoo bench``."""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import math
import numbers
import pkgutil
import statistics
import time
from typing import Callable, Iterable

import torch

__all__ = ["Bench", "Case", "Result", "case", "check_dtype", "check_timing", "dtype_names",
           "list_cases", "run", "run_case", "skip"]


@dataclasses.dataclass
class Bench:
    """One prepared measurement, returned by a case function.

    ``ours`` and ``peer`` are zero-argument callables returning comparable
    outputs (a tensor or a tuple of tensors). ``baselines`` are further
    callables timed in the same run, reported as the ratio of kernelzoo's time
    to theirs (e.g. a plain copy of the same bytes for a permutation).
    """

    shape: str
    ours: Callable[[], object]
    peer: Callable[[], object] | None
    peer_name: str
    bytes: int = 0          # bytes moved by one call (for GB/s)
    flops: int = 0          # floating-point operations of one call (for TFLOP/s)
    compare: str = "exact"  # "exact" or "close"
    rtol: float = 0.0
    atol: float = 0.0
    baselines: dict[str, Callable[[], object]] = dataclasses.field(default_factory=dict)
    note: str = ""
    # Caps on the timing options for cases whose single call takes seconds
    # (None: the run's own warmup / repeats).
    warmup: int | None = None
    repeats: int | None = None


@dataclasses.dataclass
class Case:
    op: str
    name: str
    fn: Callable[..., Bench]
    dtypes: tuple[str, ...]
    devices: tuple[str, ...]


@dataclasses.dataclass
class Result:
    op: str
    case: str
    device: str
    dtype: str
    shape: str = ""
    peer: str = ""
    agree: bool | None = None
    max_abs_err: float | None = None
    peer_ms: float | None = None
    ours_ms: float | None = None
    speedup: float | None = None
    gbps: float | None = None
    tflops: float | None = None
    baselines: dict[str, float] = dataclasses.field(default_factory=dict)  # ours / baseline
    status: str = "ok"  # ok, mismatch, skipped, error
    message: str = ""


_CASES: list[Case] = []
_LOADED = False


def case(op: str, *, dtypes: Iterable[str] = ("float32",),
         devices: Iterable[str] = ("cpu", "cuda"), name: str | None = None):
    """Registers ``fn(device: str, dtype: torch.dtype, quick: bool) -> Bench``."""

    def wrap(fn):
        _CASES.append(Case(op, name or fn.__name__, fn, tuple(dtypes), tuple(devices)))
        return fn

    return wrap


def _load_cases() -> None:
    global _LOADED
    if _LOADED:
        return
    pkg = importlib.import_module(f"{__package__}.cases")

    for mod in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        importlib.import_module(f"{pkg.__name__}.{mod.name}")
    _LOADED = True


def list_cases(ops: Iterable[str] = ()) -> list[Case]:
    """Registered cases, optionally only those of the given ops. A name selects
    the op of that name and the ops it prefixes up to an underscore
    (``selective_scan`` selects ``selective_scan_forward``; ``flash_attn``
    selects ``flash_attn_forward`` and ``flash_attn_kvcache``)."""
    _load_cases()
    ops = [ops] if isinstance(ops, str) else list(ops)
    known = {c.op for c in _CASES}
    selected = {o: {k for k in known if k == o or k.startswith(o + "_")} for o in ops}
    unknown = sorted(o for o, ks in selected.items() if not ks)
    if unknown:
        raise ValueError(f"no benchmark cases for {', '.join(unknown)}; "
                         f"ops with cases: {', '.join(sorted(known))}")
    wanted = set().union(*selected.values()) if ops else known
    return [c for c in _CASES if c.op in wanted]


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _flatten(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _flatten(o)]
    if out is None:
        return []
    raise TypeError(f"benchmark outputs must be tensors or tuples of tensors, got {type(out)}")


def _agree(b: Bench, ours, peer) -> tuple[bool, float]:
    a, p = _flatten(ours), _flatten(peer)
    if len(a) != len(p):
        return False, float("inf")
    ok, err = True, 0.0
    for x, y in zip(a, p):
        if x.shape != y.shape or x.dtype != y.dtype:
            return False, float("inf")
        if x.numel() == 0:
            continue
        if x.dtype.is_floating_point or x.dtype.is_complex:
            d = (x.double() - y.double()).abs()
            err = max(err, float(d.max()) if d.numel() else 0.0)
        if b.compare == "exact":
            ok &= bool(torch.equal(x, y))
        else:
            ok &= bool(torch.allclose(x, y, rtol=b.rtol, atol=b.atol, equal_nan=True))
    return ok, err


def _timer(fn: Callable[[], object], device: str, min_time: float) -> Callable[[], float]:
    """Returns a sampler: each call times enough back-to-back runs of fn to last
    about min_time seconds and returns seconds per run."""
    state = {"n": 1}

    def sample() -> float:
        while True:
            n = state["n"]
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            _sync(device)
            dt = time.perf_counter() - t0
            if dt >= min_time or n >= 1 << 16:
                return dt / n
            state["n"] = max(n * 2, int(n * min_time / max(dt, 1e-9)) + 1)

    return sample


def _measure(fns: dict[str, Callable[[], object]], device: str, warmup: int, repeats: int,
             min_time: float) -> dict[str, float]:
    """Median seconds per call of each fn. Samples alternate between the fns so
    that drift in machine load affects all of them alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samplers = {k: _timer(fn, device, min_time) for k, fn in fns.items()}
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, s in samplers.items():
            samples[k].append(s())
    return {k: statistics.median(v) for k, v in samples.items()}


def check_timing(*, warmup: int = 3, repeats: int = 15, min_time: float = 0.005) -> None:
    """Raises ``ValueError`` (``TypeError`` for a wrong type) unless the timing
    options can give a measurement: ``repeats >= 1`` (the median of no sample
    does not exist), ``warmup >= 0``, ``min_time`` finite and ``>= 0``."""
    for name, value, least in (("repeats", repeats, 1), ("warmup", warmup, 0)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
        if value < least:
            raise ValueError(f"{name} must be at least {least}, got {value}")
    if isinstance(min_time, bool) or not isinstance(min_time, numbers.Real) \
            or not math.isfinite(min_time) or min_time < 0:
        raise ValueError(f"min_time must be a finite number of seconds >= 0, got {min_time!r}")


def dtype_names() -> list[str]:
    """The names ``--dtype`` accepts: torch's dtypes (``float32``, ``bfloat16``, ...)."""
    return sorted(n for n in dir(torch) if isinstance(getattr(torch, n, None), torch.dtype))


def check_dtype(name: str) -> str:
    """``name`` if it names a torch dtype; otherwise ``ValueError`` with the
    closest names."""
    if isinstance(name, str) and isinstance(getattr(torch, name, None), torch.dtype):
        return name
    close = difflib.get_close_matches(str(name), dtype_names(), n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    raise ValueError(f"unknown dtype {name!r}{hint} (a torch dtype name such as float32, "
                     f"float16, bfloat16)")


def run_case(c: Case, device: str, dtype: str, *, quick: bool = False, warmup: int = 3,
             repeats: int = 15, min_time: float = 0.005) -> Result:
    check_timing(warmup=warmup, repeats=repeats, min_time=min_time)
    check_dtype(dtype)
    res = Result(c.op, c.name, device, dtype)
    try:
        b = c.fn(device, getattr(torch, dtype), quick)
    except _Skip as e:
        res.status, res.message = "skipped", str(e)
        return res
    res.shape, res.peer = b.shape, b.peer_name
    if b.peer is None:
        res.status, res.message = "skipped", b.note or f"peer {b.peer_name} not available"
        return res
    ours, peer = b.ours(), b.peer()
    _sync(device)
    res.agree, res.max_abs_err = _agree(b, ours, peer)
    if not res.agree:
        res.status = "mismatch"
        res.message = f"kernelzoo and {b.peer_name} disagree (max abs err {res.max_abs_err:.3g})"
        return res
    fns = {"peer": b.peer, "ours": b.ours, **{f"baseline:{k}": f for k, f in b.baselines.items()}}
    if b.warmup is not None:
        warmup = min(warmup, b.warmup)
    if b.repeats is not None:
        repeats = min(repeats, b.repeats)
    t = _measure(fns, device, warmup, repeats, min_time)
    res.peer_ms, res.ours_ms = t["peer"] * 1e3, t["ours"] * 1e3
    res.speedup = t["peer"] / t["ours"]
    if b.bytes:
        res.gbps = b.bytes / t["ours"] / 1e9
    if b.flops:
        res.tflops = b.flops / t["ours"] / 1e12
    res.baselines = {k.split(":", 1)[1]: t["ours"] / v for k, v in t.items()
                     if k.startswith("baseline:")}
    res.message = b.note
    return res


class _Skip(Exception):
    pass


def skip(reason: str):
    """Raise from a case function to skip it (e.g. a peer that is not installed)."""
    raise _Skip(reason)


def run(ops: Iterable[str] = (), device: str = "cpu", dtypes: Iterable[str] | None = None,
        quick: bool = False, progress: Callable[[int, int, Case, str], None] | None = None,
        **timing) -> list[Result]:
    """Runs the matching cases and returns their results.

    The arguments are checked before any case runs: ``ValueError`` for an op
    without cases, an unknown dtype, or timing options that cannot give a
    measurement (see :func:`check_timing`).
    """
    check_timing(**timing)
    if isinstance(dtypes, str):
        dtypes = [dtypes]
    dtypes = list(dict.fromkeys(check_dtype(d) for d in dtypes)) if dtypes else None
    todo = []
    for c in list_cases(ops):
        if device not in c.devices:
            continue
        for dt in (dtypes or c.dtypes):
            todo.append((c, dt))
    results = []
    for i, (c, dt) in enumerate(todo):
        if progress:
            progress(i, len(todo), c, dt)
        try:
            results.append(run_case(c, device, dt, quick=quick, **timing))
        except Exception as e:  # a broken case is reported, the others still run
            results.append(Result(c.op, c.name, device, dt, status="error",
                                  message=f"{type(e).__name__}: {e}"))
    return results
