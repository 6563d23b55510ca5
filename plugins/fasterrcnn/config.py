"""Configuration of the ``fasterrcnn`` family (imports neither torch nor torchvision)."""

from __future__ import annotations

import dataclasses

__all__ = ["FasterRCNNConfig", "BACKBONES", "BOX_POOLERS"]

#: ResNet backbones: torchvision's ``torchvision.models.<name>``; the tuple is
#: (block type, blocks per stage).
BACKBONES = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
    "resnet152": ("bottleneck", (3, 8, 36, 3)),
}

#: The RoI poolers of the box head: kernelzoo.nn.MultiScaleRoIAlign or
#: kernelzoo.nn.MultiScaleRoIPool.
BOX_POOLERS = ("roi_align", "roi_pool")

# The feature maps of a ResNet-FPN backbone: P2..P5 by name, then "pool" (P6,
# a max pool of P5, which only the RPN uses).
_NUM_FEATURE_MAPS = 5
_FPN_NAMES = ("0", "1", "2", "3")


@dataclasses.dataclass(frozen=True)
class FasterRCNNConfig:
    """Configuration of :class:`kernelzoo.plugins.fasterrcnn.FasterRCNN`.

    The defaults are those of torchvision's ``fasterrcnn_resnet50_fpn`` (random
    initialisation), and the names follow its keyword arguments where it has
    them.

    Backbone:
        backbone: ``resnet18``, ``resnet34``, ``resnet50``, ``resnet101`` or
            ``resnet152`` (torchvision's ResNets), randomly initialised.
        backbone_blocks: blocks per ResNet stage, overriding the backbone's
            (``(1, 1, 1, 1)`` makes a small ResNet-10 for tests); ``None``: the
            backbone's own.
        trainable_backbone_layers: how many of the ResNet's stages, counted
            from the last (``layer4``, ``layer3``, ``layer2``, ``layer1``,
            ``conv1`` with ``bn1``), are trained; the others are frozen. 5 (all)
            as torchvision does for a randomly initialised backbone.
        frozen_batchnorm: ``FrozenBatchNorm2d`` (fixed statistics and affine
            parameters, as torchvision uses with pretrained weights) instead of
            ``BatchNorm2d`` (torchvision's choice without pretrained weights).
        fpn_channels: channels of every FPN level (256).
        deformable_stages: ResNet stages (1 to 4: ``layer1`` ... ``layer4``)
            whose blocks' 3x3 convolution (``conv2``) is a modulated deformable
            convolution, :class:`kernelzoo.nn.ModulatedDeformConv2dPack` with a
            zero-initialised ``conv_offset`` (as the ``dcn`` family builds
            them); ``(2, 3, 4)`` is the DCNv2 setting; ``()`` (default): none.

    Transform (torchvision's ``GeneralizedRCNNTransform``):
        min_size, max_size: images are resized so that the shorter side is
            ``min_size`` unless the longer would exceed ``max_size``.
        image_mean, image_std: normalisation (ImageNet statistics).

    Region proposal network:
        anchor_sizes: anchor sizes in pixels, one tuple per feature map (P2,
            P3, P4, P5, P6).
        aspect_ratios: anchor aspect ratios (height / width), at every level.
        rpn_*: as torchvision's ``FasterRCNN``.

    Box head:
        box_pooler: ``"roi_align"`` (default): :class:`kernelzoo.nn.MultiScaleRoIAlign`;
            ``"roi_pool"``: :class:`kernelzoo.nn.MultiScaleRoIPool`, the max
            pooling of Fast R-CNN with the same FPN level mapping.
        box_featmap_names: FPN levels the boxes are pooled from; a single name
            (e.g. ``("0",)``) pools every box from that level.
        box_output_size: pooled size (7).
        box_sampling_ratio: RoIAlign samples per bin and axis (2; ``<= 0``:
            adaptive). Not used by RoIPool.
        box_canonical_scale, box_canonical_level: the FPN level mapping's
            ``s0`` and ``k0`` (224 and 4: a 224x224 box is pooled from P4).
        representation_size: width of the two fully connected layers (1024).
        num_classes: classes including the background (91: COCO's ids).
        box_*: as torchvision's ``FasterRCNN``.
    """

    # Backbone
    backbone: str = "resnet50"
    backbone_blocks: tuple[int, int, int, int] | None = None
    trainable_backbone_layers: int = 5
    frozen_batchnorm: bool = False
    fpn_channels: int = 256
    deformable_stages: tuple[int, ...] = ()
    # Transform
    min_size: int = 800
    max_size: int = 1333
    image_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    image_std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    # RPN
    anchor_sizes: tuple[tuple[int, ...], ...] = ((32,), (64,), (128,), (256,), (512,))
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    rpn_pre_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_test: int = 1000
    rpn_nms_thresh: float = 0.7
    rpn_fg_iou_thresh: float = 0.7
    rpn_bg_iou_thresh: float = 0.3
    rpn_batch_size_per_image: int = 256
    rpn_positive_fraction: float = 0.5
    rpn_score_thresh: float = 0.0
    # Box head
    num_classes: int = 91
    box_pooler: str = "roi_align"
    box_featmap_names: tuple[str, ...] = _FPN_NAMES
    box_output_size: int = 7
    box_sampling_ratio: int = 2
    box_canonical_scale: int = 224
    box_canonical_level: int = 4
    representation_size: int = 1024
    box_score_thresh: float = 0.05
    box_nms_thresh: float = 0.5
    box_detections_per_img: int = 100
    box_fg_iou_thresh: float = 0.5
    box_bg_iou_thresh: float = 0.5
    box_batch_size_per_image: int = 512
    box_positive_fraction: float = 0.25
    bbox_reg_weights: tuple[float, float, float, float] | None = None

    def __post_init__(self) -> None:
        def fail(field, msg):
            raise ValueError(f"FasterRCNNConfig: {field} {msg}, got {getattr(self, field)!r}")

        def positive_int(v):
            return isinstance(v, int) and not isinstance(v, bool) and v > 0

        if self.backbone not in BACKBONES:
            fail("backbone", f"must be one of {', '.join(BACKBONES)}")
        if self.backbone_blocks is not None and (
                len(self.backbone_blocks) != 4 or not all(map(positive_int, self.backbone_blocks))):
            fail("backbone_blocks", "must be None or four positive ints")
        if not (isinstance(self.trainable_backbone_layers, int)
                and 0 <= self.trainable_backbone_layers <= 5):
            fail("trainable_backbone_layers", "must be an int from 0 to 5")
        stages = tuple(self.deformable_stages)
        if not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 4
                   for v in stages) or len(set(stages)) != len(stages):
            fail("deformable_stages", "must be distinct ResNet stages from 1 to 4")
        for f in ("fpn_channels", "min_size", "max_size", "rpn_pre_nms_top_n_train",
                  "rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_train",
                  "rpn_post_nms_top_n_test", "rpn_batch_size_per_image", "box_output_size",
                  "representation_size", "box_detections_per_img",
                  "box_batch_size_per_image", "box_canonical_scale"):
            if not positive_int(getattr(self, f)):
                fail(f, "must be a positive int")
        if len(self.image_mean) != 3 or len(self.image_std) != 3:
            fail("image_mean" if len(self.image_mean) != 3 else "image_std",
                 "must have 3 values (RGB)")
        if len(self.anchor_sizes) != _NUM_FEATURE_MAPS or not all(
                len(s) > 0 and all(map(positive_int, s)) for s in self.anchor_sizes):
            fail("anchor_sizes", f"must be {_NUM_FEATURE_MAPS} tuples of positive ints, one per "
                                 f"feature map (P2, P3, P4, P5, P6)")
        if not self.aspect_ratios or not all(r > 0 for r in self.aspect_ratios):
            fail("aspect_ratios", "must be a non-empty tuple of positive numbers")
        if not (isinstance(self.num_classes, int) and self.num_classes >= 2):
            fail("num_classes", "must be an int >= 2 (the background is class 0)")
        if self.box_pooler not in BOX_POOLERS:
            fail("box_pooler", f"must be one of {', '.join(map(repr, BOX_POOLERS))}")
        names = self.box_featmap_names
        if isinstance(names, str) or not names or not set(names) <= set(_FPN_NAMES) or \
                len(set(names)) != len(names):
            fail("box_featmap_names", f"must be a non-empty tuple of distinct FPN levels "
                                      f"among {_FPN_NAMES}")
        if tuple(sorted(names)) != tuple(names):
            fail("box_featmap_names", "must list the levels finest first")
        if self.bbox_reg_weights is not None and len(self.bbox_reg_weights) != 4:
            fail("bbox_reg_weights", "must be None or 4 numbers")
