"""Linear layers in CPU inference through oneDNN, for model families.

On this project's CPUs (AVX-512, no AMX) oneDNN's linear
(``torch.ops.mkldnn._linear_pointwise``) measured about twice as fast as
``F.linear`` (MKL) for the products of transformer and Mamba layers in
float32, with the bias and an activation fused. The op has no derivative and
torch.compile does not trace it, so :func:`onednn_linear_ok` allows it only in
eager CPU inference; elsewhere models call ``F.linear``. It is a private torch
op: when it is missing, the check says no.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

__all__ = ["onednn_linear_ok", "onednn_linear"]


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
