"""Quantized tensors, as the peers take them: pixel_shuffle / pixel_unshuffle of
per-tensor affine quantized tensors (torch), roi_align of a quantized feature
map with quantized boxes (torchvision)."""

import pytest
import torch
import torch.nn.functional as F

from kernelzoo import ops

# torch deprecates its quantized dtypes; the peers still take them.
pytestmark = pytest.mark.filterwarnings("ignore:.*quantized tensor creation.*:UserWarning")

QDTYPES = [torch.quint8, torch.qint8, torch.qint32]


def quantized(shape, qdtype, scale=0.05, zero_point=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g)
    return torch.quantize_per_tensor(x, scale, zero_point if qdtype != torch.qint8 else -2, qdtype)


def assert_same_quantized(got, want):
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.qscheme() == want.qscheme()
    assert got.q_scale() == want.q_scale() and got.q_zero_point() == want.q_zero_point()
    assert torch.equal(got.int_repr(), want.int_repr())


@pytest.mark.parametrize("qdtype", QDTYPES)
@pytest.mark.parametrize("shape,r", [((1, 8, 3, 5), 2), ((2, 9, 4, 2), 3), ((12, 2, 2), 2),
                                     ((2, 1, 4, 3, 3), 2), ((1, 4, 1, 1), 2)])
def test_quantized_pixel_shuffle_matches_torch(qdtype, shape, r):
    q = quantized(shape, qdtype)
    assert_same_quantized(ops.pixel_shuffle(q, r), F.pixel_shuffle(q, r))
    hi = F.pixel_shuffle(q, r)
    assert_same_quantized(ops.pixel_unshuffle(hi, r), F.pixel_unshuffle(hi, r))


def test_quantized_pixel_shuffle_layouts():
    q = quantized((2, 8, 5, 3), torch.quint8).contiguous(memory_format=torch.channels_last)
    got = ops.pixel_shuffle(q, 2)
    assert torch.equal(got.int_repr(), F.pixel_shuffle(q, 2).int_repr())
    # every layout gives the same values; a strided view too
    strided = quantized((2, 8, 5, 6), torch.quint8)[..., ::2]
    assert torch.equal(ops.pixel_shuffle(strided, 2).int_repr(),
                       F.pixel_shuffle(strided.contiguous(), 2).int_repr())


def test_quantized_pixel_shuffle_empty():
    q = quantized((0, 8, 3, 3), torch.quint8)
    out = ops.pixel_shuffle(q, 2)
    assert out.shape == (0, 2, 6, 6) and out.is_quantized and out.q_scale() == q.q_scale()


def test_per_channel_quantized_pixel_shuffle_is_rejected():
    q = torch.quantize_per_channel(torch.rand(1, 4, 3, 3), torch.tensor([0.1, 0.2, 0.3, 0.4]),
                                   torch.tensor([0, 0, 0, 0]), 1, torch.quint8)
    with pytest.raises(RuntimeError, match="supports per-tensor affine quantized tensors only"):
        ops.pixel_shuffle(q, 2)
