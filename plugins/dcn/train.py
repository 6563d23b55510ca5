"""Training example that needs no download: ``kernelzoo train dcn-test``.

A classification task with geometric variation, made in code: each image shows
one of four shapes (square, triangle, circle, cross) at a random position,
size (half-extent 3 to 10 pixels in a 32x32 image), rotation (any angle) and
stretch (aspect ratio 0.67 to 1.5), brighter than the background by 0.2 to
1, with soft (antialiased) edges and Gaussian noise (sigma 0.1). Deformable
convolutions can adapt where their taps sample to the object's scale and
orientation, which is what such a task asks for.

The example trains the model (e.g. ``dcn-test``, deformable in ``layer2`` to
``layer4``) and then, with the same steps, seed, batches and initial weights
(the plain network gets the deformable one's initial weights; it only lacks the
offset convolutions), the same network with plain convolutions
(``dcn_stages=()``), and reports the held-out accuracy of both, whichever is
higher. ``--save`` writes the deformable model's state dict.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kernelzoo._training import (check_batch_fits, check_hyperparameters, cosine_schedule,
                                 fit_and_save, train_steps)
from kernelzoo.registry import create_model, model_config

__all__ = ["CLASSES", "shapes_batch", "evaluate", "fit", "train"]

#: The classes, in label order.
CLASSES = ("square", "triangle", "circle", "cross")
#: Seed of the held-out evaluation images (no training run uses it).
EVAL_SEED = 2017
#: Held-out images the accuracy is measured on, by default.
EVAL_IMAGES = 1000


def shapes_batch(n: int, size: int = 32, channels: int = 1, *,
                 generator: torch.Generator | None = None, device="cpu"):
    """``(images, labels)``: ``n`` images ``(n, channels, size, size)`` in
    about [0, 1], each with one shape of class ``labels[i]`` (an index into
    :data:`CLASSES`, uniformly drawn) under a random similarity transform and
    stretch.

    Each shape is described by an approximate signed distance in its own
    frame (unit half-extent): square ``max(|u|, |v|) - 1``, circle ``|p| - 1``,
    triangle (equilateral, circumradius 1) the largest of its three edge
    distances, cross the union of two 1 x 0.3 bars. Pixel ``p`` maps to the
    shape frame by ``R(-theta) (p - c) / (s * (a, 1/a))``; the image is
    ``bg + (fg - bg) * sigmoid(-distance_in_pixels / 0.4)`` plus noise.
    """
    g = generator

    def rand(*shape):
        return torch.rand(*shape, generator=g)

    labels = torch.randint(len(CLASSES), (n,), generator=g)
    half = 3 + 7 * rand(n)                                  # half-extent, pixels
    theta = 2 * math.pi * rand(n)
    aspect = torch.exp(math.log(1.5) * (2 * rand(n) - 1))     # 0.67 .. 1.5
    margin = half * aspect.clamp_min(1 / aspect)           # keep the shape mostly inside
    cx = margin + (size - 2 * margin).clamp_min(0) * rand(n) - 0.5
    cy = margin + (size - 2 * margin).clamp_min(0) * rand(n) - 0.5
    bg = 0.4 * rand(n)
    fg = bg + 0.2 + (0.8 - bg) * rand(n)                  # contrast >= 0.2

    def col(t):
        return t.view(n, 1, 1)

    coords = torch.arange(size, dtype=torch.float32)
    y, x = coords.view(1, size, 1), coords.view(1, 1, size)
    dx, dy = x - col(cx), y - col(cy)
    cos, sin = col(torch.cos(theta)), col(torch.sin(theta))
    sx, sy = col(half * aspect), col(half / aspect)
    u = (cos * dx + sin * dy) / sx
    v = (-sin * dx + cos * dy) / sy

    square = torch.maximum(u.abs(), v.abs()) - 1
    circle = torch.sqrt(u * u + v * v) - 1
    # Equilateral triangle with circumradius 1: edges at distance 0.5 from the
    # centre, outward normals at -90, 30 and 150 degrees.
    tri = torch.stack([-v, u * math.cos(math.pi / 6) + v * 0.5,
                       -u * math.cos(math.pi / 6) + v * 0.5]).amax(0) - 0.5
    w = 0.3
    bar1 = torch.maximum(u.abs() - 1, v.abs() - w)
    bar2 = torch.maximum(u.abs() - w, v.abs() - 1)
    cross = torch.minimum(bar1, bar2)
    dist = torch.stack([square, tri, circle, cross], 1)      # (n, 4, H, W)
    dist = dist.gather(1, labels.view(n, 1, 1, 1).expand(n, 1, size, size)).squeeze(1)
    # Local units to pixels (approximately: by the geometric mean of the scales).
    dist = dist * col(half)
    img = col(bg) + col(fg - bg) * torch.sigmoid(-dist / 0.4)
    img = img + 0.1 * torch.randn(n, size, size, generator=g)
    img = img.unsqueeze(1).expand(n, channels, size, size).contiguous()
    return img.to(device), labels.to(device)


@torch.no_grad()
def evaluate(model, *, n: int = 1000, size: int = 32, device="cpu") -> dict:
    """Loss and accuracy of ``model`` on ``n`` held-out images (eval mode;
    always the same images)."""
    g = torch.Generator().manual_seed(EVAL_SEED)
    images, labels = shapes_batch(n, size, model.in_channels, generator=g, device=device)
    was = model.training
    model.eval()
    try:
        logits = torch.cat([model(chunk) for chunk in images.split(250)])
    finally:
        model.train(was)
    return {"eval_loss": float(F.cross_entropy(logits, labels)),
            "eval_accuracy": float((logits.argmax(1) == labels).float().mean())}


def _train_one(model, *, steps, batch_size, lr, seed, size, device, progress, label):
    """Adam, linear warm-up over 5% of the steps then cosine decay, cross-entropy,
    a fresh batch every step drawn from ``seed``; returns (losses, seconds)."""
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = cosine_schedule(opt, steps, warmup=steps // 20)
    g = torch.Generator().manual_seed(seed + 1)

    def step_loss(step):
        images, labels = shapes_batch(batch_size, size, model.in_channels, generator=g,
                                      device=device)
        return F.cross_entropy(model(images), labels)

    return train_steps(steps, step_loss, opt, sched, lr, label, progress=progress)


def fit(model_name: str = "dcn-test", *, steps: int | None = None,
        batch_size: int | None = None, lr: float | None = None, seed: int = 0,
        device: str = "cpu", progress: bool = True, baseline: bool = True,
        eval_images: int | None = None, **overrides):
    """Trains ``model_name`` on :func:`shapes_batch` images; returns ``(model,
    results)``. With ``baseline`` (the default) it then trains the same
    network with plain convolutions identically (same initial weights, save
    the offset convolutions; same steps, seed and batches) and reports both.

    Args:
        steps: optimizer steps (default 400).
        batch_size: images per step (default 64).
        lr: peak learning rate of Adam (default 3e-3).
        seed: seed of the initial weights and of the training images.
        baseline: also train the plain-convolution network.
        eval_images: held-out images for the accuracy (default
            :data:`EVAL_IMAGES`, 1000).
        overrides: passed to :func:`kernelzoo.create_model`.
    """
    config = model_config(model_name, **overrides)
    if config.num_classes < len(CLASSES):
        raise ValueError(f"{model_name}: num_classes is {config.num_classes}, the task has "
                         f"{len(CLASSES)} classes")
    steps = 400 if steps is None else steps
    batch_size = 64 if batch_size is None else batch_size
    lr = 3e-3 if lr is None else lr
    try:
        check_hyperparameters(steps=steps, batch_size=batch_size, lr=lr)
    except ValueError as e:
        raise ValueError(f"steps and batch_size must be positive and lr > 0 (finite): {e}") \
            from None
    eval_images = EVAL_IMAGES if eval_images is None else eval_images
    size = config.image_size
    # A lower bound of one step's memory: the shape generator's five distance
    # maps and the stem's activations (float32).
    check_batch_fits(batch_size * 4 * size * size * (8 + 2 * config.width),
                     f"a batch of {batch_size} {size}x{size} images", device)

    torch.manual_seed(seed)
    model = create_model(model_name, **overrides).to(device)
    plain = None
    if baseline:
        plain = create_model(model_name, **{**overrides, "dcn_stages": ()}).to(device)
        # The same starting point: every weight but the offset convolutions'.
        state = {k: v for k, v in model.state_dict().items() if ".conv_offset." not in k}
        plain.load_state_dict(state)
    before = evaluate(model, n=eval_images, size=size, device=device)
    common = dict(steps=steps, batch_size=batch_size, lr=lr, seed=seed, size=size,
                  device=device, progress=progress)
    losses, seconds = _train_one(model, label=f"train {model_name}", **common)
    k = min(20, len(losses))
    result = {"model": model_name, "task": "shapes under scale and rotation",
              "classes": list(CLASSES), "chance_accuracy": 1 / len(CLASSES),
              "image_size": size, "steps": steps, "batch_size": batch_size, "lr": lr,
              "seed": seed, "device": str(device), "dcn_stages": list(config.dcn_stages),
              "first_loss": losses[0], "final_loss": sum(losses[-k:]) / k,
              "initial_eval_accuracy": before["eval_accuracy"],
              "train_seconds": round(seconds, 2), "eval_images": eval_images}
    result.update(evaluate(model, n=eval_images, size=size, device=device))
    result["losses"] = losses
    if plain is not None:
        p_losses, p_seconds = _train_one(plain, label=f"train {model_name} (plain conv)",
                                         **common)
        p_eval = evaluate(plain, n=eval_images, size=size, device=device)
        result["plain"] = {"final_loss": sum(p_losses[-k:]) / k,
                           "train_seconds": round(p_seconds, 2),
                           "eval_loss": p_eval["eval_loss"],
                           "eval_accuracy": p_eval["eval_accuracy"], "losses": p_losses}
    return model, result


def train(model_name: str = "dcn-test", *, save: str | None = None, verbose: bool = True,
          **options) -> dict:
    """``kernelzoo train``: :func:`fit`, then a report; returns the results
    (JSON-serialisable). ``save`` writes the deformable model's state dict."""
    model, result = fit_and_save(fit, model_name, save, options)
    if verbose:
        s = result["image_size"]
        print(f"{model_name}: {result['steps']} steps of {result['batch_size']} {s}x{s} images "
              f"(4 shapes under random scale, rotation and stretch) in "
              f"{result['train_seconds']:.1f} s; loss {result['first_loss']:.4f} -> "
              f"{result['final_loss']:.4f}")
        line = (f"held-out accuracy ({result['eval_images']} images, chance "
                f"{result['chance_accuracy']:.0%}): deformable {result['eval_accuracy']:.1%}")
        if "plain" in result:
            p = result["plain"]
            line += (f", same network with plain convolutions {p['eval_accuracy']:.1%} "
                     f"(trained identically in {p['train_seconds']:.1f} s)")
        print(line)
        if save:
            print(f"saved the state dict to {save}")
    return result
