"""Training example for ESPCN that needs no download: ``kernelzoo train espcn-x3``.

Training images are made on the fly: random smooth textures (sums of oriented
sinusoids, Gaussian blobs and soft-edged steps along random lines, each with a
random colour for RGB models). A high-resolution image is reduced by the
model's scale with antialiased bicubic downsampling (the usual degradation in
super-resolution benchmarks), which removes real detail: attenuated high
frequencies and blurred edges. The model learns to restore it; bicubic
upsampling of the same low-resolution image is the baseline.

PSNR is measured on held-out images (always the same ones: a fixed seed that
no training run uses), on the luminance/colour values in [0, 1], with a border
of ``scale`` pixels cropped, as is customary.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kernelzoo._training import (check_batch_fits, check_hyperparameters, cosine_schedule,
                                 fit_and_save, train_steps)
from kernelzoo.registry import create_model, model_config

__all__ = ["synthetic_images", "degrade", "bicubic_upsample", "psnr", "evaluate", "fit",
           "train"]

#: Seed of the held-out evaluation images.
EVAL_SEED = 2016


def synthetic_images(n: int, size: int, channels: int = 1, *,
                     generator: torch.Generator | None = None,
                     device: str | torch.device = "cpu") -> torch.Tensor:
    """``n`` random textures of ``size x size`` pixels in [0, 1], ``(n, channels, size, size)``.

    Each image sums 6 oriented sinusoids (0.01 to 0.25 cycles per pixel), 4
    Gaussian blobs (sigma 1.5 to 8 px) and 3 soft steps along random lines
    (edge width 0.3 to 2 px), each component with its own random amplitude per
    channel, then is rescaled to [0, 1].
    """
    g = generator

    def rand(*shape):
        return torch.rand(*shape, generator=g).to(device)

    coords = torch.arange(size, dtype=torch.float32, device=device)
    y = coords.view(1, 1, size, 1)
    x = coords.view(1, 1, 1, size)
    comps = []
    # Sinusoids: frequency, orientation, phase.
    k = 6
    freq = (0.01 + 0.24 * rand(n, k) ** 1.5).view(n, k, 1, 1)
    theta = (math.pi * rand(n, k)).view(n, k, 1, 1)
    phase = (2 * math.pi * rand(n, k)).view(n, k, 1, 1)
    comps.append(torch.cos(2 * math.pi * freq * (x * torch.cos(theta) + y * torch.sin(theta))
                           + phase))
    # Gaussian blobs.
    k = 4
    cy, cx = (size * rand(n, k)).view(n, k, 1, 1), (size * rand(n, k)).view(n, k, 1, 1)
    sigma = (1.5 + 6.5 * rand(n, k)).view(n, k, 1, 1)
    comps.append(torch.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * sigma ** 2)) * 2 - 1)
    # Soft steps along random lines through random points.
    k = 3
    cy, cx = (size * rand(n, k)).view(n, k, 1, 1), (size * rand(n, k)).view(n, k, 1, 1)
    theta = (2 * math.pi * rand(n, k)).view(n, k, 1, 1)
    width = (0.3 + 1.7 * rand(n, k)).view(n, k, 1, 1)
    dist = (x - cx) * torch.cos(theta) + (y - cy) * torch.sin(theta)
    comps.append(torch.tanh(dist / width))
    comps = torch.cat(comps, dim=1)                       # (n, K, H, W)
    amp = rand(n, channels, comps.size(1)) * 2 - 1        # per-channel colour of each part
    img = torch.einsum("nck,nkhw->nchw", amp, comps)
    lo = img.amin(dim=(1, 2, 3), keepdim=True)
    hi = img.amax(dim=(1, 2, 3), keepdim=True)
    return (img - lo) / (hi - lo).clamp_min(1e-6)


def degrade(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """Antialiased bicubic downsampling by ``scale`` (H and W divisible by it)."""
    h, w = hr.shape[-2:]
    if h % scale or w % scale:
        raise ValueError(f"image size {h}x{w} is not divisible by the scale {scale}")
    lr = F.interpolate(hr, size=(h // scale, w // scale), mode="bicubic", antialias=True,
                       align_corners=False)
    return lr.clamp(0, 1)


def bicubic_upsample(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """The baseline: bicubic upsampling by ``scale``, clamped to [0, 1]."""
    h, w = lr.shape[-2:]
    return F.interpolate(lr, size=(h * scale, w * scale), mode="bicubic",
                         align_corners=False).clamp(0, 1)


def psnr(pred: torch.Tensor, target: torch.Tensor, border: int = 0) -> float:
    """Mean over images of ``10 log10(1 / MSE)`` for values in [0, 1], with
    ``border`` pixels cropped from each side."""
    if border:
        pred = pred[..., border:-border, border:-border]
        target = target[..., border:-border, border:-border]
    mse = (pred.double() - target.double()).pow(2).flatten(1).mean(1)
    return float((10 * torch.log10(1 / mse.clamp_min(1e-12))).mean())


@torch.no_grad()
def evaluate(model, scale: int, channels: int, *, n: int = 32, size: int = 96,
             device="cpu") -> dict:
    """PSNR of ``model`` and of bicubic upsampling on ``n`` held-out images."""
    size -= size % scale
    g = torch.Generator().manual_seed(EVAL_SEED)
    hr = synthetic_images(n, size, channels, generator=g, device=device)
    lr = degrade(hr, scale)
    was_training = model.training
    model.eval()
    try:
        sr = model(lr).clamp(0, 1)
    finally:
        model.train(was_training)
    return {"psnr_model": psnr(sr, hr, border=scale),
            "psnr_bicubic": psnr(bicubic_upsample(lr, scale), hr, border=scale),
            "eval_images": n, "eval_size": size}


def train(model_name: str = "espcn-x3", *, save: str | None = None, verbose: bool = True,
          **options) -> dict:
    """``kernelzoo train``: :func:`fit`, then a report; returns the results
    (JSON-serialisable). ``save`` writes the trained state dict there (the
    path is checked before training)."""
    model, result = fit_and_save(fit, model_name, save, options)
    if verbose:
        print(f"{model_name}: {result['steps']} steps of {result['batch_size']} "
              f"{result['patch']}x{result['patch']} patches in {result['train_seconds']:.1f} s; "
              f"loss {result['first_loss']:.5f} -> {result['final_loss']:.5f}")
        print(f"PSNR on {result['eval_images']} held-out {result['eval_size']}x"
              f"{result['eval_size']} images: model {result['psnr_model']:.2f} dB, bicubic "
              f"{result['psnr_bicubic']:.2f} dB ({result['psnr_gain']:+.2f} dB)")
        if save:
            print(f"saved the state dict to {save}")
    return result


def fit(model_name: str = "espcn-x3", *, steps: int | None = None,
        batch_size: int | None = None, lr: float | None = None, seed: int = 0,
        device: str = "cpu", progress: bool = True, patch: int | None = None,
        eval_images: int = 32, **overrides):
    """Trains ESPCN model ``model_name`` on synthetic textures; returns
    ``(model, results)``.

    Adam with a cosine-decayed learning rate on the mean squared error between
    the model's output and the high-resolution patch; every step draws a fresh
    batch. The results hold the losses and the held-out PSNR of the model and
    of bicubic upsampling.

    Args:
        steps: optimizer steps (default 800 for one-channel models, 2000 for
            RGB models, which need longer to beat bicubic).
        batch_size: patches per step (default 16).
        lr: peak learning rate (default 5e-3).
        seed: seed of the initial weights and the training images.
        patch: high-resolution patch size (default ``17 * scale``, rounded
            down to a multiple of the scale).
        eval_images: held-out images for the PSNR (96 x 96 pixels each).
        overrides: passed to :func:`kernelzoo.create_model`.
    """
    config = model_config(model_name, **overrides)
    scale, channels = config.scale, config.channels
    steps = (800 if channels == 1 else 2000) if steps is None else steps
    batch_size = 16 if batch_size is None else batch_size
    lr = 5e-3 if lr is None else lr
    try:
        check_hyperparameters(steps=steps, batch_size=batch_size, lr=lr)
    except ValueError as e:
        raise ValueError(f"steps and batch_size must be positive and lr > 0 (finite): {e}") \
            from None
    patch = 17 * scale if patch is None else patch
    patch -= patch % scale
    if patch < scale:
        raise ValueError(f"patch must be at least the scale ({scale})")
    # A lower bound of one step's memory: synthetic_images stacks 13 float32
    # texture planes per patch, twice (the parts and their concatenation).
    check_batch_fits(batch_size * 2 * 13 * 4 * patch * patch,
                     f"a batch of {batch_size} {patch}x{patch} patches", device)

    torch.manual_seed(seed)
    model = create_model(model_name, **overrides).to(device)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = cosine_schedule(opt, steps)
    g = torch.Generator().manual_seed(seed + 1)

    def step_loss(step):
        hr = synthetic_images(batch_size, patch, channels, generator=g, device=device)
        return F.mse_loss(model(degrade(hr, scale)), hr)

    losses, train_s = train_steps(steps, step_loss, opt, sched, lr, f"train {model_name}",
                                  progress=progress, fmt=".5f")

    result = {"model": model_name, "steps": steps, "batch_size": batch_size, "patch": patch,
              "lr": lr, "seed": seed, "device": str(device),
              "first_loss": losses[0], "final_loss": sum(losses[-10:]) / len(losses[-10:]),
              "train_seconds": round(train_s, 2)}
    result.update(evaluate(model, scale, channels, n=eval_images, device=device))
    result["psnr_gain"] = result["psnr_model"] - result["psnr_bicubic"]
    result["losses"] = losses
    return model, result
