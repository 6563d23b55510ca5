"""Mamba's selective scan with mamba_ssm's API: :func:`selective_scan_fn` and
:func:`selective_state_update`, on every device kernelzoo has kernels for (CPU
today), thin wrappers over the dispatcher ops
``torch.ops.kernelzoo.selective_scan_forward``, ``_selective_scan_backward`` and
``selective_state_update``.

The semantics, shapes and dtype rules are those of
:mod:`kernelzoo.reference.selective_scan` (the plain-PyTorch definition):
mamba_ssm's, plus two keyword extensions of the scan, ``initial_state`` and
``cu_seqlens`` (sequences packed along seqlen with batch 1). Gradients flow to
every floating-point input, from the output and from the returned last state
(mamba_ssm drops the latter); the backward recomputes the states from ones the
forward saved every 64 positions, and is deterministic at any thread count.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

__all__ = ["selective_scan_fn", "selective_state_update"]

_CHUNK = 64  # positions between the states the forward saves (selective_scan_args.h)


def selective_scan_fn(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                      D: Optional[Tensor] = None, z: Optional[Tensor] = None,
                      delta_bias: Optional[Tensor] = None, delta_softplus: bool = False,
                      return_last_state: bool = False, *, initial_state: Optional[Tensor] = None,
                      cu_seqlens: Optional[Tensor] = None):
    """mamba_ssm's ``selective_scan_fn``: ``out`` ``(batch, dim, seqlen)`` in u's
    dtype, and with ``return_last_state`` also the last state ``(batch, dim,
    dstate)`` (``(nseq, dim, dstate)`` with ``cu_seqlens``) in the weight dtype
    (float32; float64 for float64 u). See :mod:`kernelzoo.reference.selective_scan`
    for the shapes and the math."""
    out, last, _ = torch.ops.kernelzoo.selective_scan_forward(
        u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus), initial_state, cu_seqlens)
    return (out, last) if return_last_state else out


def selective_state_update(state: Tensor, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor,
                           D: Optional[Tensor] = None, z: Optional[Tensor] = None,
                           dt_bias: Optional[Tensor] = None, dt_softplus: bool = False) -> Tensor:
    """mamba_ssm's ``selective_state_update``: one decoding step, updating
    ``state`` in place and returning the output (flat or head-grouped forms,
    see :mod:`kernelzoo.reference.selective_scan`). Not differentiable."""
    return torch.ops.kernelzoo.selective_state_update(state, x, dt, A, B, C, D, z, dt_bias,
                                                      bool(dt_softplus))


# --- fake kernels: shapes, and the checks that need no values -------------------------------

def _weight_dtype(u):
    return torch.float64 if u.dtype == torch.float64 else torch.float32


@torch.library.register_fake("kernelzoo::selective_scan_forward")
def _forward_fake(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, cu_seqlens):
    torch._check(u.dim() == 3, lambda: f"selective_scan: expected u of shape (batch, dim, seqlen), "
                 f"but got shape {list(u.shape)}")
    torch._check(delta.shape == u.shape and delta.dtype == u.dtype,
                 lambda: "selective_scan: delta must have u's shape and dtype")
    torch._check(A.dim() == 2 and A.shape[0] == u.shape[1],
                 lambda: "selective_scan: A must have shape (dim, dstate)")
    batch, dim, seqlen = u.shape
    dstate = A.shape[1]
    nseq = cu_seqlens.shape[0] - 1 if cu_seqlens is not None else batch
    w = _weight_dtype(u)
    out = u.new_empty(u.shape)
    last = u.new_empty((nseq, dim, dstate), dtype=w)
    chunks = (seqlen + _CHUNK - 1) // _CHUNK
    return out, last, u.new_empty((batch, dim, chunks, dstate), dtype=w)


@torch.library.register_fake("kernelzoo::_selective_scan_backward")
def _backward_fake(dout, dlast_state, u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                   initial_state, cu_seqlens, checkpoints):
    def like(t):
        return u.new_empty((0,)) if t is None else torch.empty_like(
            t, memory_format=torch.contiguous_format)

    return (like(u), like(u), like(A), like(B), like(C), like(D), like(z), like(delta_bias),
            like(initial_state))


@torch.library.register_fake("kernelzoo::selective_state_update")
def _state_update_fake(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus):
    torch._check(state.dim() in (3, 4), lambda: "selective_state_update: expected state of shape "
                 "(batch, dim, dstate) or (batch, nheads, headdim, dstate)")
    return x.new_empty(state.shape[:-1])


# --- autograd ---------------------------------------------------------------------------------

def _setup_context(ctx, inputs, output):
    (u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, cu_seqlens) = inputs
    _, _, checkpoints = output
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, initial_state, cu_seqlens,
                          checkpoints)
    ctx.delta_softplus = delta_softplus
    ctx.mark_non_differentiable(checkpoints)


def _backward(ctx, dout, dlast, _dcheckpoints):
    u, delta, A, B, C, D, z, delta_bias, initial_state, cu_seqlens, checkpoints = ctx.saved_tensors
    if dout is None:
        dout = torch.zeros_like(u)
    grads = torch.ops.kernelzoo._selective_scan_backward(
        dout.contiguous(), dlast, u, delta, A, B, C, D, z, delta_bias, ctx.delta_softplus,
        initial_state, cu_seqlens, checkpoints)
    du, ddelta, dA, dB, dC, dD, dz, dbias, dinit = grads
    return (du, ddelta, dA, dB, dC, dD if D is not None else None, dz if z is not None else None,
            dbias if delta_bias is not None else None, None,
            dinit if initial_state is not None else None, None)


torch.library.register_autograd("kernelzoo::selective_scan_forward", _backward,
                                setup_context=_setup_context)
