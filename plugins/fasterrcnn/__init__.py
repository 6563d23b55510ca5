"""The ``fasterrcnn`` model family: Faster R-CNN with a ResNet-FPN backbone whose
box head pools with kernelzoo's RoI operators.

Models ``fasterrcnn-resnet50-fpn`` and ``fasterrcnn-resnet18-fpn`` (randomly
initialised: kernelzoo downloads nothing), ``fasterrcnn-dcn-resnet50-fpn``
(the DCNv2 detector: modulated deformable convolutions in the backbone's
``layer2`` to ``layer4``), and the tiny ``fasterrcnn-test``,
``fasterrcnn-roipool-test`` and ``fasterrcnn-dcn-test`` for tests. The box head pools with
:class:`kernelzoo.nn.MultiScaleRoIAlign` over the FPN levels, or with
:class:`kernelzoo.nn.MultiScaleRoIPool` (``box_pooler="roi_pool"``).

Everything else (transform, backbone, anchors, RPN, box coding, NMS) is
torchvision's detection framework, an optional dependency: ``pip install
kernelzoo[detection]``. Importing this module and listing the models does not
import torchvision; building a model does, and says what to install when it is
missing.
"""

from __future__ import annotations

import dataclasses

import torch

from kernelzoo.registry import ModelFamily

from .config import BACKBONES, BOX_POOLERS, FasterRCNNConfig
from .data import synthetic_detection_batch

__all__ = ["FasterRCNNConfig", "BACKBONES", "BOX_POOLERS", "build", "example_inputs",
           "synthetic_detection_batch", "family", "MISSING_TORCHVISION"]

MISSING_TORCHVISION = (
    "the fasterrcnn model family needs torchvision (its detection framework: transform, "
    "ResNet-FPN backbone, anchors, RPN, box coding, NMS), which is not installed. "
    "Install kernelzoo with its detection extra, pip install 'kernelzoo[detection]', or "
    "pip install torchvision (the release that pairs with your torch)")


def _is_missing_torchvision(e: ImportError) -> bool:
    return isinstance(e, ModuleNotFoundError) and \
        (e.name or "").partition(".")[0] == "torchvision"


def build(config: FasterRCNNConfig):
    """Builds :class:`~kernelzoo.plugins.fasterrcnn.model.FasterRCNN` (imports
    torchvision; raises ``ImportError`` saying what to install without it)."""
    try:
        from .model import FasterRCNN
    except ImportError as e:
        if _is_missing_torchvision(e):
            raise ImportError(MISSING_TORCHVISION) from e
        raise
    return FasterRCNN(config)


def example_inputs(model, batch_size: int = 2) -> tuple:
    """``(images, targets)`` for ``model(images, targets)``: ``batch_size``
    synthetic images of about ``min_size x 1.25 min_size`` pixels (sizes
    differ within the batch) with their boxes and labels (always the same
    ones). Training mode needs the targets; eval mode ignores them."""
    cfg = model.config
    g = torch.Generator().manual_seed(0)
    return synthetic_detection_batch(batch_size, cfg.min_size, cfg.min_size * 5 // 4,
                                     num_classes=cfg.num_classes, generator=g)


def train_example(model_name: str, **options) -> dict:
    """``kernelzoo train``: see :func:`kernelzoo.plugins.fasterrcnn.train.train`."""
    from .train import train  # imported only when used

    return train(model_name, **options)


_test = FasterRCNNConfig(
    backbone="resnet18", backbone_blocks=(1, 1, 1, 1), fpn_channels=32,
    min_size=64, max_size=96,
    anchor_sizes=((8,), (16,), (32,), (64,), (128,)),
    rpn_pre_nms_top_n_train=300, rpn_pre_nms_top_n_test=150,
    rpn_post_nms_top_n_train=100, rpn_post_nms_top_n_test=50, rpn_batch_size_per_image=64,
    num_classes=3, representation_size=64,
    # Boxes in these small images span 4 to 96 pixels: a canonical scale of 32
    # spreads them over all four levels (8 -> P2, 16 -> P3, 32 -> P4, 64 -> P5).
    box_canonical_scale=32,
    box_batch_size_per_image=64, box_detections_per_img=20)

_presets = {
    "resnet50-fpn": FasterRCNNConfig(backbone="resnet50"),
    "resnet18-fpn": FasterRCNNConfig(backbone="resnet18"),
    "test": _test,
    "roipool-test": dataclasses.replace(_test, box_pooler="roi_pool"),
    # DCNv2's detector: deformable ResNet-50 (modulated deformable 3x3
    # convolutions in layer2-layer4) with the FPN and the RoIAlign box head.
    "dcn-resnet50-fpn": FasterRCNNConfig(backbone="resnet50", deformable_stages=(2, 3, 4)),
    # Its tiny counterpart for tests (fasterrcnn-test's ResNet-10, deformable in layer2-4).
    "dcn-test": dataclasses.replace(_test, deformable_stages=(2, 3, 4)),
}

family = ModelFamily(
    name="fasterrcnn",
    build=build,
    presets=_presets,
    example_inputs=example_inputs,
    description="Faster R-CNN, ResNet-FPN, box head on kernelzoo's roi_align/roi_pool "
                "(needs torchvision: kernelzoo[detection])",
    train=train_example,
    # The detector as a whole has data-dependent shapes (proposal filtering,
    # NMS, per-image detections): torch.compile checks the box head's pooler
    # (kernelzoo's ops) and MLP instead, inside the eager detector.
    compile_modules=("roi_heads.box_roi_pool", "roi_heads.box_head"),
)
