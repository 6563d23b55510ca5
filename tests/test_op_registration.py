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


def _flash_inputs():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 5, 4, 8, generator=g)
    k = torch.randn(2, 7, 2, 8, generator=g)
    v = torch.randn(2, 7, 2, 8, generator=g)
    return q, k, v


def _flash_attn_forward_samples():
    q, k, v = _flash_inputs()
    yield q.requires_grad_(), k.requires_grad_(), v, None, None, 5, 7, 0.0, 0.35, -1, 0, 0.0, \
        None, False, None, 0
    cu = torch.tensor([0, 2, 5], dtype=torch.int32)
    yield q[0], k[0, :5], v[0, :5], cu, cu, 3, 3, 0.2, 0.35, 2, -1, 3.0, \
        torch.rand(4), True, torch.tensor(17), 0


def _flash_attn_backward_samples():
    q, k, v = (t.double() for t in _flash_inputs())
    out, lse, _ = torch.ops.kernelzoo.flash_attn_forward(q, k, v, None, None, 5, 7, 0.0, 0.35,
                                                         -1, 0, 0.0, None, False, None, 0)
    yield torch.randn_like(out), q, k, v, out, lse, None, None, 5, 7, 0.0, 0.35, -1, 0, 0.0, \
        None, False, None, 0


def _flash_attn_kvcache_samples():
    q, k, v = _flash_inputs()
    kc, vc = torch.zeros(3, 9, 2, 8), torch.zeros(3, 9, 2, 8)
    yield q[:, :1], kc, vc, k[:, :1], v[:, :1], torch.tensor([2, 4], dtype=torch.int32), \
        torch.tensor([2, 0], dtype=torch.int32), 0.35, -1, 0, 0.0, None


def _scan_args(init=False):
    g = torch.Generator().manual_seed(0)
    u, delta, z = (torch.randn(2, 6, 70, generator=g) for _ in range(3))
    A = -torch.rand(6, 3, generator=g)
    B, C = torch.randn(2, 2, 3, 70, generator=g), torch.randn(6, 3, generator=g)
    D, bias = torch.randn(6, generator=g), torch.randn(6, generator=g)
    h0 = torch.randn(2, 6, 3, generator=g) if init else None
    return u, delta.abs(), A, B, C, D, z, bias, True, h0, None


def _selective_scan_forward_samples():
    yield tuple(a.requires_grad_() if isinstance(a, torch.Tensor) else a for a in _scan_args(True))
    u, delta, A, B, C, *_ = _scan_args()
    cu = torch.tensor([0, 30, 70], dtype=torch.int32)
    yield u[:1], delta[:1], A, B[:1, 0], C, None, None, None, False, None, cu


def _selective_scan_backward_samples():
    args = _scan_args(True)
    out, last, ckpt = torch.ops.kernelzoo.selective_scan_forward(*args)
    yield (torch.randn_like(out), torch.randn_like(last), *args[:10], args[10], ckpt)


def _selective_state_update_samples():
    g = torch.Generator().manual_seed(0)
    yield (torch.randn(2, 6, 3, generator=g), torch.randn(2, 6, generator=g),
           torch.rand(2, 6, generator=g), -torch.rand(6, 3, generator=g),
           torch.randn(2, 3, generator=g), torch.randn(2, 3, generator=g), None, None, None, True)


def _deform_args():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 6, 5, generator=g)
    w = torch.randn(6, 2, 3, 3, generator=g)
    off = torch.randn(2, 36, 6, 5, generator=g)
    mask = torch.rand(2, 18, 6, 5, generator=g)
    return x, w, off, mask, torch.randn(6, generator=g), 1, 1, 1, 1, 1, 1, 2, 2


def _deform_conv2d_samples():
    yield tuple(a.requires_grad_() if isinstance(a, torch.Tensor) else a for a in _deform_args())
    x, w, off, mask, b, *rest = _deform_args()
    yield (x, w[:, :, :1, :2], off[:, :8, :3, :4], None, None, 2, 1, 0, 0, 1, 1, 2, 2)


def _deform_conv2d_backward_samples():
    args = _deform_args()
    out = torch.ops.kernelzoo.deform_conv2d(*args)
    yield (torch.randn_like(out), *args)


SAMPLES = {
    "deform_conv2d": _deform_conv2d_samples,
    "_deform_conv2d_backward": _deform_conv2d_backward_samples,
    "selective_scan_forward": _selective_scan_forward_samples,
    "_selective_scan_backward": _selective_scan_backward_samples,
    "selective_state_update": _selective_state_update_samples,
    "flash_attn_forward": _flash_attn_forward_samples,
    "_flash_attn_backward": _flash_attn_backward_samples,
    "flash_attn_kvcache": _flash_attn_kvcache_samples,
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
