"""Checks shared by every op's tests (DESIGN.md, "Testing rules" and rule 7 of
"The operator pattern"). A new op's test file gets them by calling these with
its own cases:

- bad inputs: :func:`assert_raises` runs a call in eager, meta or fake mode
  (:data:`MODES`) and checks the exception type and message;
  :func:`assert_raises_like_peer` checks that kernelzoo raises an instance of
  the type the peer raises for the same call (eager or scripted);
- low precision: :func:`check_low_precision`, the tolerance policy;
- layouts: :func:`in_layout` over :data:`LAYOUTS`;
- registration: :func:`check_backends` and :func:`opcheck`;
- drop-in: :func:`check_script` (function or layer; :func:`script` without
  torch's deprecation warning), :func:`check_fx`,
  :func:`check_export` and :func:`check_compile`, with :class:`CallFn` to put a
  function call into a module.
"""

import inspect
import io
import re
import warnings

import pytest
import torch

import kernelzoo
from kernelzoo._dispatch import op_backends

# --- bad inputs ---------------------------------------------------------------

MODES = ("eager", "meta", "fake")


def _map_tensors(fn, obj):
    """``obj`` with ``fn`` applied to every tensor in it (lists and tuples are
    walked, in the same container type)."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map_tensors(fn, o) for o in obj)
    return obj


def call_in_mode(mode, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` with every tensor argument as it is ("eager"), on
    the meta device ("meta") or as a fake tensor of a FakeTensorMode ("fake")."""
    if mode == "eager":
        return fn(*args, **kwargs)
    if mode == "meta":
        to_meta = lambda t: t.to("meta")  # noqa: E731
        return fn(*_map_tensors(to_meta, args), **_map_tensors(to_meta, kwargs))
    if mode == "fake":
        with torch._subclasses.FakeTensorMode() as fake_mode:
            fake = fake_mode.from_tensor
            return fn(*_map_tensors(fake, args), **_map_tensors(fake, kwargs))
    raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")


def assert_raises(mode, exc_types, message, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` in ``mode`` raises an exception with ``message``
    (literally) in its text that is an instance of ``exc_types`` (a type, or a
    tuple of types the exception is each of). Returns the exception."""
    exc_types = exc_types if isinstance(exc_types, tuple) else (exc_types,)
    with pytest.raises(exc_types, match=re.escape(message)) as info:
        call_in_mode(mode, fn, *args, **kwargs)
    for t in exc_types:
        assert isinstance(info.value, t), f"{type(info.value).__name__} is no {t.__name__}"
    return info.value


def assert_raises_like_peer(ours, peer, *args, message=None, **kwargs):
    """The peer raises for ``(*args, **kwargs)`` and kernelzoo raises an
    instance of the same type (a subclass is fine: kernelzoo's exceptions may
    also be its own type), with ``message`` in its text when given. ``ours``
    and ``peer`` may be eager or scripted functions or layers. Returns
    kernelzoo's exception."""
    try:
        peer(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 (whatever the peer raises is the measure)
        peer_type = type(e)
    else:
        raise AssertionError("the peer accepts this call: nothing to compare with")
    try:
        ours(*args, **kwargs)
    except Exception as e:  # noqa: BLE001
        ours_exc = e
    else:
        raise AssertionError(f"kernelzoo accepts a call for which the peer raises "
                             f"{peer_type.__name__}")
    assert isinstance(ours_exc, peer_type), (
        f"kernelzoo raised {type(ours_exc).__name__} ({ours_exc}); the peer raises "
        f"{peer_type.__name__}")
    if message is not None:
        assert message in str(ours_exc), f"{message!r} is not in {str(ours_exc)!r}"
    return ours_exc


# --- low precision --------------------------------------------------------------

def max_err(a, b):
    """The largest absolute difference, in float64 on the CPU (0 when empty)."""
    return (a.double().cpu() - b.double().cpu()).abs().max().item() if a.numel() else 0.0


def check_low_precision(ours, same_precision_ref, gold, what, factor=3.0):
    """DESIGN.md's tolerance policy: kernelzoo's low-precision error against a
    float64 result at most `factor` times that of the reference computed in the
    same precision (plus one rounding of the output's magnitude, for results the
    reference happens to get exactly)."""
    e_ours, e_ref = max_err(ours, gold), max_err(same_precision_ref, gold)
    ulp = torch.finfo(ours.dtype).eps * max(gold.abs().max().item(), 1.0)
    assert e_ours <= factor * e_ref + ulp, f"{what}: error {e_ours:.3g} vs reference's {e_ref:.3g}"


# --- layouts --------------------------------------------------------------------

LAYOUTS = ("contiguous", "channels_last", "strided")


def in_layout(x, layout):
    """The values of the 4-d tensor ``x`` in another memory layout: "contiguous",
    "channels_last", or "strided" (every other column of a wider tensor whose H
    and W are swapped in memory: no dimension is contiguous)."""
    if layout == "contiguous":
        return x.contiguous()
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if layout == "strided":
        n, c, h, w = x.shape
        wide = torch.zeros((n, c, 2 * w, h), dtype=x.dtype, device=x.device).transpose(2, 3)
        view = wide[..., ::2]
        view.copy_(x)
        assert not view.is_contiguous()
        return view
    raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")


# --- registration ---------------------------------------------------------------

def check_backends(name):
    """The op ``torch.ops.kernelzoo.<name>`` has CPU, Meta and Autograd kernels
    and a CUDA kernel (in a CPU-only build, the stub that says how to rebuild)."""
    backends = op_backends(name)
    cuda = "kernel" if kernelzoo.build_info()["cuda"] else "stub"
    if backends["CUDA"] == "not written":  # declared by the op: CudaKernels::NotYet
        cuda = "not written"
    expected = {"CPU": "kernel", "CUDA": cuda, "Meta": "kernel", "Autograd": "kernel"}
    assert backends == expected, f"{name}: {backends}, expected {expected}"


def opcheck(op, args, kwargs=None):
    """``torch.library.opcheck`` (schema, autograd registration, fake tensor,
    AOT dispatch) of an OpOverload, e.g. ``torch.ops.kernelzoo.roi_align.default``."""
    torch.library.opcheck(op, args, kwargs)


# --- drop-in: TorchScript, torch.fx, torch.export, torch.compile ----------------

def _assert_same(got, expected, what):
    if isinstance(expected, torch.Tensor):
        assert got.shape == expected.shape and got.dtype == expected.dtype, what
        assert torch.equal(got, expected), f"{what}: values differ"
    else:
        assert type(got) is type(expected), what
        for g, e in zip(got, expected, strict=True):
            _assert_same(g, e, what)


class CallFn(torch.nn.Module):
    """A module whose forward is ``fn(*inputs, **kwargs)`` for one to three
    inputs: puts a function call into torch.fx, torch.export and torch.compile,
    which take modules. (Named parameters, not ``*inputs``: torch.fx cannot
    trace a variadic forward.)"""

    def __init__(self, fn, **kwargs):
        super().__init__()
        self.fn = fn
        self.kwargs = kwargs

    def forward(self, a, b=None, c=None):
        inputs = [v for v in (a, b, c) if v is not None]
        return self.fn(*inputs, **self.kwargs)


def script(obj):
    """``torch.jit.script(obj)`` without torch's deprecation warning: TorchScript
    is deprecated, but models that use torchvision's ops are still scripted,
    and kernelzoo's are drop-ins for them."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r".*torch\.jit\.\w+. is deprecated", FutureWarning)
        return torch.jit.script(obj)


def _save_and_load(scripted):
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r".*torch\.jit\.\w+. is deprecated", FutureWarning)
        torch.jit.save(scripted, buffer)
        buffer.seek(0)
        return torch.jit.load(buffer)


def check_script(fn, *args):
    """``torch.jit.script(fn)`` (a function or an nn.Module) gives eager's
    values, before and after a save/load round trip (a scripted model that
    cannot be saved is of little use), and eager's gradients with respect to
    every argument tensor that requires grad. Returns the scripted object."""
    scripted = script(fn)
    expected = fn(*args)
    _assert_same(scripted(*args), expected, "scripted")
    if isinstance(fn, torch.nn.Module):
        _assert_same(_save_and_load(scripted)(*args), expected, "saved and loaded")
    leaves = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    if leaves:
        w = torch.randn(expected.shape, generator=torch.Generator().manual_seed(0),
                        dtype=expected.dtype)
        want = torch.autograd.grad((expected * w).sum(), leaves)
        got = torch.autograd.grad((scripted(*args) * w).sum(), leaves)
        for g, e in zip(got, want, strict=True):
            _assert_same(g, e, "scripted gradient")
    return scripted


def check_fx(module, *args, calls):
    """``torch.fx.symbolic_trace(module)`` records exactly ``calls`` (the
    targets of its call nodes, in order: each kernelzoo function or layer stays
    one node) and the traced module gives eager's values. Returns the
    GraphModule."""
    # Parameters past the arguments given (CallFn's unused inputs) are traced as
    # the constants they are.
    unused = list(inspect.signature(module.forward).parameters)[len(args):]
    traced = torch.fx.symbolic_trace(module, concrete_args={p: None for p in unused} or None)
    checks = torch.fx._symbolic_trace._assert_is_none  # what fx adds for the constants
    targets = [n.target for n in traced.graph.nodes
               if n.op not in ("placeholder", "output", "get_attr") and n.target is not checks]
    assert targets == list(calls), f"traced calls {targets}, expected {list(calls)}"
    _assert_same(traced(*args), module(*args), "fx-traced")
    return traced


def check_export(module, *args, ops=()):
    """``torch.export.export(module, args)`` runs, keeps each op named in ``ops``
    as a ``torch.ops.kernelzoo.<op>`` node (it is not traced into), and the
    exported program gives eager's values. Returns the ExportedProgram."""
    exported = torch.export.export(module, args)
    found = {n.target for n in exported.graph.nodes if n.op == "call_function"}
    for op in ops:
        assert getattr(torch.ops.kernelzoo, op).default in found, f"{op} not in the graph"
    _assert_same(exported.module()(*args), module(*args), "exported")
    return exported


def check_compile(module, *args, dynamic=False, tol=None):
    """``torch.compile(module, fullgraph=True)`` gives eager's values, exactly
    when ``tol`` is None (a module of kernelzoo calls alone: the same kernels
    run), else to ``tol`` (``dict(rtol=..., atol=...)``, for modules whose other
    operations inductor may fuse); and, for argument tensors that require grad,
    eager's gradients of the output's sum to float32 rounding (the compiled
    graph may add them in another order). Returns the compiled module."""
    torch._dynamo.reset()
    compiled = torch.compile(module, fullgraph=True, dynamic=dynamic)
    out, expected = compiled(*args), module(*args)
    if tol is None:
        _assert_same(out, expected, "compiled")
    else:
        torch.testing.assert_close(out, expected, **tol)
    leaves = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    if leaves:
        for g, e in zip(torch.autograd.grad(out.sum(), leaves),
                        torch.autograd.grad(expected.sum(), leaves), strict=True):
            torch.testing.assert_close(g, e)
    return compiled
