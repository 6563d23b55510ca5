"""Every operator in ``torch.ops.kernelzoo``: its kernels (CPU, CUDA or the
CPU-only build's stub, Meta, Autograd) and ``torch.library.opcheck``. A new op
fails here until it has all four kernels and opcheck samples below (its own
test file checks it in depth)."""

import pytest
import torch

from kernelzoo._dispatch import op_names
from ophelpers import check_backends, opcheck


def _roi_inputs(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 6, 7, generator=g, dtype=dtype)
    rois = torch.tensor([[0, 0.5, 1.0, 4.0, 5.5], [1, 2.0, 0.0, 6.5, 3.0], [1, 1.0, 1.0, 1.5, 2.0]],
                        dtype=dtype)
    return x, rois


def _roi_align_samples():
    x, rois = _roi_inputs()
    yield x.requires_grad_(), rois, 0.5, 2, 3, 2, True
    yield x.contiguous(memory_format=torch.channels_last), rois, 1.0, 3, 2, -1, False


def _roi_pool_samples():
    x, rois = _roi_inputs()
    yield x.requires_grad_(), rois, 0.5, 2, 3
    yield x.to(torch.float64), rois.double(), 1.0, 3, 2


def _roi_align_backward_samples():
    _, rois = _roi_inputs(torch.float64)
    grad = torch.randn(3, 3, 2, 3, dtype=torch.float64, requires_grad=True)
    yield grad, rois, 0.5, 2, 3, 2, 3, 6, 7, 2, True


def _roi_pool_backward_samples():
    x, rois = _roi_inputs(torch.float64)
    _, argmax = torch.ops.kernelzoo.roi_pool(x, rois, 0.5, 2, 3)
    grad = torch.randn(3, 3, 2, 3, dtype=torch.float64, requires_grad=True)
    yield grad, rois, argmax, 0.5, 2, 3, 2, 3, 6, 7


def _pixel_shuffle_samples():
    yield torch.randn(2, 8, 3, 5, requires_grad=True), 2
    yield torch.randn(2, 3, 4, 3, 5), 1


def _pixel_unshuffle_samples():
    yield torch.randn(2, 2, 6, 10, requires_grad=True), 2
    yield torch.randn(2, 2, 6, 10).contiguous(memory_format=torch.channels_last), 2


SAMPLES = {
    "roi_align": _roi_align_samples,
    "roi_pool": _roi_pool_samples,
    "_roi_align_backward": _roi_align_backward_samples,
    "_roi_pool_backward": _roi_pool_backward_samples,
    "pixel_shuffle": _pixel_shuffle_samples,
    "pixel_unshuffle": _pixel_unshuffle_samples,
}


def test_every_op_has_opcheck_samples():
    assert op_names(), "no kernelzoo op is registered"
    assert sorted(SAMPLES) == op_names()


@pytest.mark.parametrize("name", op_names())
def test_kernels(name):
    check_backends(name)


@pytest.mark.parametrize("name", op_names())
def test_opcheck(name):
    if name not in SAMPLES:
        pytest.fail(f"{name} has no opcheck samples in {__name__}.SAMPLES")
    op = getattr(torch.ops.kernelzoo, name).default
    for args in SAMPLES[name]():
        opcheck(op, args)
