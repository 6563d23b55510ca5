"""Multi-scale RoI pooling over a feature pyramid (FPN, Lin et al., CVPR 2017).

:class:`MultiScaleRoIAlign` is a drop-in for :class:`torchvision.ops.MultiScaleRoIAlign`
that pools with :func:`kernelzoo.ops.roi_align`; :class:`MultiScaleRoIPool` is
the same layer over :func:`kernelzoo.ops.roi_pool` (the max pooling of Fast
R-CNN, which torchvision does not offer over several levels).

How a box finds its level (FPN paper, eq. 1): a box of ``w x h`` image pixels
goes to level

    k = floor(k0 + log2(sqrt(w * h) / s0) + 1e-6)

with ``s0 = canonical_scale`` (224) and ``k0 = canonical_level`` (4), clamped
to the levels of the feature maps given. A feature map's level is
``-log2(scale)``, where its scale (feature size / image size) is inferred from
the heights: ``2 ** round(log2(feature height / largest image height))``, the
largest image height being taken over ``image_shapes`` (the images' sizes
before batching pads them). The first feature map used is the finest level and
the last the coarsest, as an FPN returns them.

Nothing here imports torchvision.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from .. import ops

__all__ = ["MultiScaleRoIAlign", "MultiScaleRoIPool"]

_EPS = 1e-6


def _output_size(output_size) -> tuple[int, int]:
    if isinstance(output_size, int) and not isinstance(output_size, bool):
        return (output_size, output_size)
    size = tuple(output_size)
    if len(size) == 1:
        size = (size[0], size[0])
    if len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) for s in size):
        raise ValueError(f"output_size must be an int or a pair of ints (height, width), "
                         f"got {output_size!r}")
    return size


def _infer_scale(feature_size: int, image_size: int) -> float:
    """The power of two closest (in log scale) to ``feature_size / image_size``."""
    return 2.0 ** round(math.log2(feature_size / image_size))


class _MultiScalePool(nn.Module):
    """Shared by :class:`MultiScaleRoIAlign` and :class:`MultiScaleRoIPool`:
    filtering the feature maps, inferring their scales, mapping boxes to
    levels, and gathering the per-level results into one tensor."""

    def __init__(self, featmap_names: Sequence[str], output_size, *,
                 canonical_scale: int = 224, canonical_level: int = 4) -> None:
        super().__init__()
        if isinstance(featmap_names, str):
            raise TypeError(f"featmap_names must be a list of feature map names, got the "
                            f"string {featmap_names!r}")
        featmap_names = list(featmap_names)
        if not featmap_names:
            raise ValueError("featmap_names must name at least one feature map")
        if not canonical_scale > 0:
            raise ValueError(f"canonical_scale must be positive, got {canonical_scale!r}")
        self.featmap_names = featmap_names
        self.output_size = _output_size(output_size)
        self.canonical_scale = canonical_scale
        self.canonical_level = canonical_level

    # -- the pieces, public so that they can be inspected and tested

    def filter_features(self, x: dict[str, Tensor]) -> list[Tensor]:
        """The feature maps of ``x`` named in ``featmap_names``, in ``x``'s order
        (as torchvision's layer takes them)."""
        feats = [v for k, v in x.items() if k in self.featmap_names]
        if not feats:
            raise ValueError(f"{type(self).__name__}: none of the feature maps "
                             f"{self.featmap_names} is in the input (it has {list(x)})")
        return feats

    def infer_scales(self, features: list[Tensor],
                     image_shapes: list[tuple[int, int]]) -> list[float]:
        """Each feature map's scale relative to the images: ``2 ** round(log2(
        feature height / largest image height))``."""
        if len(image_shapes) == 0:
            raise ValueError("images list should not be empty")
        max_h = max(int(s[0]) for s in image_shapes)
        return [_infer_scale(f.shape[-2], max_h) for f in features]

    def levels_of(self, boxes: list[Tensor], k_min: int, k_max: int) -> Tensor:
        """The index (0 for level ``k_min``) of the feature map each box is
        pooled from, over the boxes of all images concatenated (int64)."""
        areas = torch.cat([(b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) for b in boxes])
        size = torch.sqrt(areas)
        # FPN eq. 1; the small epsilon (in the boxes' dtype) keeps boxes that
        # land exactly on a level boundary from falling below it by rounding.
        k = torch.floor(self.canonical_level + torch.log2(size / self.canonical_scale)
                        + torch.tensor(_EPS, dtype=size.dtype))
        k = torch.clamp(k, min=k_min, max=k_max)
        return k.to(torch.int64) - k_min

    # -- the forward

    def _pool(self, feature: Tensor, rois: Tensor, scale: float) -> Tensor:
        raise NotImplementedError

    def forward(self, x: dict[str, Tensor], boxes: list[Tensor],
                image_shapes: list[tuple[int, int]]) -> Tensor:
        """Pools every box from its level.

        Args:
            x: feature maps ``(N, C, H_l, W_l)`` by name (e.g. an FPN's output),
                all with the same number of channels; only those named in
                ``featmap_names`` are used.
            boxes: one ``Tensor[L_i, 4]`` of ``(x1, y1, x2, y2)`` per image, in
                image pixels (not feature map pixels); ``L_i`` may be 0.
            image_shapes: the ``(height, width)`` of each image before it was
                batched and padded; they give the feature maps' scales.

        Returns:
            ``Tensor[sum L_i, C, out_h, out_w]``, the boxes of image 0 first, in
            the dtype of the first feature map used.
        """
        feats = self.filter_features(x)
        scales = self.infer_scales(feats, image_shapes)
        rois = torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], dim=1)
                          for i, b in enumerate(boxes)])
        if len(feats) == 1:
            return self._pool(feats[0], rois, scales[0])

        k_min = int(-math.log2(scales[0]))
        k_max = int(-math.log2(scales[-1]))
        levels = self.levels_of(boxes, k_min, k_max)
        first = feats[0]
        result = first.new_zeros((rois.shape[0], first.shape[1]) + self.output_size)
        for level, (feat, scale) in enumerate(zip(feats, scales)):
            idx = torch.where(levels == level)[0]
            # Levels may differ in dtype under autocast: the result takes the first's.
            result[idx] = self._pool(feat, rois[idx], scale).to(result.dtype)
        return result

    def extra_repr(self) -> str:
        return (f"featmap_names={self.featmap_names}, output_size={self.output_size}"
                f"{self._extra()}, canonical_scale={self.canonical_scale}, "
                f"canonical_level={self.canonical_level}")

    def _extra(self) -> str:
        return ""


class MultiScaleRoIAlign(_MultiScalePool):
    """Multi-scale RoIAlign: each box is pooled with :func:`kernelzoo.ops.roi_align`
    from the pyramid level its size maps to (see the module docstring).

    Drop-in for :class:`torchvision.ops.MultiScaleRoIAlign` (same arguments,
    same ``forward``, same results; ``aligned=False`` as there). One
    difference: torchvision infers the feature maps' scales on the first call
    and keeps them for later calls; this layer infers them on every call (a few
    operations on Python ints), so its output depends only on its inputs. The
    two agree whenever the inferred scales do not change between calls.

    Args:
        featmap_names: names of the feature maps to pool from, finest level
            first (an FPN's ``["0", "1", "2", "3"]``).
        output_size: ``int`` or ``(height, width)`` of each pooled box.
        sampling_ratio: bilinear samples per bin along each axis;
            ``<= 0``: adaptive, ``ceil(box size / output size)``.
        canonical_scale, canonical_level: ``s0`` and ``k0`` of the level
            mapping (a ``s0 x s0`` box is pooled from level ``k0``).

    Example::

        pool = kernelzoo.nn.MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)
        feats = {"0": torch.rand(1, 256, 200, 200), "1": torch.rand(1, 256, 100, 100),
                 "2": torch.rand(1, 256, 50, 50), "3": torch.rand(1, 256, 25, 25)}
        boxes = [torch.tensor([[10., 20., 300., 400.]])]
        pool(feats, boxes, [(800, 800)]).shape      # (1, 256, 7, 7)
    """

    def __init__(self, featmap_names: Sequence[str], output_size, sampling_ratio: int, *,
                 canonical_scale: int = 224, canonical_level: int = 4) -> None:
        super().__init__(featmap_names, output_size, canonical_scale=canonical_scale,
                         canonical_level=canonical_level)
        self.sampling_ratio = int(sampling_ratio)

    def _pool(self, feature: Tensor, rois: Tensor, scale: float) -> Tensor:
        return ops.roi_align(feature, rois, self.output_size, spatial_scale=scale,
                             sampling_ratio=self.sampling_ratio, aligned=False)

    def _extra(self) -> str:
        return f", sampling_ratio={self.sampling_ratio}"


class MultiScaleRoIPool(_MultiScalePool):
    """Multi-scale RoIPool: :class:`MultiScaleRoIAlign`'s level mapping with the
    max pooling over quantized bins of Fast R-CNN, :func:`kernelzoo.ops.roi_pool`.

    Same arguments as :class:`MultiScaleRoIAlign` without ``sampling_ratio``
    (RoIPool takes the maximum over every feature map cell of a bin). With one
    feature map name it is plain single-level RoIPool, as in the Fast and
    Faster R-CNN papers.
    """

    def _pool(self, feature: Tensor, rois: Tensor, scale: float) -> Tensor:
        return ops.roi_pool(feature, rois, self.output_size, spatial_scale=scale)
