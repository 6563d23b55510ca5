"""pixel_shuffle / pixel_unshuffle against torch.nn.functional, plus a plain copy
of the same bytes: a permutation cannot beat the copy, so `x copy` shows how far
from the memory-bandwidth limit each kernel is."""

import torch
import torch.nn.functional as F

from ... import ops
from ..registry import Bench, case

DTYPES = ("float32", "float16", "uint8")


def _make(device, dtype, shape):
    if dtype.is_floating_point:
        return torch.randn(shape, device=device, dtype=dtype)
    return torch.randint(0, 100, shape, device=device).to(dtype)


def _bench(x, r, shuffle: bool, layout: str) -> Bench:
    ours = ops.pixel_shuffle if shuffle else ops.pixel_unshuffle
    peer = F.pixel_shuffle if shuffle else F.pixel_unshuffle
    dst = torch.empty_like(x)
    return Bench(
        shape=f"{tuple(x.shape)} r={r} {layout}",
        ours=lambda: ours(x, r),
        peer=lambda: peer(x, r),
        peer_name="torch",
        bytes=2 * x.numel() * x.element_size(),
        compare="exact",
        baselines={"copy": lambda: dst.copy_(x)},
    )


def _shape(quick, lo: bool):
    n, c, h, w = (2, 16, 16, 16) if quick else (8, 256, 64, 64)
    return (n, c, h, w) if lo else (n, c // 4, h * 2, w * 2)


@case("pixel_shuffle", dtypes=DTYPES)
def pixel_shuffle_contiguous(device, dtype, quick):
    return _bench(_make(device, dtype, _shape(quick, True)), 2, True, "contiguous")


@case("pixel_shuffle", dtypes=DTYPES)
def pixel_shuffle_channels_last(device, dtype, quick):
    x = _make(device, dtype, _shape(quick, True)).contiguous(memory_format=torch.channels_last)
    return _bench(x, 2, True, "channels_last")


@case("pixel_unshuffle", dtypes=DTYPES)
def pixel_unshuffle_contiguous(device, dtype, quick):
    return _bench(_make(device, dtype, _shape(quick, False)), 2, False, "contiguous")


@case("pixel_unshuffle", dtypes=DTYPES)
def pixel_unshuffle_channels_last(device, dtype, quick):
    x = _make(device, dtype, _shape(quick, False)).contiguous(memory_format=torch.channels_last)
    return _bench(x, 2, False, "channels_last")
