"""pixel_shuffle / pixel_unshuffle against torch.nn.functional (bitwise), the
plain-PyTorch reference, autograd, opcheck, torch.compile and the error messages."""

import itertools
import operator
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import kernelzoo
from kernelzoo import ops, reference
from ophelpers import (MODES, CallFn, assert_raises, assert_raises_like_peer,
                       check_compile, check_export, check_fx, check_script, opcheck, script)

ALL_DTYPES = [torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
              torch.float16, torch.bfloat16, torch.float32, torch.float64,
              torch.complex64, torch.complex128]
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def make(shape, dtype, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        t = torch.randint(0, 2, shape, generator=g).bool()
    elif dtype.is_floating_point or dtype.is_complex:
        t = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
        if dtype.is_complex:
            t = t + 1j * torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
    else:
        t = torch.randint(-100, 100, shape, generator=g).to(dtype)
        if dtype == torch.uint8:
            t = torch.randint(0, 255, shape, generator=g).to(dtype)
    return t.to(device)


def assert_same(ours, theirs, strides=None):
    """Bitwise equal values, same shape, dtype, device and strides (`strides`, or
    those of `theirs`)."""
    assert ours.shape == theirs.shape
    assert ours.dtype == theirs.dtype
    assert ours.device == theirs.device
    assert torch.equal(ours, theirs)
    strides = theirs.stride() if strides is None else strides
    assert ours.stride() == strides, (ours.stride(), strides)


def check(name, x, r, expected_input=None):
    """kernelzoo's op against torch's on x. Strides are compared with torch's CPU
    op: on CUDA torch returns contiguous outputs, while kernelzoo keeps
    channels_last on every device as torch does on CPU."""
    ours, theirs = getattr(ops, name)(x, r), getattr(F, name)(
        x if expected_input is None else expected_input, r)
    assert_same(ours, theirs, strides=getattr(F, name)(x.cpu(), r).stride()
                if expected_input is None else None)
    return ours


# (low-res shape, r): odd sizes, no multiple of any tile; 3-d to 6-d inputs.
SHUFFLE_CASES = [
    ((1, 4, 1, 1), 2), ((2, 12, 5, 3), 2), ((3, 18, 4, 7), 3), ((2, 32, 3, 5), 4),
    ((1, 50, 2, 3), 5), ((2, 9, 1, 7), 3), ((3, 5, 4), 1), ((8, 3, 1), 1),
    ((4, 6, 7), 1), ((12, 5, 3), 2), ((2, 3, 8, 3, 5), 2), ((2, 1, 2, 27, 2, 3), 3),
    ((1, 64, 17, 33), 2), ((2, 7 * 16, 3, 9), 4),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
def test_matches_torch_all_dtypes(device, dtype):
    for lo_shape, r in SHUFFLE_CASES:
        lo = make(lo_shape, dtype, device)
        hi = check("pixel_shuffle", lo, r)
        assert torch.equal(check("pixel_unshuffle", hi, r), lo)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.uint8, torch.float64,
                                   torch.complex128], ids=str)
@pytest.mark.parametrize("r", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("c", [4, 12])  # the CPU kernel switches loop order at 8 channels
def test_channels_last_keeps_format(device, dtype, r, c):
    lo = make((3, c * r * r, 5, 7), dtype, device).contiguous(memory_format=torch.channels_last)
    hi = check("pixel_shuffle", lo, r)
    assert hi.is_contiguous(memory_format=torch.channels_last)
    back = check("pixel_unshuffle", hi, r)
    assert back.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(back, lo)


# Shapes where torch's channels_last detection is ambiguous (size-1 dims): the
# output format must follow torch's choice exactly, eagerly and in the fake kernel.
@pytest.mark.parametrize("shape", [(2, 4, 1, 1), (1, 4, 3, 5), (2, 4, 1, 5), (2, 4, 3, 1),
                                   (1, 4, 1, 1), (1, 16, 1, 3)])
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_ambiguous_memory_formats_follow_torch(shape, fmt):
    lo = make(shape, torch.float32).contiguous(memory_format=fmt)
    expected = F.pixel_shuffle(lo, 2)
    assert_same(ops.pixel_shuffle(lo, 2), expected)
    with torch._subclasses.FakeTensorMode() as mode:
        fake = mode.from_tensor(lo)
        assert ops.pixel_shuffle(fake, 2).stride() == expected.stride()
    hi = make((shape[0], shape[1], 2 * shape[2], 2 * shape[3]), torch.float32)
    hi = hi.contiguous(memory_format=fmt)
    assert_same(ops.pixel_unshuffle(hi, 2), F.pixel_unshuffle(hi, 2))


def strided_views(device):
    """(name, tensor) pairs of non-contiguous views with 12 = 3 * 2 * 2 channels."""
    base = make((4, 12, 10, 14), torch.float32, device)
    yield "sliced_w", base[..., ::2]
    yield "sliced_hw", base[:, :, 1::3, 2::2]
    yield "transposed_hw", base.transpose(2, 3)
    yield "batch_channel_swapped", make((12, 4, 6, 8), torch.float32, device).transpose(0, 1)
    yield "permuted", make((6, 8, 4, 12), torch.float32, device).permute(2, 3, 0, 1)
    yield "expanded_batch", make((1, 12, 5, 6), torch.float32, device).expand(3, 12, 5, 6)
    yield "expanded_w", make((2, 12, 5, 1), torch.float32, device).expand(2, 12, 5, 6)
    yield "channels_sliced", make((2, 24, 4, 6), torch.float32, device)[:, ::2]
    # leading dims that cannot be flattened into one without a copy
    yield "5d_unflattenable", make((3, 2, 12, 4, 6), torch.float32, device).transpose(0, 1)
    yield "5d_channels_last_3d", make((2, 12, 4, 6, 2), torch.float32, device).permute(
        0, 4, 1, 2, 3).contiguous(memory_format=torch.channels_last_3d)


@pytest.mark.parametrize("device", DEVICES)
def test_strided_views(device):
    for name, x in strided_views(device):
        # torch's CPU op rejects 5-d channels_last_3d inputs; kernelzoo returns
        # a contiguous result for them (as for every layout but 4-d channels_last)
        expected_input = x.contiguous() if x.dim() == 5 else None
        check("pixel_shuffle", x, 2, expected_input)
        # views of high-res tensors for unshuffle: same views, even H and W
        if x.shape[-1] % 2 == 0 and x.shape[-2] % 2 == 0:
            check("pixel_unshuffle", x, 2, expected_input)


@pytest.mark.parametrize("device", DEVICES)
def test_conjugate_and_negative_views(device):
    x = make((2, 8, 3, 5), torch.complex64, device)
    assert torch.equal(ops.pixel_shuffle(x.conj(), 2), F.pixel_shuffle(x.conj().resolve_conj(), 2))
    assert torch.equal(ops.pixel_unshuffle(x.conj(), 1), x.conj().resolve_conj())
    neg = torch._neg_view(x)
    assert torch.equal(ops.pixel_shuffle(neg, 2), F.pixel_shuffle(-x, 2))


@pytest.mark.parametrize("device", DEVICES)
def test_empty_tensors(device):
    for shape in [(0, 8, 3, 5), (2, 0, 3, 5), (2, 8, 0, 5), (2, 8, 3, 0), (0, 4, 0),
                  (2, 0, 4, 8, 6)]:
        x = torch.empty(shape, device=device)
        check("pixel_shuffle", x, 2 if shape[-3] % 4 == 0 else 1)
        if shape[-2] % 2 == 0 and shape[-1] % 2 == 0:
            # torch's eager pixel_unshuffle returns a clone of an empty input,
            # keeping the input's shape; its own meta kernel (and the shape
            # formula) say otherwise. kernelzoo follows the formula.
            out = ops.pixel_unshuffle(x, 2)
            *batch, c, h, w = shape
            assert out.shape == (*batch, c * 4, h // 2, w // 2)
            assert out.shape == F.pixel_unshuffle(x.to("meta"), 2).shape
    # empty output from a non-empty channel count and vice versa
    x = torch.empty(0, 4, 2, 2, device=device, requires_grad=True)
    ops.pixel_shuffle(x, 2).sum().backward()
    assert x.grad.shape == x.shape


@pytest.mark.parametrize("device", DEVICES)
def test_large_outputs_reuse_buffers_correctly(device):
    # >= 4 MiB outputs come from kernelzoo's huge-page buffer cache on CPU; a
    # recycled buffer holds the previous result and must be fully overwritten.
    for seed in range(3):
        lo = make((4, 64, 64, 66), torch.float32, device, seed=seed)
        check("pixel_shuffle", lo, 2)
        check("pixel_shuffle", lo.contiguous(memory_format=torch.channels_last), 4)


def test_reference_matches_torch():
    for (lo_shape, r), dtype in itertools.product(SHUFFLE_CASES, [torch.float32, torch.int64]):
        lo = make(lo_shape, dtype)
        assert torch.equal(reference.pixel_shuffle(lo, r), F.pixel_shuffle(lo, r))
        hi = F.pixel_shuffle(lo, r)
        assert torch.equal(reference.pixel_unshuffle(hi, r), F.pixel_unshuffle(hi, r))


def test_torch_ops_namespace_is_the_same_op():
    lo = make((2, 8, 3, 5), torch.float32)
    assert torch.equal(torch.ops.kernelzoo.pixel_shuffle(lo, 2), F.pixel_shuffle(lo, 2))
    hi = make((2, 2, 6, 10), torch.float32)
    assert torch.equal(torch.ops.kernelzoo.pixel_unshuffle(hi, 2), F.pixel_unshuffle(hi, 2))


def test_meta_tensors():
    lo = torch.empty(2, 8, 3, 5, device="meta").contiguous(memory_format=torch.channels_last)
    hi = ops.pixel_shuffle(lo, 2)
    assert hi.device.type == "meta" and hi.shape == (2, 2, 6, 10)
    assert hi.is_contiguous(memory_format=torch.channels_last)
    assert ops.pixel_unshuffle(torch.empty(3, 1, 4, 6, 8, device="meta"), 2).shape == (3, 1, 16, 3, 4)


# --- autograd ------------------------------------------------------------------

@pytest.mark.parametrize("shape,r", [((2, 8, 3, 5), 2), ((1, 9, 2, 2), 3), ((2, 2, 4, 3, 2), 1)])
def test_gradcheck(shape, r):
    lo = make(shape, torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: ops.pixel_shuffle(x, r), (lo,))
    assert torch.autograd.gradgradcheck(lambda x: ops.pixel_shuffle(x, r), (lo,))
    hi = F.pixel_shuffle(lo.detach(), r).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: ops.pixel_unshuffle(x, r), (hi,))
    assert torch.autograd.gradgradcheck(lambda x: ops.pixel_unshuffle(x, r), (hi,))


def test_gradients_match_torch():
    lo = make((2, 18, 4, 5), torch.float32).contiguous(memory_format=torch.channels_last)
    a, b = lo.clone().requires_grad_(), lo.clone().requires_grad_()
    w = make((2, 2, 12, 15), torch.float32)
    (ops.pixel_shuffle(a, 3) * w).sum().backward()
    (F.pixel_shuffle(b, 3) * w).sum().backward()
    assert torch.equal(a.grad, b.grad)
    # double backward: the gradient of the gradient
    x = make((1, 8, 2, 3), torch.float64).requires_grad_()
    v = make((1, 2, 4, 6), torch.float64)
    (g,) = torch.autograd.grad((ops.pixel_shuffle(x, 2) * v).sum() ** 2, x, create_graph=True)
    (gg,) = torch.autograd.grad(g.sum(), x)
    x2 = x.detach().clone().requires_grad_()
    (g2,) = torch.autograd.grad((F.pixel_shuffle(x2, 2) * v).sum() ** 2, x2, create_graph=True)
    (gg2,) = torch.autograd.grad(g2.sum(), x2)
    assert torch.allclose(g, g2) and torch.allclose(gg, gg2)


# --- opcheck and torch.compile ---------------------------------------------------

OPCHECK_SAMPLES = [
    (torch.randn(2, 8, 3, 5), 2),
    (torch.randn(2, 8, 3, 5).contiguous(memory_format=torch.channels_last), 2),
    (torch.randn(9, 4, 2), 3),
    (torch.randn(2, 3, 4, 3, 5), 2),
    (torch.randn(2, 8, 6, 10)[..., ::2], 2),
]


@pytest.mark.parametrize("sample", range(len(OPCHECK_SAMPLES)))
def test_opcheck(sample):
    x, r = OPCHECK_SAMPLES[sample]
    opcheck(torch.ops.kernelzoo.pixel_shuffle.default, (x.requires_grad_(), r))
    hi = F.pixel_shuffle(x.detach(), r).requires_grad_()
    opcheck(torch.ops.kernelzoo.pixel_unshuffle.default, (hi, r))


class SubPixel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 12, 3, padding=1)
        self.up = kernelzoo.nn.PixelShuffle(2)
        self.down = kernelzoo.nn.PixelUnshuffle(2)

    def forward(self, x):
        y = self.up(self.conv(x))
        return self.down(torch.tanh(y)) + 1


def test_torch_compile_fullgraph():
    torch.manual_seed(0)
    model = SubPixel()
    x = torch.randn(2, 3, 6, 10, requires_grad=True)
    compiled = torch.compile(model, fullgraph=True, dynamic=False)
    out, ref = compiled(x), model(x)
    assert torch.allclose(out, ref, atol=1e-6)
    (g,) = torch.autograd.grad(out.sum(), x)
    (g_ref,) = torch.autograd.grad(ref.sum(), x)
    assert torch.allclose(g, g_ref, atol=1e-6)


def test_layers_match_torch_layers():
    x = make((2, 18, 4, 5), torch.float32)
    assert torch.equal(kernelzoo.nn.PixelShuffle(3)(x), torch.nn.PixelShuffle(3)(x))
    y = make((2, 2, 6, 9), torch.float32)
    assert torch.equal(kernelzoo.nn.PixelUnshuffle(3)(y), torch.nn.PixelUnshuffle(3)(y))
    assert repr(kernelzoo.nn.PixelShuffle(3)) == "PixelShuffle(upscale_factor=3)"
    assert repr(kernelzoo.nn.PixelUnshuffle(2)) == "PixelUnshuffle(downscale_factor=2)"


# --- drop-in: TorchScript, torch.fx, torch.export ----------------------------------

def test_torchscript():
    lo = make((2, 18, 4, 5), torch.float64).requires_grad_()
    hi = make((2, 2, 6, 9), torch.float64).requires_grad_()
    check_script(ops.pixel_shuffle, lo, 3)
    check_script(ops.pixel_unshuffle, hi, 3)
    check_script(kernelzoo.nn.PixelShuffle(3), lo)
    check_script(kernelzoo.nn.PixelUnshuffle(3), hi)
    check_script(SubPixel(), make((2, 3, 6, 10), torch.float32).requires_grad_())


def test_torch_fx():
    lo = make((2, 18, 4, 5), torch.float32)
    check_fx(CallFn(ops.pixel_shuffle, upscale_factor=3), lo, calls=[ops.pixel_shuffle])
    check_fx(CallFn(ops.pixel_unshuffle, downscale_factor=1), lo, calls=[ops.pixel_unshuffle])
    check_fx(kernelzoo.nn.PixelShuffle(3), lo, calls=[ops.pixel_shuffle])
    torch.manual_seed(0)
    check_fx(SubPixel(), make((2, 3, 6, 10), torch.float32),
             calls=["conv", ops.pixel_shuffle, torch.tanh, ops.pixel_unshuffle, operator.add])


def test_torch_export():
    torch.manual_seed(0)
    check_export(SubPixel(), make((2, 3, 6, 10), torch.float32),
                 ops=["pixel_shuffle", "pixel_unshuffle"])
    check_export(CallFn(ops.pixel_shuffle, upscale_factor=2),
                 make((2, 8, 3, 5), torch.float32).contiguous(memory_format=torch.channels_last),
                 ops=["pixel_shuffle"])


def test_torch_compile_of_the_functions():
    lo = make((2, 8, 3, 5), torch.float32).requires_grad_()
    check_compile(CallFn(ops.pixel_shuffle, upscale_factor=2), lo)
    check_compile(CallFn(ops.pixel_unshuffle, downscale_factor=1), lo, dynamic=True)


# --- errors ---------------------------------------------------------------------

ERRORS = [  # (function, args, exception type(s) it is each of, message)
    (ops.pixel_shuffle, (torch.zeros(4, 4), 2), RuntimeError,
     "pixel_shuffle expects input to have at least 3 dimensions, but got input with 2 dimension(s)"),
    (ops.pixel_shuffle, (torch.zeros(1, 4, 2, 2), 0), RuntimeError,
     "pixel_shuffle expects a positive upscale_factor, but got 0"),
    (ops.pixel_shuffle, (torch.zeros(1, 4, 2, 2), -2), RuntimeError,
     "pixel_shuffle expects a positive upscale_factor, but got -2"),
    (ops.pixel_shuffle, (torch.zeros(1, 6, 2, 2), 2), RuntimeError,
     "pixel_shuffle expects its input's 'channel' dimension to be divisible by the square of "
     "upscale_factor, but input.size(-3)=6 is not divisible by 4"),
    # a factor whose square overflows: only a tensor without channels "fits" it
    (ops.pixel_shuffle, (torch.zeros(1, 0, 2, 2), 2 ** 40), (RuntimeError, ValueError),
     "pixel_shuffle: upscale_factor=1099511627776 is too large"),
    (ops.pixel_unshuffle, (torch.zeros(1, 1, 0, 0), 2 ** 40), RuntimeError,
     "pixel_unshuffle: downscale_factor=1099511627776 is too large"),
    (ops.pixel_unshuffle, (torch.zeros(3), 2), RuntimeError,
     "pixel_unshuffle expects input to have at least 3 dimensions, but got input with 1 dimension(s)"),
    (ops.pixel_unshuffle, (torch.zeros(1, 1, 2, 2), 0), RuntimeError,
     "pixel_unshuffle expects a positive downscale_factor, but got 0"),
    (ops.pixel_unshuffle, (torch.zeros(1, 1, 3, 2), 2), RuntimeError,
     "pixel_unshuffle expects height to be divisible by downscale_factor, but input.size(-2)=3 "
     "is not divisible by 2"),
    (ops.pixel_unshuffle, (torch.zeros(1, 1, 2, 5), 2), RuntimeError,
     "pixel_unshuffle expects width to be divisible by downscale_factor, but input.size(-1)=5 "
     "is not divisible by 2"),
    # factors the dispatcher cannot take (beyond int64) or torch refuses (bool,
    # non-integers): torch's exception types, kernelzoo's messages
    (ops.pixel_shuffle, (torch.zeros(1, 4, 2, 2), 2 ** 63), (RuntimeError, ValueError),
     "pixel_shuffle: upscale_factor=9223372036854775808 is too large"),
    (ops.pixel_unshuffle, (torch.zeros(1, 1, 2, 2), -2 ** 63 - 1), (RuntimeError, ValueError),
     "pixel_unshuffle expects a positive downscale_factor, but got -9223372036854775809"),
    (ops.pixel_shuffle, (torch.zeros(1, 4, 2, 2), True), TypeError,
     "pixel_shuffle: upscale_factor must be an int, but got bool"),
    (ops.pixel_unshuffle, (torch.zeros(1, 1, 2, 2), False), TypeError,
     "pixel_unshuffle: downscale_factor must be an int, but got bool"),
    (ops.pixel_shuffle, (torch.zeros(1, 4, 2, 2), 2.0), TypeError,
     "pixel_shuffle: upscale_factor must be an int, but got float"),
    (ops.pixel_unshuffle, (torch.zeros(1, 1, 2, 2), "2"), TypeError,
     "pixel_unshuffle: downscale_factor must be an int, but got str"),
    (ops.pixel_shuffle, (torch.zeros(1, 4, 2, 2), None), TypeError,
     "pixel_shuffle: upscale_factor must be an int, but got NoneType"),
]


@pytest.mark.parametrize("fn,args,exc_types,message", ERRORS)
@pytest.mark.parametrize("mode", MODES)
def test_error_messages(fn, args, exc_types, message, mode):
    assert_raises(mode, exc_types, message, fn, *args)


def test_integer_like_factors_are_taken():
    # As by torch: NumPy integers and one-element integer tensors are ints.
    np = pytest.importorskip("numpy")
    x = make((1, 8, 2, 3), torch.float32)
    for r in [np.int64(2), torch.tensor(2)]:
        assert torch.equal(ops.pixel_shuffle(x, r), F.pixel_shuffle(x, 2))
        assert torch.equal(ops.pixel_unshuffle(F.pixel_shuffle(x, 2), r), x)


BAD_CALLS = [  # (name, input shape, factor): calls torch refuses, for both functions
    ("bool factor", (1, 4, 2, 2), True), ("float factor", (1, 4, 2, 2), 2.0),
    ("string factor", (1, 4, 2, 2), "2"), ("no factor", (1, 4, 2, 2), None),
    ("factor 2^63", (1, 4, 2, 2), 2 ** 63), ("factor -2^63 - 1", (1, 4, 2, 2), -2 ** 63 - 1),
    ("factor 0", (1, 4, 2, 2), 0), ("negative factor", (1, 4, 2, 2), -2),
    ("2-d input", (4, 4), 2),
]
BAD_CALLS_BY_OP = [("pixel_shuffle", c) for c in BAD_CALLS + [("channels", (1, 6, 2, 2), 2)]] + \
    [("pixel_unshuffle", c) for c in BAD_CALLS + [("odd height", (1, 1, 3, 2), 2)]]


@pytest.mark.parametrize("op,case", BAD_CALLS_BY_OP,
                         ids=[f"{op}-{c[0]}" for op, c in BAD_CALLS_BY_OP])
def test_bad_calls_raise_torchs_exception_types(op, case):
    _, shape, r = case
    x = torch.zeros(shape)
    assert_raises_like_peer(getattr(ops, op), getattr(F, op), x, r)
    layer = {"pixel_shuffle": (kernelzoo.nn.PixelShuffle, torch.nn.PixelShuffle),
             "pixel_unshuffle": (kernelzoo.nn.PixelUnshuffle, torch.nn.PixelUnshuffle)}[op]
    assert_raises_like_peer(layer[0](r), layer[1](r), x)


def _scripted_torch_pixel_shuffle(x: torch.Tensor, r: int) -> torch.Tensor:
    return F.pixel_shuffle(x, r)


def _scripted_torch_pixel_unshuffle(x: torch.Tensor, r: int) -> torch.Tensor:
    return F.pixel_unshuffle(x, r)


def test_scripted_bad_calls_raise_torchs_exception_types():
    cases = [("pixel_shuffle", _scripted_torch_pixel_shuffle, (1, 4, 2, 2), 0),
             ("pixel_shuffle", _scripted_torch_pixel_shuffle, (4, 4), 2),
             ("pixel_shuffle", _scripted_torch_pixel_shuffle, (1, 6, 2, 2), 2),
             ("pixel_unshuffle", _scripted_torch_pixel_unshuffle, (1, 1, 3, 2), 2),
             ("pixel_shuffle", _scripted_torch_pixel_shuffle, (1, 4, 2, 2), 2 ** 63)]
    for op, peer, shape, r in cases:
        assert_raises_like_peer(script(getattr(ops, op)), script(peer),
                                torch.zeros(shape), r)


def test_cuda_stub_message_in_cpu_only_build():
    if kernelzoo.build_info()["cuda"]:
        pytest.skip("this build has CUDA kernels; the stub only exists in CPU-only builds "
                    "(the C++ suite covers it)")
    keyset = torch._C.DispatchKeySet(torch._C.DispatchKey.CUDA)
    with pytest.raises(RuntimeError, match="has no CUDA kernels.*FORCE_CUDA=1 pip install "
                                           "--no-build-isolation --force-reinstall --no-deps \\."):
        torch.ops.kernelzoo.pixel_shuffle.default.redispatch(keyset, torch.zeros(1, 4, 2, 2), 2)


def test_torch_version_mismatch_is_a_clear_import_error():
    code = ("import torch; built = torch.__version__; torch.__version__ = '1.0.0'\n"
            "try:\n    import kernelzoo\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=os.path.dirname(__file__)).stdout
    assert f"built against torch {torch.__version__}" in out
    assert "but torch 1.0.0 is installed" in out
    assert "pip install --no-build-isolation" in out


# --- CUDA-only ------------------------------------------------------------------

@pytest.mark.cuda
def test_cuda_int64_indexing():
    # more than 2**31 elements takes the 64-bit index path
    lo = torch.randint(0, 255, (1, 4, 23200, 23200), dtype=torch.uint8, device="cuda")
    assert lo.numel() > 2 ** 31
    assert torch.equal(ops.pixel_shuffle(lo, 2), F.pixel_shuffle(lo, 2))


@pytest.mark.cuda
def test_cuda_current_stream_and_device():
    # The input is written on a side stream that a sleep holds up: a kernel
    # launched on any other stream would read it before it is written.
    src = make((4, 16, 33, 35), torch.float32, "cuda")
    expected = F.pixel_shuffle(src, 2)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        lo = torch.zeros_like(src)
        torch.cuda._sleep(100_000_000)  # tens of milliseconds
        lo.copy_(src)
        out = ops.pixel_shuffle(lo, 2)
    s.synchronize()
    assert torch.equal(out, expected)
    if torch.cuda.device_count() > 1:
        # an input on a device other than the current one runs there
        assert torch.equal(ops.pixel_shuffle(src.to("cuda:1"), 2).cpu(), expected.cpu())
