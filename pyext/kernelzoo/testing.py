"""Conformance checks for model families, for kernelzoo's tests and plugin authors.

    from kernelzoo.testing import check_family

    def test_my_family():
        check_family("myfamily")          # or check_family(my_family_object)

Importing this module imports no plugin and no test framework.
"""

from __future__ import annotations

import dataclasses
import io
import numbers
from typing import Any

import torch

from .registry import (ModelFamily, PluginError, _describe_exception, _run_plugin_code,
                       get_family)

__all__ = ["check_family", "FamilyCheckError"]


class FamilyCheckError(AssertionError):
    """A family failed a conformance check (an AssertionError, so test runners
    report it as a failure, not an error)."""


def _all_tensors(out: Any) -> list[torch.Tensor]:
    """Every tensor in a model's output (tensor, sequence, mapping, dataclass or
    object with tensor attributes such as Hugging Face outputs), in order: a
    detector's list of dicts of boxes, labels and scores gives them image by
    image."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in _all_tensors(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in _all_tensors(v)]
    if dataclasses.is_dataclass(out) and not isinstance(out, type):
        return [t for f in dataclasses.fields(out) for t in _all_tensors(getattr(out, f.name))]
    return []


def _tensors(out: Any) -> list[torch.Tensor]:
    """The floating-point (and complex) tensors of :func:`_all_tensors`."""
    return [t for t in _all_tensors(out) if t.is_floating_point() or t.is_complex()]


def _call(model, inputs):
    if not isinstance(inputs, tuple):
        raise FamilyCheckError(f"example_inputs must return a tuple, got "
                               f"{type(inputs).__name__}")
    return model(*inputs)


def _compare(what: str, got: list, want: list, rtol, atol) -> None:
    """Floating-point (and complex) tensors to ``rtol``/``atol``, the others
    exactly (``assert_close`` would apply the tolerances to integers too)."""
    if len(got) != len(want):
        raise FamilyCheckError(f"{what}: {len(got)} output tensors, expected {len(want)}")
    for i, (g, w) in enumerate(zip(got, want)):
        inexact = w.is_floating_point() or w.is_complex()
        try:
            torch.testing.assert_close(g, w, rtol=rtol if inexact else 0,
                                       atol=atol if inexact else 0)
        except AssertionError as e:
            raise FamilyCheckError(f"{what}: output {i} differs: {e}") from None


def check_family(family_or_name: ModelFamily | str, *,
                 presets: list[str] | str | None = None,
                 device: str | torch.device = "cpu", batch_size: int = 2,
                 compile: bool = True, fullgraph: bool = True,
                 compile_backend: str = "inductor", seed: int = 0) -> list[str]:
    """Checks a model family against kernelzoo's plugin contract.

    For each small preset (:attr:`ModelFamily.small_presets`; every family
    needs at least one, e.g. ``<family>-test``), or each of ``presets``:

    1. every preset's config resolves (no model is built for the large ones);
    2. the model builds, and a forward on ``example_inputs(model, batch_size)``
       gives finite floating-point outputs;
    3. backward of a random projection of the outputs reaches every parameter
       that requires grad, with finite gradients;
    4. the state dict survives ``torch.save``/``torch.load(weights_only=True)``
       into a freshly built (differently initialised) model, which then
       reproduces the outputs (to ``torch.testing.assert_close``'s default
       tolerance for the dtype; in eval mode);
    5. ``torch.compile(model, fullgraph=fullgraph, backend=compile_backend)``
       reproduces the eager outputs (to rtol 1e-4, atol 1e-5 in float32:
       compiled kernels fuse and may evaluate transcendental functions with
       other approximations). For a family with
       :attr:`~kernelzoo.registry.ModelFamily.compile_modules`, each of those
       sub-modules is compiled so instead (and must compile at least one
       graph), and the model runs eagerly around them. ``compile=False``
       skips this step.

    Outputs are compared tensor by tensor, integer and boolean ones exactly
    (a detector's labels as well as its boxes and scores); the forward and
    backward checks use the floating-point ones.

    The family's code may raise anything: ``sys.exit()`` or another
    ``BaseException`` in ``build``, ``example_inputs`` or the forward fails
    its step like an exception (only a real Ctrl-C interrupts the check).

    Arguments that would check nothing are refused before anything is built:
    ``batch_size`` must be an int >= 1 (``ValueError``; ``TypeError`` for a
    bool, float or string), ``presets`` (a list of names, or one name) must
    not be empty and must name presets of the family (``UnknownModelError``
    otherwise), ``seed`` an int and ``device`` a valid torch device.

    Raises :class:`FamilyCheckError` (an ``AssertionError``) naming the model
    and the step that failed. Returns the names of the models checked.
    """
    _check_arguments(batch_size=batch_size, seed=seed, device=device)
    family = get_family(family_or_name) if isinstance(family_or_name, str) else family_or_name
    if not isinstance(family, ModelFamily):
        raise TypeError(f"check_family expects a ModelFamily or a family name, got "
                        f"{type(family).__name__}")
    if presets is not None:
        presets = [presets] if isinstance(presets, str) else list(presets)
        if not presets:
            raise ValueError("check_family: presets=[] checks nothing; leave it out (None) to "
                             "check the family's small presets")
        for p in presets:
            family._preset(p)   # UnknownModelError naming the family's presets
    for p in family.presets:
        try:
            family.config(p)
        except Exception as e:
            raise FamilyCheckError(f"{family.name}-{p}: its config does not resolve: "
                                   f"{_describe(e)}") from e
    todo = presets if presets is not None else family.small_presets
    if not todo:
        raise FamilyCheckError(
            f"family {family.name!r} has no small preset to test: add a tiny '<family>-test' "
            f"preset (a preset named 'test'), or list cheap presets in ModelFamily(small=...)")
    checked = []
    for preset in todo:
        name = f"{family.name}-{preset}"
        try:
            _check_preset(family, preset, device=device, batch_size=batch_size,
                          compile=compile, fullgraph=fullgraph, backend=compile_backend,
                          seed=seed)
        except FamilyCheckError as e:
            raise FamilyCheckError(f"check_family({family.name!r}): {name}: {e}") from None
        checked.append(name)
    return checked


def _check_arguments(*, batch_size, seed, device) -> None:
    """Rejects arguments that would make check_family test nothing, or fail
    later with an error that does not say why."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral):
        raise TypeError(f"check_family: batch_size must be an int, got "
                        f"{type(batch_size).__name__} {batch_size!r}")
    if batch_size < 1:
        raise ValueError(f"check_family: batch_size must be at least 1, got {batch_size}: a "
                         f"batch of {batch_size} samples would test nothing")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"check_family: seed must be an int, got {type(seed).__name__} "
                        f"{seed!r}")
    try:
        torch.device(device)
    except (RuntimeError, TypeError, ValueError) as e:
        raise ValueError(f"check_family: invalid device {device!r}: {e}") from None


def _describe(e: BaseException) -> str:
    if isinstance(e, PluginError) and e.__cause__ is not None \
            and not isinstance(e.__cause__, Exception):
        e = e.__cause__             # the build's SystemExit & co., as ModelFamily.create saw it
    if not isinstance(e, Exception):
        return _describe_exception(e)
    return f"{type(e).__name__}: {e}"   # multi-line messages (TorchDynamo's) kept whole


def _check_preset(family: ModelFamily, preset: str, *, device, batch_size, compile,
                  fullgraph, backend, seed) -> None:
    def step(what, fn, *args):
        # The family's code may raise anything, sys.exit() included: every
        # failure but a real Ctrl-C is reported as this step's.
        return _run_plugin_code(
            fn, args, {}, passthrough=FamilyCheckError,
            wrap=lambda e: FamilyCheckError(f"{what} raised {_describe(e)}"))

    torch.manual_seed(seed)
    model = step("build", family.create, preset).to(device)
    inputs = step("example_inputs", family.example_inputs, model, batch_size)

    # Forward and backward, in training mode.
    model.train()
    outs = _tensors(step("forward", _call, model, inputs))
    if not outs:
        raise FamilyCheckError("forward: the output contains no floating-point tensor")
    for i, t in enumerate(outs):
        if not torch.isfinite(t).all():
            raise FamilyCheckError(f"forward: output {i} has non-finite values")
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if params:
        g = torch.Generator(device="cpu").manual_seed(seed + 1)
        loss = sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype).to(t.device)).sum()
                   for t in outs if t.requires_grad)
        if not isinstance(loss, torch.Tensor):
            raise FamilyCheckError("backward: no output depends on the parameters")
        step("backward", loss.backward)
        missing = [n for n, p in params.items() if p.grad is None]
        if missing:
            raise FamilyCheckError(f"backward: no gradient reached {', '.join(missing)}")
        bad = [n for n, p in params.items() if not torch.isfinite(p.grad).all()]
        if bad:
            raise FamilyCheckError(f"backward: non-finite gradients in {', '.join(bad)}")
        model.zero_grad(set_to_none=True)

    # State dict round trip, in eval mode (deterministic).
    model.eval()
    with torch.no_grad():
        ref = [t.detach().clone() for t in _all_tensors(_call(model, inputs))]
    buf = io.BytesIO()
    step("torch.save(state_dict)", torch.save, model.state_dict(), buf)
    buf.seek(0)
    state = step("torch.load(weights_only=True)",
                 lambda: torch.load(buf, map_location="cpu", weights_only=True))
    torch.manual_seed(seed + 12345)
    fresh = step("build", family.create, preset).to(device)
    result = step("load_state_dict", fresh.load_state_dict, state)
    if result.missing_keys or result.unexpected_keys:  # strict=True raises first; belt and braces
        raise FamilyCheckError(f"load_state_dict: {result}")
    fresh.eval()
    with torch.no_grad():
        again = _all_tensors(step("forward after load_state_dict", _call, fresh, inputs))
    _compare("state-dict round trip", again, ref, rtol=None, atol=None)

    # torch.compile of the forward.
    if compile:
        import torch._dynamo as dynamo

        dynamo.reset()
        what = f"torch.compile(fullgraph={fullgraph}, backend={backend!r})"
        if family.compile_modules:
            graphs = _compile_submodules(model, family.compile_modules, fullgraph, backend)
            compiled = model
        else:
            compiled = torch.compile(model, fullgraph=fullgraph, backend=backend)
        with torch.no_grad():
            got = _all_tensors(step(what, _call, compiled, inputs))
        if family.compile_modules:
            idle = [n for n in family.compile_modules if not graphs[n]]
            if idle:
                raise FamilyCheckError(f"{what}: no graph was compiled for sub-module(s) "
                                       f"{', '.join(idle)} (does the forward call them?)")
        floats = [t.dtype for t in ref if t.is_floating_point()]
        tol = {torch.float32: (1e-4, 1e-5), torch.float64: (1e-7, 1e-7)}
        rtol, atol = tol.get(floats[0] if floats else torch.float32, (1e-2, 1e-2))
        _compare("torch.compile", got, ref, rtol=rtol, atol=atol)


def _compile_submodules(model, names, fullgraph, backend) -> dict[str, int]:
    """Compiles ``model``'s sub-modules ``names`` in place; returns a dict
    counting the graphs compiled for each (filled in as they compile)."""
    from torch._dynamo import lookup_backend

    graphs = dict.fromkeys(names, 0)

    def counting(name):
        real = lookup_backend(backend) if isinstance(backend, str) else backend

        def compile_graph(gm, example_inputs):
            graphs[name] += 1
            return real(gm, example_inputs)
        return compile_graph

    for name in names:
        try:
            sub = model.get_submodule(name)
        except AttributeError as e:
            raise FamilyCheckError(f"compile_modules: the model has no sub-module {name!r} "
                                   f"({e})") from None
        sub.compile(fullgraph=fullgraph, backend=counting(name))
    return graphs
