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

Both layers are scriptable (``torch.jit.script``), traceable by ``torch.fx``
(their pooling is one call node, so torchvision's feature extraction works on
models that contain them), exportable and compilable. Nothing here imports
torchvision.
"""

import math
from typing import Dict, List, Sequence, Tuple

import torch
from torch import Tensor, nn

from .. import ops

__all__ = ["MultiScaleRoIAlign", "MultiScaleRoIPool"]


def _output_size(output_size) -> Tuple[int, int]:
    if isinstance(output_size, int) and not isinstance(output_size, bool):
        return (output_size, output_size)
    size = tuple(output_size)
    if len(size) == 1:
        size = (size[0], size[0])
    if len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) for s in size):
        raise ValueError(f"output_size must be an int or a pair of ints (height, width), "
                         f"got {output_size!r}")
    return size


# The steps of the forward, as functions: TorchScript compiles them, and
# torch.fx keeps _multiscale_pool (wrapped below) as one call node, so that a
# traced model (torchvision.models.feature_extraction among the tracers) runs
# it as it is instead of tracing through its loops over levels and boxes.

def _filter_features(x: Dict[str, Tensor], featmap_names: List[str], layer: str) -> List[Tensor]:
    feats: List[Tensor] = []
    for k, v in x.items():
        if k in featmap_names:
            feats.append(v)
    if len(feats) == 0:
        raise ValueError(f"{layer}: none of the feature maps {featmap_names} is in the input "
                         f"(it has {list(x.keys())})")
    return feats


def _log2(v: float) -> float:
    if torch.jit.is_scripting():  # TorchScript has no math.log2
        return float(torch.tensor(v, dtype=torch.float64).log2().item())
    return math.log2(v)


def _infer_scales(features: List[Tensor], image_shapes: List[Tuple[int, int]]) -> List[float]:
    if len(image_shapes) == 0:
        raise ValueError("images list should not be empty")
    max_h = 0
    for shape in image_shapes:
        max_h = max(max_h, int(shape[0]))
    # The power of two closest (in log scale) to feature height / image height.
    return [2.0 ** round(_log2(f.shape[-2] / max_h)) for f in features]


def _levels_of(boxes: List[Tensor], k_min: int, k_max: int, canonical_scale: int,
               canonical_level: int) -> Tensor:
    areas = torch.cat([(b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) for b in boxes])
    size = torch.sqrt(areas)
    # FPN eq. 1; the small epsilon (1e-6 in the boxes' dtype) keeps boxes that
    # land exactly on a level boundary from falling below it by rounding.
    k = torch.floor(canonical_level + torch.log2(size / canonical_scale)
                    + torch.tensor(1e-6, dtype=size.dtype))
    k = torch.clamp(k, min=k_min, max=k_max)
    return k.to(torch.int64) - k_min


def _pool(feature: Tensor, rois: Tensor, scale: float, output_size: Tuple[int, int],
          sampling_ratio: int, max_pool: bool) -> Tensor:
    if max_pool:
        return ops.roi_pool(feature, rois, output_size, spatial_scale=scale)
    return ops.roi_align(feature, rois, output_size, spatial_scale=scale,
                         sampling_ratio=sampling_ratio, aligned=False)


@torch.fx.wrap
def _multiscale_pool(x: Dict[str, Tensor], boxes: List[Tensor],
                     image_shapes: List[Tuple[int, int]], featmap_names: List[str],
                     output_size: Tuple[int, int], sampling_ratio: int, canonical_scale: int,
                     canonical_level: int, max_pool: bool, layer: str) -> Tensor:
    feats = _filter_features(x, featmap_names, layer)
    scales = _infer_scales(feats, image_shapes)
    rois = torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], dim=1)
                      for i, b in enumerate(boxes)])
    if len(feats) == 1:
        return _pool(feats[0], rois, scales[0], output_size, sampling_ratio, max_pool)

    k_min = int(-_log2(scales[0]))
    k_max = int(-_log2(scales[-1]))
    levels = _levels_of(boxes, k_min, k_max, canonical_scale, canonical_level)
    first = feats[0]
    result = first.new_zeros((rois.shape[0], first.shape[1], output_size[0], output_size[1]))
    for level in range(len(feats)):
        idx = torch.where(levels == level)[0]
        pooled = _pool(feats[level], rois[idx], scales[level], output_size, sampling_ratio,
                       max_pool)
        # Levels may differ in dtype under autocast: the result takes the first's.
        result[idx] = pooled.to(result.dtype)
    return result


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

    def filter_features(self, x: Dict[str, Tensor]) -> List[Tensor]:
        """The feature maps of ``x`` named in ``featmap_names``, in ``x``'s order
        (as torchvision's layer takes them)."""
        return _filter_features(x, self.featmap_names, self._pooling()[0])

    def infer_scales(self, features: List[Tensor],
                     image_shapes: List[Tuple[int, int]]) -> List[float]:
        """Each feature map's scale relative to the images: ``2 ** round(log2(
        feature height / largest image height))``."""
        return _infer_scales(features, image_shapes)

    def levels_of(self, boxes: List[Tensor], k_min: int, k_max: int) -> Tensor:
        """The index (0 for level ``k_min``) of the feature map each box is
        pooled from, over the boxes of all images concatenated (int64)."""
        return _levels_of(boxes, k_min, k_max, self.canonical_scale, self.canonical_level)

    # -- the forward

    def forward(self, x: Dict[str, Tensor], boxes: List[Tensor],
                image_shapes: List[Tuple[int, int]]) -> Tensor:
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
        layer, sampling_ratio, max_pool = self._pooling()
        return _multiscale_pool(x, boxes, image_shapes, self.featmap_names, self.output_size,
                                sampling_ratio, self.canonical_scale, self.canonical_level,
                                max_pool, layer)

    def _pooling(self) -> Tuple[str, int, bool]:
        """What the two layers' forward differs in: the layer's name (for
        messages), the sampling ratio and whether boxes are max-pooled. A
        method, not class attributes, which TorchScript does not see."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        # torchvision's repr shows neither canonical argument: so does this one
        # while they have their default values.
        s = f"featmap_names={self.featmap_names}, output_size={self.output_size}{self._extra()}"
        if (self.canonical_scale, self.canonical_level) != (224, 4):
            s += (f", canonical_scale={self.canonical_scale}, "
                  f"canonical_level={self.canonical_level}")
        return s

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

    def _pooling(self) -> Tuple[str, int, bool]:
        return "MultiScaleRoIAlign", self.sampling_ratio, False

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

    def _pooling(self) -> Tuple[str, int, bool]:
        return "MultiScaleRoIPool", -1, True
