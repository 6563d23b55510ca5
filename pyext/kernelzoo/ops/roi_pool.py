"""roi_pool: RoIPool of Fast R-CNN (Girshick, 2015), as torchvision.ops.roi_pool."""

import torch
from torch import Tensor
from torch.jit.annotations import BroadcastingList2
from torch.overrides import handle_torch_function, has_torch_function_variadic

from ._roi import BoxesType, as_rois, check_backward, check_forward, dtype_name, pooled_size

__all__ = ["roi_pool"]


def roi_pool(input: Tensor, boxes: BoxesType, output_size: BroadcastingList2[int],
             spatial_scale: float = 1.0) -> Tensor:
    r"""Region-of-interest max pooling, as :func:`torchvision.ops.roi_pool`: same
    signature, same results.

    Each box is scaled by ``spatial_scale`` and rounded to whole pixels (at
    least 1x1), split into ``output_size`` bins with floor/ceil edges (clipped to
    the feature map), and each bin takes the maximum over its pixels; a bin
    wholly outside the map gives 0. As torchvision, the maximum starts from
    -FLT_MAX and is strict: NaN is never selected and the first pixel in
    row-major order wins ties.

    Args:
        input: ``(N, C, H, W)`` float64, float32, float16 or bfloat16, any layout.
        boxes: a ``Tensor[K, 5]`` of rows ``(batch_index, x1, y1, x2, y2)``, or a
            list of ``Tensor[L, 4]`` ``(x1, y1, x2, y2)``, one per image; same
            dtype and device as ``input``.
        output_size: ``int`` or ``(height, width)`` of the output bins (as
            :func:`roi_align`'s; 0 gives an empty output).
        spatial_scale: factor from box coordinates to feature-map coordinates.

    Returns:
        ``Tensor[K, C, output_size[0], output_size[1]]``, contiguous.

    Differentiable with respect to ``input`` (not ``boxes``), to any order: the
    op ``torch.ops.kernelzoo.roi_pool`` also returns the int32 argmax of each
    bin (non-differentiable), which the backward op
    ``torch.ops.kernelzoo._roi_pool_backward`` uses. The CPU backward is
    deterministic; on CUDA it adds with atomics, or, under
    ``torch.use_deterministic_algorithms(True)``, runs a deterministic gather.
    A batch index outside ``[0, N)`` raises an error on CPU; on CUDA it is not
    checked (that would need a synchronization) and such a box gives zeros.

    Scriptable, fx-traceable, exportable and compilable, with the errors of
    :func:`roi_align`.
    """
    if not torch.jit.is_scripting():
        # One call for torch.fx and other torch-function overrides, as roi_align.
        if has_torch_function_variadic(input, boxes):
            return handle_torch_function(roi_pool, (input, boxes), input, boxes, output_size,
                                         spatial_scale)
    rois = as_rois("roi_pool", boxes)
    ph, pw = pooled_size("roi_pool", output_size)
    output, _ = torch.ops.kernelzoo.roi_pool(input, rois, float(spatial_scale), ph, pw)
    return output


@torch.library.register_fake("kernelzoo::roi_pool")
def _roi_pool_fake(input, rois, spatial_scale, pooled_height, pooled_width):
    check_forward("roi_pool", input, rois, pooled_height, pooled_width)
    size = (rois.shape[0], input.shape[1], pooled_height, pooled_width)
    return input.new_empty(size), input.new_empty(size, dtype=torch.int32)


@torch.library.register_fake("kernelzoo::_roi_pool_backward")
def _roi_pool_backward_fake(grad, rois, argmax, spatial_scale, pooled_height, pooled_width,
                            batch_size, channels, height, width):
    op = "_roi_pool_backward"
    check_backward(op, grad, rois, pooled_height, pooled_width, batch_size, channels, height,
                   width)
    torch._check(argmax.dtype == torch.int32, lambda: (
        f"{op}: expected argmax of dtype int32 (the second output of roi_pool), but got "
        f"{dtype_name(argmax.dtype)}"))
    torch._check(argmax.shape == grad.shape, lambda: (
        f"{op}: expected argmax of the same shape as grad, {list(grad.shape)}, but got "
        f"{list(argmax.shape)}"))
    torch._check(argmax.device == grad.device, lambda: (
        f"{op}: grad and argmax must be on the same device, but got grad on {grad.device} and "
        f"argmax on {argmax.device}"))
    return grad.new_empty((batch_size, channels, height, width))


def _setup_context(ctx, inputs, output):
    input, rois, spatial_scale, pooled_h, pooled_w = inputs
    _, argmax = output
    ctx.mark_non_differentiable(argmax)
    ctx.save_for_backward(rois, argmax)
    ctx.args = (spatial_scale, pooled_h, pooled_w)
    ctx.input_shape = input.shape


def _backward(ctx, grad, _grad_argmax):
    if not ctx.needs_input_grad[0]:
        return (None,) * 5
    rois, argmax = ctx.saved_tensors
    scale, ph, pw = ctx.args
    n, c, h, w = ctx.input_shape
    grad_input = torch.ops.kernelzoo._roi_pool_backward.default(
        grad, rois, argmax, scale, ph, pw, n, c, h, w)
    return grad_input, None, None, None, None


# The backward adds grad[k, c, ph, pw] at input[b_k, c, argmax]: linear in grad,
# whose adjoint gathers the incoming gradient at the same places (plain torch
# ops, so it is itself differentiable and traceable).
def _backward_setup_context(ctx, inputs, output):
    grad, rois, argmax, *_ = inputs
    ctx.save_for_backward(rois, argmax)


def _gather_at_argmax(grad_input: Tensor, rois: Tensor, argmax: Tensor) -> Tensor:
    """The adjoint of ``_roi_pool_backward``: ``grad_input[b_k, c, argmax[k, c]]``
    for every bin, 0 where argmax is -1 (empty bins, and every bin of a box
    whose batch index is invalid: CUDA's forward gives such boxes -1)."""
    _, c, h, w = grad_input.shape
    if grad_input.numel() == 0 or argmax.numel() == 0:
        return grad_input.new_zeros(argmax.shape)
    valid = argmax >= 0
    batch = rois[:, 0].to(torch.int64)  # truncation toward zero, as the kernels
    planes = batch[:, None] * c + torch.arange(c, device=argmax.device)[None, :]  # (K, C)
    index = planes[:, :, None, None] * (h * w) + argmax.to(torch.int64)
    # Bins without an argmax may belong to a box with an out-of-range batch
    # index: point them at element 0 so that the gather stays in bounds.
    index = torch.where(valid, index, torch.zeros_like(index))
    gathered = grad_input.reshape(-1)[index]
    return torch.where(valid, gathered, torch.zeros_like(gathered))


def _backward_backward(ctx, grad_grad_input):
    if not ctx.needs_input_grad[0]:
        return (None,) * 10
    rois, argmax = ctx.saved_tensors
    return (_gather_at_argmax(grad_grad_input, rois, argmax),) + (None,) * 9


torch.library.register_autograd("kernelzoo::roi_pool", _backward, setup_context=_setup_context)
torch.library.register_autograd("kernelzoo::_roi_pool_backward", _backward_backward,
                                setup_context=_backward_setup_context)
