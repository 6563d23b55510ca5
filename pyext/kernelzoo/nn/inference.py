"""Linear layers in CPU inference through oneDNN, for model families.

On this project's CPUs (AVX-512, no AMX) oneDNN's linear
(``torch.ops.mkldnn._linear_pointwise``) measured about twice as fast as
``F.linear`` (MKL) for the products of transformer and Mamba layers in
float32, with the bias and an activation fused. The op has no derivative and
torch.compile does not trace it, so :func:`onednn_linear_ok` allows it only in
eager CPU inference; elsewhere models call ``F.linear``. It is a private torch
op: when it is missing, the check says no.

For decoding (a few rows per product, every weight read once per token) in
bfloat16, :func:`decode_linear` goes further: it multiplies by a copy of the
weight that oneDNN has reordered into its own blocked layout, made on first
use and kept (until the weight changes or :func:`clear_decode_weights`). That
copy costs as much memory as the weight; it measured about twice as fast as the
plain bfloat16 layout on this machine (mamba-130m's 768 x 50280 head: 2.2 ms
instead of 4.5 ms, 34 GB/s of weights read), where float32 gained nothing.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torch.utils.weak import WeakIdKeyDictionary

__all__ = ["onednn_linear_ok", "onednn_linear", "decode_linear", "clear_decode_weights"]


def onednn_linear_ok(x: Tensor, weight: Tensor,
                     dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.bfloat16)) -> bool:
    """Whether :func:`onednn_linear` applies: eager mode, CPU, ``x`` and
    ``weight`` of one of ``dtypes``, and no autograd graph to record."""
    return (not torch.compiler.is_compiling() and x.device.type == "cpu"
            and x.dtype in dtypes and x.dtype == weight.dtype
            and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
            and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


def onednn_linear(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
                  post_op: str = "none", algorithm: str = "") -> Tensor:
    """``F.linear(x, weight, bias)`` followed by oneDNN's post-op (``"none"``,
    ``"relu"``, or ``"gelu"`` with ``algorithm`` ``"none"`` (erf) or
    ``"tanh"``), in one oneDNN call; ``x`` of any rank."""
    shape = x.shape
    y = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, shape[-1]), weight, bias, post_op, [],
                                           algorithm)
    return y.reshape(*shape[:-1], weight.shape[0])


# weight -> (its version counter and storage when packed, the packed copy)
_PACKED = WeakIdKeyDictionary()


def _packed(weight: Tensor) -> Tensor:
    key = (weight._version, weight.data_ptr(), weight.shape, weight.dtype)
    hit = _PACKED.get(weight)
    if hit is not None and hit[0] == key:
        return hit[1]
    packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), 1)
    _PACKED[weight] = (key, packed)
    return packed


def decode_linear(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """``F.linear(x, weight, bias)`` for decoding steps: in eager CPU inference
    with bfloat16 ``x`` and ``weight``, through oneDNN with the weight's
    reordered copy (kept per weight, rebuilt when the weight changes in place
    or is replaced); float32 through :func:`onednn_linear`; elsewhere
    ``F.linear``."""
    if onednn_linear_ok(x, weight, dtypes=(torch.bfloat16,)) and \
            hasattr(torch.ops.mkldnn, "_reorder_linear_weight"):
        shape = x.shape
        y = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, shape[-1]), _packed(weight), bias,
                                               "none", [], "")
        return y.reshape(*shape[:-1], weight.shape[0])
    if onednn_linear_ok(x, weight, dtypes=(torch.float32,)):
        return onednn_linear(x, weight, bias)
    return torch.nn.functional.linear(x, weight, bias)


def clear_decode_weights() -> None:
    """Frees the reordered weight copies :func:`decode_linear` keeps."""
    _PACKED.clear()
