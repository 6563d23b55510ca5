"""Reference deformable convolution, v1 and v2 (modulated), written from the
definition with torchvision's signature and semantics, in plain PyTorch: index
arithmetic and one gather over whole tensors, then a grouped matrix product.

For output pixel (h, w) and kernel tap (i, j) (tap = i*kw + j), an input
channel of offset group g samples the point

    y = h*stride_h - pad_h + i*dilation_h + offset[n, 2*(g*kh*kw + tap), h, w]
    x = w*stride_w - pad_w + j*dilation_w + offset[n, 2*(g*kh*kw + tap) + 1, h, w]

by bilinear interpolation between the neighbours floor(y), floor(y) + 1 and
floor(x), floor(x) + 1, each neighbour outside the map reading zero. (This is
torchvision's rule: its kernels also return zero when y <= -1, y >= H, x <= -1
or x >= W, but there every neighbour with a non-zero weight is outside the map
anyway, so the value is the same.) The sample is multiplied by
mask[n, g*kh*kw + tap, h, w] (v2; no mask is v1) and the convolution sums the
weights times the samples over the channels of the group and the taps.

Differentiable through autograd with respect to input, offset, mask, weight
and bias. The bilinear weights are built from floor(y) (held constant), so the
derivative with respect to an offset is the one-sided one torchvision's
backward uses: at an integer coordinate it is taken over the pair (floor,
floor + 1). Because the zero border comes only from the neighbours, the
gradients also agree with torchvision's exactly at y = -1 (or x = -1), where
the value is zero but torchvision's offset gradient is not.

float64 and float32 compute in their own precision; float16 and bfloat16 are
computed in float32 and the result cast back. Non-finite offsets give
non-finite results (torchvision's behaviour there is undefined).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torch.nn.modules.utils import _pair

from ..ops.deform_conv2d import DeformConvArgumentError

__all__ = ["deform_conv2d", "DeformConvArgumentError"]

_OP = "deform_conv2d"


def _fail(msg: str):
    raise DeformConvArgumentError(f"{_OP}: {msg}")


def _shape(t: Tensor):
    return tuple(t.shape)


def _check(input: Tensor, offset: Tensor, weight: Tensor, bias: Optional[Tensor],
           stride, padding, dilation, mask: Optional[Tensor]):
    """Every shape, value and dtype/device rule; returns the derived sizes."""
    named = [("input", input), ("offset", offset), ("weight", weight)]
    if mask is not None:
        named.append(("mask", mask))
    for name, t in named:
        if not isinstance(t, Tensor):
            raise TypeError(f"{_OP}: {name} must be a Tensor, but got {type(t).__name__}")
        if t.dim() != 4:
            _fail(f"expected a 4-D {name}, but got {name} of shape {_shape(t)}")
    if bias is not None and not isinstance(bias, Tensor):
        raise TypeError(f"{_OP}: bias must be a Tensor or None, but got {type(bias).__name__}")
    if not input.is_floating_point():
        _fail(f"expected a floating-point input, but got {input.dtype}")
    for name, t in named[1:] + ([("bias", bias)] if bias is not None else []):
        if t.dtype != input.dtype:
            _fail(f"expected {name} to have the input's dtype {input.dtype}, but got {t.dtype}")
        if t.device != input.device:
            _fail(f"expected {name} on the input's device {input.device}, but got {t.device}")

    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    if sh <= 0 or sw <= 0:
        _fail(f"stride must be positive, but got ({sh}, {sw})")
    if ph < 0 or pw < 0:
        _fail(f"padding must be non-negative, but got ({ph}, {pw})")
    if dh <= 0 or dw <= 0:
        _fail(f"dilation must be positive, but got ({dh}, {dw})")

    n, c_in, height, width = input.shape
    c_out, c_per_group, kh, kw = weight.shape
    if kh <= 0 or kw <= 0:
        _fail(f"weight must have a non-empty kernel, but got weight of shape {_shape(weight)}")
    if c_in == 0:
        _fail(f"expected an input with at least one channel, but got input of shape "
              f"{_shape(input)}")
    if c_per_group <= 0 or c_in % c_per_group != 0:
        _fail(f"groups do not divide the channels: input has {c_in} channels, which is not "
              f"a multiple of weight.shape[1]={c_per_group}")
    groups = c_in // c_per_group
    if c_out % groups != 0:
        _fail(f"groups do not divide the channels: weight.shape[0]={c_out} output channels "
              f"are not a multiple of groups={groups} (input channels {c_in} / "
              f"weight.shape[1] {c_per_group})")

    taps = kh * kw
    if offset.shape[1] == 0 or offset.shape[1] % (2 * taps) != 0:
        _fail(f"offset.shape[1]={offset.shape[1]} is not a positive multiple of "
              f"2 * kernel_height * kernel_width = {2 * taps} (the (y, x) pair of each tap "
              f"of each offset group)")
    offset_groups = offset.shape[1] // (2 * taps)
    if c_in % offset_groups != 0:
        _fail(f"offset_groups={offset_groups} (offset.shape[1] / (2 * kernel_height * "
              f"kernel_width)) does not divide the {c_in} input channels")
    if mask is not None and mask.shape[1] != offset_groups * taps:
        _fail(f"mask.shape[1]={mask.shape[1]} does not match the offset: expected "
              f"offset_groups * kernel_height * kernel_width = {offset_groups * taps} "
              f"(offset_groups={offset_groups} from offset.shape[1]={offset.shape[1]})")

    out_h = (height + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    out_w = (width + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    if out_h <= 0 or out_w <= 0:
        _fail(f"the output would be empty: computed output size ({out_h}, {out_w}) from input "
              f"({height}, {width}), kernel ({kh}, {kw}), stride ({sh}, {sw}), padding "
              f"({ph}, {pw}), dilation ({dh}, {dw})")
    for name, t in named[1:]:
        if t is weight:
            continue
        if t.shape[0] != n:
            _fail(f"{name} has batch size {t.shape[0]}, but input has {n}")
        if (t.shape[2], t.shape[3]) != (out_h, out_w):
            _fail(f"{name} spatial size ({t.shape[2]}, {t.shape[3]}) does not match the "
                  f"computed output size ({out_h}, {out_w})")
    if bias is not None and bias.numel() != c_out:
        _fail(f"bias must have one element per output channel ({c_out}), but got bias of "
              f"shape {_shape(bias)}")
    return (sh, sw), (ph, pw), (dh, dw), groups, offset_groups, out_h, out_w


def deform_conv2d(input: Tensor, offset: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
                  stride=(1, 1), padding=(0, 0), dilation=(1, 1),
                  mask: Optional[Tensor] = None) -> Tensor:
    """Deformable convolution v1 (``mask=None``) or v2, torchvision's
    ``torchvision.ops.deform_conv2d`` written out in plain PyTorch.

    Args:
        input: ``(N, C_in, H, W)``.
        offset: ``(N, 2 * offset_groups * kh * kw, H_out, W_out)``; channel
            ``2 * (g * kh * kw + i * kw + j)`` is the y offset of tap ``(i, j)``
            for offset group ``g``, the next channel its x offset.
        weight: ``(C_out, C_in / groups, kh, kw)``.
        bias: ``(C_out,)`` or None.
        stride, padding, dilation: ints or pairs (height, width).
        mask: ``(N, offset_groups * kh * kw, H_out, W_out)`` modulation or None.

    ``groups = C_in / weight.shape[1]`` and ``offset_groups = offset.shape[1] /
    (2 * kh * kw)`` come from the shapes; input channel ``c`` belongs to offset
    group ``c // (C_in / offset_groups)``. Samples are bilinear with zero outside
    the map (see the module docstring for the exact border rule and the
    gradient convention at integer coordinates).

    Returns ``(N, C_out, H_out, W_out)`` in the input's dtype. Raises
    :class:`DeformConvArgumentError` (a RuntimeError and a ValueError) for bad
    shapes, sizes, dtypes or devices.
    """
    (sh, sw), (ph, pw), (dh, dw), groups, og, out_h, out_w = _check(
        input, offset, weight, bias, stride, padding, dilation, mask)
    n, c_in, height, width = input.shape
    c_out, _, kh, kw = weight.shape
    taps = kh * kw
    cg = c_in // og  # input channels per offset group

    compute = torch.float32 if input.dtype in (torch.float16, torch.bfloat16) else input.dtype
    dev = input.device
    x = input.to(compute)
    off = offset.to(compute).reshape(n, og, taps, 2, out_h, out_w)

    # Sample coordinates (N, og, taps, H_out, W_out).
    tap = torch.arange(taps, device=dev)
    rows = (tap // kw) * dh  # (taps,)
    cols = (tap % kw) * dw
    base_y = (torch.arange(out_h, device=dev) * sh - ph)[None, :] + rows[:, None]  # (taps, H_out)
    base_x = (torch.arange(out_w, device=dev) * sw - pw)[None, :] + cols[:, None]  # (taps, W_out)
    y = base_y.to(compute)[None, None, :, :, None] + off[:, :, :, 0]
    xs = base_x.to(compute)[None, None, :, None, :] + off[:, :, :, 1]

    # Floor-based neighbours; the floors are constants for autograd. Clamping
    # the floor to [-2, size] only moves points that read zero anyway (both
    # neighbours outside) and keeps the integer conversion in range.
    y0f = y.detach().floor().clamp(-2, height)
    x0f = xs.detach().floor().clamp(-2, width)
    ly, lx = y - y0f, xs - x0f
    hy, hx = 1 - ly, 1 - lx
    y0, x0 = y0f.long(), x0f.long()

    hw = height * width
    flat_idx, wts = [], []
    for yy, wy in ((y0, hy), (y0 + 1, ly)):
        for xx, wx in ((x0, hx), (x0 + 1, lx)):
            inside = (yy >= 0) & (yy < height) & (xx >= 0) & (xx < width)
            # Outside neighbours point at an extra zero element (index H*W).
            flat_idx.append(torch.where(inside, yy * width + xx, torch.full_like(yy, hw)))
            wts.append(wy * wx)
    idx = torch.stack(flat_idx, dim=2)  # (N, og, 4, taps, H_out, W_out)
    wts = torch.stack(wts, dim=2)
    if mask is not None:
        m = mask.to(compute).reshape(n, og, 1, taps, out_h, out_w)
        wts = wts * m

    # Gather every neighbour of every sample for all channels of its offset group.
    src = torch.cat([x.reshape(n, og, cg, hw), x.new_zeros(n, og, cg, 1)], dim=3)
    k = 4 * taps * out_h * out_w
    vals = torch.gather(src, 3, idx.reshape(n, og, 1, k).expand(n, og, cg, k))
    vals = vals.reshape(n, og, cg, 4, taps, out_h, out_w)
    cols_ = (vals * wts[:, :, None]).sum(dim=3)  # (N, og, cg, taps, H_out, W_out)

    # Grouped product with the weights: columns (N, groups, C_in/groups * taps, P).
    cols_ = cols_.reshape(n, groups, (c_in // groups) * taps, out_h * out_w)
    w = weight.to(compute).reshape(groups, c_out // groups, (c_in // groups) * taps)
    out = torch.einsum("gok,ngkp->ngop", w, cols_).reshape(n, c_out, out_h, out_w)
    if bias is not None:
        out = out + bias.to(compute).reshape(1, c_out, 1, 1)
    return out.to(input.dtype)
