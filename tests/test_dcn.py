"""The dcn family: presets, the deformable ResNets against torchvision's ResNets
(module names, state dicts, outputs with zero offsets), loading torchvision
state dicts, config errors.

(check_family runs on this family with the others, in test_families.py.)"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import kernelzoo
from kernelzoo.checkpoints import CheckpointError
from kernelzoo.nn import DeformConv2dPack, ModulatedDeformConv2dPack
from kernelzoo.plugins.dcn import (DCNResNetConfig, DeformableResNet, family,
                                   load_torchvision_state_dict, offset_keys)

torchvision = pytest.importorskip("torchvision")


def test_presets():
    assert kernelzoo.list_models("dcn-*") == ["dcn-resnet50", "dcn-resnet101", "dcn-test"]
    assert kernelzoo.get_family("dcn") is family
    assert family.small_presets == ["test"]
    r50 = kernelzoo.registry.model_config("dcn-resnet50")
    assert (r50.block, r50.layers, r50.dcn_stages, r50.modulated, r50.width) == \
        ("bottleneck", (3, 4, 6, 3), (2, 3, 4), True, 64)
    assert kernelzoo.registry.model_config("dcn-resnet101").layers == (3, 4, 23, 3)
    model = kernelzoo.create_model("dcn-test")
    (x,) = family.example_inputs(model, 3)
    assert x.shape == (3, 1, 32, 32)
    assert model(x).shape == (3, 4)


def shapes(state):
    return {k: tuple(v.shape) for k, v in state.items()}


@pytest.mark.parametrize("depth", [50, 101])
def test_module_names_are_torchvisions(depth):
    torch.manual_seed(0)
    ours = family.create(f"resnet{depth}")
    theirs = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    offsets = offset_keys(ours)
    blocks = {50: 4 + 6 + 3, 101: 4 + 23 + 3}[depth]       # layer2-4
    assert len(offsets) == 2 * blocks
    assert all(k.endswith(("conv2.conv_offset.weight", "conv2.conv_offset.bias"))
               and k.startswith(("layer2.", "layer3.", "layer4.")) for k in offsets)
    own = shapes(ours.state_dict())
    assert {k: v for k, v in own.items() if k not in offsets} == shapes(theirs.state_dict())
    for name, m in ours.named_modules():
        if name.endswith(".conv2"):
            deformable = not name.startswith("layer1.")
            assert type(m) is (ModulatedDeformConv2dPack if deformable else nn.Conv2d), name
            tv = theirs.get_submodule(name)
            assert (m.stride, m.padding, m.dilation, m.groups) == \
                (tv.stride, tv.padding, tv.dilation, tv.groups), name
            if deformable:
                assert m.conv_offset.out_channels == 27 and m.bias is None


def _mask_to_one(model: nn.Module, logit: float = 50.0) -> None:
    """Sets the bias of every v2 layer's mask channels (the last third of
    conv_offset's outputs) to ``logit``; the weights are zero, so the mask is
    sigmoid(logit), 1 in float64 for logit 50."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, ModulatedDeformConv2dPack):
                n = 2 * m.deform_groups * m.kernel_size[0] * m.kernel_size[1]
                m.conv_offset.bias[n:] = logit


@pytest.mark.parametrize("modulated", [True, False])
def test_zero_offsets_reproduce_torchvision_resnet50(modulated):
    """torchvision's resnet50(weights=None) and dcn-resnet50 carrying its
    weights (load_torchvision_state_dict: only conv_offset missing, zero) give
    the same logits, in float64 on a 1x3x64x64 image, eval mode.

    The offsets are zero, so every tap samples the regular grid. DCNv1
    (``modulated=False``) is then torchvision's ResNet as it is. DCNv2
    multiplies every sampled input by its mask, sigmoid(0) = 0.5 after
    initialisation: for the comparison the mask channels' bias of every
    conv_offset is set to 50 (sigmoid(50) is 1 in float64); at 0.5 the
    outputs differ, which the test checks too."""
    torch.manual_seed(0)
    theirs = torchvision.models.resnet50(weights=None).double().eval()
    # Random batch-norm statistics and affine parameters, so that they matter.
    with torch.no_grad():
        for m in theirs.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    ours = family.create("resnet50", modulated=modulated).double().eval()
    missing = load_torchvision_state_dict(ours, theirs.state_dict())
    assert missing == offset_keys(ours)
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        expected = theirs(x)
        if modulated:
            assert not torch.allclose(ours(x), expected, rtol=1e-3, atol=1e-3)   # mask 0.5
            _mask_to_one(ours)
        torch.testing.assert_close(ours(x), expected, rtol=1e-10, atol=1e-10)


def test_v1_layers():
    model = family.create("test", modulated=False, dcn_stages=(1, 4), deform_groups=2)
    kinds = {n: type(m) for n, m in model.named_modules() if n.endswith("conv2")}
    assert kinds == {"layer1.0.conv2": DeformConv2dPack, "layer2.0.conv2": nn.Conv2d,
                     "layer3.0.conv2": nn.Conv2d, "layer4.0.conv2": DeformConv2dPack}
    assert model.layer4[0].conv2.conv_offset.out_channels == 2 * 2 * 9
    plain = family.create("test", dcn_stages=())
    assert not offset_keys(plain)


def test_load_torchvision_state_dict_errors():
    model = family.create("test", dcn_stages=(4,))
    state = {k: v for k, v in model.state_dict().items() if ".conv_offset." not in k}
    fresh = family.create("test", dcn_stages=(4,))
    assert load_torchvision_state_dict(fresh, state) == ["layer4.0.conv2.conv_offset.weight",
                                                         "layer4.0.conv2.conv_offset.bias"]
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in state.items())
    with pytest.raises(CheckpointError, match=r"unexpected key 'extra\.weight'"):
        load_torchvision_state_dict(fresh, {**state, "extra.weight": torch.zeros(1)})
    partial = dict(state)
    del partial["layer2.0.bn1.running_mean"]
    with pytest.raises(CheckpointError, match=r"missing key 'layer2\.0\.bn1\.running_mean' "
                                              r"\(only the deformable layers' conv_offset"):
        load_torchvision_state_dict(fresh, partial)
    with pytest.raises(CheckpointError, match=r"key 'fc\.weight' has shape \(3, 64\)"):
        load_torchvision_state_dict(fresh, {**state, "fc.weight": torch.zeros(3, 64)})
    assert isinstance(CheckpointError("x"), ValueError)
    # A ResNet-18's weights do not fit dcn-resnet50.
    r50 = family.create("resnet50")
    with pytest.raises(CheckpointError, match="unexpected key|missing key|has shape"):
        load_torchvision_state_dict(r50, torchvision.models.resnet18(weights=None).state_dict())


@pytest.mark.parametrize("override, match", [
    (dict(block="wide"), "block must be one of 'basic', 'bottleneck'"),
    (dict(layers=(1, 1, 1)), "layers must be four positive ints"),
    (dict(dcn_stages=(0, 2)), "dcn_stages must be distinct stage numbers from 1 to 4"),
    (dict(dcn_stages=(2, 2)), "dcn_stages must be distinct stage numbers from 1 to 4"),
    (dict(width=0), "width must be a positive int"),
])
def test_config_errors(override, match):
    with pytest.raises(ValueError, match=match):
        kernelzoo.registry.model_config("dcn-test", **override)


def test_input_check_and_small_stem():
    model = DeformableResNet(DCNResNetConfig(block="basic", layers=(1, 1, 1, 1), width=4,
                                             num_classes=2, small_stem=True))
    assert isinstance(model.maxpool, nn.Identity) and model.conv1.stride == (1, 1)
    with pytest.raises(ValueError, match=r"expects input \(N, 3, H, W\), got \(2, 1, 8, 8\)"):
        model(torch.rand(2, 1, 8, 8))
