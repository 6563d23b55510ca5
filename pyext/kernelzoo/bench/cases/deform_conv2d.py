"""deform_conv2d against torchvision.ops.deform_conv2d, forward and backward.

The shapes of a deformable ResNet's stages (DCNv2: 3x3, with the modulation
mask): N=2, C=256 -> 256 at 28x28 (conv4-like), N=4, C=128 at 56x56 (conv3) and
N=2, C=512 at 14x14 (conv5). Offsets are random with a standard deviation of
two pixels, so that many samples fall between pixels and some off the map. The
`conv2d` baseline is torch's convolution of the same shape (no sampling): how
far the deformable one is from a regular convolution. The backward cases time
the gradients of every input from one forward (torch.autograd.grad with
retain_graph), for both libraries.
"""

import torch

from ... import ops
from ..registry import Bench, case, skip

_SHAPES = {"28": (2, 256, 28), "56": (4, 128, 56), "14": (2, 512, 14)}


def _torchvision():
    try:
        import torchvision.ops
    except ImportError:
        skip("torchvision is not installed (pip install torchvision)")
    return torchvision.ops


def _problem(device, dtype, quick, key):
    n, c, s = (1, 16, 9) if quick else _SHAPES[key]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, s, s, generator=g)
    w = torch.randn(c, c, 3, 3, generator=g) * (1.0 / (3 * c ** 0.5))
    off = torch.randn(n, 18, s, s, generator=g) * 2
    mask = torch.rand(n, 9, s, s, generator=g)
    b = torch.randn(c, generator=g)
    return [t.to(device, dtype) for t in (x, off, w, b, mask)]


def _flops(x, w):
    n, c, h, wd = x.shape
    return 2 * n * h * wd * w.shape[0] * c * 9


def _forward(device, dtype, quick, key):
    tv = _torchvision()
    x, off, w, b, mask = _problem(device, dtype, quick, key)
    return Bench(
        shape=f"N={x.shape[0]}, C={x.shape[1]} -> {w.shape[0]}, {x.shape[2]}x{x.shape[3]}, 3x3, "
              f"mask",
        ours=lambda: ops.deform_conv2d(x, off, w, b, 1, 1, 1, mask),
        peer=lambda: tv.deform_conv2d(x, off, w, b, 1, 1, 1, mask),
        peer_name="torchvision", flops=_flops(x, w),
        compare="close", rtol=1e-3, atol=1e-3,
        baselines={"conv2d": lambda: torch.nn.functional.conv2d(x, w, b, 1, 1)},
    )


def _backward(device, dtype, quick, key):
    tv = _torchvision()
    ins = [t.requires_grad_() for t in _problem(device, dtype, quick, key)]
    x, off, w, b, mask = ins
    g = torch.randn(x.shape[0], w.shape[0], x.shape[2], x.shape[3],
                    generator=torch.Generator().manual_seed(1)).to(device, dtype)
    out_ours = ops.deform_conv2d(x, off, w, b, 1, 1, 1, mask)
    out_peer = tv.deform_conv2d(x, off, w, b, 1, 1, 1, mask)
    conv = torch.nn.functional.conv2d(x, w, b, 1, 1)
    return Bench(
        shape=f"N={x.shape[0]}, C={x.shape[1]} -> {w.shape[0]}, {x.shape[2]}x{x.shape[3]}, 3x3, "
              f"mask; gradients of input, offset, weight, bias, mask",
        ours=lambda: torch.autograd.grad(out_ours, ins, g, retain_graph=True),
        peer=lambda: torch.autograd.grad(out_peer, ins, g, retain_graph=True),
        peer_name="torchvision", flops=2 * _flops(x, w),
        compare="close", rtol=1e-3, atol=1e-3,
        baselines={"conv2d": lambda: torch.autograd.grad(conv, (x, w, b), g, retain_graph=True)},
    )


@case("deform_conv2d", dtypes=("float32",))
def deform_conv2d_forward_28(device, dtype, quick):
    return _forward(device, dtype, quick, "28")


@case("deform_conv2d", dtypes=("float32",))
def deform_conv2d_backward_28(device, dtype, quick):
    return _backward(device, dtype, quick, "28")


@case("deform_conv2d", dtypes=("float32",))
def deform_conv2d_forward_56(device, dtype, quick):
    return _forward(device, dtype, quick, "56")


@case("deform_conv2d", dtypes=("float32",))
def deform_conv2d_backward_56(device, dtype, quick):
    return _backward(device, dtype, quick, "56")


@case("deform_conv2d", dtypes=("float32",))
def deform_conv2d_forward_14(device, dtype, quick):
    return _forward(device, dtype, quick, "14")


@case("deform_conv2d", dtypes=("float32",))
def deform_conv2d_backward_14(device, dtype, quick):
    return _backward(device, dtype, quick, "14")
