"""Argument handling shared by roi_align and roi_pool: the boxes formats and the
checks of the fake kernels, which mirror csrc/ops/roi/roi.cpp message for
message (so eager, meta and torch.compile users get the same errors)."""

from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import Tensor

BoxesType = Union[Tensor, Sequence[Tensor]]

_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
_MAX_INT = 2 ** 31 - 1


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def as_rois(op: str, boxes: BoxesType) -> Tensor:
    """``boxes`` as the ops' Tensor[K, 5] of rows (batch_index, x1, y1, x2, y2).

    A Tensor is passed on as it is (the op checks its shape); a list or tuple of
    Tensor[L, 4], one per image, is converted as torchvision converts it: the
    boxes concatenated in order, each prefixed with its image's index.
    """
    if isinstance(boxes, Tensor):
        return boxes
    if not isinstance(boxes, (list, tuple)):
        raise TypeError(f"{op}: boxes must be a Tensor[K, 5] or a list of Tensor[L, 4] (one per "
                        f"image), but got {type(boxes).__name__}")
    # Plain raises rather than torch._check: these are Python-level checks of
    # static properties, traceable by torch.compile (fullgraph) as they are.
    if len(boxes) == 0:
        raise RuntimeError(f"{op}: boxes is an empty list; pass one Tensor[L, 4] per image (L may "
                           "be 0), or a Tensor[K, 5]")
    for i, b in enumerate(boxes):
        if not isinstance(b, Tensor):
            raise TypeError(f"{op}: boxes[{i}] must be a Tensor[L, 4], but got {type(b).__name__}")
        if b.dim() != 2 or b.shape[1] != 4:
            raise RuntimeError(f"{op}: expected boxes[{i}] to be a Tensor[L, 4] of (x1, y1, x2, y2), "
                               f"but got a tensor of shape {list(b.shape)}")
    coords = boxes[0] if len(boxes) == 1 else torch.cat(list(boxes), dim=0)
    ids = [torch.full_like(b[:, :1], i) for i, b in enumerate(boxes)]
    ids = ids[0] if len(ids) == 1 else torch.cat(ids, dim=0)
    return torch.cat([ids, coords], dim=1)


def _check_rois_shape(op: str, rois: Tensor) -> None:
    torch._check(rois.dim() == 2 and rois.shape[1] == 5, lambda: (
        f"{op}: expected boxes as a Tensor[K, 5] of rows (batch_index, x1, y1, x2, y2), but got "
        f"a tensor of shape {list(rois.shape)}"))


def _check_plane(op: str, height, width) -> None:
    torch._check(height * width <= _MAX_INT, lambda: (
        f"{op}: feature maps of more than 2^31 - 1 pixels (H * W) are not supported, but got "
        f"H={height}, W={width}"))


def _check_output_size(op: str, pooled_h, pooled_w) -> None:
    torch._check(pooled_h > 0 and pooled_w > 0, lambda: (
        f"{op}: output_size must be positive, but got ({pooled_h}, {pooled_w})"))
    torch._check(pooled_h <= _MAX_INT and pooled_w <= _MAX_INT, lambda: (
        f"{op}: output_size must be at most 2^31 - 1, but got ({pooled_h}, {pooled_w})"))


def check_sampling_ratio(op: str, sampling_ratio: int) -> None:
    torch._check(sampling_ratio <= _MAX_INT, lambda: (
        f"{op}: sampling_ratio must be at most 2^31 - 1, but got {sampling_ratio}"))


def check_forward(op: str, input: Tensor, rois: Tensor, pooled_h, pooled_w) -> None:
    torch._check(input.dim() == 4, lambda: (
        f"{op}: expected input of shape (N, C, H, W), but got a tensor with {input.dim()} "
        f"dimension(s), of shape {list(input.shape)}"))
    torch._check(input.dtype in _DTYPES, lambda: (
        f"{op}: expected a floating-point input (float64, float32, float16 or bfloat16), but got "
        f"{dtype_name(input.dtype)}"))
    _check_rois_shape(op, rois)
    torch._check(rois.dtype == input.dtype, lambda: (
        f"{op}: input and boxes must have the same dtype, but got input {dtype_name(input.dtype)} "
        f"and boxes {dtype_name(rois.dtype)}; convert the boxes with boxes.to(input.dtype)"))
    torch._check(rois.device == input.device, lambda: (
        f"{op}: input and boxes must be on the same device, but got input on {input.device} and "
        f"boxes on {rois.device}"))
    _check_output_size(op, pooled_h, pooled_w)
    _check_plane(op, input.shape[2], input.shape[3])


def check_backward(op: str, grad: Tensor, rois: Tensor, pooled_h, pooled_w, batch_size,
                   channels, height, width) -> None:
    torch._check(batch_size >= 0 and channels >= 0 and height >= 0 and width >= 0, lambda: (
        f"{op}: batch_size, channels, height and width must be non-negative, but got "
        f"{batch_size}, {channels}, {height}, {width}"))
    _check_output_size(op, pooled_h, pooled_w)
    torch._check(grad.dtype in _DTYPES, lambda: (
        f"{op}: expected a floating-point grad (float64, float32, float16 or bfloat16), but got "
        f"{dtype_name(grad.dtype)}"))
    _check_rois_shape(op, rois)
    torch._check(grad.dim() == 4 and grad.shape[0] == rois.shape[0] and grad.shape[1] == channels
                 and grad.shape[2] == pooled_h and grad.shape[3] == pooled_w, lambda: (
        f"{op}: expected grad of shape [K, channels, pooled_height, pooled_width] = "
        f"[{rois.shape[0]}, {channels}, {pooled_h}, {pooled_w}], but got {list(grad.shape)}"))
    torch._check(rois.dtype == grad.dtype, lambda: (
        f"{op}: grad and boxes must have the same dtype, but got grad {dtype_name(grad.dtype)} "
        f"and boxes {dtype_name(rois.dtype)}"))
    torch._check(rois.device == grad.device, lambda: (
        f"{op}: grad and boxes must be on the same device, but got grad on {grad.device} and "
        f"boxes on {rois.device}"))
    _check_plane(op, height, width)
