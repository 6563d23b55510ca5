"""roi_align: RoIAlign of Mask R-CNN (He et al., 2017), as torchvision.ops.roi_align."""

import torch
from torch import Tensor
from torch.jit.annotations import BroadcastingList2
from torch.overrides import handle_torch_function, has_torch_function_variadic

from ._roi import (BoxesType, as_rois, check_backward, check_forward, check_sampling_ratio,
                   pooled_size)

__all__ = ["roi_align"]


def roi_align(input: Tensor, boxes: BoxesType, output_size: BroadcastingList2[int],
              spatial_scale: float = 1.0, sampling_ratio: int = -1,
              aligned: bool = False) -> Tensor:
    r"""Region-of-interest align (average of bilinear samples), as
    :func:`torchvision.ops.roi_align`: same signature, same results.

    Each box is mapped onto the feature map (coordinates times ``spatial_scale``,
    minus half a pixel when ``aligned``), split into ``output_size`` bins, and
    each bin takes the average of a ``sampling_ratio x sampling_ratio`` grid of
    bilinear samples (adaptive, ``ceil(box size / output size)`` per axis, when
    ``sampling_ratio <= 0``). Samples more than one pixel outside the map count
    as zero; those within one pixel are clamped to the border.

    Args:
        input: ``(N, C, H, W)`` float64, float32, float16 or bfloat16, any layout
            (contiguous, channels_last, strided). float16/bfloat16 accumulate
            in float32.
        boxes: a ``Tensor[K, 5]`` of rows ``(batch_index, x1, y1, x2, y2)``, or a
            list of ``Tensor[L, 4]`` ``(x1, y1, x2, y2)``, one per image; same
            dtype and device as ``input``.
        output_size: ``int`` or ``(height, width)`` of the output bins (of a
            longer sequence the first two are used, as by torchvision); 0 gives
            an empty output.
        spatial_scale: factor from box coordinates to feature-map coordinates.
        sampling_ratio: samples per bin and axis; ``<= 0``: adaptive.
        aligned: shift boxes by -0.5 pixel (Detectron2); ``False`` also forces
            boxes to be at least 1x1.

    Returns:
        ``Tensor[K, C, output_size[0], output_size[1]]``, contiguous (as
        torchvision, whatever the input's layout).

    Differentiable with respect to ``input`` (not ``boxes``), to any order: the
    backward is the op ``torch.ops.kernelzoo._roi_align_backward``, itself
    differentiable (its gradient is roi_align again). The CPU backward is
    deterministic; on CUDA the backward adds with atomics, or, under
    ``torch.use_deterministic_algorithms(True)``, runs a deterministic gather.

    A batch index outside ``[0, N)`` (it is truncated toward zero, as
    torchvision does) raises an error on CPU. On CUDA, checking would need a
    device-to-host synchronization, so it is not checked: such a box gives zeros
    and receives no gradient (torchvision reads out of bounds there).

    Works wherever torchvision's does: ``torch.jit.script`` (of the function and
    of :class:`kernelzoo.nn.RoIAlign`), ``torch.fx`` tracing (the call is one
    node, however the function was imported), ``torch.export`` and
    ``torch.compile(fullgraph=True)``. Malformed boxes raise
    :class:`~kernelzoo.ops._roi.BoxesError` (a RuntimeError that is also the
    AssertionError, IndexError or ValueError torchvision raises for them) or
    :class:`~kernelzoo.ops._roi.BoxesTypeError` (a TypeError, also
    AssertionError and AttributeError); an ``output_size`` of fewer than two
    entries raises IndexError, as torchvision's.
    """
    if not torch.jit.is_scripting():
        # Tensor-likes that override torch functions (torch.fx's Proxy among
        # them) see this call as one call: fx records one node for it.
        if has_torch_function_variadic(input, boxes):
            return handle_torch_function(roi_align, (input, boxes), input, boxes, output_size,
                                         spatial_scale, sampling_ratio, aligned)
    rois = as_rois("roi_align", boxes)
    ph, pw = pooled_size("roi_align", output_size)
    if not torch.jit.is_scripting():
        check_sampling_ratio("roi_align", sampling_ratio)
    return torch.ops.kernelzoo.roi_align(input, rois, float(spatial_scale), ph, pw,
                                         int(sampling_ratio), bool(aligned))


@torch.library.register_fake("kernelzoo::roi_align")
def _roi_align_fake(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio,
                    aligned):
    check_forward("roi_align", input, rois, pooled_height, pooled_width)
    check_sampling_ratio("roi_align", sampling_ratio)
    return input.new_empty((rois.shape[0], input.shape[1], pooled_height, pooled_width))


@torch.library.register_fake("kernelzoo::_roi_align_backward")
def _roi_align_backward_fake(grad, rois, spatial_scale, pooled_height, pooled_width, batch_size,
                             channels, height, width, sampling_ratio, aligned):
    check_backward("_roi_align_backward", grad, rois, pooled_height, pooled_width, batch_size,
                   channels, height, width)
    check_sampling_ratio("_roi_align_backward", sampling_ratio)
    return grad.new_empty((batch_size, channels, height, width))


def _setup_context(ctx, inputs, output):
    input, rois, spatial_scale, pooled_h, pooled_w, sampling_ratio, aligned = inputs
    ctx.save_for_backward(rois)
    ctx.args = (spatial_scale, pooled_h, pooled_w, sampling_ratio, aligned)
    ctx.input_shape = input.shape


def _backward(ctx, grad):
    if not ctx.needs_input_grad[0]:
        return (None,) * 7
    (rois,) = ctx.saved_tensors
    scale, ph, pw, sampling_ratio, aligned = ctx.args
    n, c, h, w = ctx.input_shape
    grad_input = torch.ops.kernelzoo._roi_align_backward.default(
        grad, rois, scale, ph, pw, n, c, h, w, sampling_ratio, aligned)
    return grad_input, None, None, None, None, None, None


# The backward is linear in grad and is the adjoint of the forward: its own
# gradient with respect to grad is roi_align of the incoming gradient.
def _backward_setup_context(ctx, inputs, output):
    grad, rois, scale, ph, pw, _n, _c, _h, _w, sampling_ratio, aligned = inputs
    ctx.save_for_backward(rois)
    ctx.args = (scale, ph, pw, sampling_ratio, aligned)


def _backward_backward(ctx, grad_grad_input):
    if not ctx.needs_input_grad[0]:
        return (None,) * 11
    (rois,) = ctx.saved_tensors
    scale, ph, pw, sampling_ratio, aligned = ctx.args
    grad_grad = torch.ops.kernelzoo.roi_align.default(grad_grad_input, rois, scale, ph, pw,
                                                      sampling_ratio, aligned)
    return (grad_grad,) + (None,) * 10


torch.library.register_autograd("kernelzoo::roi_align", _backward, setup_context=_setup_context)
torch.library.register_autograd("kernelzoo::_roi_align_backward", _backward_backward,
                                setup_context=_backward_setup_context)
