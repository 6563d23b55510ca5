"""kernelzoo.nn.DeformConv2d against torchvision.ops.DeformConv2d, and the
DeformConv2dPack (v1) and ModulatedDeformConv2dPack (v2) layers: their
initial state (a regular convolution), their offset/mask channel layout,
gradients reaching conv_offset, repr."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import kernelzoo
from kernelzoo.nn import DeformConv2d, DeformConv2dPack, ModulatedDeformConv2dPack

torchvision = pytest.importorskip("torchvision")

# (in, out, kernel, stride, padding, dilation, groups, offset groups, bias)
CONFIGS = [
    (4, 6, 3, 1, 1, 1, 1, 1, True),
    (6, 4, (3, 2), (2, 1), (1, 0), 1, 2, 3, False),
    (4, 8, 3, 1, 2, 2, 4, 2, True),
    (3, 5, 1, 1, 0, 1, 1, 1, True),
]


def _out_size(n, k, s, p, d):
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("with_mask", [False, True])
def test_deform_conv2d_matches_torchvision(cfg, with_mask):
    cin, cout, k, s, p, d, groups, og, bias = cfg
    torch.manual_seed(0)
    ours = DeformConv2d(cin, cout, k, stride=s, padding=p, dilation=d, groups=groups,
                        bias=bias).double()
    theirs = torchvision.ops.DeformConv2d(cin, cout, k, stride=s, padding=p, dilation=d,
                                          groups=groups, bias=bias).double()
    theirs.load_state_dict(ours.state_dict())
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = ours.kernel_size, ours.stride, ours.padding, \
        ours.dilation
    h, w = 7, 9
    ho, wo = _out_size(h, kh, sh, ph, dh), _out_size(w, kw, sw, pw, dw)
    x = torch.randn(2, cin, h, w, dtype=torch.float64, requires_grad=True)
    # Offsets of a few pixels, some pointing outside the map.
    offset = (2.5 * torch.randn(2, 2 * og * kh * kw, ho, wo, dtype=torch.float64)) \
        .requires_grad_()
    mask = torch.rand(2, og * kh * kw, ho, wo, dtype=torch.float64, requires_grad=True) \
        if with_mask else None
    inputs = [x, offset] + ([mask] if with_mask else [])

    a = ours(x, offset, mask)
    b = theirs(x, offset, mask)
    torch.testing.assert_close(a, b)
    g = torch.randn_like(a)
    ga = torch.autograd.grad(a, inputs + list(ours.parameters()), g)
    gb = torch.autograd.grad(b, inputs + list(theirs.parameters()), g)
    for u, v in zip(ga, gb):
        torch.testing.assert_close(u, v)


@pytest.mark.parametrize("cfg", CONFIGS)
def test_init_and_repr_are_torchvisions(cfg):
    cin, cout, k, s, p, d, groups, _, bias = cfg
    torch.manual_seed(3)
    ours = DeformConv2d(cin, cout, k, s, p, d, groups, bias)
    torch.manual_seed(3)
    theirs = torchvision.ops.DeformConv2d(cin, cout, k, s, p, d, groups, bias)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    for (n, u), v in zip(ours.named_parameters(), theirs.parameters()):
        assert torch.equal(u, v), n                 # same initialisation, same random draws
    assert repr(ours) == repr(theirs)
    assert (ours.kernel_size, ours.stride, ours.padding, ours.dilation, ours.groups) == \
        (theirs.kernel_size, theirs.stride, theirs.padding, theirs.dilation, theirs.groups)


def test_repr_examples():
    assert repr(DeformConv2d(4, 8, 3)) == \
        "DeformConv2d(4, 8, kernel_size=(3, 3), stride=(1, 1))"
    assert repr(DeformConv2d(4, 8, 3, padding=1, dilation=2, groups=2, bias=False)) == \
        ("DeformConv2d(4, 8, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), "
         "dilation=(2, 2), groups=2, bias=False)")
    assert repr(ModulatedDeformConv2dPack(4, 8, 3, padding=1, deform_groups=2, bias=False)) == (
        "ModulatedDeformConv2dPack(\n"
        "  4, 8, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False, "
        "deform_groups=2\n"
        "  (conv_offset): Conv2d(4, 54, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))\n"
        ")")
    assert "(conv_offset): Conv2d(4, 18, kernel_size=(3, 3)" in repr(DeformConv2dPack(4, 8, 3))


def test_constructor_errors():
    with pytest.raises(ValueError, match="in_channels must be divisible by groups"):
        DeformConv2d(5, 4, 3, groups=2)
    with pytest.raises(ValueError, match="out_channels must be divisible by groups"):
        DeformConv2d(4, 5, 3, groups=2)
    with pytest.raises(ValueError, match="in_channels must be divisible by deform_groups"):
        ModulatedDeformConv2dPack(6, 4, 3, deform_groups=4)
    with pytest.raises(ValueError, match="deform_groups must be a positive int"):
        DeformConv2dPack(6, 4, 3, deform_groups=0)


PACK_CONFIGS = [
    dict(in_channels=4, out_channels=6, kernel_size=3, padding=1),
    dict(in_channels=6, out_channels=4, kernel_size=3, stride=2, padding=2, dilation=2,
         groups=2, deform_groups=3),
    dict(in_channels=4, out_channels=4, kernel_size=(3, 1), padding=(1, 0), deform_groups=2),
]


def _conv(layer, x, bias):
    return F.conv2d(x, layer.weight, bias, layer.stride, layer.padding, layer.dilation,
                    layer.groups)


@pytest.mark.parametrize("kw", PACK_CONFIGS)
@pytest.mark.parametrize("bias", [False, True])
def test_packs_start_as_a_regular_convolution(kw, bias):
    """With conv_offset zero-initialised, the offsets are 0 and the v2 mask is
    sigmoid(0) = 0.5 at every tap. The rule:

    * v1: ``DeformConv2dPack(x) == conv2d(x, weight, bias)``;
    * v2: ``ModulatedDeformConv2dPack(x) == 0.5 * conv2d(x, weight) + bias``:
      the mask scales the sampled inputs, so the bias is not halved.
    """
    torch.manual_seed(1)
    x = torch.randn(2, kw["in_channels"], 9, 8, dtype=torch.float64)
    v1 = DeformConv2dPack(**kw, bias=bias).double()
    v2 = ModulatedDeformConv2dPack(**kw, bias=bias).double()
    kh, kw_ = v1.kernel_size
    g = kw.get("deform_groups", 1)
    assert v1.conv_offset.out_channels == 2 * g * kh * kw_
    assert v2.conv_offset.out_channels == 3 * g * kh * kw_
    for layer in (v1, v2):
        off = layer.conv_offset
        assert (off.kernel_size, off.stride, off.padding, off.dilation) == \
            (layer.kernel_size, layer.stride, layer.padding, layer.dilation)
        assert not off.weight.any() and not off.bias.any()
        assert (layer.bias is not None) == bias
    with torch.no_grad():
        torch.testing.assert_close(v1(x), _conv(v1, x, v1.bias), rtol=1e-12, atol=1e-12)
        expected = 0.5 * _conv(v2, x, None)
        if bias:
            expected = expected + v2.bias.view(1, -1, 1, 1)
        torch.testing.assert_close(v2(x), expected, rtol=1e-12, atol=1e-12)
        # and not the whole convolution halved (the bias is not scaled by the mask)
        if bias:
            assert not torch.allclose(v2(x), 0.5 * _conv(v2, x, v2.bias))


def test_bias_defaults_follow_mmcv():
    assert DeformConv2dPack(4, 4, 3).bias is None
    assert ModulatedDeformConv2dPack(4, 4, 3).bias is not None
    assert DeformConv2d(4, 4, 3).bias is not None          # torchvision's default


@pytest.mark.parametrize("deform_groups", [1, 2])
def test_modulated_channel_layout_is_mmcvs(deform_groups):
    """With a trained (here random) conv_offset, v2 uses mmcv's convention: the
    output split in three equal chunks o1, o2, m; offset = cat(o1, o2) (the
    first two thirds, (y, x) interleaved per tap as torchvision's operator
    reads them) and mask = sigmoid(m). v1 uses the whole output as offsets."""
    torch.manual_seed(2)
    x = torch.randn(2, 4, 8, 7)
    for cls in (ModulatedDeformConv2dPack, DeformConv2dPack):
        layer = cls(4, 6, 3, padding=1, deform_groups=deform_groups)
        torch.nn.init.normal_(layer.conv_offset.weight, std=0.3)
        torch.nn.init.normal_(layer.conv_offset.bias, std=0.5)
        out = layer.conv_offset(x)
        if cls is ModulatedDeformConv2dPack:
            o1, o2, m = out.chunk(3, dim=1)
            offset, mask = torch.cat([o1, o2], dim=1), torch.sigmoid(m)
        else:
            offset, mask = out, None
        expected = torchvision.ops.deform_conv2d(x, offset, layer.weight, layer.bias,
                                                 padding=layer.padding, mask=mask)
        with torch.no_grad():
            torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)
        assert offset.abs().max() > 0.5                  # the offsets are not negligible


@pytest.mark.parametrize("cls", [DeformConv2dPack, ModulatedDeformConv2dPack])
def test_gradients_reach_conv_offset(cls):
    torch.manual_seed(4)
    layer = cls(4, 6, 3, padding=1, deform_groups=2)
    # A smooth input: the offset gradient is the slope of the bilinear
    # interpolation, non-zero from the first step.
    x = torch.randn(2, 4, 10, 10)
    layer(x).pow(2).sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    # One SGD step moves the offsets away from zero.
    with torch.no_grad():
        for p in layer.parameters():
            p -= 0.1 * p.grad
        assert layer.conv_offset(x).abs().max() > 0


def test_layers_call_the_op_at_call_time(monkeypatch):
    """The layers look up kernelzoo.ops.deform_conv2d at every call."""
    calls = []
    real = kernelzoo.ops.deform_conv2d

    def spy(*args, **kwargs):
        calls.append(kwargs.get("mask") is not None)
        return real(*args, **kwargs)

    monkeypatch.setattr(kernelzoo.ops, "deform_conv2d", spy)
    x = torch.randn(1, 2, 5, 5)
    DeformConv2dPack(2, 2, 3)(x)
    ModulatedDeformConv2dPack(2, 2, 3)(x)
    DeformConv2d(2, 2, 3)(x, torch.zeros(1, 18, 3, 3))
    assert calls == [False, True, False]


def test_pack_compiles_fullgraph():
    torch.manual_seed(5)
    layer = ModulatedDeformConv2dPack(3, 4, 3, padding=1)
    torch.nn.init.normal_(layer.conv_offset.weight, std=0.1)
    x = torch.randn(2, 3, 6, 7)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), layer(x))
