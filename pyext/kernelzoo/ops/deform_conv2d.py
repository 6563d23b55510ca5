"""deform_conv2d: deformable convolution, v1 (Dai et al., 2017) and v2 with a
modulation mask (Zhu et al., 2019), as torchvision.ops.deform_conv2d."""

from typing import List, Optional

import torch
from torch import Tensor
from torch.jit.annotations import BroadcastingList2
from torch.overrides import handle_torch_function, has_torch_function_variadic

from ._roi import dtype_name

__all__ = ["deform_conv2d", "DeformConvArgumentError"]


class DeformConvArgumentError(RuntimeError, ValueError):
    """A bad argument of ``deform_conv2d`` found before the op runs. A
    RuntimeError, as torchvision's checks raise, and a ValueError, as
    torchvision raises (from unpacking the shape) for an input that is not 4-D.
    (The op's own checks raise RuntimeError.)"""

_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)


def _pair(v: BroadcastingList2[int]) -> List[int]:
    if isinstance(v, int):
        return [v, v]
    return [int(v[0]), int(v[1])]


def deform_conv2d(input: Tensor, offset: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
                  stride: BroadcastingList2[int] = 1,
                  padding: BroadcastingList2[int] = 0,
                  dilation: BroadcastingList2[int] = 1,
                  mask: Optional[Tensor] = None) -> Tensor:
    r"""Deformable convolution, as :func:`torchvision.ops.deform_conv2d`: same
    signature, same results.

    Each tap ``(i, j)`` of the kernel at output position ``(h, w)`` samples the
    input at ``(h * stride_h - pad_h + i * dilation_h + dy, w * stride_w - pad_w +
    j * dilation_w + dx)`` with bilinear interpolation, ``(dy, dx)`` read from
    ``offset``, and (v2) multiplies the sample by ``mask``; the samples are then
    weighted and summed as by a convolution. A sample outside ``(-1, H) x (-1,
    W)`` is zero, and so is each of its neighbouring pixels that lies off the map.

    Args:
        input: ``(N, C, H, W)``, float64, float32, float16 or bfloat16, any
            layout; float16 and bfloat16 accumulate in float32.
        offset: ``(N, 2 * offset_groups * kh * kw, H_out, W_out)``: per offset
            group and tap (row-major over the kernel), ``dy`` then ``dx``. The
            offset groups split the input channels into ``offset_groups``
            consecutive blocks that share offsets (and mask).
        weight: ``(C_out, C / groups, kh, kw)``; the groups follow from the shapes.
        bias: ``(C_out,)`` or None.
        stride, padding, dilation: an int or ``(h, w)``.
        mask: ``(N, offset_groups * kh * kw, H_out, W_out)`` (v2), or None (v1:
            every sample weighted by one).

    All tensors share ``input``'s dtype and device. Returns ``(N, C_out, H_out,
    W_out)``, contiguous.

    Differentiable with respect to input, offset, weight, mask and bias (once:
    the backward op ``torch.ops.kernelzoo._deform_conv2d_backward`` has no
    derivative). The CPU kernels are deterministic at any thread count. Under
    ``torch.autocast`` the op computes in float32 and returns ``input``'s dtype,
    as torchvision's. Works in eager mode, ``torch.compile(fullgraph=True)``,
    ``torch.export``, ``torch.fx`` (one node) and ``torch.jit.script``.
    """
    if not torch.jit.is_scripting():
        if has_torch_function_variadic(input, offset, weight, bias, mask):
            return handle_torch_function(deform_conv2d, (input, offset, weight, bias, mask),
                                         input, offset, weight, bias=bias, stride=stride,
                                         padding=padding, dilation=dilation, mask=mask)
    stride_h, stride_w = _pair(stride)
    pad_h, pad_w = _pair(padding)
    dil_h, dil_w = _pair(dilation)
    kh, kw = weight.shape[-2], weight.shape[-1]
    if weight.dim() != 4 or input.dim() != 4 or offset.dim() != 4:
        raise DeformConvArgumentError(
            f"deform_conv2d: expected 4-d input, offset and weight, but got shapes "
            f"{list(input.shape)}, {list(offset.shape)} and {list(weight.shape)}")
    offset_groups = offset.shape[1] // (2 * kh * kw)
    if offset_groups == 0:
        raise DeformConvArgumentError(
            f"deform_conv2d: offset must have 2 * offset_groups * kh * kw channels, a multiple "
            f"of 2 * {kh} * {kw} = {2 * kh * kw}, but has {offset.shape[1]}")
    groups = input.shape[1] // weight.shape[1] if weight.shape[1] > 0 else 0
    return torch.ops.kernelzoo.deform_conv2d(input, weight, offset, mask, bias, stride_h,
                                             stride_w, pad_h, pad_w, dil_h, dil_w, groups,
                                             offset_groups)


def _check(op, input, weight, offset, mask, bias, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
           groups, offset_groups):
    """The checks of prepare() in deform_conv2d.cpp, with its messages; returns
    (H_out, W_out)."""
    torch._check(input.dim() == 4, lambda: (
        f"{op}: expected input of shape (N, C, H, W), but got shape {list(input.shape)}"))
    torch._check(input.dtype in _DTYPES, lambda: (
        f"{op}: expected a floating-point input (float64, float32, float16 or bfloat16), but got "
        f"{dtype_name(input.dtype)}"))
    torch._check(weight.dim() == 4, lambda: (
        f"{op}: expected weight of shape (C_out, C / groups, kh, kw), but got shape "
        f"{list(weight.shape)}"))
    torch._check(offset.dim() == 4, lambda: (
        f"{op}: expected offset of shape (N, 2 * offset_groups * kh * kw, H_out, W_out), but "
        f"got shape {list(offset.shape)}"))
    for t, what in ((weight, "weight"), (offset, "offset"), (mask, "mask"), (bias, "bias")):
        if t is None:
            continue
        torch._check(t.dtype == input.dtype, lambda: (
            f"{op}: {what} must have input's dtype ({dtype_name(input.dtype)}), but got "
            f"{dtype_name(t.dtype)}"))
        torch._check(t.device == input.device, lambda: (
            f"{op}: {what} must be on input's device ({input.device}), but is on {t.device}"))
    torch._check(stride_h > 0 and stride_w > 0, lambda: (
        f"{op}: stride must be positive, but got ({stride_h}, {stride_w})"))
    torch._check(dil_h > 0 and dil_w > 0, lambda: (
        f"{op}: dilation must be positive, but got ({dil_h}, {dil_w})"))
    torch._check(pad_h >= 0 and pad_w >= 0, lambda: (
        f"{op}: padding must be non-negative, but got ({pad_h}, {pad_w})"))
    n, c, h, w = input.shape
    c_out, _, kh, kw = weight.shape
    torch._check(groups > 0 and c % groups == 0 and c_out % groups == 0, lambda: (
        f"{op}: groups ({groups}) must divide the input channels ({c}) and the output channels "
        f"({c_out})"))
    torch._check(weight.shape[1] * groups == c, lambda: (
        f"{op}: weight.size(1) * groups must equal the input channels: {weight.shape[1]} * "
        f"{groups} != {c}"))
    k = kh * kw
    torch._check(offset_groups > 0 and offset.shape[1] == 2 * offset_groups * k, lambda: (
        f"{op}: offset has {offset.shape[1]} channels, but offset_groups = {offset_groups} "
        f"needs {2 * offset_groups * k}"))
    torch._check(c % offset_groups == 0, lambda: (
        f"{op}: offset_groups ({offset_groups}) must divide the input channels ({c})"))
    eff_h, eff_w = dil_h * (kh - 1) + 1, dil_w * (kw - 1) + 1
    h_out = (h + 2 * pad_h - eff_h) // stride_h + 1
    w_out = (w + 2 * pad_w - eff_w) // stride_w + 1
    torch._check(h + 2 * pad_h >= eff_h and w + 2 * pad_w >= eff_w, lambda: (
        f"{op}: the output would be empty: input {h}x{w} with padding ({pad_h}, {pad_w}) is "
        f"smaller than the dilated kernel {eff_h}x{eff_w}"))
    torch._check(offset.shape[0] == n and offset.shape[2] == h_out and offset.shape[3] == w_out,
                 lambda: (f"{op}: offset must have shape (N, {offset.shape[1]}, H_out, W_out) = "
                          f"({n}, {offset.shape[1]}, {h_out}, {w_out}), but got "
                          f"{list(offset.shape)}"))
    if mask is not None:
        torch._check(mask.dim() == 4 and mask.shape[0] == n and mask.shape[1] == offset_groups * k
                     and mask.shape[2] == h_out and mask.shape[3] == w_out, lambda: (
            f"{op}: mask must have shape (N, offset_groups * kh * kw, H_out, W_out) = ({n}, "
            f"{offset_groups * k}, {h_out}, {w_out}), but got {list(mask.shape)}"))
    if bias is not None:
        torch._check(bias.dim() == 1 and bias.shape[0] == c_out, lambda: (
            f"{op}: bias must have shape (C_out,) = ({c_out},), but got {list(bias.shape)}"))
    return h_out, w_out


@torch.library.register_fake("kernelzoo::deform_conv2d")
def _deform_conv2d_fake(input, weight, offset, mask, bias, stride_h, stride_w, pad_h, pad_w,
                        dil_h, dil_w, groups, offset_groups):
    h_out, w_out = _check("deform_conv2d", input, weight, offset, mask, bias, stride_h, stride_w,
                          pad_h, pad_w, dil_h, dil_w, groups, offset_groups)
    return input.new_empty((input.shape[0], weight.shape[0], h_out, w_out))


@torch.library.register_fake("kernelzoo::_deform_conv2d_backward")
def _deform_conv2d_backward_fake(grad, input, weight, offset, mask, bias, stride_h, stride_w,
                                 pad_h, pad_w, dil_h, dil_w, groups, offset_groups):
    h_out, w_out = _check("_deform_conv2d_backward", input, weight, offset, mask, bias, stride_h,
                          stride_w, pad_h, pad_w, dil_h, dil_w, groups, offset_groups)
    torch._check(tuple(grad.shape) == (input.shape[0], weight.shape[0], h_out, w_out), lambda: (
        "_deform_conv2d_backward: grad must have the output's shape"))
    empty = input.new_empty((0,))
    return (input.new_empty(input.shape), weight.new_empty(weight.shape),
            offset.new_empty(offset.shape),
            mask.new_empty(mask.shape) if mask is not None else empty,
            bias.new_empty(bias.shape) if bias is not None else input.new_empty((0,)))


def _setup_context(ctx, inputs, output):
    input, weight, offset, mask, bias = inputs[:5]
    ctx.save_for_backward(input, weight, offset, mask, bias)
    ctx.args = inputs[5:]
    ctx.has_mask = mask is not None
    ctx.has_bias = bias is not None


def _backward(ctx, grad):
    input, weight, offset, mask, bias = ctx.saved_tensors
    gi, gw, go, gm, gb = torch.ops.kernelzoo._deform_conv2d_backward.default(
        grad, input, weight, offset, mask if ctx.has_mask else None,
        bias if ctx.has_bias else None, *ctx.args)
    return (gi, gw, go, gm if ctx.has_mask else None, gb if ctx.has_bias else None) + \
        (None,) * 8


torch.library.register_autograd("kernelzoo::deform_conv2d", _backward,
                                setup_context=_setup_context)
