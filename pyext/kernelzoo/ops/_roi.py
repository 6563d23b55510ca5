"""Argument handling shared by roi_align and roi_pool: the boxes formats, the
output size, and the checks of the fake kernels, which mirror
csrc/ops/roi/roi.cpp message for message (so eager, meta and torch.compile
users get the same errors).

:func:`as_rois` and :func:`pooled_size` are also compiled by TorchScript (the
public functions are scriptable, as torchvision's are).
"""

import collections.abc
from typing import List, Tuple, Union

import torch
from torch import Tensor

from ._args import int_value, is_integer, type_name

# As torchvision's: TorchScript takes a Tensor or a List[Tensor]; eager mode
# also takes a tuple of tensors.
BoxesType = Union[Tensor, List[Tensor]]

_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
_MAX_INT = 2 ** 31 - 1


class BoxesError(RuntimeError, AssertionError, IndexError, ValueError):
    """Malformed boxes. A RuntimeError, as kernelzoo's other argument errors, and
    also each type torchvision raises for malformed boxes: AssertionError (its
    shape assert), IndexError (a 0-d or 1-d tensor) and ValueError (an empty
    list), so that code written against torchvision catches it."""


class BoxesTypeError(TypeError, AssertionError, AttributeError):
    """Boxes of the wrong type. A TypeError, and also what torchvision raises for
    them: AssertionError (neither a Tensor nor a list) and AttributeError (a
    list entry that is not a Tensor)."""


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _rois_shape_message(op: str, shape: List[int]) -> str:
    return (f"{op}: expected boxes as a Tensor[K, 5] of rows (batch_index, x1, y1, x2, y2), but "
            f"got a tensor of shape {shape}")


def as_rois(op: str, boxes: BoxesType) -> Tensor:
    """``boxes`` as the ops' Tensor[K, 5] of rows (batch_index, x1, y1, x2, y2).

    A Tensor must be a Tensor[K, 5]; a list or tuple of Tensor[L, 4], one per
    image, is converted as torchvision converts it: the boxes concatenated in
    order, each prefixed with its image's index. Malformed boxes raise
    :class:`BoxesError` or :class:`BoxesTypeError`. Plain raises rather than
    torch._check: these are checks of static properties, traceable by
    torch.compile (fullgraph) and torch.export as they are.
    """
    if isinstance(boxes, Tensor):
        if boxes.dim() == 2 and boxes.shape[1] == 5:
            return boxes
        # Scripted, a 0-d or 1-d tensor is left to the op, whose check raises
        # RuntimeError with the same message: torchvision's scripted function
        # raises RuntimeError there too (indexing its size(1)), and a scripted
        # raise would be a torch.jit.Error.
        if not (torch.jit.is_scripting() and boxes.dim() < 2):
            raise BoxesError(_rois_shape_message(op, list(boxes.shape)))
        return boxes
    else:
        if not torch.jit.is_scripting():
            if not isinstance(boxes, (list, tuple)):
                raise BoxesTypeError(
                    f"{op}: boxes must be a Tensor[K, 5] or a list of Tensor[L, 4] (one per "
                    f"image), but got {type_name(boxes)}")
        if len(boxes) == 0:
            raise BoxesError(f"{op}: boxes is an empty list; pass one Tensor[L, 4] per image (L "
                             "may be 0), or a Tensor[K, 5]")
        for i, b in enumerate(boxes):
            if not torch.jit.is_scripting():
                if not isinstance(b, Tensor):
                    raise BoxesTypeError(f"{op}: boxes[{i}] must be a Tensor[L, 4], but got "
                                         f"{type_name(b)}")
            if torch.jit.is_scripting():
                # size(1) of a 0-d or 1-d tensor raises RuntimeError, as it does
                # in torchvision's scripted function.
                bad = b.size(1) != 4 or b.dim() != 2
            else:
                bad = b.dim() != 2 or b.shape[1] != 4
            if bad:
                raise BoxesError(f"{op}: expected boxes[{i}] to be a Tensor[L, 4] of (x1, y1, x2, "
                                 f"y2), but got a tensor of shape {list(b.shape)}")
        coords = boxes[0] if len(boxes) == 1 else torch.cat(boxes, dim=0)
        ids = [torch.full_like(b[:, :1], i) for i, b in enumerate(boxes)]
        index = ids[0] if len(ids) == 1 else torch.cat(ids, dim=0)
        return torch.cat([index, coords], dim=1)


def pooled_size(op: str, output_size: List[int]) -> Tuple[int, int]:
    """``output_size`` as (pooled_height, pooled_width), taken as torchvision
    takes it: an int, or a sequence whose first two entries are used.

    A sequence of fewer than two entries raises IndexError, entries that are
    not ints RuntimeError (torchvision's types for them), with a message that
    says what is expected; sizes the kernels cannot hold raise the op's own
    message (RuntimeError). TorchScript has checked the types already.
    """
    if torch.jit.is_scripting():
        return output_size[0], output_size[1]
    return _checked_pooled_size(op, output_size)


def _checked_pooled_size(op: str, output_size) -> Tuple[int, int]:
    if isinstance(output_size, (tuple, list)):
        size = tuple(output_size)
    elif is_integer(output_size, allow_bool=True):
        size = (output_size, output_size)
    elif isinstance(output_size, collections.abc.Iterable) and not isinstance(output_size, Tensor):
        size = tuple(output_size)
    else:
        size = None
    message = (f"{op}: output_size must be an int or a pair of ints (height, width), but got "
               f"{output_size!r}")
    if size is not None and len(size) < 2:
        raise IndexError(message)
    if size is None or not all(is_integer(s, allow_bool=True) for s in size[:2]):
        raise RuntimeError(message)
    ph, pw = int_value(size[0]), int_value(size[1])
    _check_output_size(op, ph, pw)
    return ph, pw


def _check_rois_shape(op: str, rois: Tensor) -> None:
    torch._check(rois.dim() == 2 and rois.shape[1] == 5,
                 lambda: _rois_shape_message(op, list(rois.shape)))


def _check_plane(op: str, height, width) -> None:
    torch._check(height * width <= _MAX_INT, lambda: (
        f"{op}: feature maps of more than 2^31 - 1 pixels (H * W) are not supported, but got "
        f"H={height}, W={width}"))


def _check_output_size(op: str, pooled_h, pooled_w) -> None:
    # 0 is allowed, as by torchvision: the output is empty.
    torch._check(pooled_h >= 0 and pooled_w >= 0, lambda: (
        f"{op}: output_size must be non-negative, but got ({pooled_h}, {pooled_w})"))
    torch._check(pooled_h <= _MAX_INT and pooled_w <= _MAX_INT, lambda: (
        f"{op}: output_size must be at most 2^31 - 1, but got ({pooled_h}, {pooled_w})"))


# The largest sampling ratio (csrc/ops/roi/roi_math.h: kMaxSamplingRatio).
MAX_SAMPLING_RATIO = 1024


def check_sampling_ratio(op: str, sampling_ratio: int) -> None:
    torch._check(sampling_ratio <= MAX_SAMPLING_RATIO, lambda: (
        f"{op}: sampling_ratio must be at most {MAX_SAMPLING_RATIO} (samples per bin and axis; "
        f"0 or less: adaptive), but got {sampling_ratio}"))


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
