"""The espcn family: architecture against a plain-PyTorch reference, presets,
errors, the synthetic-data training example."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import kernelzoo
from kernelzoo.plugins.espcn import ESPCN, ESPCNConfig
import kernelzoo.plugins.espcn.train as espcn_train


def reference_espcn(model: ESPCN, x: torch.Tensor) -> torch.Tensor:
    """Shi et al.'s network spelled out with torch.nn.functional and torch's own
    pixel_shuffle, on the model's weights."""
    p1, p2, p3 = (k // 2 for k in model.config.kernel_sizes)
    y = torch.tanh(F.conv2d(x, model.conv1.weight, model.conv1.bias, padding=p1))
    y = torch.tanh(F.conv2d(y, model.conv2.weight, model.conv2.bias, padding=p2))
    y = F.conv2d(y, model.conv3.weight, model.conv3.bias, padding=p3)
    return F.pixel_shuffle(y, model.scale)


PRESETS = {"espcn-x2": (2, 1), "espcn-x3": (3, 1), "espcn-x4": (4, 1),
           "espcn-x2-rgb": (2, 3), "espcn-x3-rgb": (3, 3), "espcn-x4-rgb": (4, 3)}


def test_presets():
    assert kernelzoo.list_models("espcn-*") == [
        "espcn-test", "espcn-x2", "espcn-x2-rgb", "espcn-x3", "espcn-x3-rgb", "espcn-x4",
        "espcn-x4-rgb"]
    assert sorted(PRESETS) == kernelzoo.list_models("espcn-x*")
    assert kernelzoo.get_family("espcn").small_presets == ["test"]


@pytest.mark.parametrize("name", list(PRESETS))
def test_architecture_matches_the_paper(name):
    scale, channels = PRESETS[name]
    torch.manual_seed(0)
    model = kernelzoo.create_model(name)
    assert isinstance(model, ESPCN)
    convs = [model.conv1, model.conv2, model.conv3]
    assert [c.in_channels for c in convs] == [channels, 64, 32]
    assert [c.out_channels for c in convs] == [64, 32, channels * scale * scale]
    assert [c.kernel_size for c in convs] == [(5, 5), (3, 3), (3, 3)]
    assert isinstance(model.pixel_shuffle, kernelzoo.nn.PixelShuffle)
    assert model.pixel_shuffle.upscale_factor == scale
    x = torch.rand(2, channels, 7, 10)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, channels, 7 * scale, 10 * scale)
    torch.testing.assert_close(out, reference_espcn(model, x), rtol=1e-5, atol=1e-6)


def test_gradients_match_the_reference():
    torch.manual_seed(1)
    model = kernelzoo.create_model("espcn-test").double()
    x = torch.rand(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 3, 15, 18, dtype=torch.float64)
    (model(x) * w).sum().backward()
    ours = [x.grad] + [p.grad for p in model.parameters()]
    x.grad = None
    model.zero_grad()
    (reference_espcn(model, x) * w).sum().backward()
    theirs = [x.grad] + [p.grad for p in model.parameters()]
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)


def test_overrides_and_config_errors():
    model = kernelzoo.create_model("espcn-x3", channels=3, features=(16, 8))
    assert model.conv1.in_channels == 3 and model.conv1.out_channels == 16
    assert model.conv3.out_channels == 27
    with pytest.raises(ValueError, match="scale must be a positive int, got 0"):
        kernelzoo.create_model("espcn-x3", scale=0)
    with pytest.raises(ValueError, match="kernel_sizes must be three odd positive ints"):
        kernelzoo.create_model("espcn-x3", kernel_sizes=(5, 4, 3))
    with pytest.raises(ValueError, match="features must be two positive ints"):
        ESPCNConfig(features=(64,))
    with pytest.raises(TypeError, match="valid keys: scale, channels, features, kernel_sizes"):
        kernelzoo.create_model("espcn-x3", upscale=2)


def test_wrong_input_channels():
    model = kernelzoo.create_model("espcn-x2")
    with pytest.raises(ValueError, match=r"ESPCN expects input \(N, 1, H, W\), got \(1, 3, 4, 4\)"):
        model(torch.rand(1, 3, 4, 4))


# --------------------------------------------------------------------------- training example


def test_synthetic_images():
    g = torch.Generator().manual_seed(5)
    a = espcn_train.synthetic_images(4, 24, 3, generator=g)
    assert a.shape == (4, 3, 24, 24) and a.dtype == torch.float32
    assert a.min() >= 0 and a.max() <= 1
    # Every image uses the full range (rescaled per image) and is not flat.
    assert torch.allclose(a.amin(dim=(1, 2, 3)), torch.zeros(4), atol=1e-6)
    assert torch.allclose(a.amax(dim=(1, 2, 3)), torch.ones(4), atol=1e-6)
    # Seeded: same seed, same images; the next draw differs.
    b = espcn_train.synthetic_images(4, 24, 3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert not torch.equal(a, espcn_train.synthetic_images(4, 24, 3, generator=g))
    # RGB channels are related but not identical.
    assert not torch.equal(a[:, 0], a[:, 1])


def test_degrade_and_bicubic_baseline():
    hr = espcn_train.synthetic_images(2, 30, 1, generator=torch.Generator().manual_seed(0))
    lr = espcn_train.degrade(hr, 3)
    assert lr.shape == (2, 1, 10, 10)
    up = espcn_train.bicubic_upsample(lr, 3)
    assert up.shape == hr.shape and up.min() >= 0 and up.max() <= 1
    # Downsampling loses detail: bicubic does not get the image back.
    assert espcn_train.psnr(up, hr) < 40
    # A constant image survives both exactly.
    flat = torch.full((1, 1, 9, 9), 0.25)
    torch.testing.assert_close(espcn_train.bicubic_upsample(espcn_train.degrade(flat, 3), 3),
                               flat)
    with pytest.raises(ValueError, match="image size 10x9 is not divisible by the scale 3"):
        espcn_train.degrade(torch.rand(1, 1, 10, 9), 3)


def test_psnr_hand_computed():
    target = torch.zeros(2, 1, 4, 4)
    pred = torch.full((2, 1, 4, 4), 0.1)        # MSE 0.01 -> 20 dB
    assert espcn_train.psnr(pred, target) == pytest.approx(20.0)
    pred[1] = 0.01                              # MSE 1e-4 -> 40 dB; mean of 20 and 40
    assert espcn_train.psnr(pred, target) == pytest.approx(30.0)
    pred[0, :, 0, :] = 1.0                      # only in the border: cropped away
    assert espcn_train.psnr(pred, target, border=1) == pytest.approx(30.0)
    assert espcn_train.psnr(pred, target) < 30.0


def test_short_training_reduces_the_loss():
    model, result = espcn_train.fit("espcn-x2", steps=40, batch_size=4, patch=16,
                                    eval_images=2, progress=False)
    losses = result["losses"]
    assert len(losses) == 40 and all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    assert isinstance(model, ESPCN) and model.scale == 2
    assert set(result) >= {"psnr_model", "psnr_bicubic", "psnr_gain", "first_loss",
                           "final_loss", "steps", "train_seconds"}


def test_training_arguments_are_checked():
    with pytest.raises(ValueError, match="steps and batch_size must be positive"):
        espcn_train.fit("espcn-test", steps=0, progress=False)
    with pytest.raises(ValueError, match="patch must be at least the scale"):
        espcn_train.fit("espcn-test", patch=2, progress=False)
    with pytest.raises(TypeError, match="unknown override 'colour'"):
        espcn_train.fit("espcn-test", colour=1, progress=False)


@pytest.mark.slow
def test_default_training_beats_bicubic(tmp_path):
    """`kernelzoo train espcn-x3` with its defaults (about 10 s of CPU time)."""
    result = espcn_train.train("espcn-x3", save=str(tmp_path / "w.pt"), progress=False,
                               verbose=False)
    assert result["steps"] == 800
    # Measured on held-out images: more than half a dB better than bicubic.
    assert result["psnr_model"] > result["psnr_bicubic"] + 0.5, result
    # The saved weights reproduce the reported PSNR.
    model = kernelzoo.create_model("espcn-x3")
    model.load_state_dict(torch.load(tmp_path / "w.pt", weights_only=True))
    again = espcn_train.evaluate(model, 3, 1)
    assert again["psnr_model"] == pytest.approx(result["psnr_model"], abs=1e-6)
    assert again["psnr_bicubic"] == pytest.approx(result["psnr_bicubic"], abs=1e-9)
