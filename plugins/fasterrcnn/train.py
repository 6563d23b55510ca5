"""Training example for Faster R-CNN that needs no download:
``kernelzoo train fasterrcnn-test``.

Every step draws a fresh batch of synthetic images (coloured rectangles on
noise, :func:`~kernelzoo.plugins.fasterrcnn.data.synthetic_detection_batch`)
at the model's ``min_size``; the detector learns to find the rectangles and
tell their colours (classes) apart. AdamW with a linear warm-up and a cosine
decay, on the sum of torchvision's four Faster R-CNN losses. Afterwards, on
held-out images (always the same ones), the detections scoring at least 0.5
are matched to the ground truth: a ground-truth box is found when a detection
of its class overlaps it with IoU >= 0.5 (recall), a detection is right when
it finds a ground-truth box of its class so (precision).
"""

from __future__ import annotations


import torch

from kernelzoo._training import (check_batch_fits, check_hyperparameters, cosine_schedule,
                                 fit_and_save, train_steps)
from kernelzoo.registry import create_model, model_config

from .data import synthetic_detection_batch

__all__ = ["box_iou", "evaluate", "fit", "train", "EVAL_SEED"]

#: Seed of the held-out evaluation images.
EVAL_SEED = 2015


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU matrix ``[len(a), len(b)]`` of ``(x1, y1, x2, y2)`` boxes."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).prod(-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def _data(config, n, generator, device):
    return synthetic_detection_batch(n, config.min_size, config.min_size * 5 // 4,
                                     num_classes=config.num_classes, generator=generator,
                                     device=device)


@torch.no_grad()
def evaluate(model, *, n: int = 32, score_thresh: float = 0.5, iou_thresh: float = 0.5,
             device="cpu") -> dict:
    """Recall and precision of ``model``'s detections scoring at least
    ``score_thresh`` on ``n`` held-out synthetic images (IoU >= ``iou_thresh``
    with a ground-truth box of the same class)."""
    images, targets = _data(model.config, n, torch.Generator().manual_seed(EVAL_SEED), device)
    was_training = model.training
    model.eval()
    try:
        detections = model(images)
    finally:
        model.train(was_training)
    found = right = n_gt = n_det = 0
    for det, tgt in zip(detections, targets):
        keep = det["scores"] >= score_thresh
        boxes, labels = det["boxes"][keep], det["labels"][keep]
        n_gt += len(tgt["boxes"])
        n_det += len(boxes)
        if len(boxes) and len(tgt["boxes"]):
            hit = (box_iou(tgt["boxes"], boxes) >= iou_thresh) & \
                  (tgt["labels"][:, None] == labels[None, :])
            found += int(hit.any(1).sum())
            right += int(hit.any(0).sum())
    return {"recall": found / max(n_gt, 1), "precision": right / max(n_det, 1),
            "eval_images": n, "eval_objects": n_gt, "eval_detections": n_det}


def train(model_name: str = "fasterrcnn-test", *, save: str | None = None,
          verbose: bool = True, **options) -> dict:
    """``kernelzoo train``: :func:`fit`, then a report; returns the results
    (JSON-serialisable). ``save`` writes the trained state dict there (the
    path is checked before training)."""
    model, result = fit_and_save(fit, model_name, save, options)
    if verbose:
        print(f"{model_name}: {result['steps']} steps of {result['batch_size']} images in "
              f"{result['train_seconds']:.1f} s; loss {result['first_loss']:.4f} -> "
              f"{result['final_loss']:.4f}")
        print(f"{result['eval_images']} held-out images, {result['eval_objects']} objects: "
              f"recall {result['recall']:.2f}, precision {result['precision']:.2f} "
              f"(detections scoring >= 0.5, IoU >= 0.5, right class)")
        if save:
            print(f"saved the state dict to {save}")
    return result


def fit(model_name: str = "fasterrcnn-test", *, steps: int | None = None,
        batch_size: int | None = None, lr: float | None = None, seed: int = 0,
        device: str = "cpu", progress: bool = True, warmup: int = 20,
        eval_images: int = 32, **overrides):
    """Trains Faster R-CNN model ``model_name`` on synthetic images; returns
    ``(model, results)``.

    Args:
        steps: optimizer steps (default 300).
        batch_size: images per step (default 4).
        lr: peak learning rate of AdamW (default 1e-3), reached after
            ``warmup`` steps, then decayed to 0 along a cosine.
        seed: seed of the initial weights and the training images.
        eval_images: held-out images for :func:`evaluate`.
        overrides: passed to :func:`kernelzoo.create_model` (e.g. ``min_size``
            to train a large preset on small images).
    """
    steps = 300 if steps is None else steps
    batch_size = 4 if batch_size is None else batch_size
    lr = 1e-3 if lr is None else lr
    try:
        check_hyperparameters(steps=steps, batch_size=batch_size, lr=lr)
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise ValueError(f"warmup must be a whole number >= 0, got {warmup!r}")
    except ValueError as e:
        raise ValueError(f"steps and batch_size must be positive, lr > 0 (finite) and "
                         f"warmup >= 0: {e}") from None
    config = model_config(model_name, **overrides)
    # A lower bound of one step's memory: the images (3 float32 planes of up
    # to min_size x 5/4 min_size pixels) and the transform's resized batch.
    check_batch_fits(batch_size * 2 * 3 * 4 * config.min_size * (config.min_size * 5 // 4),
                     f"a batch of {batch_size} images of {config.min_size}x"
                     f"{config.min_size * 5 // 4} pixels", device)
    torch.manual_seed(seed)
    model = create_model(model_name, **overrides).to(device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    sched = cosine_schedule(opt, steps, warmup=warmup)
    g = torch.Generator().manual_seed(seed + 1)

    parts = []

    def step_loss(step):
        images, targets = _data(config, batch_size, g, device)
        loss_dict = model(images, targets)
        parts.append({k: v.item() for k, v in loss_dict.items()})
        return sum(loss_dict.values())

    losses, train_s = train_steps(steps, step_loss, opt, sched, lr, f"train {model_name}",
                                  progress=progress)

    tail = losses[-10:]
    result = {"model": model_name, "steps": steps, "batch_size": batch_size, "lr": lr,
              "seed": seed, "device": str(device), "image_size": config.min_size,
              "first_loss": losses[0], "final_loss": sum(tail) / len(tail),
              "train_seconds": round(train_s, 2)}
    result.update(evaluate(model, n=eval_images, device=device))
    result["losses"] = losses
    result["loss_parts"] = parts
    return model, result
