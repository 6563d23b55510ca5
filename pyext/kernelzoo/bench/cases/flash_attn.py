"""Flash attention against torch's scaled_dot_product_attention (SDPA).

kernelzoo takes flash-attn's layout (batch, seqlen, heads, headdim); SDPA gets
the same tensors as (batch, heads, seqlen, headdim) views, so neither side
copies its inputs. Masks that flash attention computes from indices (causal,
sliding window, padding of a varlen batch) are given to SDPA as the equivalent
boolean mask, or as ``is_causal``. Backward cases time only the backward pass
(``torch.autograd.grad`` on a graph built once); forward cases time the call.

The memory case runs each side once at S=16384 and reports, in the note, the
peak resident memory beyond inputs and output (Linux: /proc/self/status).

The CUDA-only cases (``flash_attn_cuda_*``, run by ``kernelzoo bench flash_attn
--device cuda``) time the tensor-core kernels at training shapes: float16 and
bfloat16, head dims 64 and 128, S = 1024, 4096 and 16384 with batch x S = 16384
tokens and 16 heads, causal and not, forward and backward, against SDPA and,
when it is importable, flash-attn's ``flash_attn_func`` (timed in the same run
as a baseline, after its own agreement check); plus one decoding step over
8192- and 32768-token caches. FLOPs: forward 4 * B * H * S * S * D, halved when
causal; backward 2.5x the forward. The table's TFLOP/s is kernelzoo's; the note
gives every side's, from a short CUDA-event measurement of its own.
"""

from __future__ import annotations

import itertools
import statistics
import sys

import torch
import torch.nn.functional as F

from ... import ops
from ..registry import Bench, case, skip

_DTYPES = ("float32", "bfloat16")


def _close(dtype):
    # The two sides sum in different orders; bfloat16 outputs differ by a few ulps.
    return {torch.float32: (2e-4, 2e-4), torch.float64: (1e-9, 1e-9)}.get(dtype, (3e-2, 3e-2))


def _qkv(b, s, h, d, device, dtype, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, s, h, d, generator=g).to(device, dtype).requires_grad_(requires_grad)
            for _ in range(3)]


def _dense_shape(quick):
    return (1, 128, 2, 64) if quick else (4, 1024, 8, 64)


def _flops(b, h, sq, sk, d, causal=False, window=None):
    pairs = sq * sk
    if window is not None:  # keys [i - left, i] for query i (causal sliding window)
        pairs = sum(min(i, window) + 1 for i in range(sq))
    elif causal:
        pairs = sq * (sq + 1) // 2
    return 4 * b * h * pairs * d


def _sdpa(q, k, v, **kw):
    """SDPA on flash-layout tensors, output back in flash layout (views, no copies)."""
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                          v.transpose(1, 2), **kw).transpose(1, 2)


def _forward(device, dtype, quick, causal):
    b, s, h, d = _dense_shape(quick)
    q, k, v = _qkv(b, s, h, d, device, dtype)
    rtol, atol = _close(dtype)
    return Bench(
        shape=f"B={b} H={h} S={s} D={d}" + (" causal" if causal else ""),
        ours=lambda: ops.flash_attn_func(q, k, v, causal=causal),
        peer=lambda: _sdpa(q, k, v, is_causal=causal),
        peer_name="torch sdpa",
        flops=_flops(b, h, s, s, d, causal=causal),
        compare="close", rtol=rtol, atol=atol,
    )


def _backward(device, dtype, quick, causal):
    b, s, h, d = _dense_shape(quick)
    q, k, v = _qkv(b, s, h, d, device, dtype, requires_grad=True)
    dout = torch.randn(b, s, h, d, generator=torch.Generator().manual_seed(1)).to(device, dtype)
    ours_out = ops.flash_attn_func(q, k, v, causal=causal)
    peer_out = _sdpa(q, k, v, is_causal=causal)
    rtol, atol = _close(dtype)
    if dtype == torch.float32:
        rtol, atol = 1e-3, 1e-3  # gradients sum over S keys or queries
    return Bench(
        shape=f"B={b} H={h} S={s} D={d}" + (" causal" if causal else "") + ", backward",
        ours=lambda: torch.autograd.grad(ours_out, (q, k, v), dout, retain_graph=True),
        peer=lambda: torch.autograd.grad(peer_out, (q, k, v), dout, retain_graph=True),
        peer_name="torch sdpa",
        flops=int(2.5 * _flops(b, h, s, s, d, causal=causal)),
        compare="close", rtol=rtol, atol=atol,
    )


@case("flash_attn_forward", dtypes=_DTYPES, devices=("cpu", "cuda"))
def flash_attn_forward_dense(device, dtype, quick):
    return _forward(device, dtype, quick, causal=False)


@case("flash_attn_forward", dtypes=_DTYPES, devices=("cpu", "cuda"))
def flash_attn_forward_causal(device, dtype, quick):
    return _forward(device, dtype, quick, causal=True)


@case("flash_attn_forward", dtypes=_DTYPES, devices=("cpu", "cuda"))
def flash_attn_backward_dense(device, dtype, quick):
    return _backward(device, dtype, quick, causal=False)


@case("flash_attn_forward", dtypes=_DTYPES, devices=("cpu", "cuda"))
def flash_attn_backward_causal(device, dtype, quick):
    return _backward(device, dtype, quick, causal=True)


@case("flash_attn_forward", dtypes=("float32",), devices=("cpu", "cuda"))
def flash_attn_varlen(device, dtype, quick):
    """32 sequences of lengths uniform in [16, 512], packed for kernelzoo; the
    padded batch with a key-padding mask for SDPA (whose padded query rows are
    computed and thrown away, as a padded model would)."""
    n, lo, hi, h, d = (4, 4, 32, 2, 32) if quick else (32, 16, 512, 8, 64)
    g = torch.Generator().manual_seed(0)
    lens = torch.randint(lo, hi + 1, (n,), generator=g)
    total, smax = int(lens.sum()), int(lens.max())
    cu = torch.zeros(n + 1, dtype=torch.int32)
    cu[1:] = torch.cumsum(lens, 0)
    cu = cu.to(device)
    q, k, v = [torch.randn(total, h, d, generator=g).to(device, dtype) for _ in range(3)]
    valid = torch.arange(smax)[None, :] < lens[:, None]            # (n, smax)
    valid = valid.to(device)

    def pad(x):
        out = x.new_zeros(n, smax, h, d)
        out[valid] = x
        return out

    qp, kp, vp = pad(q), pad(k), pad(v)
    mask = valid[:, None, None, :]                                   # keys only
    rtol, atol = _close(dtype)
    return Bench(
        shape=f"{n} seqs, lengths U[{lo},{hi}] (total {total}, padded {n}x{smax}), H={h} D={d}",
        ours=lambda: ops.flash_attn_varlen_func(q, k, v, cu, cu, smax, smax),
        peer=lambda: _sdpa(qp, kp, vp, attn_mask=mask)[valid],
        peer_name="torch sdpa (padded, mask)",
        flops=4 * h * d * int((lens * lens).sum()),
        compare="close", rtol=rtol, atol=atol,
    )


@case("flash_attn_forward", dtypes=("float32",), devices=("cpu", "cuda"))
def flash_attn_sliding_window(device, dtype, quick):
    """Causal sliding window: query i sees keys [i - 256, i]. SDPA gets the
    equivalent boolean mask and computes every score."""
    b, s, h, d, w = (1, 256, 2, 32, 32) if quick else (1, 4096, 8, 64, 256)
    q, k, v = _qkv(b, s, h, d, device, dtype)
    i = torch.arange(s, device=device)
    mask = (i[None, :] <= i[:, None]) & (i[None, :] >= i[:, None] - w)
    rtol, atol = _close(dtype)
    return Bench(
        shape=f"B={b} H={h} S={s} D={d} window ({w}, 0)",
        ours=lambda: ops.flash_attn_func(q, k, v, window_size=(w, 0)),
        peer=lambda: _sdpa(q, k, v, attn_mask=mask),
        peer_name="torch sdpa (mask)",
        flops=_flops(b, h, s, s, d, window=w),
        compare="close", rtol=rtol, atol=atol,
    )


def _rss_peak_mib(fn) -> float | None:
    """Peak resident memory while fn runs, beyond the resident memory before
    and beyond what fn returns (Linux only; None elsewhere)."""
    if not sys.platform.startswith("linux"):
        return None

    def status(key):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
        return None

    before = status("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # resets VmHWM to the current RSS
    except OSError:
        return None
    out = fn()
    out_bytes = sum(t.numel() * t.element_size()
                    for t in (out if isinstance(out, (tuple, list)) else (out,))
                    if isinstance(t, torch.Tensor))
    return max(0.0, (status("VmHWM") - before - out_bytes) / 2**20)


@case("flash_attn_forward", dtypes=("float32",), devices=("cpu",))
def flash_attn_long_sequence_memory(device, dtype, quick):
    """One long sequence. Besides the time, the note gives each side's peak
    memory beyond inputs and output: flash attention streams over key blocks,
    so it must not grow with S x S."""
    b, s, h, d = (1, 512, 2, 64) if quick else (1, 16384, 8, 64)
    q, k, v = _qkv(b, s, h, d, device, dtype)
    ours = lambda: ops.flash_attn_func(q, k, v)       # noqa: E731
    peer = lambda: _sdpa(q, k, v)                     # noqa: E731
    small = [t[:, :256] for t in (q, k, v)]  # warm up thread pools and allocator arenas
    ops.flash_attn_func(*small), _sdpa(*small)
    mem_ours, mem_peer = _rss_peak_mib(ours), _rss_peak_mib(peer)
    note = ("" if mem_ours is None else
            f"peak extra memory: kernelzoo {mem_ours:.1f} MiB, sdpa {mem_peer:.1f} MiB")
    rtol, atol = _close(dtype)
    return Bench(
        shape=f"B={b} H={h} S={s} D={d}",
        ours=ours, peer=peer, peer_name="torch sdpa",
        flops=_flops(b, h, s, s, d),
        compare="close", rtol=rtol, atol=atol,
        note=note, warmup=0, repeats=1 if not quick else None,
    )


@case("flash_attn_kvcache", dtypes=("float32", "bfloat16"), devices=("cpu", "cuda"))
def flash_attn_kvcache_decode(device, dtype, quick):
    """One decoding step: 1 new query token per sequence over caches of 4095
    tokens, the new key and value appended in place (kernelzoo) or
    concatenated (SDPA) first. GQA: 32 query heads on 8 kv heads."""
    b, n, hq, hk, d = (2, 63, 4, 2, 32) if quick else (8, 4095, 32, 8, 128)
    g = torch.Generator().manual_seed(0)
    kc, vc = [torch.randn(b, n + 1, hk, d, generator=g).to(device, dtype) for _ in range(2)]
    q = torch.randn(b, 1, hq, d, generator=g).to(device, dtype)
    knew, vnew = [torch.randn(b, 1, hk, d, generator=g).to(device, dtype) for _ in range(2)]
    seqlens = torch.full((b,), n, dtype=torch.int32, device=device)

    def peer():
        k = torch.cat([kc[:, :n], knew], 1)
        v = torch.cat([vc[:, :n], vnew], 1)
        return _sdpa(q, k, v, enable_gqa=True)

    rtol, atol = _close(dtype)
    return Bench(
        shape=f"B={b} Hq={hq} Hk={hk} D={d}, 1 new token over cache {n}",
        ours=lambda: ops.flash_attn_with_kvcache(q, kc, vc, knew, vnew, cache_seqlens=seqlens),
        peer=peer, peer_name="torch sdpa",
        bytes=2 * b * (n + 1) * hk * d * kc.element_size(),
        flops=4 * b * hq * (n + 1) * d,
        compare="close", rtol=rtol, atol=atol,
    )


# --- CUDA: tensor-core kernels at training and decoding shapes ------------------------------

_CUDA_DTYPES = ("float16", "bfloat16")
_CUDA_TOKENS, _CUDA_HEADS = 16384, 16  # batch x S, and query heads, of the training cases


def _flash_attn_lib():
    """flash-attn's module when it imports (it is a CUDA build of its own, often
    missing or built for another torch), else None and why."""
    try:
        import flash_attn
    except Exception as e:  # noqa: BLE001 (an ImportError, or a broken build's OSError)
        first = (str(e).splitlines() or [""])[0][:80]
        return None, f"flash-attn not available ({type(e).__name__}: {first})"
    return flash_attn, ""


def _cuda_close(dtype, reference):
    """(rtol, atol) for two correct low-precision kernels: a few roundings of the
    largest magnitude among the reference's outputs (with random inputs the
    outputs and gradients shrink as S grows, so absolute tolerances would accept
    anything at S=16384)."""
    tol = 5e-3 if dtype == torch.float16 else 3e-2
    scale = max(float(t.abs().max()) for t in _tensors(reference) if t.numel())
    return tol, tol * scale


def _tensors(out):
    return [out] if isinstance(out, torch.Tensor) else [t for o in out for t in _tensors(o)]


def _check_agree(name, ours, theirs, rtol, atol):
    for a, b in zip(_tensors(ours), _tensors(theirs), strict=True):
        if not torch.allclose(a, b, rtol=rtol, atol=atol):
            err = float((a.double() - b.double()).abs().max())
            raise AssertionError(f"kernelzoo and {name} disagree (max abs err {err:.3g}, "
                                 f"atol {atol:.3g})")


def _event_ms(fn, warmup=2, calls=5):
    """Median milliseconds of one call of fn (CUDA events around each call)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(calls):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _rates_note(sides, flops=0, nbytes=0, missing=""):
    """Each side's TFLOP/s (or GB/s, given nbytes) from a short CUDA-event
    measurement of its own: 'TFLOP/s (...): kernelzoo x, torch sdpa y, ...'."""
    unit, work = ("GB/s", nbytes) if nbytes else ("TFLOP/s", flops / 1e3)
    figures = ", ".join(f"{name} {work / _event_ms(fn) / 1e6:.1f}" for name, fn in sides.items())
    return f"{unit} (CUDA events, median of 5 calls): {figures}" + (f"; {missing}" if missing else "")


def _cuda_training(device, dtype, quick, d, s, causal, backward):
    if device != "cuda":
        skip("a CUDA case")
    tokens = 2048 if quick else _CUDA_TOKENS
    s = s // 8 if quick else s
    b, h = max(1, tokens // s), _CUDA_HEADS
    g = torch.Generator(device=device).manual_seed(0)
    q, k, v = [torch.randn(b, s, h, d, generator=g, device=device, dtype=dtype)
               .requires_grad_(backward) for _ in range(3)]
    lib, missing = _flash_attn_lib()
    calls = {"kernelzoo": lambda: ops.flash_attn_func(q, k, v, causal=causal),
             "torch sdpa": lambda: _sdpa(q, k, v, is_causal=causal)}
    if lib is not None:
        calls["flash-attn"] = lambda: lib.flash_attn_func(q, k, v, causal=causal)
    flops = _flops(b, h, s, s, d, causal=causal)
    if backward:
        dout = torch.randn(b, s, h, d, generator=g, device=device, dtype=dtype)
        outs = {name: fn() for name, fn in calls.items()}  # one graph each, reused by every call
        calls = {name: (lambda o=o: torch.autograd.grad(o, (q, k, v), dout, retain_graph=True))
                 for name, o in outs.items()}
        flops = int(2.5 * flops)
    rtol, atol = _cuda_close(dtype, calls["torch sdpa"]())
    if "flash-attn" in calls:
        _check_agree("flash-attn", calls["kernelzoo"](), calls["flash-attn"](), rtol, atol)
    note = _rates_note(calls, flops=flops, missing=missing)
    return Bench(
        shape=f"B={b} H={h} S={s} D={d}" + (" causal" if causal else "") +
              (", backward" if backward else ""),
        ours=calls["kernelzoo"], peer=calls["torch sdpa"], peer_name="torch sdpa",
        flops=flops, compare="close", rtol=rtol, atol=atol,
        baselines={k: f for k, f in calls.items() if k == "flash-attn"},
        note=note,
    )


def _register_cuda_training(d, s, causal, backward):
    name = (f"flash_attn_cuda_{'bwd' if backward else 'fwd'}_d{d}_s{s}"
            f"{'_causal' if causal else ''}")

    def fn(device, dtype, quick):
        return _cuda_training(device, dtype, quick, d, s, causal, backward)

    fn.__doc__ = f"{'Backward' if backward else 'Forward'} of {_CUDA_TOKENS // s} x {s} tokens, " \
                 f"{_CUDA_HEADS} heads of {d}{', causal' if causal else ''} (CUDA)."
    case("flash_attn_forward", dtypes=_CUDA_DTYPES, devices=("cuda",), name=name)(fn)


for _bwd, _d, _s, _causal in itertools.product((False, True), (64, 128), (1024, 4096, 16384),
                                              (False, True)):
    _register_cuda_training(_d, _s, _causal, _bwd)
del _bwd, _d, _s, _causal


def _cuda_decode(device, dtype, quick, n):
    """One decoding step: 1 query token per sequence over a cache of n keys
    (capacity n + 256), 32 query heads on 8 kv heads of 128; SDPA on the
    cache's first n rows (a strided view, no copy)."""
    if device != "cuda":
        skip("a CUDA case")
    b, hq, hk, d = (2, 8, 2, 64) if quick else (8, 32, 8, 128)
    n = n // 16 if quick else n
    g = torch.Generator(device=device).manual_seed(0)
    kc, vc = [torch.randn(b, n + 256, hk, d, generator=g, device=device, dtype=dtype)
              for _ in range(2)]
    q = torch.randn(b, 1, hq, d, generator=g, device=device, dtype=dtype)
    seqlens = torch.full((b,), n, dtype=torch.int32, device=device)
    lib, missing = _flash_attn_lib()
    calls = {"kernelzoo": lambda: ops.flash_attn_with_kvcache(q, kc, vc, cache_seqlens=seqlens),
             "torch sdpa": lambda: _sdpa(q, kc[:, :n], vc[:, :n], enable_gqa=True)}
    if lib is not None:
        calls["flash-attn"] = lambda: lib.flash_attn_with_kvcache(q, kc, vc, cache_seqlens=seqlens)
    rtol, atol = _cuda_close(dtype, calls["torch sdpa"]())
    if "flash-attn" in calls:
        _check_agree("flash-attn", calls["kernelzoo"](), calls["flash-attn"](), rtol, atol)
    flops, nbytes = 4 * b * hq * n * d, 2 * b * n * hk * d * kc.element_size()
    return Bench(
        shape=f"B={b} Hq={hq} Hk={hk} D={d}, 1 query token over a cache of {n}",
        ours=calls["kernelzoo"], peer=calls["torch sdpa"], peer_name="torch sdpa",
        bytes=nbytes, flops=flops,
        compare="close", rtol=rtol, atol=atol,
        baselines={k: f for k, f in calls.items() if k == "flash-attn"},
        note=_rates_note(calls, nbytes=nbytes, missing=missing),
    )


@case("flash_attn_kvcache", dtypes=_CUDA_DTYPES, devices=("cuda",))
def flash_attn_cuda_decode_8k(device, dtype, quick):
    return _cuda_decode(device, dtype, quick, 8192)


@case("flash_attn_kvcache", dtypes=_CUDA_DTYPES, devices=("cuda",))
def flash_attn_cuda_decode_32k(device, dtype, quick):
    return _cuda_decode(device, dtype, quick, 32768)
