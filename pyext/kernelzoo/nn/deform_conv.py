"""Deformable convolution layers over :func:`kernelzoo.ops.deform_conv2d`.

``DeformConv2d``
    torchvision's layer of that name: the caller passes the offsets (and
    optionally the mask) to ``forward``.
``DeformConv2dPack``
    deformable convolution v1 (Dai et al., 2017), as mmcv's layer of that name:
    the layer owns ``conv_offset``, a regular convolution of the input (same
    kernel size, stride, padding and dilation) that predicts the offsets.
``ModulatedDeformConv2dPack``
    deformable convolution v2 (Zhu et al., 2019), as mmcv's layer of that name:
    ``conv_offset`` predicts the offsets and a modulation mask.

The ``conv_offset`` weight and bias start at zero, so a freshly built Pack layer
samples the regular grid: v1 computes ``conv2d(x, weight, bias)`` and v2,
whose mask starts at ``sigmoid(0) = 0.5`` for every tap, computes
``0.5 * conv2d(x, weight) + bias`` (the mask scales the sampled inputs, not the
bias).

Channel layout of ``conv_offset``'s output for ``G = deform_groups`` and
``K = kh * kw`` taps (the layout of torchvision's operator, and what mmcv's
layers produce):

* v1: ``2 * G * K`` channels, all offsets; for deformable group ``g`` and tap
  ``k = i * kw + j``, channel ``2 * (g * K + k)`` is the vertical (y) offset
  and the next channel the horizontal (x) one.
* v2: ``3 * G * K`` channels; the first ``2 * G * K`` are the offsets in the v1
  layout and the last ``G * K`` (channel ``2 * G * K + g * K + k``) are the mask
  logits, passed through a sigmoid. (mmcv splits the output in three equal
  chunks ``o1, o2, m`` and concatenates ``o1, o2`` back: the same first two
  thirds, so mmcv weights load as they are.)

The operator is looked up as ``kernelzoo.ops.deform_conv2d`` at every call,
never bound when this module is imported.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from .. import ops

__all__ = ["DeformConv2d", "DeformConv2dPack", "ModulatedDeformConv2dPack", "make_deformable"]


class DeformConv2d(nn.Module):
    """Drop-in for :class:`torchvision.ops.DeformConv2d` on kernelzoo's kernels.

    ``DeformConv2d(in_channels, out_channels, kernel_size, stride=1, padding=0,
    dilation=1, groups=1, bias=True)``; ``forward(input, offset, mask=None)``
    with ``offset`` of shape ``(N, 2 * offset_groups * kh * kw, H_out, W_out)``
    and ``mask`` (v2) of shape ``(N, offset_groups * kh * kw, H_out, W_out)``
    (see :func:`kernelzoo.ops.deform_conv2d`). Parameters ``weight``
    ``(out_channels, in_channels // groups, kh, kw)`` and ``bias``
    ``(out_channels,)`` (or ``None``), initialised as ``torch.nn.Conv2d``'s and
    torchvision's (Kaiming-uniform with ``a = sqrt(5)``, bias uniform in
    ``+-1 / sqrt(fan_in)``).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True) -> None:
        super().__init__()
        if in_channels % groups != 0:
            raise ValueError("in_channels must be divisible by groups")
        if out_channels % groups != 0:
            raise ValueError("out_channels must be divisible by groups")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.dilation = _pair(dilation)
        self.groups = groups
        kh, kw = self.kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kh, kw))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight[0].numel()
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            nn.init.uniform_(self.bias, -bound, bound)

    def _deform(self, input: Tensor, offset: Tensor, mask: Tensor | None) -> Tensor:
        return ops.deform_conv2d(input, offset, self.weight, self.bias, stride=self.stride,
                                 padding=self.padding, dilation=self.dilation, mask=mask)

    def forward(self, input: Tensor, offset: Tensor, mask: Tensor | None = None) -> Tensor:
        return self._deform(input, offset, mask)

    def extra_repr(self) -> str:
        # torchvision's format: options at their defaults are left out.
        parts = [f"{self.in_channels}", f"{self.out_channels}",
                 f"kernel_size={self.kernel_size}", f"stride={self.stride}"]
        if self.padding != (0, 0):
            parts.append(f"padding={self.padding}")
        if self.dilation != (1, 1):
            parts.append(f"dilation={self.dilation}")
        if self.groups != 1:
            parts.append(f"groups={self.groups}")
        if self.bias is None:
            parts.append("bias=False")
        return ", ".join(parts)


class _PackBase(DeformConv2d):
    """A deformable convolution that predicts its own offsets (and mask) with
    ``conv_offset``, zero-initialised."""

    #: conv_offset output channels per deformable group and kernel tap.
    _per_tap = 0

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, deform_groups: int = 1, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         dilation=dilation, groups=groups, bias=bias)
        if not isinstance(deform_groups, int) or deform_groups < 1:
            raise ValueError(f"deform_groups must be a positive int, got {deform_groups!r}")
        if in_channels % deform_groups != 0:
            raise ValueError("in_channels must be divisible by deform_groups")
        self.deform_groups = deform_groups
        kh, kw = self.kernel_size
        self.conv_offset = nn.Conv2d(in_channels, self._per_tap * deform_groups * kh * kw,
                                     self.kernel_size, stride=self.stride, padding=self.padding,
                                     dilation=self.dilation, bias=True)
        self.init_offset()

    def init_offset(self) -> None:
        """Zeroes ``conv_offset``: the layer then samples the regular grid."""
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        if self.deform_groups != 1:
            s += f", deform_groups={self.deform_groups}"
        return s


class DeformConv2dPack(_PackBase):
    """Deformable convolution v1 that predicts its own offsets (mmcv's layer).

    ``DeformConv2dPack(in_channels, out_channels, kernel_size, stride=1,
    padding=0, dilation=1, groups=1, deform_groups=1, bias=False)``;
    ``forward(input)``. ``conv_offset`` is an ``nn.Conv2d(in_channels, 2 *
    deform_groups * kh * kw, kernel_size, stride, padding, dilation)`` with
    zero weight and bias, so that at initialisation the layer equals
    ``conv2d(input, weight, bias, stride, padding, dilation, groups)``. The bias
    defaults to ``False`` as in mmcv (which allows no other value); ``True``
    is accepted here. The offset layout is described in
    :mod:`kernelzoo.nn.deform_conv`.
    """

    _per_tap = 2

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, deform_groups: int = 1, bias: bool = False) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, deform_groups, bias)

    def forward(self, input: Tensor) -> Tensor:       # type: ignore[override]
        return self._deform(input, self.conv_offset(input), None)


class ModulatedDeformConv2dPack(_PackBase):
    """Modulated deformable convolution (v2) that predicts its own offsets and
    mask (mmcv's layer).

    ``ModulatedDeformConv2dPack(in_channels, out_channels, kernel_size,
    stride=1, padding=0, dilation=1, groups=1, deform_groups=1, bias=True)``;
    ``forward(input)``. ``conv_offset`` is an ``nn.Conv2d(in_channels, 3 *
    deform_groups * kh * kw, kernel_size, stride, padding, dilation)`` with
    zero weight and bias; its first ``2 * deform_groups * kh * kw`` output
    channels are the offsets, the rest the mask logits (``mask =
    sigmoid(logits)``). At initialisation the offsets are zero and the mask is
    0.5 everywhere: the layer equals ``0.5 * conv2d(input, weight, None,
    stride, padding, dilation, groups) + bias``.
    """

    _per_tap = 3

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, deform_groups: int = 1, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, deform_groups, bias)

    def forward(self, input: Tensor) -> Tensor:       # type: ignore[override]
        out = self.conv_offset(input)
        n_offset = 2 * self.deform_groups * self.kernel_size[0] * self.kernel_size[1]
        offset = out[:, :n_offset]
        mask = torch.sigmoid(out[:, n_offset:])
        return self._deform(input, offset, mask)


def _deformable_like(conv: nn.Conv2d, modulated: bool, deform_groups: int) -> nn.Module:
    """A Pack layer with ``conv``'s shape and options, carrying ``conv``'s weight
    (and bias) and a zero-initialised ``conv_offset``."""
    cls = ModulatedDeformConv2dPack if modulated else DeformConv2dPack
    layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                deform_groups=deform_groups, bias=conv.bias is not None)
    layer = layer.to(device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        layer.weight.copy_(conv.weight)
        if conv.bias is not None:
            layer.bias.copy_(conv.bias)
    layer.weight.requires_grad_(conv.weight.requires_grad)
    return layer


def make_deformable(resnet: nn.Module, stages=(2, 3, 4), *, modulated: bool = True,
                    deform_groups: int = 1) -> nn.Module:
    """Replaces, in place, ``conv2`` (the 3x3 convolution) of every block of
    ``resnet.layer<s>`` for ``s`` in ``stages`` by a
    :class:`~kernelzoo.nn.ModulatedDeformConv2dPack` (``modulated=False``:
    :class:`~kernelzoo.nn.DeformConv2dPack`) with the same weight and a
    zero-initialised ``conv_offset``. Works on this module's ResNet and on
    torchvision's (same names); returns ``resnet``."""
    for s in stages:
        for block in getattr(resnet, f"layer{s}"):
            conv = block.conv2
            if not isinstance(conv, nn.Conv2d):
                raise TypeError(f"layer{s}: conv2 is a {type(conv).__name__}, not an nn.Conv2d "
                                f"(already deformable?)")
            block.conv2 = _deformable_like(conv, modulated, deform_groups)
    return resnet
