"""Faster R-CNN (Ren et al., NeurIPS 2015) with a ResNet-FPN backbone (Lin et
al., CVPR 2017), whose box head pools with kernelzoo's RoI operators.

The detector is assembled from torchvision's detection framework (an optional
dependency of this family: ``pip install kernelzoo[detection]``):
``GeneralizedRCNN`` (the forward: transform, backbone, RPN, RoI heads,
postprocessing), ``GeneralizedRCNNTransform`` (resizing, normalisation,
batching), a torchvision ResNet with ``BackboneWithFPN``, ``AnchorGenerator``,
``RPNHead`` and ``RegionProposalNetwork``, and ``RoIHeads`` (proposal
sampling, box coding, losses, per-class NMS) with ``TwoMLPHead`` and
``FastRCNNPredictor``. The RoI pooler handed to ``RoIHeads`` is kernelzoo's
:class:`~kernelzoo.nn.MultiScaleRoIAlign` (or
:class:`~kernelzoo.nn.MultiScaleRoIPool`).

Module names are those of torchvision's ``fasterrcnn_resnet50_fpn``, so state
dicts load in both directions.

This module imports torchvision; the family's ``build`` imports it only when a
model is built.
"""

from __future__ import annotations

from torch import nn
from torchvision.models import resnet as tv_resnet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d

from kernelzoo.nn import MultiScaleRoIAlign, MultiScaleRoIPool, make_deformable

from .config import BACKBONES, FasterRCNNConfig

__all__ = ["FasterRCNN", "resnet_fpn_backbone", "box_pooler"]

# The ResNet stages, last first, in the order trainable_backbone_layers counts them.
_STAGES = ("layer4", "layer3", "layer2", "layer1", "conv1")


def resnet_fpn_backbone(config: FasterRCNNConfig) -> BackboneWithFPN:
    """A randomly initialised torchvision ResNet with an FPN on its four stages
    (P2-P5, named "0"-"3") and a max-pooled P6 ("pool"); the 3x3 convolutions
    of ``config.deformable_stages`` modulated-deformable."""
    kind, blocks = BACKBONES[config.backbone]
    block = tv_resnet.BasicBlock if kind == "basic" else tv_resnet.Bottleneck
    norm = FrozenBatchNorm2d if config.frozen_batchnorm else nn.BatchNorm2d
    body = tv_resnet.ResNet(block, list(config.backbone_blocks or blocks), norm_layer=norm)
    if config.deformable_stages:
        # conv2 of each block of those stages becomes a
        # ModulatedDeformConv2dPack with the same weight (as the dcn family's).
        make_deformable(body, config.deformable_stages, modulated=True)
    # Freeze all but the last `trainable_backbone_layers` stages (bn1 goes with conv1).
    train = list(_STAGES[:config.trainable_backbone_layers])
    if config.trainable_backbone_layers == 5:
        train.append("bn1")
    for name, p in body.named_parameters():
        if not name.startswith(tuple(train)):
            p.requires_grad_(False)
    widths = [64 * block.expansion * 2 ** i for i in range(4)]
    return BackboneWithFPN(body, return_layers={f"layer{i + 1}": str(i) for i in range(4)},
                           in_channels_list=widths, out_channels=config.fpn_channels,
                           extra_blocks=LastLevelMaxPool())


def box_pooler(config: FasterRCNNConfig) -> nn.Module:
    """The box head's RoI pooler: kernelzoo's MultiScaleRoIAlign or MultiScaleRoIPool."""
    common = dict(featmap_names=list(config.box_featmap_names),
                  output_size=config.box_output_size,
                  canonical_scale=config.box_canonical_scale,
                  canonical_level=config.box_canonical_level)
    if config.box_pooler == "roi_pool":
        return MultiScaleRoIPool(**common)
    return MultiScaleRoIAlign(sampling_ratio=config.box_sampling_ratio, **common)


class FasterRCNN(GeneralizedRCNN):
    """Faster R-CNN with a ResNet-FPN backbone and kernelzoo's RoI pooling.

    Called as torchvision's detectors are: ``model(images)`` with a list of
    ``(3, H, W)`` float images in [0, 1] (sizes may differ) and, in training
    mode, ``model(images, targets)`` with one dict per image: ``boxes``
    (``float32 [K, 4]``, ``x1, y1, x2, y2`` in pixels) and ``labels``
    (``int64 [K]``, 1 to ``num_classes - 1``). Training mode returns the
    losses (``loss_classifier``, ``loss_box_reg``, ``loss_objectness``,
    ``loss_rpn_box_reg``); eval mode returns one dict per image with
    ``boxes`` (``float32 [D, 4]``, in the input image's pixels), ``labels``
    (``int64 [D]``) and ``scores`` (``float32 [D]``, decreasing).
    """

    def __init__(self, config: FasterRCNNConfig | None = None) -> None:
        config = config or FasterRCNNConfig()
        backbone = resnet_fpn_backbone(config)
        c = backbone.out_channels
        anchors = AnchorGenerator(sizes=tuple(tuple(s) for s in config.anchor_sizes),
                                  aspect_ratios=(tuple(config.aspect_ratios),)
                                  * len(config.anchor_sizes))
        rpn = RegionProposalNetwork(
            anchors, RPNHead(c, anchors.num_anchors_per_location()[0]),
            config.rpn_fg_iou_thresh, config.rpn_bg_iou_thresh,
            config.rpn_batch_size_per_image, config.rpn_positive_fraction,
            dict(training=config.rpn_pre_nms_top_n_train, testing=config.rpn_pre_nms_top_n_test),
            dict(training=config.rpn_post_nms_top_n_train,
                 testing=config.rpn_post_nms_top_n_test),
            config.rpn_nms_thresh, score_thresh=config.rpn_score_thresh)
        pooler = box_pooler(config)
        oh, ow = pooler.output_size
        roi_heads = RoIHeads(
            pooler, TwoMLPHead(c * oh * ow, config.representation_size),
            FastRCNNPredictor(config.representation_size, config.num_classes),
            config.box_fg_iou_thresh, config.box_bg_iou_thresh,
            config.box_batch_size_per_image, config.box_positive_fraction,
            None if config.bbox_reg_weights is None else tuple(config.bbox_reg_weights),
            config.box_score_thresh, config.box_nms_thresh, config.box_detections_per_img)
        transform = GeneralizedRCNNTransform(config.min_size, config.max_size,
                                             list(config.image_mean), list(config.image_std))
        super().__init__(backbone, rpn, roi_heads, transform)
        self.config = config
        self.num_classes = config.num_classes
