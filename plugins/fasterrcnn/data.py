"""Synthetic detection data that needs no download: bright coloured rectangles
on noise, with their boxes and classes as targets (imports no torchvision)."""

from __future__ import annotations

import torch

__all__ = ["CLASS_COLOURS", "synthetic_detection_batch"]

#: RGB colour of the rectangles of class k (k = 1, 2, ...: CLASS_COLOURS[(k - 1) % 6]).
CLASS_COLOURS = ((1.0, 0.15, 0.15), (0.15, 1.0, 0.15), (0.15, 0.15, 1.0),
                 (1.0, 1.0, 0.15), (1.0, 0.15, 1.0), (0.15, 1.0, 1.0))


def synthetic_detection_batch(n: int, height: int, width: int, *, num_classes: int = 3,
                              max_objects: int = 3, min_box: int | None = None,
                              max_box: int | None = None, size_jitter: float = 0.25,
                              generator: torch.Generator | None = None,
                              device: str | torch.device = "cpu"):
    """``n`` images and their targets, as torchvision's detectors take them.

    Each image is ``(3, h, w)`` in [0, 1] with ``h`` and ``w`` drawn within
    ``size_jitter`` below ``height`` and ``width`` (so the images of a batch
    differ in size): dim uniform noise in [0, 0.35], plus 1 to ``max_objects``
    axis-aligned rectangles, each filled with its class's colour
    (:data:`CLASS_COLOURS`, times a brightness in [0.8, 1]) and sides drawn
    from [``min_box``, ``max_box``] pixels (default: an eighth and a half of
    the image's shorter side). Later rectangles may cover earlier ones.

    Returns ``(images, targets)``: a list of ``n`` float32 tensors and a list
    of ``n`` dicts with ``boxes`` (float32 ``[K, 4]``, ``x1, y1, x2, y2``
    pixel edges, so a rectangle covering columns 3..7 has ``x1 = 3, x2 = 8``)
    and ``labels`` (int64 ``[K]`` in 1..num_classes-1).
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2 (background and one class), "
                         f"got {num_classes}")
    g = generator

    def randint(lo, hi):  # inclusive
        return int(torch.randint(lo, hi + 1, (), generator=g))

    images, targets = [], []
    for _ in range(n):
        h = randint(max(1, round(height * (1 - size_jitter))), height)
        w = randint(max(1, round(width * (1 - size_jitter))), width)
        lo = max(2, min(h, w) // 8) if min_box is None else min_box
        hi = max(lo, min(h, w) // 2) if max_box is None else max_box
        img = torch.rand(3, h, w, generator=g) * 0.35
        boxes, labels = [], []
        for _ in range(randint(1, max_objects)):
            bh, bw = min(randint(lo, hi), h), min(randint(lo, hi), w)
            y, x = randint(0, h - bh), randint(0, w - bw)
            label = randint(1, num_classes - 1)
            colour = torch.tensor(CLASS_COLOURS[(label - 1) % len(CLASS_COLOURS)])
            brightness = 0.8 + 0.2 * float(torch.rand((), generator=g))
            img[:, y:y + bh, x:x + bw] = (colour * brightness).view(3, 1, 1)
            boxes.append([x, y, x + bw, y + bh])
            labels.append(label)
        images.append(img.to(device))
        targets.append({"boxes": torch.tensor(boxes, dtype=torch.float32, device=device),
                        "labels": torch.tensor(labels, dtype=torch.int64, device=device)})
    return images, targets
