"""roi_align / roi_pool against torchvision.ops, forward and backward.

The workload of a Faster R-CNN box head: FPN-like features (2, 256, 64, 64) of
a 1024x1024 image pair (spatial_scale 1/16), 512 boxes of 32 to 512 pixels,
7x7 output, sampling_ratio 2. The backward cases time only the backward ops
(torch.ops.kernelzoo._roi_*_backward against torch.ops.torchvision._roi_*_backward)
on the same gradient; roi_pool's backward gets the argmax that each library's
own forward returned (they are equal: checked first).
"""

import torch

from ..registry import Bench, case, skip

_SCALE = 1.0 / 16


def _torchvision():
    try:
        import torchvision  # noqa: F401
    except ImportError:
        skip("torchvision is not installed (pip install torchvision)")
    return torch.ops.torchvision


def _problem(device, dtype, quick, channels_last=False):
    n, c, h, w, k = (2, 16, 16, 16, 32) if quick else (2, 256, 64, 64, 512)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, h, w, generator=g).to(device, dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    image = h / _SCALE
    size = torch.rand(k, 2, generator=g) * (image / 2 - 32) + 32
    corner = torch.rand(k, 2, generator=g) * (image - size)
    batch = torch.randint(0, n, (k, 1), generator=g).float()
    rois = torch.cat([batch, corner, corner + size], dim=1).to(device, dtype)
    return x, rois


def _shape(x, rois, extra=""):
    layout = " channels_last" if x.is_contiguous(memory_format=torch.channels_last) and \
        not x.is_contiguous() else ""
    return f"{tuple(x.shape)}{layout}, {rois.shape[0]} boxes, 7x7{extra}"


def _align_close(dtype):
    # float32: summation order differs (kernelzoo merges samples that share a
    # pixel row or column); float16 on CUDA: both accumulate in float32.
    return (1e-4, 1e-4) if dtype == torch.float32 else (1e-2, 1e-2)


@case("roi_align", dtypes=("float32",))
def roi_align_forward(device, dtype, quick):
    tv = _torchvision()
    x, rois = _problem(device, dtype, quick)
    rtol, atol = _align_close(dtype)
    return Bench(
        shape=_shape(x, rois, ", sampling_ratio 2"),
        ours=lambda: torch.ops.kernelzoo.roi_align(x, rois, _SCALE, 7, 7, 2, False),
        peer=lambda: tv.roi_align(x, rois, _SCALE, 7, 7, 2, False),
        peer_name="torchvision",
        bytes=x.numel() * x.element_size() + rois.shape[0] * x.shape[1] * 49 * x.element_size(),
        compare="close", rtol=rtol, atol=atol,
    )


@case("roi_align", dtypes=("float32",))
def roi_align_forward_channels_last(device, dtype, quick):
    tv = _torchvision()
    x, rois = _problem(device, dtype, quick, channels_last=True)
    rtol, atol = _align_close(dtype)
    return Bench(
        shape=_shape(x, rois, ", sampling_ratio 2"),
        ours=lambda: torch.ops.kernelzoo.roi_align(x, rois, _SCALE, 7, 7, 2, False),
        peer=lambda: tv.roi_align(x, rois, _SCALE, 7, 7, 2, False),
        peer_name="torchvision",
        compare="close", rtol=rtol, atol=atol,
    )


@case("roi_align", dtypes=("float32",))
def roi_align_forward_adaptive_aligned(device, dtype, quick):
    tv = _torchvision()
    x, rois = _problem(device, dtype, quick)
    rtol, atol = _align_close(dtype)
    return Bench(
        shape=_shape(x, rois, ", adaptive sampling, aligned"),
        ours=lambda: torch.ops.kernelzoo.roi_align(x, rois, _SCALE, 7, 7, -1, True),
        peer=lambda: tv.roi_align(x, rois, _SCALE, 7, 7, -1, True),
        peer_name="torchvision",
        compare="close", rtol=rtol, atol=atol,
    )


@case("roi_align", dtypes=("float32",))
def roi_align_backward(device, dtype, quick):
    tv = _torchvision()
    x, rois = _problem(device, dtype, quick)
    n, c, h, w = x.shape
    grad = torch.randn(rois.shape[0], c, 7, 7, generator=torch.Generator().manual_seed(1)).to(
        device, dtype)
    args = (_SCALE, 7, 7, n, c, h, w, 2, False)
    return Bench(
        shape=_shape(x, rois, ", sampling_ratio 2, backward"),
        ours=lambda: torch.ops.kernelzoo._roi_align_backward(grad, rois, *args),
        peer=lambda: tv._roi_align_backward(grad, rois, *args),
        peer_name="torchvision",
        bytes=grad.numel() * grad.element_size() + x.numel() * x.element_size(),
        compare="close", rtol=1e-4, atol=1e-4,
    )


@case("roi_pool", dtypes=("float32",))
def roi_pool_forward(device, dtype, quick):
    tv = _torchvision()
    x, rois = _problem(device, dtype, quick)
    return Bench(
        shape=_shape(x, rois),
        ours=lambda: torch.ops.kernelzoo.roi_pool(x, rois, _SCALE, 7, 7),
        peer=lambda: tv.roi_pool(x, rois, _SCALE, 7, 7),  # (output, argmax): both compared
        peer_name="torchvision",
        bytes=x.numel() * x.element_size() + rois.shape[0] * x.shape[1] * 49 * (x.element_size() + 4),
        compare="exact",
    )


@case("roi_pool", dtypes=("float32",))
def roi_pool_backward(device, dtype, quick):
    tv = _torchvision()
    x, rois = _problem(device, dtype, quick)
    n, c, h, w = x.shape
    _, ours_argmax = torch.ops.kernelzoo.roi_pool(x, rois, _SCALE, 7, 7)
    _, peer_argmax = tv.roi_pool(x, rois, _SCALE, 7, 7)
    if not torch.equal(ours_argmax, peer_argmax):
        raise AssertionError("kernelzoo's and torchvision's roi_pool argmax differ")
    grad = torch.randn(rois.shape[0], c, 7, 7, generator=torch.Generator().manual_seed(1)).to(
        device, dtype)
    args = (_SCALE, 7, 7, n, c, h, w)
    return Bench(
        shape=_shape(x, rois, ", backward"),
        ours=lambda: torch.ops.kernelzoo._roi_pool_backward(grad, rois, ours_argmax, *args),
        peer=lambda: tv._roi_pool_backward(grad, rois, peer_argmax, *args),
        peer_name="torchvision",
        bytes=grad.numel() * (grad.element_size() + 4) + x.numel() * x.element_size(),
        # the same sums in another order (kernelzoo: per roi, torchvision: per channel)
        compare="close", rtol=1e-5, atol=1e-5,
    )
