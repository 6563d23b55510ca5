"""The fasterrcnn family: presets, the optional torchvision dependency,
architecture and state dicts against torchvision's detectors, training on
synthetic images, the format of the detections, and detections equal to those
of torchvision's own Faster R-CNN carrying the same weights.

(check_family runs on this family with the others, in test_families.py.)"""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys

import pytest
import torch
from torch import nn

import kernelzoo
from kernelzoo.plugins import fasterrcnn
from kernelzoo.plugins.fasterrcnn import FasterRCNNConfig, synthetic_detection_batch

torchvision = pytest.importorskip("torchvision")
from torchvision.models import resnet as tv_resnet  # noqa: E402
from torchvision.models.detection import FasterRCNN as TVFasterRCNN  # noqa: E402
from torchvision.models.detection import fasterrcnn_resnet50_fpn  # noqa: E402
from torchvision.models.detection.anchor_utils import AnchorGenerator  # noqa: E402
from torchvision.models.detection.backbone_utils import (BackboneWithFPN,  # noqa: E402
                                                          resnet_fpn_backbone)
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead  # noqa: E402
from torchvision.ops.misc import FrozenBatchNorm2d  # noqa: E402
import torchvision.ops.poolers as tv_poolers  # noqa: E402

from kernelzoo.plugins.fasterrcnn import train as frcnn_train  # noqa: E402
from kernelzoo.plugins.fasterrcnn.model import FasterRCNN  # noqa: E402

MODELS = ["fasterrcnn-dcn-resnet50-fpn", "fasterrcnn-dcn-test", "fasterrcnn-resnet18-fpn",
          "fasterrcnn-resnet50-fpn", "fasterrcnn-roipool-test", "fasterrcnn-test"]


def test_presets():
    assert kernelzoo.list_models("fasterrcnn-*") == MODELS
    assert kernelzoo.get_family("fasterrcnn").small_presets == ["dcn-test", "roipool-test",
                                                                "test"]
    r50 = kernelzoo.registry.model_config("fasterrcnn-resnet50-fpn")
    assert r50 == FasterRCNNConfig()               # torchvision's fasterrcnn_resnet50_fpn
    assert kernelzoo.registry.model_config("fasterrcnn-resnet18-fpn").backbone == "resnet18"
    assert kernelzoo.registry.model_config("fasterrcnn-roipool-test").box_pooler == "roi_pool"
    import dataclasses
    assert kernelzoo.registry.model_config("fasterrcnn-dcn-resnet50-fpn") == \
        dataclasses.replace(r50, deformable_stages=(2, 3, 4))
    assert kernelzoo.registry.model_config("fasterrcnn-dcn-test") == dataclasses.replace(
        kernelzoo.registry.model_config("fasterrcnn-test"), deformable_stages=(2, 3, 4))


# --------------------------------------------------------------------------- optional torchvision


def test_import_and_listing_do_not_import_torchvision():
    code = ("import sys, kernelzoo; kernelzoo.list_models(); kernelzoo.list_plugins(); "
            "kernelzoo.registry.model_config('fasterrcnn-resnet50-fpn'); "
            "import kernelzoo.plugins.fasterrcnn; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torchvision'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_building_without_torchvision_says_what_to_install(monkeypatch):
    # Simulate an environment without torchvision: every torchvision module
    # import fails, and the family's model module must be imported afresh.
    for name in list(sys.modules):
        if name.split(".")[0] == "torchvision":
            monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.delitem(sys.modules, "kernelzoo.plugins.fasterrcnn.model")
    with pytest.raises(ImportError, match=r"the fasterrcnn model family needs torchvision .* "
                                          r"pip install 'kernelzoo\[detection\]'") as e:
        kernelzoo.create_model("fasterrcnn-test")
    assert isinstance(e.value.__cause__, ModuleNotFoundError)
    assert e.value.__cause__.name.split(".")[0] == "torchvision"
    # The family itself still loads and lists its models.
    assert kernelzoo.list_models("fasterrcnn-*") == MODELS


def test_other_import_errors_are_not_disguised(monkeypatch):
    monkeypatch.setitem(sys.modules, "kernelzoo.nn", None)     # not torchvision's fault
    monkeypatch.delitem(sys.modules, "kernelzoo.plugins.fasterrcnn.model")
    with pytest.raises(ImportError) as e:
        fasterrcnn.build(FasterRCNNConfig())
    assert "torchvision" not in str(e.value) and e.value.name == "kernelzoo.nn"


# --------------------------------------------------------------------------- architecture


def shapes(model):
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def trainable(model):
    return {k for k, p in model.named_parameters() if p.requires_grad}


def test_resnet50_fpn_is_torchvisions_architecture():
    torch.manual_seed(0)
    ours = kernelzoo.create_model("fasterrcnn-resnet50-fpn")
    theirs = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    assert isinstance(ours, FasterRCNN)
    # Same module names and shapes: state dicts load both ways.
    assert shapes(ours) == shapes(theirs)
    assert trainable(ours) == trainable(theirs)    # all, as torchvision without weights
    assert {type(m) for m in ours.modules()} - {type(m) for m in theirs.modules()} == {
        FasterRCNN, kernelzoo.nn.MultiScaleRoIAlign}
    pool = ours.roi_heads.box_roi_pool
    assert isinstance(pool, kernelzoo.nn.MultiScaleRoIAlign)
    tv_pool = theirs.roi_heads.box_roi_pool
    assert (pool.featmap_names, pool.output_size, pool.sampling_ratio) == \
        (tv_pool.featmap_names, tv_pool.output_size, tv_pool.sampling_ratio)
    t, tt = ours.transform, theirs.transform
    assert (t.min_size, t.max_size, t.image_mean, t.image_std, t.size_divisible) == \
        (tt.min_size, tt.max_size, tt.image_mean, tt.image_std, tt.size_divisible)
    r, tr = ours.rpn, theirs.rpn
    assert (r._pre_nms_top_n, r._post_nms_top_n, r.nms_thresh, r.score_thresh) == \
        (tr._pre_nms_top_n, tr._post_nms_top_n, tr.nms_thresh, tr.score_thresh)
    assert r.anchor_generator.sizes == tr.anchor_generator.sizes
    assert r.anchor_generator.aspect_ratios == tr.anchor_generator.aspect_ratios
    h, th = ours.roi_heads, theirs.roi_heads
    assert (h.score_thresh, h.nms_thresh, h.detections_per_img, h.box_coder.weights) == \
        (th.score_thresh, th.nms_thresh, th.detections_per_img, th.box_coder.weights)
    ours.load_state_dict(theirs.state_dict())      # strict


def test_backbone_options_match_torchvision():
    ours = kernelzoo.create_model("fasterrcnn-resnet18-fpn", trainable_backbone_layers=3,
                                  frozen_batchnorm=True)
    # torchvision's ResNet-18-FPN for fine-tuning from pretrained weights.
    theirs = TVFasterRCNN(resnet_fpn_backbone(backbone_name="resnet18", weights=None,
                                              trainable_layers=3), num_classes=91)
    assert shapes(ours) == shapes(theirs)
    assert trainable(ours) == trainable(theirs)
    assert not any(k.startswith(("backbone.body.conv1", "backbone.body.layer1"))
                   for k in trainable(ours))
    assert any(isinstance(m, FrozenBatchNorm2d) for m in ours.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in ours.modules())
    # Other poolers.
    m = kernelzoo.create_model("fasterrcnn-test", box_pooler="roi_pool", box_featmap_names=("1",),
                               box_output_size=5)
    assert isinstance(m.roi_heads.box_roi_pool, kernelzoo.nn.MultiScaleRoIPool)
    assert (m.roi_heads.box_roi_pool.featmap_names, m.roi_heads.box_roi_pool.output_size) == \
        (["1"], (5, 5))
    assert m.roi_heads.box_head.fc6.in_features == 32 * 5 * 5
    blocks = kernelzoo.create_model("fasterrcnn-test", backbone="resnet50").backbone.body
    assert [len(getattr(blocks, f"layer{i}")) for i in range(1, 5)] == [1, 1, 1, 1]
    assert isinstance(blocks.layer1[0], tv_resnet.Bottleneck)


def test_dcn_resnet50_fpn_is_torchvisions_with_deformable_layer2_to_4():
    """fasterrcnn-dcn-resnet50-fpn: torchvision's fasterrcnn_resnet50_fpn whose
    ResNet 3x3 convolutions in layer2-layer4 are ModulatedDeformConv2dPack
    (same weight keys, plus conv2.conv_offset.*): torchvision's state dict
    loads with only the offset convolutions missing."""
    torch.manual_seed(0)
    ours = kernelzoo.create_model("fasterrcnn-dcn-resnet50-fpn")
    theirs = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    offsets = {k for k in ours.state_dict() if ".conv_offset." in k}
    assert shapes(ours).keys() - offsets == shapes(theirs).keys()
    assert {k: v for k, v in shapes(ours).items() if k not in offsets} == shapes(theirs)
    # One offset convolution (weight, bias) per block of layer2-4: 4 + 6 + 3 blocks.
    assert len(offsets) == 2 * 13
    body = ours.backbone.body
    for i, n in enumerate((3, 4, 6, 3), start=1):
        for block in getattr(body, f"layer{i}"):
            kind = kernelzoo.nn.ModulatedDeformConv2dPack if i > 1 else nn.Conv2d
            assert type(block.conv2) is kind
    assert body.layer3[0].conv2.stride == (2, 2)          # torchvision's v1.5 stride
    assert body.layer3[0].conv2.conv_offset.stride == (2, 2)
    assert body.layer3[0].conv2.conv_offset.out_channels == 27
    missing = ours.load_state_dict(theirs.state_dict(), strict=False)
    assert sorted(missing.missing_keys) == sorted(offsets) and not missing.unexpected_keys
    assert not any(ours.state_dict()[k].any() for k in offsets)   # still zero
    # Frozen stages freeze their offset convolutions too.
    frozen = kernelzoo.create_model("fasterrcnn-dcn-resnet50-fpn", trainable_backbone_layers=2,
                                    frozen_batchnorm=True)
    train = trainable(frozen)
    assert "backbone.body.layer3.0.conv2.conv_offset.weight" in train
    assert "backbone.body.layer2.0.conv2.conv_offset.weight" not in train
    assert "backbone.body.layer2.0.conv2.weight" not in train


def test_dcn_test_with_mask_at_one_detects_as_fasterrcnn_test():
    """fasterrcnn-dcn-test with zero offsets and its masks pushed to one (the
    mask logits' bias at 30: sigmoid(30) is 1 in float32) is fasterrcnn-test
    with the same weights: the same detections, to the tolerance of the
    float32 GEMM of the deformable operator against conv2d."""
    torch.manual_seed(2)
    cfg = dict(box_score_thresh=0.01)
    ours = kernelzoo.create_model("fasterrcnn-dcn-test", **cfg)
    plain = kernelzoo.create_model("fasterrcnn-test", **cfg)
    state = ours.state_dict()
    plain.load_state_dict({k: v for k, v in state.items() if ".conv_offset." not in k})
    with torch.no_grad():
        for m in ours.modules():
            if isinstance(m, kernelzoo.nn.ModulatedDeformConv2dPack):
                m.conv_offset.bias[2 * 9:] = 30.0
    a, b = detect(ours, plain, 64, n=3)
    assert sum(len(d["scores"]) for d in a) >= 10
    assert_same_detections(a, b, box_atol=BOX_ATOL, score_atol=SCORE_ATOL)
    # At initialisation (mask 0.5) the deformable backbone differs.
    with torch.no_grad():
        for m in ours.modules():
            if isinstance(m, kernelzoo.nn.ModulatedDeformConv2dPack):
                m.conv_offset.bias.zero_()
        x = torch.rand(1, 3, 64, 64)
        assert not torch.allclose(ours.backbone(x)["3"], plain.backbone(x)["3"])


@pytest.mark.parametrize("override, match", [
    (dict(backbone="vgg16"), "backbone must be one of resnet18, resnet34"),
    (dict(box_pooler="roi_max"), "box_pooler must be one of 'roi_align', 'roi_pool'"),
    (dict(num_classes=1), "num_classes must be an int >= 2"),
    (dict(anchor_sizes=((32,), (64,))), "anchor_sizes must be 5 tuples of positive ints"),
    (dict(box_featmap_names=("0", "4")), "box_featmap_names must be a non-empty tuple"),
    (dict(box_featmap_names=("2", "0")), "box_featmap_names must list the levels finest first"),
    (dict(trainable_backbone_layers=6), "trainable_backbone_layers must be an int from 0 to 5"),
    (dict(backbone_blocks=(1, 1, 0, 1)), "backbone_blocks must be None or four positive ints"),
    (dict(min_size=0), "min_size must be a positive int, got 0"),
    (dict(deformable_stages=(2, 5)), "deformable_stages must be distinct ResNet stages"),
])
def test_config_errors(override, match):
    with pytest.raises(ValueError, match=match):
        kernelzoo.registry.model_config("fasterrcnn-test", **override)


def test_synthetic_data():
    g = torch.Generator().manual_seed(3)
    images, targets = synthetic_detection_batch(6, 40, 50, num_classes=4, max_objects=2,
                                                generator=g)
    assert len(images) == len(targets) == 6
    assert len({tuple(i.shape) for i in images}) > 1          # sizes differ
    for img, t in zip(images, targets):
        assert img.dtype == torch.float32 and img.shape[0] == 3
        assert 30 <= img.shape[1] <= 40 and 38 <= img.shape[2] <= 50
        assert 0 <= img.min() and img.max() <= 1
        b, lab = t["boxes"], t["labels"]
        assert b.dtype == torch.float32 and lab.dtype == torch.int64
        assert 1 <= len(b) <= 2 and b.shape == (len(lab), 4)
        assert lab.min() >= 1 and lab.max() <= 3
        assert (b[:, 2:] > b[:, :2]).all()
        assert (b[:, :2] >= 0).all() and (b[:, 2] <= img.shape[2]).all() and \
            (b[:, 3] <= img.shape[1]).all()
        # The last rectangle drawn is on top: its pixels have its class's colour.
        x1, y1, x2, y2 = b[-1].int().tolist()
        colour = torch.tensor(fasterrcnn.data.CLASS_COLOURS[int(lab[-1]) - 1])
        patch = img[:, y1:y2, x1:x2]
        assert torch.allclose(patch / patch.max(), colour.view(3, 1, 1).expand_as(patch))
        # Background noise stays dim.
        assert img[:, :, :].amax(0).min() <= 0.35
    again = synthetic_detection_batch(6, 40, 50, num_classes=4, max_objects=2,
                                      generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(a, b) for a, b in zip(images, again[0]))


def test_example_inputs():
    model = kernelzoo.create_model("fasterrcnn-test")
    images, targets = kernelzoo.get_family("fasterrcnn").example_inputs(model, 3)
    assert len(images) == len(targets) == 3
    assert all(i.shape[0] == 3 and 48 <= i.shape[1] <= 64 for i in images)
    assert all(t["labels"].max() < model.num_classes for t in targets)


# --------------------------------------------------------------------------- training


def fit(name, steps=40):
    return frcnn_train.fit(name, steps=steps, batch_size=4, progress=False, eval_images=8)


@pytest.fixture(scope="module")
def trained():
    """fasterrcnn-test and -roipool-test after 40 seeded steps on synthetic data."""
    return {name: fit(name) for name in ("fasterrcnn-test", "fasterrcnn-roipool-test")}


@pytest.mark.parametrize("name", ["fasterrcnn-test", "fasterrcnn-roipool-test"])
def test_training_reduces_the_loss(trained, name):
    _, result = trained[name]
    losses = result["losses"]
    assert len(losses) == 40 and all(math.isfinite(v) for v in losses)
    assert set(result["loss_parts"][0]) == {"loss_classifier", "loss_box_reg",
                                            "loss_objectness", "loss_rpn_box_reg"}
    # Single steps are noisy (fresh images every step): compare the mean of the
    # last ten with that of the first five. Measured: about 1.9 -> 0.6.
    first, last = sum(losses[:5]) / 5, sum(losses[-10:]) / 10
    assert last < 0.6 * first, (first, last)
    # The classifier learnt the colours: its loss fell below that of chance.
    cls = [p["loss_classifier"] for p in result["loss_parts"]]
    assert sum(cls[-10:]) / 10 < 0.5 * cls[0]


@pytest.mark.parametrize("name", ["fasterrcnn-test", "fasterrcnn-roipool-test"])
def test_eval_returns_torchvision_style_detections(trained, name):
    model, _ = trained[name]
    model.eval()
    cfg = model.config
    images, targets = synthetic_detection_batch(4, 64, 80, num_classes=cfg.num_classes,
                                                generator=torch.Generator().manual_seed(42))
    with torch.no_grad():
        detections = model(images)
    assert isinstance(detections, list) and len(detections) == 4
    total = 0
    for det, img in zip(detections, images):
        assert set(det) == {"boxes", "labels", "scores"}
        n = len(det["scores"])
        total += n
        assert n <= cfg.box_detections_per_img
        assert det["boxes"].dtype == torch.float32 and det["boxes"].shape == (n, 4)
        assert det["labels"].dtype == torch.int64 and det["labels"].shape == (n,)
        assert det["scores"].dtype == torch.float32 and det["scores"].shape == (n,)
        if n:
            assert (det["scores"] > cfg.box_score_thresh).all() and (det["scores"] <= 1).all()
            assert (det["scores"][:-1] >= det["scores"][1:]).all()        # best first
            assert det["labels"].min() >= 1 and det["labels"].max() < cfg.num_classes
            b = det["boxes"]
            h, w = img.shape[-2:]                  # in the input image's pixels
            assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all()
            assert (b[:, 2] <= w).all() and (b[:, 3] <= h).all()
            assert (b[:, 2:] >= b[:, :2]).all()
    assert total > 0
    # Training mode wants targets, as torchvision's detectors do.
    model.train()
    with pytest.raises(AssertionError, match="targets should not be none when in training mode"):
        model(images)


# --------------------------------------------------------------------------- vs torchvision


def assert_same_detections(ours, theirs, *, box_atol, score_atol):
    """Per image: as many detections, each of ours matching one of theirs (same
    label, boxes and scores within the tolerances). Matching rather than
    comparing in order: detections with scores closer than the tolerance may
    come out in either order."""
    assert len(ours) == len(theirs)
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert set(a) == set(b) == {"boxes", "labels", "scores"}
        assert [a[k].dtype for k in sorted(a)] == [b[k].dtype for k in sorted(b)]
        assert len(a["scores"]) == len(b["scores"]), f"image {i}"
        close = ((a["boxes"][:, None] - b["boxes"][None]).abs().amax(-1) <= box_atol) & \
            ((a["scores"][:, None] - b["scores"][None]).abs() <= score_atol) & \
            (a["labels"][:, None] == b["labels"][None])
        # A one-to-one matching exists (greedy suffices: matches are unique here).
        used = set()
        for r in range(close.shape[0]):
            js = [j for j in close[r].nonzero().flatten().tolist() if j not in used]
            assert js, (f"image {i}: detection {r} (label {int(a['labels'][r])}, score "
                        f"{float(a['scores'][r]):.6f}, box {a['boxes'][r].tolist()}) has no "
                        f"counterpart")
            used.add(js[0])


def train_steps(model, steps, size, seed=1):
    """A few SGD steps on synthetic images, so that the detections mean something."""
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01,
                          momentum=0.9)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        images, targets = synthetic_detection_batch(2, size, size * 5 // 4,
                                                    num_classes=model.num_classes, generator=g)
        loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def detect(ours, theirs, size, n=2, seed=5):
    images, _ = synthetic_detection_batch(n, size, size * 5 // 4, num_classes=ours.num_classes,
                                          generator=torch.Generator().manual_seed(seed))
    ours.eval()
    theirs.eval()
    with torch.no_grad():
        return ours(images), theirs(images)


# Detections of a model and of its torchvision twin, which differ only in the
# RoI pooling kernels. kernelzoo's roi_align and torchvision's agree to float32
# rounding (a few 1e-7, see test_multiscale_roi_align.py), which the box head
# and the box decoding carry to the detections: measured at most 1.5e-5 pixels
# (2 ulps of coordinates near 128) and 5e-8 in scores. The tolerances leave a
# margin of about 6x and 20x. RoIPool picks feature values without arithmetic:
# its detections are compared exactly.
BOX_ATOL, SCORE_ATOL = 1e-4, 1e-6


def tolerances(model):
    if model.config.box_pooler == "roi_pool":
        return dict(box_atol=0.0, score_atol=0.0)
    return dict(box_atol=BOX_ATOL, score_atol=SCORE_ATOL)


def test_resnet50_fpn_detections_match_torchvision():
    """fasterrcnn-resnet50-fpn against torchvision's fasterrcnn_resnet50_fpn with
    the same weights, on 128-pixel images (small, to keep ResNet-50 fast)."""
    torch.manual_seed(0)
    # A canonical scale of 56 (224 / 4, as the images are small) spreads the
    # proposals over all four pyramid levels.
    cfg = dict(num_classes=4, min_size=128, max_size=160, box_score_thresh=0.01)
    ours = kernelzoo.create_model("fasterrcnn-resnet50-fpn", box_canonical_scale=56, **cfg)
    train_steps(ours, 2, 128)
    theirs = fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None,
        box_roi_pool=torchvision.ops.MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2,
                                                        canonical_scale=56), **cfg)
    theirs.load_state_dict(ours.state_dict())
    a, b = detect(ours, theirs, 128)
    assert sum(len(d["scores"]) for d in a) >= 10
    assert_same_detections(a, b, box_atol=BOX_ATOL, score_atol=SCORE_ATOL)


def test_resnet18_fpn_detections_match_torchvision():
    torch.manual_seed(1)
    cfg = dict(num_classes=3, min_size=128, max_size=160, box_score_thresh=0.01)
    ours = kernelzoo.create_model("fasterrcnn-resnet18-fpn", **cfg)
    train_steps(ours, 3, 128)
    theirs = TVFasterRCNN(resnet_fpn_backbone(backbone_name="resnet18", weights=None,
                                              norm_layer=nn.BatchNorm2d, trainable_layers=5),
                          **cfg)
    theirs.load_state_dict(ours.state_dict())
    a, b = detect(ours, theirs, 128)
    assert sum(len(d["scores"]) for d in a) >= 10
    assert_same_detections(a, b, box_atol=BOX_ATOL, score_atol=SCORE_ATOL)


def torchvision_twin(cfg: FasterRCNNConfig) -> TVFasterRCNN:
    """torchvision's FasterRCNN class configured as a kernelzoo test preset."""
    body = tv_resnet.ResNet(tv_resnet.BasicBlock, list(cfg.backbone_blocks),
                            norm_layer=nn.BatchNorm2d)
    backbone = BackboneWithFPN(body, {f"layer{i + 1}": str(i) for i in range(4)},
                               [64, 128, 256, 512], cfg.fpn_channels)
    return TVFasterRCNN(
        backbone, min_size=cfg.min_size, max_size=cfg.max_size,
        rpn_anchor_generator=AnchorGenerator(cfg.anchor_sizes, (cfg.aspect_ratios,) * 5),
        rpn_pre_nms_top_n_test=cfg.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_test=cfg.rpn_post_nms_top_n_test,
        box_roi_pool=torchvision.ops.MultiScaleRoIAlign(
            ["0", "1", "2", "3"], 7, 2, canonical_scale=cfg.box_canonical_scale),
        box_head=TwoMLPHead(cfg.fpn_channels * 49, cfg.representation_size),
        box_predictor=FastRCNNPredictor(cfg.representation_size, cfg.num_classes),
        box_detections_per_img=cfg.box_detections_per_img)


@pytest.mark.parametrize("name", ["fasterrcnn-test", "fasterrcnn-roipool-test"])
def test_trained_test_presets_match_torchvision(trained, name, monkeypatch):
    """The trained tiny models against torchvision's FasterRCNN class with their
    weights; for RoIPool, torchvision's multi-scale pooler with its roi_align
    swapped for torchvision.ops.roi_pool."""
    ours, _ = trained[name]
    if ours.config.box_pooler == "roi_pool":
        monkeypatch.setattr(tv_poolers, "roi_align",
                            lambda input, rois, output_size, spatial_scale, sampling_ratio:
                            torchvision.ops.roi_pool(input, rois, output_size, spatial_scale))
    theirs = torchvision_twin(ours.config)
    theirs.load_state_dict(ours.state_dict())
    a, b = detect(ours, theirs, 64, n=4)
    assert sum(len(d["scores"]) for d in a) >= 10
    assert_same_detections(a, b, **tolerances(ours))


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["fasterrcnn-test", "fasterrcnn-roipool-test"])
def test_trained_test_presets_match_torchvision_on_cuda(trained, name, monkeypatch):
    ours, _ = trained[name]
    if ours.config.box_pooler == "roi_pool":
        monkeypatch.setattr(tv_poolers, "roi_align",
                            lambda input, rois, output_size, spatial_scale, sampling_ratio:
                            torchvision.ops.roi_pool(input, rois, output_size, spatial_scale))
    theirs = torchvision_twin(ours.config)
    theirs.load_state_dict(ours.state_dict())
    ours, theirs = copy.deepcopy(ours).cuda().eval(), theirs.cuda().eval()
    images, _ = synthetic_detection_batch(4, 64, 80, num_classes=ours.num_classes,
                                          generator=torch.Generator().manual_seed(5),
                                          device="cuda")
    with torch.no_grad():
        a, b = ours(images), theirs(images)
    assert a[0]["boxes"].device.type == "cuda"
    assert sum(len(d["scores"]) for d in a) >= 10
    assert_same_detections(a, b, **tolerances(ours))


# --------------------------------------------------------------------------- kernelzoo train


def test_cli_train(capsys, tmp_path):
    from kernelzoo.cli import main

    rc = main(["train", "fasterrcnn-test", "--steps", "2", "--batch-size", "2", "--seed", "3",
               "--json", "--no-progress", "--save", str(tmp_path / "w.pt")])
    out = capsys.readouterr().out
    assert rc == 0
    result = json.loads(out)
    assert (result["model"], result["steps"], result["batch_size"], result["seed"]) == \
        ("fasterrcnn-test", 2, 2, 3)
    assert {"recall", "precision", "first_loss", "final_loss"} <= set(result)
    state = torch.load(tmp_path / "w.pt", weights_only=True)
    assert set(state) == set(kernelzoo.create_model("fasterrcnn-test").state_dict())
    with pytest.raises(ValueError, match="steps and batch_size must be positive"):
        frcnn_train.fit("fasterrcnn-test", steps=0, progress=False)
