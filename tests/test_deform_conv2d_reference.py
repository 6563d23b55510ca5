"""The plain-PyTorch deformable-convolution reference (kernelzoo.reference.deform_conv2d)
against torchvision.ops.deform_conv2d (forward and every gradient in float64 over
groups, offset groups, stride, padding, dilation, kernel shapes, with and without
mask and bias, offsets reaching outside the map, integer and border coordinates)
and against independent computations: zero offsets as conv2d, an integer shift
as conv2d of a shifted input, a mask of 0.5, hand-computed border samples, an
empty batch, float64 gradcheck, the dtype rules, layouts, and every documented
bad input with its message and torchvision's exception type."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from kernelzoo import reference as R
from kernelzoo.reference.deform_conv2d import DeformConvArgumentError
from ophelpers import assert_raises

tv_ops = pytest.importorskip("torchvision.ops")

F64 = torch.float64
dcn = R.deform_conv2d


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one intra-op thread is faster, and much faster on a busy
    machine, where a second thread waits for a core (measured: 4.7 s against
    22 s for this file with both cores loaded)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def rand(*shape, dtype=F64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=F64).to(dtype)


def urand(*shape, lo=0.0, hi=1.0, dtype=F64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (lo + (hi - lo) * torch.rand(shape, generator=g, dtype=F64)).to(dtype)


def out_size(size, k, s, p, d):
    return (size + 2 * p - (d * (k - 1) + 1)) // s + 1


def make(n=2, c_in=4, c_out=6, hw=(7, 9), groups=1, offset_groups=1, kernel=(3, 3),
         stride=(1, 1), padding=(0, 0), dilation=(1, 1), mask=True, bias=True,
         offset_scale=2.5, seed=0, dtype=F64):
    """Random arguments (a dict of deform_conv2d's keywords); offsets are
    standard normal times ``offset_scale``."""
    kh, kw = kernel
    ho = out_size(hw[0], kh, stride[0], padding[0], dilation[0])
    wo = out_size(hw[1], kw, stride[1], padding[1], dilation[1])
    taps = kh * kw
    return dict(
        input=rand(n, c_in, *hw, seed=seed + 1, dtype=dtype),
        offset=offset_scale * rand(n, 2 * offset_groups * taps, ho, wo, seed=seed + 2,
                                   dtype=dtype),
        weight=rand(c_out, c_in // groups, kh, kw, seed=seed + 3, dtype=dtype),
        bias=rand(c_out, seed=seed + 4, dtype=dtype) if bias else None,
        stride=stride, padding=padding, dilation=dilation,
        mask=urand(n, offset_groups * taps, ho, wo, lo=-0.5, hi=1.5, seed=seed + 5,
                   dtype=dtype) if mask else None,
    )


def sample_points(kw):
    """The (y, x) sample coordinates, (N, G, taps, Ho, Wo) each, computed here
    with Python loops over the taps."""
    off, weight = kw["offset"], kw["weight"]
    (sh, sw), (ph, pw), (dh, dw) = kw["stride"], kw["padding"], kw["dilation"]
    n, _, ho, wo = off.shape
    kh, kwid = weight.shape[2:]
    off = off.reshape(n, -1, kh * kwid, 2, ho, wo)
    ys, xs = [], []
    for i in range(kh):
        for j in range(kwid):
            t = i * kwid + j
            ys.append(off[:, :, t, 0] + (torch.arange(ho)[:, None] * sh - ph + i * dh))
            xs.append(off[:, :, t, 1] + (torch.arange(wo)[None, :] * sw - pw + j * dw))
    return torch.stack(ys, 2), torch.stack(xs, 2)


def grads(fn, kw, seed=9):
    """fn's output and the gradients of a random projection of it with respect
    to every tensor argument (None where the argument is None)."""
    kw = {k: (v.detach().clone().requires_grad_() if isinstance(v, torch.Tensor) else v)
          for k, v in kw.items()}
    out = fn(**kw)
    names = [k for k in ("input", "offset", "weight", "bias", "mask") if kw[k] is not None]
    g = torch.autograd.grad(out, [kw[k] for k in names], rand(*out.shape, seed=seed))
    return out, dict(zip(names, g))


def assert_matches_torchvision(kw, rtol=1e-10, atol=1e-10):
    out, g = grads(dcn, kw)
    ref_out, ref_g = grads(tv_ops.deform_conv2d, kw)
    torch.testing.assert_close(out, ref_out, rtol=rtol, atol=atol)
    assert g.keys() == ref_g.keys()
    for k in g:
        torch.testing.assert_close(g[k], ref_g[k], rtol=rtol, atol=atol, msg=lambda m: f"{k}: {m}")


# --- against torchvision ----------------------------------------------------------

GROUPS = [(1, 1), (1, 2), (2, 1), (2, 2), (1, 4), (2, 4)]  # (groups, offset_groups)
KERNELS = [(3, 3), (1, 1), (3, 2)]


GEOMETRY = list(itertools.product([(1, 1), (2, 1)], [(1, 1), (0, 2)], [(1, 1), (2, 1)]))


@pytest.mark.parametrize("stride,padding,dilation", GEOMETRY,
                         ids=lambda v: f"{v[0]}{v[1]}")
@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: f"{k[0]}x{k[1]}")
@pytest.mark.parametrize("groups,offset_groups", GROUPS, ids=lambda v: str(v))
def test_against_torchvision(groups, offset_groups, kernel, stride, padding, dilation):
    for seed, (mask, bias) in enumerate(itertools.product([True, False], repeat=2)):
        kw = make(groups=groups, offset_groups=offset_groups, kernel=kernel, stride=stride,
                  padding=padding, dilation=dilation, mask=mask, bias=bias, seed=10 * seed)
        ys, xs = sample_points(kw)
        outside = (ys <= -1) | (ys >= 7) | (xs <= -1) | (xs >= 9)
        assert outside.any() and not outside.all()  # both kinds of sample are exercised
        assert_matches_torchvision(kw)


@pytest.mark.parametrize("step", [1.0, 0.5], ids=["integer", "half-integer"])
@pytest.mark.parametrize("mask", [True, False], ids=["mask", "nomask"])
def test_integer_and_border_coordinates_against_torchvision(step, mask):
    """Offsets on the integer (or half-integer) grid, so that samples land
    exactly on pixels and on the border lines y = -1, 0, H - 1, H (x alike),
    where the one-sided offset gradient convention matters."""
    kw = make(n=2, c_in=4, hw=(5, 6), groups=2, offset_groups=2, padding=(1, 1),
              mask=mask, seed=3)
    g = torch.Generator().manual_seed(4)
    kw["offset"] = step * torch.randint(-8, 9, kw["offset"].shape, generator=g).to(F64)
    ys, xs = sample_points(kw)
    for v in (-1, 0, 4, 5):
        assert (ys == v).any()
    for v in (-1, 0, 5, 6):
        assert (xs == v).any()
    assert_matches_torchvision(kw)


# --- hand-computed cases ----------------------------------------------------------

CONV_CASES = [  # groups, kernel, stride, padding, dilation
    (1, (3, 3), (1, 1), (1, 1), (1, 1)),
    (2, (3, 3), (2, 1), (0, 2), (2, 1)),
    (1, (1, 1), (2, 1), (1, 1), (1, 1)),
    (2, (3, 2), (1, 1), (0, 2), (2, 1)),
]


@pytest.mark.parametrize("groups,kernel,stride,padding,dilation", CONV_CASES)
def test_zero_offsets_equal_conv2d(groups, kernel, stride, padding, dilation):
    kw = make(groups=groups, kernel=kernel, stride=stride, padding=padding,
              dilation=dilation, mask=False, offset_groups=2)
    kw["offset"] = torch.zeros_like(kw["offset"])
    expected = F.conv2d(kw["input"], kw["weight"], kw["bias"], stride, padding, dilation,
                        groups)
    torch.testing.assert_close(dcn(**kw), expected, rtol=1e-12, atol=1e-12)
    # and so does a mask of ones (v2 with mask 1 is v1)
    kw["mask"] = torch.ones(kw["offset"].shape[0], kw["offset"].shape[1] // 2,
                            *kw["offset"].shape[2:], dtype=F64)
    torch.testing.assert_close(dcn(**kw), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("groups,kernel,stride,padding,dilation", CONV_CASES)
def test_integer_shift_equals_conv2d_of_shifted_input(groups, kernel, stride, padding, dilation):
    """Every tap shifted by (dy, dx) = (+1, -2): the convolution, without
    padding, of S[a, b] = input[a - pad_h + 1, b - pad_w - 2] (zero outside)."""
    kw = make(groups=groups, kernel=kernel, stride=stride, padding=padding,
              dilation=dilation, mask=False, offset_groups=2)
    x = kw["input"]
    n, c, h, w = x.shape
    off = kw["offset"]
    off = torch.stack([torch.ones_like(off[:, ::2]), torch.full_like(off[:, 1::2], -2.0)], 2)
    kw["offset"] = off.reshape(kw["offset"].shape)
    ph, pw = padding
    s = torch.zeros(n, c, h + 2 * ph, w + 2 * pw, dtype=F64)
    for a in range(s.shape[2]):
        for b in range(s.shape[3]):
            r, q = a - ph + 1, b - pw - 2
            if 0 <= r < h and 0 <= q < w:
                s[:, :, a, b] = x[:, :, r, q]
    expected = F.conv2d(s, kw["weight"], kw["bias"], stride, 0, dilation, groups)
    torch.testing.assert_close(dcn(**kw), expected, rtol=1e-12, atol=1e-12)


def test_mask_of_half_halves_the_output():
    kw = make(groups=2, offset_groups=2, padding=(1, 1), mask=False)
    full = dcn(**kw) - kw["bias"][:, None, None]
    n, c, ho, wo = kw["offset"].shape
    kw["mask"] = torch.full((n, c // 2, ho, wo), 0.5, dtype=F64)
    half = dcn(**kw) - kw["bias"][:, None, None]
    torch.testing.assert_close(half, 0.5 * full, rtol=1e-12, atol=1e-12)
    assert full.abs().max() > 1  # not a vacuous comparison of zeros


def _one_pixel(dy, dx):
    """A 1x1 convolution (weight 2) of a 3x4 image 1..12 whose output row 0
    samples at (dy, w + dx) (the other rows at zero offset): returns (output,
    d(sum of output row 0)/d offset row 0 as (dy grads, dx grads))."""
    x = torch.arange(1.0, 13.0, dtype=F64).reshape(1, 1, 3, 4)
    weight = torch.full((1, 1, 1, 1), 2.0, dtype=F64)
    offset = torch.zeros(1, 2, 3, 4, dtype=F64)
    offset[0, 0, 0], offset[0, 1, 0] = dy, dx
    offset.requires_grad_()
    out = dcn(x, offset, weight)
    (g,) = torch.autograd.grad(out[0, 0, 0].sum(), offset)
    return out.detach(), g[0, 0, 0], g[0, 1, 0]


def test_sample_half_a_pixel_above_uses_row_zero_with_weight_half():
    out, gy, gx = _one_pixel(-0.5, 0.0)
    row0 = torch.arange(1.0, 5.0, dtype=F64)
    torch.testing.assert_close(out[0, 0, 0], 2 * 0.5 * row0, rtol=0, atol=0)
    torch.testing.assert_close(out[0, 0, 1:], 2 * torch.arange(5.0, 13.0, dtype=F64).view(2, 4),
                               rtol=0, atol=0)
    # d/dy of 0.5-weighted row 0 (row -1 reads zero): the weight times row 0
    torch.testing.assert_close(gy, 2 * row0, rtol=0, atol=0)
    # d/dx along row 0 at integer x, one-sided to the right: 0.5 * (next - this)
    torch.testing.assert_close(gx, 2 * 0.5 * torch.tensor([1.0, 1, 1, -4], dtype=F64),
                               rtol=0, atol=0)


def test_sample_half_a_pixel_left_uses_column_zero_with_weight_half():
    out, gy, gx = _one_pixel(0.0, -0.5)
    col0 = torch.tensor(1.0, dtype=F64)
    assert out[0, 0, 0, 0] == 2 * 0.5 * col0
    # x = w - 0.5 for w > 0: the mean of columns w - 1 and w
    torch.testing.assert_close(out[0, 0, 0, 1:], 2 * torch.tensor([1.5, 2.5, 3.5], dtype=F64),
                               rtol=0, atol=0)
    torch.testing.assert_close(gx, 2 * torch.ones(4, dtype=F64), rtol=0, atol=0)


def test_border_lines_follow_torchvision():
    """y = -1 exactly reads zero, but its offset gradient is one-sided from the
    right (the row-0 values), as torchvision's backward computes; y <= -1.5 and
    y = H read zero with a zero gradient; y = H - 1 reads the last row and its
    gradient is (0 - last row)."""
    row0 = torch.arange(1.0, 5.0, dtype=F64)
    last = torch.arange(9.0, 13.0, dtype=F64)
    out, gy, _ = _one_pixel(-1.0, 0.0)
    assert out[0, 0, 0].abs().max() == 0
    torch.testing.assert_close(gy, 2 * row0, rtol=0, atol=0)
    for dy in (-1.5, -7.25, 3.0, 3.5, 1e9):
        out, gy, gx = _one_pixel(dy, 0.0)
        assert out[0, 0, 0].abs().max() == 0 and gy.abs().max() == 0 and gx.abs().max() == 0
    out, gy, _ = _one_pixel(2.0, 0.0)
    torch.testing.assert_close(out[0, 0, 0], 2 * last, rtol=0, atol=0)
    torch.testing.assert_close(gy, -2 * last, rtol=0, atol=0)


def test_empty_batch():
    kw = make(n=0, groups=2, offset_groups=2, padding=(1, 1))
    out, g = grads(dcn, kw)
    assert out.shape == (0, 6, 7, 9) and out.dtype == F64
    assert g["weight"].abs().max() == 0 and g["bias"].abs().max() == 0
    assert g["input"].shape == kw["input"].shape and g["offset"].shape == kw["offset"].shape
    torch.testing.assert_close(out, tv_ops.deform_conv2d(**kw))


def test_gradcheck():
    g = torch.Generator().manual_seed(7)
    for mask, groups, offset_groups in ((True, 2, 2), (False, 1, 2)):
        kw = make(n=1, c_in=2, c_out=2, hw=(3, 4), groups=groups, offset_groups=offset_groups,
                  kernel=(2, 2), padding=(1, 0), mask=mask, seed=20)
        # integer part in [-2, 2], fractional part in [0.2, 0.8]: away from the
        # kinks at integer coordinates (the base positions are integers)
        off = kw["offset"]
        frac = 0.2 + 0.6 * torch.rand(off.shape, generator=g, dtype=F64)
        kw["offset"] = torch.randint(-2, 3, off.shape, generator=g).to(F64) + frac
        names = [k for k in ("input", "offset", "weight", "bias", "mask") if kw[k] is not None]
        tensors = [kw[k].requires_grad_() for k in names]

        def fn(*ts):
            return dcn(**{**kw, **dict(zip(names, ts))})

        assert torch.autograd.gradcheck(fn, tensors)


# --- dtypes and layouts -------------------------------------------------------------


def test_float32_close_to_float64():
    kw = make(groups=2, offset_groups=2, padding=(1, 1))
    kw32 = {k: (v.float() if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
    out = dcn(**kw32)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), dcn(**kw), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_computes_in_float32(dtype):
    kw = make(groups=2, offset_groups=2, padding=(1, 1), dtype=dtype)
    out = dcn(**kw)
    assert out.dtype == dtype
    up = {k: (v.float() if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
    torch.testing.assert_close(out, dcn(**up).to(dtype), rtol=0, atol=0)
    x = kw["input"].clone().requires_grad_()
    (gx,) = torch.autograd.grad(dcn(**{**kw, "input": x}).sum(), x)
    assert gx.dtype == dtype and gx.isfinite().all()


def test_non_contiguous_arguments():
    kw = make(groups=2, offset_groups=2, padding=(1, 1))
    nc = dict(kw)
    nc["input"] = kw["input"].to(memory_format=torch.channels_last)
    nc["offset"] = kw["offset"].transpose(2, 3).contiguous().transpose(2, 3)
    nc["weight"] = kw["weight"].transpose(0, 1).contiguous().transpose(0, 1)
    nc["mask"] = torch.stack([kw["mask"], -kw["mask"]], -1)[..., 0]
    assert not any(nc[k].is_contiguous() for k in ("input", "offset", "weight", "mask"))
    torch.testing.assert_close(dcn(**nc), dcn(**kw), rtol=1e-12, atol=1e-12)


def test_int_arguments_are_pairs():
    kw = make(stride=(2, 2), padding=(1, 1), dilation=(2, 2))
    a = dcn(**kw)
    b = dcn(**{**kw, "stride": 2, "padding": 1, "dilation": 2})
    torch.testing.assert_close(a, b, rtol=0, atol=0)


# --- bad inputs ---------------------------------------------------------------------

X = rand(1, 4, 7, 9)
W = rand(6, 4, 3, 3)
OFF = rand(1, 18, 5, 7)
M = rand(1, 9, 5, 7)


def _a(input=X, offset=OFF, weight=W, **kw):
    return dict(input=input, offset=offset, weight=weight, **kw)


# name, keyword arguments, torchvision's exception type (None: not called, it
# crashes or raises ZeroDivisionError), message
BAD = [
    ("input 3-D", _a(input=X[0]), ValueError,
     "expected a 4-D input, but got input of shape (4, 7, 9)"),
    ("input 5-D", _a(input=X[None]), ValueError,
     "expected a 4-D input, but got input of shape (1, 1, 4, 7, 9)"),
    ("offset 3-D", _a(offset=OFF[0]), RuntimeError,
     "expected a 4-D offset, but got offset of shape (18, 5, 7)"),
    ("mask 3-D", _a(mask=M[0]), RuntimeError,
     "expected a 4-D mask, but got mask of shape (9, 5, 7)"),
    ("weight 3-D", _a(weight=W[0]), RuntimeError,
     "expected a 4-D weight, but got weight of shape (4, 3, 3)"),
    ("offset channels 17", _a(offset=rand(1, 17, 5, 7)), RuntimeError,
     "offset.shape[1]=17 is not a positive multiple of 2 * kernel_height * kernel_width = 18"),
    ("offset channels 27", _a(offset=rand(1, 27, 5, 7)), RuntimeError,
     "offset.shape[1]=27 is not a positive multiple of 2 * kernel_height * kernel_width = 18"),
    ("offset channels 0", _a(offset=rand(1, 0, 5, 7)), RuntimeError,
     "offset.shape[1]=0 is not a positive multiple"),
    ("mask channels 8", _a(mask=rand(1, 8, 5, 7)), RuntimeError,
     "mask.shape[1]=8 does not match the offset: expected offset_groups * kernel_height * "
     "kernel_width = 9 (offset_groups=1 from offset.shape[1]=18)"),
    ("mask channels for one group", _a(offset=rand(1, 36, 5, 7), mask=M), RuntimeError,
     "mask.shape[1]=9 does not match the offset: expected offset_groups * kernel_height * "
     "kernel_width = 18 (offset_groups=2 from offset.shape[1]=36)"),
    ("offset groups not dividing channels", _a(offset=rand(1, 54, 5, 7)), RuntimeError,
     "offset_groups=3 (offset.shape[1] / (2 * kernel_height * kernel_width)) does not divide "
     "the 4 input channels"),
    ("groups not dividing input channels", _a(weight=rand(6, 3, 3, 3)), RuntimeError,
     "groups do not divide the channels: input has 4 channels, which is not a multiple of "
     "weight.shape[1]=3"),
    ("groups not dividing output channels", _a(weight=rand(5, 2, 3, 3)), RuntimeError,
     "groups do not divide the channels: weight.shape[0]=5 output channels are not a multiple "
     "of groups=2"),
    ("offset spatial size", _a(offset=rand(1, 18, 5, 6)), RuntimeError,
     "offset spatial size (5, 6) does not match the computed output size (5, 7)"),
    ("mask spatial size", _a(mask=rand(1, 9, 4, 7)), RuntimeError,
     "mask spatial size (4, 7) does not match the computed output size (5, 7)"),
    ("offset spatial size with stride", _a(offset=OFF, stride=(2, 1)), RuntimeError,
     "offset spatial size (5, 7) does not match the computed output size (3, 7)"),
    ("offset batch", _a(offset=rand(2, 18, 5, 7)), RuntimeError,
     "offset has batch size 2, but input has 1"),
    ("mask batch", _a(mask=rand(2, 9, 5, 7)), RuntimeError,
     "mask has batch size 2, but input has 1"),
    ("bias size", _a(bias=rand(5)), RuntimeError,
     "bias must have one element per output channel (6), but got bias of shape (5,)"),
    ("output too small", _a(input=rand(1, 4, 2, 2), offset=rand(1, 18, 0, 0)), RuntimeError,
     "the output would be empty: computed output size (0, 0) from input (2, 2), kernel (3, 3)"),
    ("negative padding", _a(padding=-1), RuntimeError,
     "padding must be non-negative, but got (-1, -1)"),
    ("zero dilation", _a(dilation=(1, 0)), RuntimeError,
     "dilation must be positive, but got (1, 0)"),
    ("zero stride", _a(stride=0), None, "stride must be positive, but got (0, 0)"),
    ("no input channels", _a(input=rand(1, 0, 7, 9), weight=rand(6, 0, 3, 3)), None,
     "expected an input with at least one channel, but got input of shape (1, 0, 7, 9)"),
    ("offset dtype", _a(offset=OFF.float()), RuntimeError,
     "expected offset to have the input's dtype torch.float64, but got torch.float32"),
    ("mask dtype", _a(mask=M.float()), RuntimeError,
     "expected mask to have the input's dtype torch.float64, but got torch.float32"),
    ("weight dtype", _a(weight=W.float()), RuntimeError,
     "expected weight to have the input's dtype torch.float64, but got torch.float32"),
]


@pytest.mark.parametrize("name,kwargs,peer_exc,message", BAD, ids=[b[0] for b in BAD])
def test_bad_inputs(name, kwargs, peer_exc, message):
    err = assert_raises("eager", (DeformConvArgumentError, RuntimeError, ValueError),
                        "deform_conv2d: " + message, dcn, **kwargs)
    if peer_exc is not None:  # torchvision raises this type for the same call ...
        with pytest.raises(peer_exc):
            tv_ops.deform_conv2d(**kwargs)
        assert isinstance(err, peer_exc)  # ... and so does the reference


def test_bad_inputs_are_checked_before_any_work_on_meta():
    """The checks are shape-only: they also run on meta tensors."""
    kw = {k: v.to("meta") for k, v in _a(offset=rand(1, 18, 5, 6)).items()}
    with pytest.raises(DeformConvArgumentError, match="offset spatial size"):
        dcn(**kw)
    ok = {k: v.to("meta") for k, v in _a(mask=M).items()}
    assert dcn(**ok).shape == (1, 6, 5, 7)
