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


# --- roi_align ------------------------------------------------------------------------

try:
    import torchvision.ops as tv_ops
except ImportError:
    tv_ops = None
needs_torchvision = pytest.mark.skipif(tv_ops is None, reason="torchvision is not installed")


def quantized_boxes(k, height, width, qdtype=torch.quint8, scale=0.125, seed=0, image=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(k, 2, generator=g) * torch.tensor([width * 0.7, height * 0.7])
    wh = 1 + torch.rand(k, 2, generator=g) * torch.tensor([width * 0.5, height * 0.5])
    boxes = torch.cat([torch.full((k, 1), float(image)), xy, xy + wh], 1)
    return torch.quantize_per_tensor(boxes, scale, 0, qdtype)


@needs_torchvision
@pytest.mark.parametrize("qdtype", [torch.quint8, torch.qint8])
@pytest.mark.parametrize("sampling_ratio,aligned", [(2, False), (-1, True), (1, False)])
def test_quantized_roi_align_matches_torchvision(qdtype, sampling_ratio, aligned):
    x = quantized((1, 5, 12, 15), qdtype, scale=0.04, zero_point=10)
    boxes = quantized_boxes(9, 12, 15, qdtype, scale=0.25)  # torchvision: the same qdtype
    got = ops.roi_align(x, boxes, (3, 2), 0.5, sampling_ratio, aligned)
    want = tv_ops.roi_align(x, boxes, (3, 2), 0.5, sampling_ratio, aligned)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.q_scale() == want.q_scale() and got.q_zero_point() == want.q_zero_point()
    # the same float math up to summation order: a value on a rounding boundary
    # may land one quantum apart
    diff = (got.int_repr().int() - want.int_repr().int()).abs()
    assert diff.max() <= 1 and (diff == 0).float().mean() > 0.97


@needs_torchvision
def test_quantized_roi_align_takes_any_batch():
    """torchvision allows one image per quantized batch; each image of a batch
    gives what it gives alone."""
    x = quantized((2, 3, 10, 11), torch.quint8, scale=0.05, zero_point=7)
    b0, b1 = quantized_boxes(4, 10, 11, seed=1, image=0), quantized_boxes(3, 10, 11, seed=2, image=1)
    boxes = torch.quantize_per_tensor(torch.cat([b0.dequantize(), b1.dequantize()]), 0.125, 0,
                                      torch.quint8)
    got = ops.roi_align(x, boxes, 2, 1.0, 2)
    alone0 = tv_ops.roi_align(x[:1], b0, 2, 1.0, 2)
    b1_as_0 = torch.quantize_per_tensor(b1.dequantize() - torch.tensor([1.0, 0, 0, 0, 0]), 0.125, 0,
                                        torch.quint8)
    alone1 = tv_ops.roi_align(torch.quantize_per_tensor(x[1:].dequantize(), 0.05, 7, torch.quint8),
                              b1_as_0, 2, 1.0, 2)
    want = torch.cat([alone0.int_repr(), alone1.int_repr()])
    assert (got.int_repr().int() - want.int()).abs().max() <= 1


def test_quantized_roi_align_needs_quantized_boxes():
    x = quantized((1, 2, 6, 6), torch.quint8)
    boxes = torch.tensor([[0.0, 1.0, 1.0, 4.0, 4.0]])
    with pytest.raises(ValueError, match="if input is quantized, boxes must also be quantized"):
        ops.roi_align(x, boxes, 2)
