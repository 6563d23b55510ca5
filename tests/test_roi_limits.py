"""roi_align / roi_pool at the edges of their domain: extra memory on few-channel
maps, non-finite values, maps and bins beyond 2^16 / 2^24 pixels, and the
sampling-ratio limit. The rules tested here are in README.md ("Differences from
the peers")."""

import math
import subprocess
import sys
import textwrap

import pytest
import torch

from kernelzoo import ops

try:
    import torchvision.ops as tv_ops
except ImportError:
    tv_ops = None
needs_torchvision = pytest.mark.skipif(tv_ops is None, reason="torchvision is not installed")

INF = float("inf")
NAN = float("nan")


# --- memory: bounded by the work, whatever the channel count ----------------------

_PEAK_SCRIPT = textwrap.dedent("""
    import sys, torch, kernelzoo

    def status(key):  # kB, from /proc/self/status
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024

    op, backward = sys.argv[1], sys.argv[2] == "backward"
    torch.set_num_threads(2)
    x = torch.randn(1, 1, 4096, 4096)
    boxes = torch.tensor([[0.0, 0.0, 0.0, 4095.0, 4095.0]])
    if backward:
        grad = torch.randn(1, 1, 7, 7)
        if op == "roi_align":
            run = lambda: torch.ops.kernelzoo._roi_align_backward(
                grad, boxes, 1.0, 7, 7, 1, 1, 4096, 4096, 2, False)
        else:
            argmax = torch.ops.kernelzoo.roi_pool(x, boxes, 1.0, 7, 7)[1]
            run = lambda: torch.ops.kernelzoo._roi_pool_backward(
                grad, boxes, argmax, 1.0, 7, 7, 1, 1, 4096, 4096)
        out_bytes = 4096 * 4096 * 4  # grad_input
    else:
        fn = getattr(kernelzoo.ops, op)
        run = lambda: fn(x, boxes, 7, 1.0, 2) if op == "roi_align" else fn(x, boxes, 7, 1.0)
        out_bytes = 0
    # warm up on a small map: libraries, thread pools, allocator arenas
    getattr(kernelzoo.ops, op)(torch.randn(1, 1, 64, 64), boxes / 64, 7)
    before = status("VmRSS")
    with open("/proc/self/clear_refs", "w") as refs:  # resets the peak (VmHWM) to the current RSS
        refs.write("5")
    run()
    print((status("VmHWM") - before - out_bytes) / 2**20)
""")


@pytest.mark.parametrize("op", ["roi_align", "roi_pool"])
@pytest.mark.parametrize("direction", ["forward", "backward"])
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self (Linux)")
def test_extra_peak_memory_of_one_channel_map_is_small(op, direction):
    """One box over a single-channel 4096x4096 float32 map (64 MiB): the kernels'
    scratch memory beyond the output must stay small (it was about 880 MiB for the
    roi_align forward and 1 GiB for roi_pool when every unit was padded to 16
    channels and tiled whole)."""
    out = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, op, direction],
                         capture_output=True, text=True, check=True)
    extra_mib = float(out.stdout.strip().splitlines()[-1])
    assert extra_mib < 32, f"{op} {direction}: {extra_mib:.0f} MiB of extra peak memory"


def test_huge_expanded_map_runs():
    """A 46340 x 46340 map expanded from one value (2^31 - 1 pixels, no memory)
    used to fail with std::bad_alloc: the kernels read such a map in place."""
    x = torch.full((1, 1, 1, 1), 2.5).expand(1, 1, 46340, 46340)
    boxes = torch.tensor([[0.0, 10.0, 10.0, 20.0, 30.0], [0.0, 0.0, 0.0, 46339.0, 46339.0]])
    out = ops.roi_align(x, boxes, 2, sampling_ratio=2)
    torch.testing.assert_close(out, torch.full((2, 1, 2, 2), 2.5))
    torch.testing.assert_close(ops.roi_pool(x, boxes, 2), torch.full((2, 1, 2, 2), 2.5))


def test_tiled_and_direct_paths_agree_bitwise():
    """A box's output never depends on the other boxes: alone, a big sparse box
    is read from the input in place; among many boxes, from a whole-plane tile."""
    g = torch.Generator().manual_seed(0)
    for channels in (1, 5, 16, 21):
        x = torch.randn(1, channels, 48, 64, generator=g)
        big = torch.tensor([[0.0, 1.5, 2.25, 60.0, 45.5]])
        small = torch.rand(200, 4, generator=g) * 20
        small[:, 2:] += small[:, :2] + 2
        many = torch.cat([big, torch.cat([torch.zeros(200, 1), small], 1)])
        for sr in (1, 2, 0):
            alone = ops.roi_align(x, big, (3, 2), 1.0, sr, True)
            together = ops.roi_align(x, many, (3, 2), 1.0, sr, True)[:1]
            assert torch.equal(alone, together), (channels, sr)
        assert torch.equal(ops.roi_pool(x, big, (3, 2)), ops.roi_pool(x, many, (3, 2))[:1])


# --- non-finite values: a weight-zero tap or an off-map sample contributes nothing ---

def _align_both(x, boxes, output_size, sampling_ratio, aligned=False):
    x = x.clone().requires_grad_()
    out = ops.roi_align(x, boxes, output_size, 1.0, sampling_ratio, aligned)
    return out, x


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_inf_at_a_tap_of_weight_zero_is_ignored(dtype):
    """A 1x1 bin sampled once, exactly on pixel (1, 1): its right and lower
    neighbours have weight zero; +inf there must not turn the result into inf or
    NaN (the exact value is the pixel's own)."""
    x = torch.zeros(1, 1, 4, 4, dtype=dtype)
    x[0, 0, 1, 1] = 3.0
    x[0, 0, 1, 2] = INF
    x[0, 0, 2, 1] = INF
    x[0, 0, 2, 2] = -INF
    # box (1, 1)-(2, 2), aligned (-0.5), one bin, one sample: at (1, 1) exactly
    boxes = torch.tensor([[0.0, 1.0, 1.0, 2.0, 2.0]], dtype=dtype)
    out = ops.roi_align(x, boxes, 1, 1.0, 1, True)
    assert out.item() == 3.0
    # the gradient flows to the one pixel with non-zero weight only, even when it is inf
    xg = x.clone().requires_grad_()
    ops.roi_align(xg, boxes, 1, 1.0, 1, True).backward(torch.full((1, 1, 1, 1), INF, dtype=dtype))
    expected = torch.zeros_like(x)
    expected[0, 0, 1, 1] = INF
    assert torch.equal(xg.grad, expected)


def test_nan_pixel_does_not_reach_bins_that_only_sample_off_the_map():
    """NaN at pixel (0, 0) and a box partly off the map: the bins whose samples
    lie off the map, or on the map away from (0, 0), stay finite; a bin that
    samples (0, 0) with non-zero weight is NaN."""
    x = torch.arange(36.0).reshape(1, 1, 6, 6)
    x[0, 0, 0, 0] = NAN
    boxes = torch.tensor([[0.0, -8.0, 2.0, 4.0, 5.0]])  # left third off the map
    out = ops.roi_align(x, boxes, (1, 3), 1.0, 2, False)[0, 0, 0]
    assert math.isfinite(out[0]) and math.isfinite(out[1]) and math.isfinite(out[2])
    boxes_on = torch.tensor([[0.0, -0.5, -0.5, 2.0, 2.0]])
    assert math.isnan(ops.roi_align(x, boxes_on, 1, 1.0, 2, False).item())


def test_nan_in_roi_pool_is_never_the_maximum():
    x = torch.full((1, 1, 3, 3), NAN)
    x[0, 0, 2, 2] = -1.0
    out = ops.roi_pool(x, torch.tensor([[0.0, 0.0, 0.0, 2.0, 2.0]]), 1)
    assert out.item() == -1.0


# --- positions on very large maps ---------------------------------------------------

@needs_torchvision
def test_roi_pool_bins_on_a_map_wider_than_2_24():
    """Bin edges past 2^24 pixels: torchvision forms them in integers from the
    rounded corner, where float32 would round start + 3 to an even number; so
    must kernelzoo (values and argmax identical)."""
    width = (1 << 24) + 256
    x = torch.rand(1, 1, 1, width, generator=torch.Generator().manual_seed(0))
    x1 = torch.arange(20, dtype=torch.float64) * 6 + (1 << 24)  # even: float32 holds them
    boxes = torch.stack([torch.zeros(20), x1, torch.zeros(20), x1 + 20, torch.zeros(20)], 1)
    boxes = boxes.float()
    out, argmax = torch.ops.kernelzoo.roi_pool(x, boxes, 1.0, 1, 7)
    want, want_argmax = torch.ops.torchvision.roi_pool(x, boxes, 1.0, 1, 7)
    assert torch.equal(out, want)
    assert torch.equal(argmax, want_argmax)


@needs_torchvision
def test_adaptive_sampling_of_bins_taller_than_2_16():
    """A bin 70000 pixels tall takes ceil(70000 / 1) samples per axis, as
    torchvision (the grid used to be capped at 65536)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 1, 70000, 1, dtype=torch.float64, generator=g)
    boxes = torch.tensor([[0.0, 0.0, 0.0, 1.0, 69999.0]], dtype=torch.float64)
    got = ops.roi_align(x, boxes, 1, 1.0, 0, False)
    want = tv_ops.roi_align(x, boxes, 1, 1.0, 0, False)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_adaptive_sampling_of_a_huge_box_visits_only_the_map():
    """A box 1e30 wide asks for ~1e29 samples per bin; only those on the map
    contribute, and only those are visited (this returns at once)."""
    x = torch.ones(1, 1, 8, 8, dtype=torch.float64)
    boxes = torch.tensor([[0.0, -1e30, -1e30, 1e30, 1e30]], dtype=torch.float64)
    out = ops.roi_align(x, boxes, 1, 1.0, 0, False)
    assert out.item() == pytest.approx(0.0, abs=1e-12)


def test_sampling_ratio_limit():
    x = torch.randn(1, 1, 4, 4)
    boxes = torch.tensor([[0.0, 0.0, 0.0, 3.0, 3.0]])
    ops.roi_align(x, boxes, 1, 1.0, 1024)  # the largest accepted
    for ratio in (1025, 2 ** 31 - 1):
        with pytest.raises(RuntimeError, match=r"sampling_ratio must be at most 1024 "
                                               r"\(samples per bin and axis"):
            ops.roi_align(x, boxes, 1, 1.0, ratio)
