"""roi_align / roi_pool against torchvision and the plain-PyTorch reference:
forward and backward over random inputs, every dtype, both box formats,
aligned on/off, several sampling ratios and output sizes, edge cases
(zero boxes, boxes outside the map, degenerate boxes, empty inputs), gradcheck,
opcheck, torch.compile, determinism, layers, and every error message."""

import itertools
import re

import pytest
import torch

import kernelzoo
from kernelzoo import ops, reference
from ophelpers import (LAYOUTS, MODES, CallFn, assert_raises, assert_raises_like_peer,
                       call_in_mode, check_compile, check_export, check_fx,
                       check_low_precision, check_script, in_layout, max_err, opcheck, script)

try:  # the peer: tests against it are skipped where it is not installed
    import torchvision.ops as tv_ops
except ImportError:
    tv_ops = None
needs_torchvision = pytest.mark.skipif(tv_ops is None, reason="torchvision is not installed")

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]
LOW = [torch.float16, torch.bfloat16]
ALL_DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
FLT_MAX = torch.finfo(torch.float32).max


# --- inputs --------------------------------------------------------------------

def make_input(shape, dtype=torch.float32, device="cpu", seed=0, layout="contiguous"):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
    return in_layout(x.to(device), layout)


def make_boxes(n_img, k, height, width, scale=1.0, seed=0, dtype=torch.float32):
    """Tensor[K, 5] mixing the cases that matter: boxes inside the map, partly
    and wholly outside it, tiny (< 1 pixel), degenerate (zero width and/or
    height) and reversed (x2 < x1). Coordinates are multiples of 1/4 in image
    units, so that every dtype holds the same boxes."""
    g = torch.Generator().manual_seed(seed)
    W, H = width / scale, height / scale
    rows = []
    for i in range(k):
        kind = i % 7
        u = torch.rand(4, generator=g, dtype=torch.float64).tolist()
        if kind in (0, 1, 2):      # inside
            x1, y1 = u[0] * W * 0.8, u[1] * H * 0.8
            x2, y2 = x1 + 1 + u[2] * (W - x1 - 1), y1 + 1 + u[3] * (H - y1 - 1)
        elif kind == 3:            # partly outside
            x1, y1 = -W * 0.3 + u[0] * W * 0.4, H * 0.5 + u[1] * H * 0.4
            x2, y2 = x1 + W * (0.2 + u[2] * 0.6), y1 + H * (0.2 + u[3] * 0.6)
        elif kind == 4:            # wholly outside (right/below, or left/above)
            if u[0] < 0.5:
                x1, y1 = W + 2 / scale + u[1] * W, u[2] * H
            else:
                x1, y1 = u[1] * W, -H - 2 / scale - u[2] * H
            x2, y2 = x1 + 2 / scale, y1 + 3 / scale
        elif kind == 5:            # tiny or degenerate
            x1, y1 = u[0] * W, u[1] * H
            x2 = x1 if u[2] < 0.5 else x1 + 0.25
            y2 = y1 if u[3] < 0.7 else y1 + 0.5
        else:                      # reversed
            x1, y1 = u[0] * W, u[1] * H
            x2, y2 = x1 - u[2] * W * 0.3, y1 + u[3] * H * 0.3
        b = float(torch.randint(0, n_img, (1,), generator=g))
        rows.append([b, x1, y1, x2, y2])
    t = torch.tensor(rows, dtype=torch.float64).reshape(k, 5)
    t[:, 1:] = (t[:, 1:] * 4).round() / 4
    if dtype == torch.bfloat16:  # bfloat16 holds 8 significant bits: round the boxes to it
        t = t.to(torch.bfloat16).to(torch.float64)
    return t.to(dtype)


def to_list(rois, n_img):
    """The same boxes as a list of Tensor[L, 4], one per image (ordered by image)."""
    order = torch.argsort(rois[:, 0], stable=True)
    rois = rois[order]
    return [rois[rois[:, 0] == i, 1:] for i in range(n_img)], rois


def tv_safe(rois, sr, aligned):
    """torchvision's CPU roi_align fails ("cannot create std::vector larger than
    max_size()") for reversed boxes with aligned=True and adaptive sampling (a
    negative sampling grid); kernelzoo gives such boxes zeros (tested against
    the reference). Comparisons with torchvision leave them out."""
    if aligned and sr <= 0:
        return rois[(rois[:, 3] >= rois[:, 1]) & (rois[:, 4] >= rois[:, 2])]
    return rois


def gold_align(x, rois, output_size, scale, sampling_ratio, aligned):
    """float64 values with the geometry of the dtype under test."""
    return reference.roi_align(x.double(), rois.cpu() if rois.dtype == torch.float64 else
                               rois.cpu().float(), output_size, scale, sampling_ratio, aligned)


def gold_pool(x, rois, output_size, scale):
    return reference.roi_pool(x.double(), rois.cpu() if rois.dtype == torch.float64 else
                              rois.cpu().float(), output_size, scale)


ALIGN_CASES = [  # (output_size, spatial_scale, sampling_ratio, aligned)
    (7, 0.5, 2, False), (7, 0.5, 2, True), ((3, 4), 1.0, -1, False), ((3, 4), 1.0, 0, True),
    (1, 0.25, 1, False), ((2, 5), 0.7, 3, True), ((5, 2), 1.0, -1, True), (4, 0.125, 4, False),
]
POOL_CASES = [(7, 0.5), ((3, 4), 1.0), (1, 0.25), ((2, 5), 0.7), ((5, 2), 1.0), (4, 0.125)]
SHAPE = (3, 5, 13, 17)  # N, C, H, W: no multiple of any block (16 channels, 256 threads)


# --- forward -------------------------------------------------------------------

@needs_torchvision
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", range(len(ALIGN_CASES)))
@pytest.mark.parametrize("box_format", ["tensor", "list"])
def test_roi_align_matches_torchvision(device, case, box_format):
    output_size, scale, sr, aligned = ALIGN_CASES[case]
    for dtype in [torch.float64, torch.float32]:
        x = make_input(SHAPE, dtype, device, seed=case)
        rois = make_boxes(SHAPE[0], 23, SHAPE[2], SHAPE[3], scale, seed=case, dtype=dtype).to(device)
        torch.testing.assert_close(ops.roi_align(x, rois, output_size, scale, sr, aligned).double(),
                                   gold_align(x, rois, output_size, scale, sr, aligned),
                                   rtol=1e-12 if dtype == torch.float64 else 2e-6,
                                   atol=1e-12 if dtype == torch.float64 else 2e-6)
        rois = tv_safe(rois, sr, aligned)
        boxes, rois = (to_list(rois, SHAPE[0]) if box_format == "list" else (rois, rois))
        ours = ops.roi_align(x, boxes, output_size, scale, sr, aligned)
        theirs = tv_ops.roi_align(x, boxes, output_size, scale, sr, aligned)
        assert ours.shape == theirs.shape and ours.dtype == dtype and ours.is_contiguous()
        tol = 1e-12 if dtype == torch.float64 else 2e-6
        torch.testing.assert_close(ours, theirs, rtol=tol, atol=tol)
        torch.testing.assert_close(ours.double(), gold_align(x, rois, output_size, scale, sr, aligned),
                                   rtol=tol, atol=tol)


@needs_torchvision
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", range(len(POOL_CASES)))
@pytest.mark.parametrize("box_format", ["tensor", "list"])
def test_roi_pool_matches_torchvision(device, case, box_format):
    output_size, scale = POOL_CASES[case]
    for dtype in [torch.float64, torch.float32]:
        x = make_input(SHAPE, dtype, device, seed=case)
        rois = make_boxes(SHAPE[0], 23, SHAPE[2], SHAPE[3], scale, seed=case, dtype=dtype).to(device)
        boxes, rois = (to_list(rois, SHAPE[0]) if box_format == "list" else (rois, rois))
        ours = ops.roi_pool(x, boxes, output_size, scale)
        theirs = tv_ops.roi_pool(x, boxes, output_size, scale)
        assert ours.shape == theirs.shape and ours.dtype == dtype and ours.is_contiguous()
        assert torch.equal(ours, theirs)  # a maximum is exact
        assert torch.equal(ours.double(), gold_pool(x, rois, output_size, scale))
        # the argmax too (the op's second output)
        r = rois if box_format == "tensor" else ops._roi.as_rois("roi_pool", boxes)
        oh, ow = (output_size, output_size) if isinstance(output_size, int) else output_size
        _, a_ours = torch.ops.kernelzoo.roi_pool(x, r, scale, oh, ow)
        _, a_theirs = torch.ops.torchvision.roi_pool(x, r, scale, oh, ow)
        assert a_ours.dtype == torch.int32 and torch.equal(a_ours, a_theirs)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", LOW, ids=str)
def test_low_precision_forward(device, dtype):
    for case, (output_size, scale, sr, aligned) in enumerate(ALIGN_CASES):
        x = make_input(SHAPE, dtype, device, seed=case)
        rois = make_boxes(SHAPE[0], 17, SHAPE[2], SHAPE[3], scale, seed=case, dtype=dtype).to(device)
        ours = ops.roi_align(x, rois, output_size, scale, sr, aligned)
        assert ours.dtype == dtype
        gold = gold_align(x, rois, output_size, scale, sr, aligned)
        same = reference.roi_align(x.cpu(), rois.cpu(), output_size, scale, sr, aligned)
        check_low_precision(ours, same, gold, f"roi_align case {case}")
    for case, (output_size, scale) in enumerate(POOL_CASES):
        x = make_input(SHAPE, dtype, device, seed=case)
        rois = make_boxes(SHAPE[0], 17, SHAPE[2], SHAPE[3], scale, seed=case, dtype=dtype).to(device)
        ours = ops.roi_pool(x, rois, output_size, scale)
        # values are copied, not computed: exact
        assert torch.equal(ours.double(), gold_pool(x, rois, output_size, scale))


@needs_torchvision
def test_float16_against_torchvision_float16():
    # torchvision's CPU kernels compute float16 in float16 (geometry included);
    # kernelzoo accumulates in float32: at most as far from float64 as they are.
    x = make_input(SHAPE, torch.float16, seed=3)
    rois = make_boxes(SHAPE[0], 17, SHAPE[2], SHAPE[3], 0.5, seed=3, dtype=torch.float16)
    for sr in [2, 3]:  # a fixed grid: the sample positions agree
        gold = gold_align(x, rois, 7, 0.5, sr, True)
        ours = ops.roi_align(x, rois, 7, 0.5, sr, True)
        theirs = tv_ops.roi_align(x, rois, 7, 0.5, sr, True)
        assert max_err(ours, gold) <= max_err(theirs, gold)
    assert torch.equal(ops.roi_pool(x, rois, 7, 0.5), tv_ops.roi_pool(x, rois, 7, 0.5))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
def test_layouts_give_the_same_result(device, layout, dtype):
    # channels_last float32/float64 with whole channel blocks is read in place
    # on CPU, other layouts are copied into tiles: the values must not change.
    for shape in [(2, 32, 9, 11), (2, 5, 9, 11)]:
        x = make_input(shape, dtype, device, seed=1)
        xl = make_input(shape, dtype, device, seed=1, layout=layout)
        rois = make_boxes(2, 40, 9, 11, 1.0, seed=2, dtype=dtype).to(device)
        for sr in [2, -1]:
            a = ops.roi_align(x, rois, (3, 4), 1.0, sr, False)
            b = ops.roi_align(xl, rois, (3, 4), 1.0, sr, False)
            assert b.is_contiguous()
            assert torch.equal(a, b)
        assert torch.equal(ops.roi_pool(x, rois, (3, 4)), ops.roi_pool(xl, rois, (3, 4)))


def test_few_and_many_boxes_take_the_same_values():
    # With few boxes per image the CPU kernels read the input planes directly,
    # with many they build channel-block tiles: both give the same numbers.
    x = make_input((2, 20, 40, 50), torch.float32, seed=4)
    rois = make_boxes(2, 60, 40, 50, 1.0, seed=4)
    full_a = ops.roi_align(x, rois, 5, 1.0, 2, True)
    full_p = ops.roi_pool(x, rois, 5)
    for k in [0, 1, 3]:
        assert torch.equal(ops.roi_align(x, rois[k:k + 1], 5, 1.0, 2, True), full_a[k:k + 1])
        assert torch.equal(ops.roi_pool(x, rois[k:k + 1], 5), full_p[k:k + 1])


@needs_torchvision
@pytest.mark.parametrize("k", [2, 300])  # few taps per pixel: direct scatter; many: tiles
def test_cpu_backward_paths(k):
    x = make_input((2, 20, 40, 50), torch.float64, seed=5)
    rois = make_boxes(2, k, 40, 50, 1.0, seed=5, dtype=torch.float64)
    g = make_input((k, 20, 5, 4), torch.float64, seed=6)
    args = (1.0, 5, 4, 2, 20, 40, 50, 2, True)
    ours = torch.ops.kernelzoo._roi_align_backward(g, rois, *args)
    theirs = torch.ops.torchvision._roi_align_backward(g, rois, *args)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    # float16/bfloat16 sum in float32 and convert once: exactly the float32
    # result (same values, same order), rounded
    for dtype in LOW:
        g_low, rois_low = g.to(dtype), rois.to(dtype)
        low = torch.ops.kernelzoo._roi_align_backward(g_low, rois_low, *args)
        f32 = torch.ops.kernelzoo._roi_align_backward(g_low.float(), rois_low.float(), *args)
        assert torch.equal(low, f32.to(dtype))


@needs_torchvision
def test_reference_matches_torchvision():
    x = make_input(SHAPE, torch.float64, seed=5)
    rois = make_boxes(SHAPE[0], 23, SHAPE[2], SHAPE[3], 0.5, seed=5, dtype=torch.float64)
    for output_size, scale, sr, aligned in ALIGN_CASES:
        r = tv_safe(rois, sr, aligned)
        torch.testing.assert_close(reference.roi_align(x, r, output_size, scale, sr, aligned),
                                   tv_ops.roi_align(x, r, output_size, scale, sr, aligned),
                                   rtol=1e-12, atol=1e-12)
    for output_size, scale in POOL_CASES:
        assert torch.equal(reference.roi_pool(x, rois, output_size, scale),
                           tv_ops.roi_pool(x, rois, output_size, scale))


# --- edge cases ------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
def test_zero_boxes(device):
    x = make_input((2, 3, 5, 6), device=device).requires_grad_()
    for boxes in [torch.zeros(0, 5, device=device),
                  [torch.zeros(0, 4, device=device), torch.zeros(0, 4, device=device)]]:
        for out in [ops.roi_align(x, boxes, (2, 3), 1.0, 2), ops.roi_pool(x, boxes, (2, 3))]:
            assert out.shape == (0, 3, 2, 3)
            (g,) = torch.autograd.grad(out.sum(), x)
            assert torch.equal(g, torch.zeros_like(x))


@pytest.mark.parametrize("device", DEVICES)
def test_empty_inputs(device):
    rois = torch.tensor([[0, 1.0, 1.0, 3.0, 3.0]], device=device)
    # no channels
    x = torch.zeros(1, 0, 5, 5, device=device, requires_grad=True)
    for f in [lambda t: ops.roi_align(t, rois, 2), lambda t: ops.roi_pool(t, rois, 2)]:
        out = f(x)
        assert out.shape == (1, 0, 2, 2)
        (g,) = torch.autograd.grad(out.sum(), x)
        assert g.shape == x.shape
    # an empty feature map: every sample falls outside, every bin is empty
    for h, w in [(0, 5), (5, 0), (0, 0)]:
        x = torch.randn(1, 3, h, w, device=device, requires_grad=True)
        for aligned in [False, True]:
            out = ops.roi_align(x, rois, 2, 1.0, 2, aligned)
            assert torch.equal(out, torch.zeros(1, 3, 2, 2, device=device))
        out = ops.roi_pool(x, rois, 2)
        assert torch.equal(out, torch.zeros(1, 3, 2, 2, device=device))
        (g,) = torch.autograd.grad(out.sum() + ops.roi_align(x, rois, 2).sum(), x)
        assert g.shape == x.shape
    # an empty batch with no boxes
    x = torch.randn(0, 3, 5, 5, device=device)
    assert ops.roi_align(x, torch.zeros(0, 5, device=device), 2).shape == (0, 3, 2, 2)
    assert ops.roi_pool(x, torch.zeros(0, 5, device=device), 2).shape == (0, 3, 2, 2)


@needs_torchvision
@pytest.mark.parametrize("device", DEVICES)
def test_boxes_wholly_outside_give_zeros(device):
    x = make_input((1, 4, 6, 8), device=device).requires_grad_()
    rois = torch.tensor([[0, 20.0, 1, 30, 4], [0, 1, -30, 5, -10], [0, -9, -9, -2.5, -2.5]],
                        device=device)
    for aligned in [False, True]:
        for sr in [-1, 2]:
            out = ops.roi_align(x, rois, 3, 1.0, sr, aligned)
            assert torch.equal(out, torch.zeros_like(out))
            (g,) = torch.autograd.grad(out.sum(), x)
            assert torch.equal(g, torch.zeros_like(x))
    out = ops.roi_pool(x, rois, 3)
    assert torch.equal(out, torch.zeros_like(out))
    assert torch.equal(out, tv_ops.roi_pool(x.detach().cpu(), rois.cpu(), 3).to(device))


@needs_torchvision
def test_degenerate_and_nonfinite_boxes():
    x = make_input((1, 3, 7, 9))
    rois = torch.tensor([[0, 2.0, 3, 2, 3], [0, 4, 1, 4, 6], [0, 5, 5, 1, 1],
                         [0, 2.25, 2.25, 2.5, 2.5]])
    for sr, aligned in itertools.product([-1, 0, 2], [False, True]):
        r = tv_safe(rois, sr, aligned)
        torch.testing.assert_close(ops.roi_align(x, r, (2, 3), 1.0, sr, aligned),
                                   tv_ops.roi_align(x, r, (2, 3), 1.0, sr, aligned),
                                   rtol=2e-6, atol=2e-6)
        # the reversed box: zeros with adaptive sampling and aligned=True, else as the reference
        torch.testing.assert_close(ops.roi_align(x, rois, (2, 3), 1.0, sr, aligned).double(),
                                   gold_align(x, rois, (2, 3), 1.0, sr, aligned), rtol=2e-6, atol=2e-6)
    assert torch.equal(ops.roi_pool(x, rois, (2, 3)), tv_ops.roi_pool(x, rois, (2, 3)))
    # NaN and infinite coordinates: defined results (zeros for align), no crash
    bad = torch.tensor([[0, float("nan"), 1, 3, 3], [0, 1, 1, float("inf"), 3],
                        [0, -float("inf"), 1, 3, float("nan")]])
    for sr, aligned in itertools.product([-1, 2], [False, True]):
        out = ops.roi_align(x, bad, 2, 1.0, sr, aligned)
        assert out.shape == (3, 3, 2, 2)
    ops.roi_pool(x, bad, 2)


@needs_torchvision
def test_large_boxes_adaptive_sampling():
    # Adaptive sampling of big boxes: many samples per bin, merged into taps.
    x = make_input((1, 3, 30, 40), torch.float64)
    rois = torch.tensor([[0, -50.0, -40, 90, 70], [0, 0, 0, 39, 29], [0, 3, 4, 38.5, 27.25]],
                        dtype=torch.float64)
    for aligned in [False, True]:
        torch.testing.assert_close(ops.roi_align(x, rois, (3, 2), 1.0, -1, aligned),
                                   tv_ops.roi_align(x, rois, (3, 2), 1.0, -1, aligned),
                                   rtol=1e-12, atol=1e-12)
        xr = x.clone().requires_grad_()
        xt = x.clone().requires_grad_()
        w = torch.randn(3, 3, 3, 2, dtype=torch.float64)
        (ops.roi_align(xr, rois, (3, 2), 1.0, -1, aligned) * w).sum().backward()
        (tv_ops.roi_align(xt, rois, (3, 2), 1.0, -1, aligned) * w).sum().backward()
        torch.testing.assert_close(xr.grad, xt.grad, rtol=1e-12, atol=1e-12)


@needs_torchvision
def test_batch_index_is_truncated_like_torchvision():
    x = make_input((3, 2, 6, 7))
    rois = torch.tensor([[0.9, 1, 1, 4, 4], [-0.5, 1, 1, 4, 4], [2.99, 0, 0, 6, 5], [1.0, 2, 2, 5, 5]])
    torch.testing.assert_close(ops.roi_align(x, rois, 2, 1.0, 2), tv_ops.roi_align(x, rois, 2, 1.0, 2))
    assert torch.equal(ops.roi_pool(x, rois, 2), tv_ops.roi_pool(x, rois, 2))


@needs_torchvision
def test_roi_pool_ties_nan_and_infinities_follow_torchvision():
    x = torch.zeros(1, 4, 4, 5)
    x[0, 1] = 1.0                        # all tied: the first pixel wins
    x[0, 2] = float("nan")               # NaN is never selected
    x[0, 2, 1, 1] = -3.0
    x[0, 3] = -float("inf")              # nothing above -FLT_MAX
    rois = torch.tensor([[0, 0.0, 0, 4, 3], [0, 1, 1, 2, 2]])
    ours, arg = torch.ops.kernelzoo.roi_pool(x, rois, 1.0, 2, 2)
    theirs, targ = torch.ops.torchvision.roi_pool(x, rois, 1.0, 2, 2)
    assert torch.equal(ours.nan_to_num(), theirs.nan_to_num()) and torch.equal(arg, targ)
    assert (ours[:, 3] == -FLT_MAX).all() and (arg[:, 3] == -1).all()
    # gradient goes to the selected pixel only
    xr = x.clone().requires_grad_()
    ops.roi_pool(xr, rois, 2).sum().backward()
    xt = x.clone().requires_grad_()
    tv_ops.roi_pool(xt, rois, 2).sum().backward()
    assert torch.equal(xr.grad, xt.grad)


# --- backward ------------------------------------------------------------------

def grads(fn, x, rois, w):
    x = x.detach().clone().requires_grad_()
    (fn(x, rois) * w).sum().backward()
    return x.grad


@needs_torchvision
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", range(len(ALIGN_CASES)))
def test_roi_align_backward_matches_torchvision(device, case):
    output_size, scale, sr, aligned = ALIGN_CASES[case]
    for dtype, box_format in itertools.product([torch.float64, torch.float32], ["tensor", "list"]):
        x = make_input(SHAPE, dtype, device, seed=case)
        rois = make_boxes(SHAPE[0], 23, SHAPE[2], SHAPE[3], scale, seed=case, dtype=dtype).to(device)
        rois = tv_safe(rois, sr, aligned)
        boxes, rois = (to_list(rois, SHAPE[0]) if box_format == "list" else (rois, rois))
        out = tv_ops.roi_align(x, boxes, output_size, scale, sr, aligned)
        w = make_input(out.shape, dtype, device, seed=99)
        ours = grads(lambda t, r: ops.roi_align(t, r, output_size, scale, sr, aligned), x, boxes, w)
        theirs = grads(lambda t, r: tv_ops.roi_align(t, r, output_size, scale, sr, aligned),
                       x.cpu(), [b.cpu() for b in boxes] if isinstance(boxes, list) else boxes.cpu(),
                       w.cpu())
        ref = grads(lambda t, r: reference.roi_align(t, r, output_size, scale, sr, aligned),
                    x.cpu().double(), rois.cpu(), w.cpu().double())
        assert ours.is_contiguous() and ours.dtype == dtype
        tol = 1e-12 if dtype == torch.float64 else 1e-5
        torch.testing.assert_close(ours.cpu(), theirs, rtol=tol, atol=tol)
        torch.testing.assert_close(ours.cpu().double(), ref, rtol=tol, atol=tol)


@needs_torchvision
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", range(len(POOL_CASES)))
def test_roi_pool_backward_matches_torchvision(device, case):
    output_size, scale = POOL_CASES[case]
    for dtype, box_format in itertools.product([torch.float64, torch.float32], ["tensor", "list"]):
        x = make_input(SHAPE, dtype, device, seed=case)
        rois = make_boxes(SHAPE[0], 23, SHAPE[2], SHAPE[3], scale, seed=case, dtype=dtype).to(device)
        boxes, rois = (to_list(rois, SHAPE[0]) if box_format == "list" else (rois, rois))
        out = tv_ops.roi_pool(x, boxes, output_size, scale)
        w = make_input(out.shape, dtype, device, seed=98)
        ours = grads(lambda t, r: ops.roi_pool(t, r, output_size, scale), x, boxes, w)
        theirs = grads(lambda t, r: tv_ops.roi_pool(t, r, output_size, scale),
                       x.cpu(), [b.cpu() for b in boxes] if isinstance(boxes, list) else boxes.cpu(),
                       w.cpu())
        ref = grads(lambda t, r: reference.roi_pool(t, r, output_size, scale), x.cpu(), rois.cpu(),
                    w.cpu())
        tol = 1e-12 if dtype == torch.float64 else 1e-5
        torch.testing.assert_close(ours.cpu(), theirs, rtol=tol, atol=tol)
        torch.testing.assert_close(ours.cpu(), ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", LOW, ids=str)
def test_low_precision_backward(device, dtype):
    for case, (output_size, scale, sr, aligned) in enumerate(ALIGN_CASES[:4]):
        x = make_input(SHAPE, dtype, device, seed=case)
        rois = make_boxes(SHAPE[0], 17, SHAPE[2], SHAPE[3], scale, seed=case, dtype=dtype).to(device)
        w = make_input((17, SHAPE[1]) + ((output_size,) * 2 if isinstance(output_size, int)
                                         else output_size), dtype, device, seed=7)
        fn = lambda t, r: ops.roi_align(t, r, output_size, scale, sr, aligned)  # noqa: E731
        ref = lambda t, r: reference.roi_align(t, r, output_size, scale, sr, aligned)  # noqa: E731
        ours = grads(fn, x, rois, w)
        assert ours.dtype == dtype
        gold = grads(ref, x.cpu().double(), rois.cpu().float(), w.cpu().double())
        same = grads(ref, x.cpu(), rois.cpu(), w.cpu())
        check_low_precision(ours, same, gold, f"roi_align backward case {case}")
    for case, (output_size, scale) in enumerate(POOL_CASES[:3]):
        x = make_input(SHAPE, dtype, device, seed=case)
        rois = make_boxes(SHAPE[0], 17, SHAPE[2], SHAPE[3], scale, seed=case, dtype=dtype).to(device)
        out = ops.roi_pool(x, rois, output_size, scale)
        w = make_input(out.shape, dtype, device, seed=8)
        ours = grads(lambda t, r: ops.roi_pool(t, r, output_size, scale), x, rois, w)
        ref = lambda t, r: reference.roi_pool(t, r, output_size, scale)  # noqa: E731
        gold = grads(ref, x.cpu().double(), rois.cpu().float(), w.cpu().double())
        same = grads(ref, x.cpu(), rois.cpu(), w.cpu())
        check_low_precision(ours, same, gold, f"roi_pool backward case {case}")


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sr", [-1, 2])
def test_gradcheck_roi_align(aligned, sr):
    x = make_input((2, 3, 6, 7), torch.float64, seed=11).requires_grad_()
    rois = make_boxes(2, 9, 6, 7, 0.5, seed=11, dtype=torch.float64)
    fn = lambda t: ops.roi_align(t, rois, (2, 3), 0.5, sr, aligned)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


def test_gradcheck_roi_pool():
    x = make_input((2, 3, 6, 7), torch.float64, seed=12).requires_grad_()
    rois = make_boxes(2, 9, 6, 7, 0.5, seed=12, dtype=torch.float64)
    fn = lambda t: ops.roi_pool(t, rois, (2, 3), 0.5)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


def test_backward_ops_are_differentiable():
    # The gradient of the backward with respect to grad is the forward (roi_align)
    # or a gather at argmax (roi_pool); gradcheck them directly.
    rois = make_boxes(2, 7, 6, 7, 1.0, seed=13, dtype=torch.float64)
    g = make_input((7, 3, 2, 3), torch.float64, seed=13).requires_grad_()
    bwd = lambda t: torch.ops.kernelzoo._roi_align_backward(  # noqa: E731
        t, rois, 1.0, 2, 3, 2, 3, 6, 7, 2, True)
    assert torch.autograd.gradcheck(bwd, (g,))
    x = make_input((2, 3, 6, 7), torch.float64, seed=14)
    _, argmax = torch.ops.kernelzoo.roi_pool(x, rois, 1.0, 2, 3)
    pbwd = lambda t: torch.ops.kernelzoo._roi_pool_backward(  # noqa: E731
        t, rois, argmax, 1.0, 2, 3, 2, 3, 6, 7)
    assert torch.autograd.gradcheck(pbwd, (g,))
    assert torch.autograd.gradgradcheck(pbwd, (g,))


def test_double_backward_gather_skips_bins_without_argmax():
    # On CUDA a box with an out-of-range batch index gets argmax -1 in every bin
    # and no gradient; the double backward of roi_pool must not index its plane.
    from kernelzoo.ops.roi_pool import _gather_at_argmax
    ggi = make_input((2, 3, 4, 5), torch.float64, seed=21)
    rois = torch.tensor([[1, 0.0, 0, 3, 3], [7, 0, 0, 3, 3], [float("nan"), 0, 0, 3, 3]],
                        dtype=torch.float64)
    argmax = torch.full((3, 3, 2, 2), -1, dtype=torch.int32)
    argmax[0] = torch.tensor([[0, 4], [19, -1]], dtype=torch.int32)
    got = _gather_at_argmax(ggi, rois, argmax)
    want = torch.zeros(3, 3, 2, 2, dtype=torch.float64)
    want[0, :, 0, 0], want[0, :, 0, 1], want[0, :, 1, 0] = ggi[1, :, 0, 0], ggi[1, :, 0, 4], ggi[1, :, 3, 4]
    assert torch.equal(got, want)


def test_no_gradient_to_boxes():
    x = make_input((1, 2, 5, 5), seed=15).requires_grad_()
    rois = torch.tensor([[0, 0.5, 0.5, 3.5, 4.0]], requires_grad=True)
    out = ops.roi_align(x, rois, 2) + ops.roi_pool(x, rois, 2)
    out.sum().backward()
    assert x.grad is not None and rois.grad is None


def test_expanded_and_strided_grads():
    # autograd hands over expanded (stride 0) gradients, e.g. from .sum()
    x = make_input((2, 3, 8, 9), seed=16)
    rois = make_boxes(2, 11, 8, 9, 1.0, seed=16)
    g = torch.ones(11, 3, 2, 3)
    for grad in [torch.ones(1, 1, 1, 1).expand(11, 3, 2, 3), g.transpose(2, 3).contiguous().transpose(2, 3),
                 torch.ones(11, 3, 4, 6)[:, :, ::2, ::2]]:
        a = torch.ops.kernelzoo._roi_align_backward(grad, rois, 1.0, 2, 3, 2, 3, 8, 9, 2, False)
        assert torch.equal(a, torch.ops.kernelzoo._roi_align_backward(g, rois, 1.0, 2, 3, 2, 3, 8, 9, 2,
                                                                      False))
        _, argmax = torch.ops.kernelzoo.roi_pool(x, rois, 1.0, 2, 3)
        p = torch.ops.kernelzoo._roi_pool_backward(grad, rois, argmax, 1.0, 2, 3, 2, 3, 8, 9)
        assert torch.equal(p, torch.ops.kernelzoo._roi_pool_backward(g, rois, argmax, 1.0, 2, 3, 2, 3,
                                                                     8, 9))


# --- determinism -----------------------------------------------------------------

def test_cpu_backward_is_deterministic_across_runs_and_thread_counts():
    x = make_input((2, 40, 20, 24), seed=17)
    rois = make_boxes(2, 300, 20, 24, 1.0, seed=17)
    g = make_input((300, 40, 7, 7), seed=18)
    _, argmax = torch.ops.kernelzoo.roi_pool(x, rois, 1.0, 7, 7)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in [threads, 1, threads, 3]:
            torch.set_num_threads(n)
            results.append((torch.ops.kernelzoo._roi_align_backward(g, rois, 1.0, 7, 7, 2, 40, 20, 24, -1,
                                                                    True),
                            torch.ops.kernelzoo._roi_pool_backward(g, rois, argmax, 1.0, 7, 7, 2, 40,
                                                                   20, 24)))
    finally:
        torch.set_num_threads(threads)
    for a, p in results[1:]:
        assert torch.equal(a, results[0][0]) and torch.equal(p, results[0][1])


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
def test_cuda_deterministic_backward(dtype):
    x = make_input((2, 24, 20, 24), dtype, "cuda", seed=19)
    rois = make_boxes(2, 300, 20, 24, 1.0, seed=19, dtype=dtype).cuda()
    g = make_input((300, 24, 7, 7), dtype, "cuda", seed=20)
    _, argmax = torch.ops.kernelzoo.roi_pool(x, rois, 1.0, 7, 7)
    align = lambda: torch.ops.kernelzoo._roi_align_backward(  # noqa: E731
        g, rois, 1.0, 7, 7, 2, 24, 20, 24, -1, True)
    pool = lambda: torch.ops.kernelzoo._roi_pool_backward(  # noqa: E731
        g, rois, argmax, 1.0, 7, 7, 2, 24, 20, 24)
    atomic_a, atomic_p = align(), pool()
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        runs = [(align(), pool()) for _ in range(3)]
    finally:
        torch.use_deterministic_algorithms(prev)
    for a, p in runs[1:]:
        assert torch.equal(a, runs[0][0]) and torch.equal(p, runs[0][1])
    # both paths agree with each other and with the CPU kernels
    cpu_a = torch.ops.kernelzoo._roi_align_backward(g.cpu(), rois.cpu(), 1.0, 7, 7, 2, 24, 20, 24, -1, True)
    cpu_p = torch.ops.kernelzoo._roi_pool_backward(g.cpu(), rois.cpu(), argmax.cpu(), 1.0, 7, 7, 2, 24,
                                                  20, 24)
    tol = {torch.float64: 1e-10, torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 1e-1}[dtype]
    for got in [runs[0][0], atomic_a]:
        torch.testing.assert_close(got.cpu(), cpu_a, rtol=tol, atol=tol)
    for got in [runs[0][1], atomic_p]:
        torch.testing.assert_close(got.cpu(), cpu_p, rtol=tol, atol=tol)


# --- autocast --------------------------------------------------------------------

@needs_torchvision
@pytest.mark.parametrize("device,dtype", [("cpu", torch.bfloat16),
                                          pytest.param("cuda", torch.float16, marks=pytest.mark.cuda)])
def test_autocast_pools_low_precision_features_with_float32_boxes(device, dtype):
    # As torchvision: under autocast the ops run in float32 and return the
    # input's dtype, so that float16/bfloat16 features take float32 boxes.
    x = make_input((2, 6, 11, 13), dtype, device, seed=40).requires_grad_()
    rois = make_boxes(2, 9, 11, 13, 0.5, seed=40).to(device)  # float32
    with pytest.raises(RuntimeError, match="input and boxes must have the same dtype"):
        ops.roi_align(x, rois, 3, 0.5, 2)  # outside autocast: a clear error
    with torch.autocast(device, dtype=dtype):
        a = ops.roi_align(x, rois, 3, 0.5, 2, True)
        p = ops.roi_pool(x, rois, 3, 0.5)
        theirs = tv_ops.roi_align(x, rois, 3, 0.5, 2, True)
    assert a.dtype == p.dtype == dtype
    xf = x.detach().float()
    assert torch.equal(a, ops.roi_align(xf, rois, 3, 0.5, 2, True).to(dtype))
    assert torch.equal(p, ops.roi_pool(xf, rois, 3, 0.5).to(dtype))
    torch.testing.assert_close(a, theirs, rtol=1e-2, atol=1e-2)
    # the gradients, through the casts: the float32 gradients, rounded once
    for out, fn in [(a, lambda t: ops.roi_align(t, rois, 3, 0.5, 2, True)),
                    (p, lambda t: ops.roi_pool(t, rois, 3, 0.5))]:
        (g,) = torch.autograd.grad(out.float().sum(), x, retain_graph=True)
        assert g.dtype == dtype
        xr = xf.clone().requires_grad_()
        fn(xr).sum().backward()
        assert torch.equal(g, xr.grad.to(dtype))


# --- opcheck, torch.compile, layers ---------------------------------------------

def opcheck_samples():
    x = make_input((2, 3, 6, 7), seed=21)
    rois = make_boxes(2, 5, 6, 7, 0.5, seed=21)
    yield x, rois
    yield x.contiguous(memory_format=torch.channels_last), rois
    yield make_input((2, 3, 6, 7), torch.float64, seed=22), rois.double()
    yield x, torch.zeros(0, 5)
    yield make_input((1, 16, 5, 4), seed=23).contiguous(memory_format=torch.channels_last), \
        make_boxes(1, 4, 5, 4, 1.0, seed=23)


@pytest.mark.parametrize("sample", range(5))
def test_opcheck(sample):
    x, rois = list(opcheck_samples())[sample]
    n, c, h, w = x.shape
    k = rois.shape[0]
    opcheck(torch.ops.kernelzoo.roi_align.default,
            (x.clone().requires_grad_(), rois, 0.5, 2, 3, 2, True))
    opcheck(torch.ops.kernelzoo.roi_pool.default, (x.clone().requires_grad_(), rois, 0.5, 2, 3))
    g = torch.randn(k, c, 2, 3, dtype=x.dtype, requires_grad=True)
    opcheck(torch.ops.kernelzoo._roi_align_backward.default,
            (g, rois, 0.5, 2, 3, n, c, h, w, -1, False))
    _, argmax = torch.ops.kernelzoo.roi_pool(x, rois, 0.5, 2, 3)
    opcheck(torch.ops.kernelzoo._roi_pool_backward.default,
            (g, rois, argmax, 0.5, 2, 3, n, c, h, w))


class RoIHead(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.align = kernelzoo.nn.RoIAlign((3, 3), spatial_scale=0.5, sampling_ratio=2, aligned=True)
        self.pool = kernelzoo.nn.RoIPool(3, 0.5)
        self.fc = torch.nn.Linear(8 * 9 * 2, 4)

    def forward(self, x, boxes):
        f = torch.relu(self.conv(x))
        a, p = self.align(f, boxes), self.pool(f, boxes)
        return self.fc(torch.cat([a, p], dim=1).flatten(1))


@pytest.mark.parametrize("box_format", ["tensor", "list"])
@pytest.mark.parametrize("dynamic", [False, True])
def test_torch_compile_fullgraph(box_format, dynamic):
    torch.manual_seed(0)
    torch._dynamo.reset()
    model = RoIHead()
    x = make_input((2, 3, 12, 14), seed=24).requires_grad_()
    rois = make_boxes(2, 6, 12, 14, 0.5, seed=24)
    boxes = to_list(rois, 2)[0] if box_format == "list" else rois
    compiled = torch.compile(model, fullgraph=True, dynamic=dynamic)
    out, ref = compiled(x, boxes), model(x, boxes)
    torch.testing.assert_close(out, ref)
    (g,) = torch.autograd.grad(out.sum(), x)
    (g_ref,) = torch.autograd.grad(ref.sum(), x)
    torch.testing.assert_close(g, g_ref)
    if dynamic:  # another number of boxes, same compiled graph
        rois2 = make_boxes(2, 9, 12, 14, 0.5, seed=25)
        boxes2 = to_list(rois2, 2)[0] if box_format == "list" else rois2
        torch.testing.assert_close(compiled(x, boxes2), model(x, boxes2))


@needs_torchvision
def test_layers_match_torchvision_layers():
    x = make_input((2, 4, 9, 10), seed=26)
    rois = make_boxes(2, 8, 9, 10, 0.5, seed=26)
    for args in [((3, 2), 0.5, 2, True), (4, 0.5, -1)]:
        ours, theirs = kernelzoo.nn.RoIAlign(*args), tv_ops.RoIAlign(*args)
        assert repr(ours) == repr(theirs)
        torch.testing.assert_close(ours(x, rois), theirs(x, rois))
        torch.testing.assert_close(ours(x, to_list(rois, 2)[0]), theirs(x, to_list(rois, 2)[0]))
    for args in [((3, 2), 0.5), (4, 1.0)]:
        ours, theirs = kernelzoo.nn.RoIPool(*args), tv_ops.RoIPool(*args)
        assert repr(ours) == repr(theirs)
        assert torch.equal(ours(x, rois), theirs(x, rois))
    assert repr(kernelzoo.nn.RoIAlign(7, 0.25, 2)) == \
        "RoIAlign(output_size=7, spatial_scale=0.25, sampling_ratio=2, aligned=False)"
    assert repr(kernelzoo.nn.RoIPool((7, 7), 0.25)) == "RoIPool(output_size=(7, 7), spatial_scale=0.25)"


def test_torch_ops_namespace_and_meta():
    x = make_input((2, 3, 6, 7))
    rois = make_boxes(2, 4, 6, 7)
    assert torch.equal(torch.ops.kernelzoo.roi_align(x, rois, 1.0, 2, 2, 2, False),
                       ops.roi_align(x, rois, 2, 1.0, 2, False))
    out = ops.roi_align(x.to("meta"), rois.to("meta"), (2, 5))
    assert out.device.type == "meta" and out.shape == (4, 3, 2, 5)
    out, arg = torch.ops.kernelzoo.roi_pool(x.to("meta"), rois.to("meta"), 1.0, 3, 2)
    assert out.shape == arg.shape == (4, 3, 3, 2) and arg.dtype == torch.int32


# --- errors ------------------------------------------------------------------------

X = torch.zeros(2, 3, 5, 6)
R = torch.tensor([[0, 0.0, 0.0, 2.0, 2.0]])

def _size_message(op, size):
    return f"{op}: output_size must be an int or a pair of ints (height, width), but got {size}"


ERRORS = [  # (name, op, args, exception type(s) it is each of, message)
    ("input rank", "roi_align", (torch.zeros(3, 5, 6), R, 2), RuntimeError,
     "roi_align: expected input of shape (N, C, H, W), but got a tensor with 3 dimension(s), of "
     "shape [3, 5, 6]"),
    ("input dtype", "roi_pool", (torch.zeros(2, 3, 5, 6, dtype=torch.int32), R.int(), 2),
     RuntimeError,
     "roi_pool: expected a floating-point input (float64, float32, float16 or bfloat16), but got "
     "int32"),
    # malformed boxes: also the AssertionError / IndexError torchvision raises
    ("boxes shape", "roi_align", (X, torch.zeros(3, 4), 2), (RuntimeError, AssertionError),
     "roi_align: expected boxes as a Tensor[K, 5] of rows (batch_index, x1, y1, x2, y2), but got a "
     "tensor of shape [3, 4]"),
    ("boxes rank", "roi_pool", (X, torch.zeros(5), 2), (RuntimeError, IndexError),
     "roi_pool: expected boxes as a Tensor[K, 5] of rows (batch_index, x1, y1, x2, y2), but got a "
     "tensor of shape [5]"),
    ("boxes dtype", "roi_align", (X, R.double(), 2), RuntimeError,
     "roi_align: input and boxes must have the same dtype, but got input float32 and boxes "
     "float64; convert the boxes with boxes.to(input.dtype)"),
    # output_size 0 gives an empty output (test_zero_output_size); negative sizes are errors
    ("output size", "roi_pool", (X, R, (-1, 3)), RuntimeError,
     "roi_pool: output_size must be non-negative, but got (-1, 3)"),
    ("output size", "roi_align", (X, R, (2, -1)), RuntimeError,
     "roi_align: output_size must be non-negative, but got (2, -1)"),
    # the kernels hold pooled sizes in int (no boxes: nothing is allocated)
    ("output size too large", "roi_pool", (X, torch.zeros(0, 5), (2 ** 31, 3)), RuntimeError,
     "roi_pool: output_size must be at most 2^31 - 1, but got (2147483648, 3)"),
    ("output size too large", "roi_align", (X, torch.zeros(0, 5), (3, 2 ** 32 + 1)), RuntimeError,
     "roi_align: output_size must be at most 2^31 - 1, but got (3, 4294967297)"),
    # sizes beyond int64, which the dispatcher cannot take
    ("output size 2^63", "roi_align", (X, R, 2 ** 63), RuntimeError,
     "roi_align: output_size must be at most 2^31 - 1, but got (9223372036854775808, "
     "9223372036854775808)"),
    ("output size -2^63 - 1", "roi_pool", (X, R, (2, -2 ** 63 - 1)), RuntimeError,
     "roi_pool: output_size must be non-negative, but got (2, -9223372036854775809)"),
    # output sizes that are not an int or a pair: torchvision's types
    ("output size of one entry", "roi_align", (X, R, (3,)), IndexError,
     _size_message("roi_align", "(3,)")),
    ("output size string", "roi_pool", (X, R, "7"), IndexError, _size_message("roi_pool", "'7'")),
    ("output size strings", "roi_align", (X, R, "77"), RuntimeError,
     _size_message("roi_align", "'77'")),
    ("output size float", "roi_pool", (X, R, 2.0), RuntimeError, _size_message("roi_pool", "2.0")),
    ("output size None", "roi_align", (X, R, None), RuntimeError,
     _size_message("roi_align", "None")),
    ("list entry shape", "roi_align", (X, [torch.zeros(2, 4), torch.zeros(1, 5)], 2),
     (RuntimeError, AssertionError),
     "roi_align: expected boxes[1] to be a Tensor[L, 4] of (x1, y1, x2, y2), but got a tensor of "
     "shape [1, 5]"),
    ("list entry rank", "roi_pool", (X, [torch.zeros(4)], 2), (RuntimeError, IndexError),
     "roi_pool: expected boxes[0] to be a Tensor[L, 4] of (x1, y1, x2, y2), but got a tensor of "
     "shape [4]"),
    ("plane size", "roi_align", (torch.zeros(1, 1, 1, 1).expand(1, 1, 65536, 65536), R, 2),
     RuntimeError,
     "roi_align: feature maps of more than 2^31 - 1 pixels (H * W) are not supported, but got "
     "H=65536, W=65536"),
    ("empty list", "roi_pool", (X, [], 2), (RuntimeError, ValueError),
     "roi_pool: boxes is an empty list; pass one Tensor[L, 4] per image (L may be 0), or a "
     "Tensor[K, 5]"),
]


@pytest.mark.parametrize("name,op,args,exc_types,message", ERRORS, ids=[e[0] for e in ERRORS])
@pytest.mark.parametrize("mode", MODES)
def test_error_messages(name, op, args, exc_types, message, mode):
    assert_raises(mode, exc_types, message, getattr(ops, op), *args)


@pytest.mark.parametrize("mode", ["eager", "meta"])
def test_sampling_ratio_above_the_limit_is_an_error(mode):
    # At most 1024 samples per bin and axis (README); in particular no ratio can
    # wrap around the kernels' int: 2^31 would become a negative, adaptive, ratio.
    x, r = (X, R) if mode == "eager" else (X.to("meta"), R.to("meta"))
    limit = "sampling_ratio must be at most 1024 (samples per bin and axis; 0 or less: adaptive)"
    with pytest.raises(RuntimeError, match=re.escape(f"roi_align: {limit}, but got 2147483648")):
        ops.roi_align(x, r, 2, 1.0, 2 ** 31)
    # beyond int64 too (the dispatcher would refuse it with "Expected a value of type 'int'")
    with pytest.raises(RuntimeError, match=re.escape(
            f"roi_align: {limit}, but got 9223372036854775808")):
        ops.roi_align(x, r, 2, 1.0, 2 ** 63)
    g = torch.zeros(1, 3, 2, 2, device=x.device)
    with pytest.raises(RuntimeError, match=re.escape(
            f"_roi_align_backward: {limit}, but got 4294967298")):
        torch.ops.kernelzoo._roi_align_backward(g, r, 1.0, 2, 2, 2, 3, 5, 6, 2 ** 32 + 2, False)
    if mode == "eager":
        # any ratio <= 0 is adaptive: -2^32 + 5 must not wrap to 5
        x = make_input((2, 3, 9, 11), seed=22)
        rois = make_boxes(2, 14, 9, 11, 1.0, seed=22)
        assert torch.equal(ops.roi_align(x, rois, 2, 1.0, -2 ** 32 + 5),
                           ops.roi_align(x, rois, 2, 1.0, -1))


def test_device_mismatch_message():
    # CPU input with meta boxes dispatches to the meta (fake) kernel; with a GPU
    # the same check runs in the CUDA kernels (test_cuda_errors).
    for op in ["roi_align", "roi_pool"]:
        with pytest.raises(RuntimeError, match=re.escape(
                f"{op}: input and boxes must be on the same device, but got input on cpu and "
                "boxes on meta")):
            getattr(ops, op)(X, R.to("meta"), 2)
    g = torch.zeros(1, 3, 2, 2)
    argmax = torch.zeros(1, 3, 2, 2, dtype=torch.int32)
    with pytest.raises(RuntimeError, match=re.escape(
            "_roi_align_backward: grad and boxes must be on the same device, but got grad on cpu "
            "and boxes on meta")):
        torch.ops.kernelzoo._roi_align_backward(g, R.to("meta"), 1.0, 2, 2, 2, 3, 5, 6, 2, False)
    with pytest.raises(RuntimeError, match=re.escape(
            "_roi_pool_backward: grad and boxes must be on the same device, but got grad on cpu "
            "and boxes on meta")):
        torch.ops.kernelzoo._roi_pool_backward(g, R.to("meta"), argmax, 1.0, 2, 2, 2, 3, 5, 6)
    with pytest.raises(RuntimeError, match=re.escape(
            "_roi_pool_backward: grad and argmax must be on the same device, but got grad on cpu "
            "and argmax on meta")):
        torch.ops.kernelzoo._roi_pool_backward(g, R, argmax.to("meta"), 1.0, 2, 2, 2, 3, 5, 6)


def test_wrong_boxes_type():
    with pytest.raises(TypeError, match=re.escape(
            "roi_align: boxes must be a Tensor[K, 5] or a list of Tensor[L, 4] (one per image), "
            "but got dict")):
        ops.roi_align(X, {}, 2)
    with pytest.raises(TypeError, match=re.escape("roi_pool: boxes[0] must be a Tensor[L, 4], but got list")):
        ops.roi_pool(X, [[0.0, 0.0, 1.0, 1.0]], 2)


@pytest.mark.parametrize("op", ["roi_align", "roi_pool"])
def test_batch_index_out_of_range_cpu(op):
    fn = getattr(ops, op)
    for value, shown in [(2.0, "2"), (-1.0, "-1"), (float("nan"), "nan"), (7.5, "7.5")]:
        rois = torch.tensor([[0, 0.0, 0, 2, 2], [value, 0, 0, 2, 2]])
        with pytest.raises(RuntimeError, match=re.escape(
                f"{op}: boxes[1, 0] = {shown} is not a valid batch index for an input with batch "
                "size 2 (expected 0 <= index < 2)")):
            fn(X, rois, 2)
    # boxes of a third image in the list format
    with pytest.raises(RuntimeError, match=re.escape(
            f"{op}: boxes[1, 0] = 2 is not a valid batch index for an input with batch size 2")):
        fn(X, [torch.zeros(1, 4), torch.zeros(0, 4), torch.zeros(1, 4)], 2)
    # an empty batch has no valid index at all
    with pytest.raises(RuntimeError, match=re.escape("batch size 0 (expected 0 <= index < 0)")):
        fn(torch.zeros(0, 3, 5, 6), R, 2)
    # the backward ops check too
    g = torch.zeros(2, 3, 2, 2)
    rois = torch.tensor([[0, 0.0, 0, 2, 2], [3, 0, 0, 2, 2]])
    with pytest.raises(RuntimeError, match=re.escape(
            f"_{op}_backward: boxes[1, 0] = 3 is not a valid batch index")):
        if op == "roi_align":
            torch.ops.kernelzoo._roi_align_backward(g, rois, 1.0, 2, 2, 2, 3, 5, 6, 2, False)
        else:
            torch.ops.kernelzoo._roi_pool_backward(g, rois, torch.zeros(2, 3, 2, 2, dtype=torch.int32),
                                                   1.0, 2, 2, 2, 3, 5, 6)


BACKWARD_ERRORS = [
    ("sizes", "align", dict(n=-1),
     "_roi_align_backward: batch_size, channels, height and width must be non-negative, but got "
     "-1, 3, 5, 6"),
    ("output size", "pool", dict(ph=-1),
     "_roi_pool_backward: output_size must be non-negative, but got (-1, 2)"),
    ("grad dtype", "align", dict(grad=torch.zeros(1, 3, 2, 2, dtype=torch.int64)),
     "_roi_align_backward: expected a floating-point grad (float64, float32, float16 or "
     "bfloat16), but got int64"),
    ("boxes shape", "pool", dict(rois=torch.zeros(1, 6)),
     "_roi_pool_backward: expected boxes as a Tensor[K, 5] of rows (batch_index, x1, y1, x2, y2), "
     "but got a tensor of shape [1, 6]"),
    ("grad shape", "align", dict(grad=torch.zeros(1, 4, 2, 2)),
     "_roi_align_backward: expected grad of shape [K, channels, pooled_height, pooled_width] = "
     "[1, 3, 2, 2], but got [1, 4, 2, 2]"),
    ("grad dtype vs boxes", "pool", dict(grad=torch.zeros(1, 3, 2, 2, dtype=torch.float64)),
     "_roi_pool_backward: grad and boxes must have the same dtype, but got grad float64 and boxes "
     "float32"),
    ("argmax dtype", "pool", dict(argmax=torch.zeros(1, 3, 2, 2, dtype=torch.int64)),
     "_roi_pool_backward: expected argmax of dtype int32 (the second output of roi_pool), but got "
     "int64"),
    ("argmax shape", "pool", dict(argmax=torch.zeros(1, 3, 2, 3, dtype=torch.int32)),
     "_roi_pool_backward: expected argmax of the same shape as grad, [1, 3, 2, 2], but got "
     "[1, 3, 2, 3]"),
    ("plane size", "align", dict(h=65536, w=65536),
     "_roi_align_backward: feature maps of more than 2^31 - 1 pixels (H * W) are not supported, "
     "but got H=65536, W=65536"),
]


@pytest.mark.parametrize("name,which,override,message", BACKWARD_ERRORS,
                         ids=[e[0] for e in BACKWARD_ERRORS])
@pytest.mark.parametrize("mode", ["eager", "meta"])
def test_backward_error_messages(name, which, override, message, mode):
    a = dict(grad=torch.zeros(1, 3, 2, 2), rois=R, argmax=torch.zeros(1, 3, 2, 2, dtype=torch.int32),
             ph=2, n=2, h=5, w=6)
    a.update(override)
    if mode == "meta":
        a = {k: v.to("meta") if isinstance(v, torch.Tensor) else v for k, v in a.items()}
    with pytest.raises(RuntimeError, match=re.escape(message)):
        if which == "align":
            torch.ops.kernelzoo._roi_align_backward(a["grad"], a["rois"], 1.0, a["ph"], 2, a["n"], 3,
                                                    a["h"], a["w"], 2, False)
        else:
            torch.ops.kernelzoo._roi_pool_backward(a["grad"], a["rois"], a["argmax"], 1.0, a["ph"], 2,
                                                   a["n"], 3, a["h"], a["w"])


def test_invalid_argmax_is_an_error_on_cpu():
    g = torch.ones(1, 3, 2, 2)
    argmax = torch.full((1, 3, 2, 2), 30, dtype=torch.int32)  # plane of 5 * 6 = 30 pixels
    with pytest.raises(RuntimeError, match=re.escape(
            "_roi_pool_backward: argmax holds an index outside the input plane [0, H * W) = [0, 30)")):
        torch.ops.kernelzoo._roi_pool_backward(g, R, argmax, 1.0, 2, 2, 2, 3, 5, 6)


def test_cuda_stub_message_in_cpu_only_build():
    if kernelzoo.build_info()["cuda"]:
        pytest.skip("this build has CUDA kernels")
    keyset = torch._C.DispatchKeySet(torch._C.DispatchKey.CUDA)
    with pytest.raises(RuntimeError, match="roi_align: this build of kernelzoo has no CUDA kernels"):
        torch.ops.kernelzoo.roi_align.default.redispatch(keyset, X, R, 1.0, 2, 2, 2, False)


# --- output_size 0: an empty output, as torchvision's ---------------------------

@needs_torchvision
@pytest.mark.parametrize("size", [0, (0, 5), (3, 0)])
def test_zero_output_size_gives_an_empty_output(size):
    ph, pw = (size, size) if isinstance(size, int) else size
    x = make_input((2, 3, 6, 7), seed=41).requires_grad_()
    rois = make_boxes(2, 4, 6, 7, 1.0, seed=41)
    for fn, peer in [(ops.roi_align, tv_ops.roi_align), (ops.roi_pool, tv_ops.roi_pool)]:
        out = fn(x, rois, size)
        assert out.shape == peer(x, rois, size).shape == (4, 3, ph, pw)
        (g,) = torch.autograd.grad(out.sum(), x)
        assert torch.equal(g, torch.zeros_like(x))
        for mode in ["meta", "fake"]:
            assert tuple(call_in_mode(mode, fn, x.detach(), rois, size).shape) == (4, 3, ph, pw)
        check_compile(CallFn(fn, output_size=size), x, rois)
    opcheck(torch.ops.kernelzoo.roi_align.default, (x, rois, 1.0, ph, pw, 2, False))
    opcheck(torch.ops.kernelzoo.roi_pool.default, (x, rois, 1.0, ph, pw))


def test_zero_output_size_backward_fills_the_gradient_with_zeros():
    # The backward ops' gradient buffers come uninitialised (on CPU from a cache
    # of freed buffers, >= 4 MiB): a first call leaves non-zero values in one,
    # which the empty-output call must overwrite.
    rois = make_boxes(2, 6, 200, 210, 1.0, seed=43)
    args = (2, 16, 200, 210)
    x = make_input((2, 16, 200, 210), seed=43)
    for ph, pw in [(0, 3), (3, 0)]:
        g = make_input((6, 16, 3, 3), seed=44)
        assert torch.ops.kernelzoo._roi_align_backward(g, rois, 1.0, 3, 3, *args, 2, False).any()
        empty = torch.zeros(6, 16, ph, pw)
        got = torch.ops.kernelzoo._roi_align_backward(empty, rois, 1.0, ph, pw, *args, 2, False)
        assert torch.equal(got, torch.zeros(args))
        _, argmax = torch.ops.kernelzoo.roi_pool(x, rois, 1.0, 3, 3)
        assert torch.ops.kernelzoo._roi_pool_backward(g, rois, argmax, 1.0, 3, 3, *args).any()
        _, argmax = torch.ops.kernelzoo.roi_pool(x, rois, 1.0, ph, pw)
        assert argmax.shape == (6, 16, ph, pw) and argmax.dtype == torch.int32
        got = torch.ops.kernelzoo._roi_pool_backward(empty, rois, argmax, 1.0, ph, pw, *args)
        assert torch.equal(got, torch.zeros(args))


# --- drop-in: TorchScript, torch.fx, torch.export, torchvision's exceptions -------

def _dropin_inputs(box_format):
    x = make_input((2, 4, 9, 10), seed=42).requires_grad_()
    rois = make_boxes(2, 8, 9, 10, 0.5, seed=42)
    if box_format == "list":  # non-contiguous entries, as torchvision's scripting test
        return x, [b.t().contiguous().t() for b in to_list(rois, 2)[0]]
    return x, rois


@pytest.mark.parametrize("box_format", ["tensor", "list"])
def test_torchscript(box_format):
    x, boxes = _dropin_inputs(box_format)
    for size in [(3, 2), 4, [2, 5]]:
        check_script(ops.roi_align, x, boxes, size, 0.5, 2, True)
        check_script(ops.roi_align, x, boxes, size, 0.5)
        check_script(ops.roi_pool, x, boxes, size, 0.5)
    check_script(kernelzoo.nn.RoIAlign((3, 2), 0.5, 2, True), x, boxes)
    check_script(kernelzoo.nn.RoIAlign(4, 0.5, -1), x, boxes)
    check_script(kernelzoo.nn.RoIPool([3, 2], 0.5), x, boxes)
    check_script(kernelzoo.nn.RoIPool(2, 1.0), x, boxes)


@pytest.mark.parametrize("box_format", ["tensor", "list"])
def test_torch_fx(box_format):
    # One call node per function or layer (however the function was imported:
    # CallFn holds the function object itself).
    x, boxes = _dropin_inputs(box_format)
    x = x.detach()
    check_fx(CallFn(ops.roi_align, output_size=(3, 2), spatial_scale=0.5, sampling_ratio=2,
                    aligned=True), x, boxes, calls=[ops.roi_align])
    check_fx(CallFn(ops.roi_pool, output_size=3), x, boxes, calls=[ops.roi_pool])
    check_fx(kernelzoo.nn.RoIAlign(4, 0.5, -1), x, boxes, calls=[ops.roi_align])
    check_fx(kernelzoo.nn.RoIPool((2, 3), 0.5), x, boxes, calls=[ops.roi_pool])


@needs_torchvision
def test_feature_extraction_keeps_the_layers_as_one_node():
    # torchvision's own test of its layers (test_is_leaf_node): the graph of a
    # module calling the layer has its inputs and one node for the layer.
    from torchvision.models.feature_extraction import get_graph_node_names

    class Wrapper(torch.nn.Module):
        def __init__(self, layer):
            super().__init__()
            self.layer = layer

        def forward(self, a, b):
            return self.layer(a, b)

    for layer in [kernelzoo.nn.RoIAlign(5, 1.0, -1), kernelzoo.nn.RoIPool(5, 1.0)]:
        train, evaluation = get_graph_node_names(Wrapper(layer))
        assert train == evaluation and len(train) == 3, train


@pytest.mark.parametrize("box_format", ["tensor", "list"])
def test_torch_export(box_format):
    x, boxes = _dropin_inputs(box_format)
    x = x.detach()
    check_export(CallFn(ops.roi_align, output_size=(3, 2), spatial_scale=0.5, sampling_ratio=2,
                        aligned=True), x, boxes, ops=["roi_align"])
    check_export(kernelzoo.nn.RoIPool(3, 0.5), x, boxes, ops=["roi_pool"])
    torch.manual_seed(0)
    check_export(RoIHead(), make_input((2, 3, 12, 14), seed=24), boxes,
                 ops=["roi_align", "roi_pool"])


def _shape_message(op, shape):
    return (f"{op}: expected boxes as a Tensor[K, 5] of rows (batch_index, x1, y1, x2, y2), but "
            f"got a tensor of shape {shape}")


def _entry_message(op, i, shape):
    return f"{op}: expected boxes[{i}] to be a Tensor[L, 4] of (x1, y1, x2, y2), but got a " \
           f"tensor of shape {shape}"


BAD_CALLS = [  # (name, boxes, output_size, kernelzoo's message given the op's name)
    ("Tensor[K, 4]", torch.zeros(3, 4), 2, lambda op: _shape_message(op, "[3, 4]")),
    ("Tensor[5]", torch.zeros(5), 2, lambda op: _shape_message(op, "[5]")),
    ("list entry Tensor[L, 5]", [torch.zeros(2, 4), torch.zeros(1, 5)], 2,
     lambda op: _entry_message(op, 1, "[1, 5]")),
    ("list entry Tensor[4]", [torch.zeros(4)], 2, lambda op: _entry_message(op, 0, "[4]")),
    ("list entry 0-d", [torch.zeros(2, 4), torch.tensor(1.0)], 2,
     lambda op: _entry_message(op, 1, "[]")),
    ("empty list", [], 2, lambda op: f"{op}: boxes is an empty list"),
    ("dict", {}, 2, lambda op: f"{op}: boxes must be a Tensor[K, 5] or a list of Tensor[L, 4]"),
    ("list of lists", [[0.0, 0.0, 1.0, 1.0]], 2,
     lambda op: f"{op}: boxes[0] must be a Tensor[L, 4], but got list"),
    ("output size (3,)", R, (3,), lambda op: _size_message(op, "(3,)")),
    ("output size '7'", R, "7", lambda op: _size_message(op, "'7'")),
    ("output size '77'", R, "77", lambda op: _size_message(op, "'77'")),
    ("output size 2.0", R, 2.0, lambda op: _size_message(op, "2.0")),
    ("output size 2^63", R, 2 ** 63, lambda op: f"{op}: output_size must be at most 2^31 - 1"),
    ("output size -1", R, -1, lambda op: f"{op}: output_size must be non-negative"),
]


@needs_torchvision
@pytest.mark.parametrize("op", ["roi_align", "roi_pool"])
@pytest.mark.parametrize("name,boxes,size,message", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_calls_raise_torchvisions_exception_types(op, name, boxes, size, message):
    assert_raises_like_peer(getattr(ops, op), getattr(tv_ops, op), X, boxes, size,
                            message=message(op))
    layer = {"roi_align": (kernelzoo.nn.RoIAlign, tv_ops.RoIAlign, (1.0, 2)),
             "roi_pool": (kernelzoo.nn.RoIPool, tv_ops.RoIPool, (1.0,))}
    ours, theirs, rest = layer[op]
    assert_raises_like_peer(ours(size, *rest), theirs(size, *rest), X, boxes, message=message(op))


@needs_torchvision
@pytest.mark.parametrize("op", ["roi_align", "roi_pool"])
def test_scripted_bad_boxes_raise_torchvisions_exception_types(op):
    # Scripted, torchvision's asserts raise torch.jit.Error, and indexing the
    # size(1) of a 0-d or 1-d tensor RuntimeError; kernelzoo's messages are
    # kept except in that last case for a list entry (see ops/_roi.py).
    ours, peer = script(getattr(ops, op)), script(getattr(tv_ops, op))
    for name, boxes, size, message in BAD_CALLS[:5]:
        keep = name not in ("list entry Tensor[4]", "list entry 0-d")
        exc = assert_raises_like_peer(ours, peer, X, boxes, size,
                                      message=message(op) if keep else None)
        assert isinstance(exc, torch.jit.Error) == (name in ("Tensor[K, 4]",
                                                             "list entry Tensor[L, 5]"))
    # the scripted layers call the scripted functions
    layer = (kernelzoo.nn.RoIAlign(2, 1.0, 2), tv_ops.RoIAlign(2, 1.0, 2)) if op == "roi_align" \
        else (kernelzoo.nn.RoIPool(2, 1.0), tv_ops.RoIPool(2, 1.0))
    assert_raises_like_peer(script(layer[0]), script(layer[1]), X, torch.zeros(3, 4),
                            message=_shape_message(op, "[3, 4]"))


# --- CUDA-only -------------------------------------------------------------------

@pytest.mark.cuda
def test_cuda_matches_cpu_all_dtypes_and_layouts():
    for dtype, layout in itertools.product(ALL_DTYPES, ["contiguous", "channels_last", "strided"]):
        x = make_input((2, 20, 15, 18), dtype, "cpu", seed=30, layout=layout)
        rois = make_boxes(2, 50, 15, 18, 0.5, seed=30, dtype=dtype)
        tol = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 2e-3,
               torch.bfloat16: 1.6e-2}[dtype]
        for sr, aligned in [(2, False), (-1, True)]:
            torch.testing.assert_close(ops.roi_align(x.cuda(), rois.cuda(), 7, 0.5, sr, aligned).cpu(),
                                       ops.roi_align(x, rois, 7, 0.5, sr, aligned), rtol=tol, atol=tol)
        out, arg = torch.ops.kernelzoo.roi_pool(x.cuda(), rois.cuda(), 0.5, 7, 7)
        cout, carg = torch.ops.kernelzoo.roi_pool(x, rois, 0.5, 7, 7)
        assert torch.equal(out.cpu(), cout) and torch.equal(arg.cpu(), carg)


@pytest.mark.cuda
def test_cuda_out_of_range_batch_index_gives_zeros():
    x = make_input((2, 3, 5, 6), device="cuda").requires_grad_()
    rois = torch.tensor([[5, 0.0, 0, 3, 3], [-2, 0, 0, 3, 3], [1, 0, 0, 3, 3]], device="cuda")
    for fn in [lambda: ops.roi_align(x, rois, 2, 1.0, 2), lambda: ops.roi_pool(x, rois, 2)]:
        out = fn()
        assert torch.equal(out[:2], torch.zeros_like(out[:2]))
        assert out[2].abs().sum() > 0
        v = torch.ones_like(out, requires_grad=True)
        (g,) = torch.autograd.grad(out, x, v, create_graph=True)
        assert torch.isfinite(g).all()
        # double backward (roi_pool's gathers at argmax): nothing for those boxes
        (gv,) = torch.autograd.grad(g.sum(), v)
        assert torch.equal(gv[:2], torch.zeros_like(gv[:2])) and torch.isfinite(gv).all()


@pytest.mark.cuda
def test_cuda_errors():
    with pytest.raises(RuntimeError, match=re.escape(
            "roi_align: input and boxes must be on the same device, but got input on cuda:0 and "
            "boxes on cpu")):
        torch.ops.kernelzoo.roi_align(X.cuda(), R, 1.0, 2, 2, 2, False)


@pytest.mark.cuda
def test_cuda_current_stream_and_device():
    # The input is written on a side stream that a sleep holds up: kernels
    # launched on any other stream would read it before it is written.
    src = make_input((2, 16, 33, 35), device="cuda")
    rois = make_boxes(2, 100, 33, 35, 1.0, seed=31).cuda()
    expected = ops.roi_align(src.cpu(), rois.cpu(), 7, 1.0, 2)
    expected_pool = ops.roi_pool(src.cpu(), rois.cpu(), 7)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        x = torch.zeros_like(src)
        torch.cuda._sleep(100_000_000)  # tens of milliseconds
        x.copy_(src)
        out, pool = ops.roi_align(x, rois, 7, 1.0, 2), ops.roi_pool(x, rois, 7)
    s.synchronize()
    torch.testing.assert_close(out.cpu(), expected)
    assert torch.equal(pool.cpu(), expected_pool)
    if torch.cuda.device_count() > 1:
        # inputs on a device other than the current one run there
        got = ops.roi_align(src.to("cuda:1"), rois.to("cuda:1"), 7, 1.0, 2)
        torch.testing.assert_close(got.cpu(), expected)


@needs_torchvision
def test_bench_cases_agree_with_torchvision():
    from kernelzoo import bench
    results = bench.run(["roi_align", "roi_pool"], quick=True, repeats=1, warmup=0, min_time=0.0)
    assert {r.case for r in results} == {
        "roi_align_forward", "roi_align_forward_channels_last", "roi_align_forward_adaptive_aligned",
        "roi_align_backward", "roi_pool_forward", "roi_pool_backward"}
    for r in results:
        assert r.status == "ok" and r.agree, (r.case, r.status, r.message)
        assert r.ours_ms > 0 and r.peer_ms > 0
