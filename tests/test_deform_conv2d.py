"""kernelzoo.ops.deform_conv2d against torchvision.ops.deform_conv2d (the peer)
and hand-computed cases: float64 to round-off, every gradient, groups and
offset groups, stride/padding/dilation, samples outside the map, low precision,
layouts, empty batches, bad inputs, opcheck, torch.compile, TorchScript, fx."""

import pytest
import torch
import torch.nn.functional as F

from kernelzoo import ops
from ophelpers import check_backends, opcheck

tv = pytest.importorskip("torchvision.ops")

F64 = torch.float64
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def out_size(h, w, k, stride, pad, dil):
    return ((h + 2 * pad[0] - dil[0] * (k[0] - 1) - 1) // stride[0] + 1,
            (w + 2 * pad[1] - dil[1] * (k[1] - 1) - 1) // stride[1] + 1)


def problem(n=2, c=4, c_out=6, h=7, w=9, k=(3, 3), stride=(1, 1), pad=(1, 1), dil=(1, 1),
            groups=1, og=1, mask=True, bias=True, dtype=F64, device="cpu", scale=2.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    ho, wo = out_size(h, w, k, stride, pad, dil)
    t = lambda *s, **kw: torch.randn(*s, generator=g, dtype=F64, **kw)  # noqa: E731
    p = dict(input=t(n, c, h, w), weight=t(c_out, c // groups, k[0], k[1]) * 0.3,
             offset=t(n, 2 * og * k[0] * k[1], ho, wo) * scale,
             mask=torch.rand(n, og * k[0] * k[1], ho, wo, generator=g, dtype=F64) if mask else None,
             bias=t(c_out) if bias else None)
    p = {key: (v.to(device, dtype) if v is not None else None) for key, v in p.items()}
    return p, dict(stride=stride, padding=pad, dilation=dil)


def run(fn, p, args, grad=True, seed=1):
    ins = {k: (v.detach().clone().requires_grad_(grad) if v is not None else None)
           for k, v in p.items()}
    out = fn(ins["input"], ins["offset"], ins["weight"], ins["bias"], mask=ins["mask"], **args)
    if not grad:
        return out, {}
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=F64)
    leaves = {k: v for k, v in ins.items() if v is not None}
    grads = torch.autograd.grad(out, list(leaves.values()), g.to(out.device, out.dtype))
    return out, dict(zip(leaves, grads))


def assert_same(a, b, **tol):
    torch.testing.assert_close(a[0], b[0], **tol)
    assert a[1].keys() == b[1].keys()
    for k in a[1]:
        torch.testing.assert_close(a[1][k], b[1][k], **tol, msg=lambda m: f"d{k}: {m}")


CASES = [
    dict(),
    dict(mask=False),
    dict(bias=False),
    dict(groups=2, og=2),
    dict(c=8, groups=2, og=4),
    dict(k=(3, 2), stride=(2, 1), pad=(0, 2), dil=(2, 1)),
    dict(k=(1, 1), pad=(0, 0)),
    dict(k=(5, 3), pad=(2, 1), h=6, w=5, scale=4.0),  # many samples off the map
    dict(n=1, c=3, c_out=1, h=1, w=1, k=(1, 1), pad=(0, 0)),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default")
@pytest.mark.parametrize("device", DEVICES)
def test_float64_matches_torchvision(case, device):
    p, args = problem(device=device, **case)
    assert_same(run(ops.deform_conv2d, p, args), run(tv.deform_conv2d, p, args),
                rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
def test_integer_and_half_integer_coordinates(device):
    """Offsets on a 0.5 grid: many samples at integer coordinates, where a
    neighbour has weight zero but the offset's gradient is the derivative from
    above (torchvision's convention), and samples exactly on the map's edges."""
    p, args = problem(device=device, scale=1.0)
    p["offset"] = (p["offset"] * 2).round() / 2
    assert (p["offset"] == p["offset"].round()).any()
    assert_same(run(ops.deform_conv2d, p, args), run(tv.deform_conv2d, p, args),
                rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", [dict(), dict(groups=2, og=2, stride=(2, 1), dil=(1, 2)),
                                  dict(mask=False, bias=False, k=(3, 2), pad=(0, 1))])
def test_float64_matches_the_reference(case):
    from kernelzoo import reference

    p, args = problem(**case)
    assert_same(run(ops.deform_conv2d, p, args), run(reference.deform_conv2d, p, args),
                rtol=1e-10, atol=1e-10)


def test_gradcheck():
    """float64 gradcheck of every input, offsets kept 0.05 pixel or more away
    from integer coordinates (where the function is not differentiable)."""
    p, args = problem(n=1, c=2, c_out=2, h=4, w=3, k=(2, 2), pad=(1, 0), groups=2, og=2)
    frac = p["offset"] - p["offset"].floor()
    p["offset"] = p["offset"].floor() + frac.clamp(0.05, 0.95)
    ins = [p[k].requires_grad_() for k in ("input", "offset", "weight", "bias", "mask")]

    def f(x, off, w, b, m):
        return ops.deform_conv2d(x, off, w, b, mask=m, **args)

    assert torch.autograd.gradcheck(f, ins, eps=1e-6, atol=1e-6)


def test_zero_offsets_and_unit_mask_equal_conv2d():
    p, args = problem(groups=2, og=2, stride=(2, 1), pad=(1, 2), dil=(1, 2))
    p["offset"].zero_()
    p["mask"].fill_(1.0)
    out = ops.deform_conv2d(p["input"], p["offset"], p["weight"], p["bias"], mask=p["mask"], **args)
    ref = F.conv2d(p["input"], p["weight"], p["bias"], args["stride"], args["padding"],
                   args["dilation"], groups=2)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    v1 = ops.deform_conv2d(p["input"], p["offset"], p["weight"], p["bias"], **args)
    torch.testing.assert_close(v1, ref, rtol=1e-12, atol=1e-12)


def test_integer_offsets_equal_a_shifted_convolution():
    """Every tap moved by (+1, -2): the unpadded convolution of the zero-padded
    input shifted by (-1, +2) (zero-filled where it leaves the map)."""
    p, args = problem(mask=False, bias=False)
    p["offset"][:, 0::2] = 1.0
    p["offset"][:, 1::2] = -2.0
    padded = F.pad(p["input"], (1, 1, 1, 1))
    shifted = torch.zeros_like(padded)
    shifted[:, :, :-1, 2:] = padded[:, :, 1:, :-2]
    out = ops.deform_conv2d(p["input"], p["offset"], p["weight"], **args)
    torch.testing.assert_close(out, F.conv2d(shifted, p["weight"]), rtol=1e-12, atol=1e-12)


def test_half_pixel_outside_reads_one_neighbour():
    """A 1x1 kernel sampling y = -0.5: only row 0 is on the map, with weight 0.5."""
    x = torch.arange(12, dtype=F64).reshape(1, 1, 3, 4)
    w = torch.ones(1, 1, 1, 1, dtype=F64)
    off = torch.zeros(1, 2, 3, 4, dtype=F64)
    off[:, 0] = -0.5 - torch.arange(3, dtype=F64).view(3, 1)  # every row samples y = -0.5
    out = ops.deform_conv2d(x, off, w)
    torch.testing.assert_close(out[0, 0], 0.5 * x[0, 0, 0].expand(3, 4))


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.float16, 2e-2),
                                       (torch.bfloat16, 1e-1)])
@pytest.mark.parametrize("device", DEVICES)
def test_low_precision(dtype, tol, device):
    """Low-precision inputs against float64 torchvision on the same values:
    outputs and gradients within the rounding of the inputs and of the result."""
    p, args = problem(c=8, c_out=8, groups=2, og=2, device=device, dtype=dtype, scale=1.0)
    got = run(ops.deform_conv2d, p, args)
    ref = run(tv.deform_conv2d, {k: (v.double() if v is not None else None) for k, v in p.items()},
              args)
    assert got[0].dtype == dtype
    for a, b in [(got[0], ref[0])] + [(got[1][k], ref[1][k]) for k in got[1]]:
        scale = b.abs().max().item() + 1e-12
        torch.testing.assert_close(a.double(), b, rtol=tol, atol=tol * scale)


def test_layouts_and_non_contiguous_inputs():
    p, args = problem(c=4, c_out=4)
    expected = run(ops.deform_conv2d, p, args)
    q = dict(p)
    q["input"] = p["input"].contiguous(memory_format=torch.channels_last)
    q["weight"] = p["weight"].transpose(2, 3).contiguous().transpose(2, 3)
    q["offset"] = torch.zeros(p["offset"].shape[0], p["offset"].shape[1] * 2, *p["offset"].shape[2:],
                              dtype=F64)[:, ::2].copy_(p["offset"])
    assert not q["offset"].is_contiguous()
    got = run(ops.deform_conv2d, q, args)
    assert_same(got, expected, rtol=0, atol=0)


def test_empty_batch():
    p, args = problem(n=0)
    out, grads = run(ops.deform_conv2d, p, args)
    assert out.shape == (0, 6, 7, 9)
    assert grads["weight"].abs().sum() == 0 and grads["bias"].abs().sum() == 0


def test_bad_inputs_say_what_is_wrong():
    p, args = problem()
    x, off, w, m, b = p["input"], p["offset"], p["weight"], p["mask"], p["bias"]
    with pytest.raises(RuntimeError, match="multiple of 2"):
        ops.deform_conv2d(x, off[:, :5], w, b, mask=m, **args)
    with pytest.raises(RuntimeError, match="offset_groups = 2 needs 36"):
        torch.ops.kernelzoo.deform_conv2d(x, w, off, m, b, 1, 1, 1, 1, 1, 1, 1, 2)
    with pytest.raises(RuntimeError, match="mask must have shape"):
        ops.deform_conv2d(x, off, w, b, mask=m[:, :4], **args)
    with pytest.raises(RuntimeError, match="groups"):
        ops.deform_conv2d(x, off, torch.randn(6, 3, 3, 3, dtype=F64), b, **args)
    with pytest.raises(RuntimeError, match="offset must have shape"):
        ops.deform_conv2d(x, off[..., :5], w, b, **args)
    with pytest.raises(RuntimeError, match="must have input's dtype"):
        ops.deform_conv2d(x, off.float(), w, b, **args)
    with pytest.raises(RuntimeError, match="bias must have shape"):
        ops.deform_conv2d(x, off, w, b[:3], **args)
    with pytest.raises(RuntimeError, match="output would be empty"):
        ops.deform_conv2d(x[..., :1, :1], off[..., :1, :1], w, b, stride=1, padding=0)
    with pytest.raises(RuntimeError, match="stride must be positive"):
        torch.ops.kernelzoo.deform_conv2d(x, w, off, m, b, 0, 1, 1, 1, 1, 1, 1, 1)
    with pytest.raises(RuntimeError, match="floating-point input"):
        ops.deform_conv2d(x.long(), off, w, b, **args)


def test_not_4d_raises_torchvisions_type():
    """torchvision raises ValueError (from unpacking the shape) for a 3-d input;
    kernelzoo's error is that and a RuntimeError."""
    p, args = problem()
    with pytest.raises(ValueError):
        tv.deform_conv2d(p["input"][0], p["offset"], p["weight"], **args)
    with pytest.raises(ValueError, match="expected 4-d input"):
        ops.deform_conv2d(p["input"][0], p["offset"], p["weight"], **args)


def test_deterministic_at_any_thread_count():
    p, args = problem(n=3, c=8, c_out=8, groups=2, og=2, h=12, w=11)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = run(ops.deform_conv2d, p, args)
        torch.set_num_threads(max(2, threads))
        many = run(ops.deform_conv2d, p, args)
    finally:
        torch.set_num_threads(threads)
    assert_same(one, many, rtol=0, atol=0)


def test_registration_and_opcheck():
    check_backends("deform_conv2d")
    check_backends("_deform_conv2d_backward")
    p, _ = problem(n=1, c=2, c_out=2, h=5, w=4)
    for mask, bias in [(p["mask"], p["bias"]), (None, None)]:
        opcheck(torch.ops.kernelzoo.deform_conv2d.default,
                (p["input"].requires_grad_(), p["weight"], p["offset"], mask, bias,
                 1, 1, 1, 1, 1, 1, 1, 1))


def test_autocast_runs_in_float32():
    p, args = problem(dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ops.deform_conv2d(p["input"].bfloat16(), p["offset"], p["weight"], p["bias"],
                                mask=p["mask"], **args)
    assert out.dtype == torch.bfloat16
    ref = ops.deform_conv2d(p["input"].bfloat16().float(), p["offset"], p["weight"], p["bias"],
                            mask=p["mask"], **args)
    torch.testing.assert_close(out.float(), ref, rtol=1e-2, atol=1e-2)


class _Deform(torch.nn.Module):
    def forward(self, x, off, w, m):
        return ops.deform_conv2d(x, off, w, None, 1, 1, 1, m)


def test_compile_fx_script_and_export():
    from ophelpers import script

    p, args = problem(dtype=torch.float32)
    xs = (p["input"], p["offset"], p["weight"], p["mask"])
    expected = _Deform()(*xs)
    compiled = torch.compile(_Deform(), fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(*xs), expected)
    traced = torch.fx.symbolic_trace(_Deform())
    assert sum(n.op == "call_function" for n in traced.graph.nodes) == 1
    torch.testing.assert_close(traced(*xs), expected)
    torch.testing.assert_close(script(_Deform())(*xs), expected)
    exported = torch.export.export(_Deform(), xs).module()
    torch.testing.assert_close(exported(*xs), expected)
