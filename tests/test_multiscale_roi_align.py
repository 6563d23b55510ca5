"""kernelzoo.nn.MultiScaleRoIAlign / MultiScaleRoIPool: the FPN level mapping and
scale inference by hand, and outputs and gradients against torchvision's
MultiScaleRoIAlign (and, for RoIPool, torchvision's multi-scale pooler with its
roi_align swapped for torchvision.ops.roi_pool)."""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch

import kernelzoo
from kernelzoo.nn import MultiScaleRoIAlign, MultiScaleRoIPool
from kernelzoo.nn.multiscale_roi_align import _multiscale_pool
from ophelpers import check_export, check_fx, check_script

torchvision = pytest.importorskip("torchvision")
import torchvision.ops.poolers as tv_poolers  # noqa: E402

# float32 tolerance against torchvision. Forward: both sum the same bilinear
# samples of the same feature values; the order of the additions may differ
# (vectorised loops), a few ulps of the result. Backward: each feature cell
# accumulates the contributions of every sample of every box that touches it,
# in an order that differs between the implementations; the sums stay well
# below 100 terms of order 1 here, so 1e-5 absolute covers their rounding.
FWD_TOL = dict(rtol=1e-5, atol=1e-6)
BWD_TOL = dict(rtol=1e-5, atol=1e-5)

NAMES = ["0", "1", "2", "3"]


def pyramid(n=3, c=4, h=64, w=80, dtype=torch.float32, channels_last=False, seed=0):
    """An FPN-like dict: levels "0".."3" at strides 4..32 of a (4h, 4w) image,
    plus a "pool" level that is not pooled from, all requiring grad."""
    g = torch.Generator().manual_seed(seed)
    x = OrderedDict()
    for i, name in enumerate(NAMES + ["pool"]):
        t = torch.randn(n, c, max(h >> i, 1), max(w >> i, 1), generator=g, dtype=dtype)
        if channels_last:
            t = t.to(memory_format=torch.channels_last)
        x[name] = t.requires_grad_()
    return x


def random_boxes(k, height, width, *, lo=4.0, hi=300.0, seed=0):
    """k boxes whose sqrt(area) is log-uniform in [lo, hi], aspect ratios 1:3 to
    3:1, anywhere in (and partly outside) a height x width image."""
    if k == 0:
        return torch.zeros(0, 4)
    g = torch.Generator().manual_seed(seed)
    s = torch.exp(math.log(lo) + torch.rand(k, generator=g) * math.log(hi / lo))
    a = torch.exp((torch.rand(k, generator=g) * 2 - 1) * math.log(3))
    bw, bh = s * a.sqrt(), s / a.sqrt()
    x1 = torch.rand(k, generator=g) * width - bw / 4
    y1 = torch.rand(k, generator=g) * height - bh / 4
    return torch.stack([x1, y1, x1 + bw, y1 + bh], dim=1)


def run(layer, x, boxes, shapes, seed=1):
    """Output, and the gradients of a random projection of it w.r.t. every level."""
    for t in x.values():
        t.grad = None
    out = layer(x, boxes, shapes)
    g = torch.Generator().manual_seed(seed)
    (out * torch.randn(out.shape, generator=g, dtype=out.dtype)).sum().backward()
    return out.detach(), {k: None if v.grad is None else v.grad.clone() for k, v in x.items()}


def assert_same(ours, theirs, fwd_tol=FWD_TOL, bwd_tol=BWD_TOL):
    (out_a, grads_a), (out_b, grads_b) = ours, theirs
    torch.testing.assert_close(out_a, out_b, **fwd_tol)
    assert grads_a.keys() == grads_b.keys()
    for k in grads_a:
        if grads_b[k] is None:
            assert grads_a[k] is None, k
        else:
            torch.testing.assert_close(grads_a[k], grads_b[k], **bwd_tol, msg=lambda m: f"{k}: {m}")


@pytest.fixture
def roi_pool_reference(monkeypatch):
    """torchvision's MultiScaleRoIAlign pooling with torchvision.ops.roi_pool:
    its own level mapping and scale inference, and Fast R-CNN's max pooling."""
    def pool(input, rois, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
        return torchvision.ops.roi_pool(input, rois, output_size, spatial_scale)

    monkeypatch.setattr(tv_poolers, "roi_align", pool)

    def make(names, output_size, **kw):
        return torchvision.ops.MultiScaleRoIAlign(names, output_size, 0, **kw)
    return make


# --------------------------------------------------------------------------- by hand


def test_level_mapping_by_hand():
    layer = MultiScaleRoIAlign(NAMES, 7, 2)

    def square(side):
        return [0.0, 0.0, side, side]

    # k = floor(4 + log2(side / 224) + 1e-6), clamped to [2, 5], minus 2.
    sides = [1, 50, 111.9, 112, 223.9, 224, 447, 448, 5000]
    expected = [0, 0, 0, 1, 1, 2, 2, 3, 3]
    boxes = [torch.tensor([square(s) for s in sides[:4]]), torch.zeros(0, 4),
             torch.tensor([square(s) for s in sides[4:]])]
    assert layer.levels_of(boxes, 2, 5).tolist() == expected
    # Non-square boxes go by sqrt(area): 56 x 224 has the area of a 112 x 112 box.
    assert layer.levels_of([torch.tensor([[10.0, 20.0, 66.0, 244.0]])], 2, 5).tolist() == [1]
    # Other canonical scale and level: 32 x 32 boxes go to level 3 here.
    layer = MultiScaleRoIAlign(NAMES, 7, 2, canonical_scale=16, canonical_level=2)
    assert layer.levels_of([torch.tensor([square(8), square(32), square(500)])],
                           1, 4).tolist() == [0, 2, 3]
    # Zero-area boxes go to the finest level.
    assert layer.levels_of([torch.tensor([[5.0, 5.0, 5.0, 9.0]])], 2, 5).tolist() == [0]


def test_level_mapping_matches_torchvision():
    layer = MultiScaleRoIAlign(NAMES, 7, 2)
    boxes = [random_boxes(200, 800, 1000, lo=1, hi=2000, seed=s) for s in range(3)]
    theirs = tv_poolers.LevelMapper(2, 5)(boxes)
    torch.testing.assert_close(layer.levels_of(boxes, 2, 5), theirs, rtol=0, atol=0)
    assert set(theirs.tolist()) == {0, 1, 2, 3}


def test_scales_by_hand():
    layer = MultiScaleRoIAlign(NAMES, 7, 2)
    feats = [torch.zeros(1, 1, 200, 5), torch.zeros(1, 1, 100, 5), torch.zeros(1, 1, 50, 5),
             torch.zeros(1, 1, 25, 5)]
    # The largest height over the images counts (800), widths do not.
    assert layer.infer_scales(feats, [(800, 1333), (600, 10)]) == [1 / 4, 1 / 8, 1 / 16, 1 / 32]
    # Rounded to a power of two in log scale: 200/700 -> 2**-2; 2/40 = 2**-4.32 -> 2**-4.
    assert layer.infer_scales(feats[:1], [(700, 700)]) == [0.25]
    assert layer.infer_scales([torch.zeros(1, 1, 2, 2)], [(40, 40)]) == [1 / 16]
    with pytest.raises(ValueError, match="images list should not be empty"):
        layer.infer_scales(feats, [])


def test_constant_features_pool_to_their_value():
    """Each level holds its own constant: a box's output is its level's value,
    so the output says which level each box was pooled from."""
    x = OrderedDict((name, torch.full((2, 3, 64 >> i, 64 >> i), float(i + 1)))
                    for i, name in enumerate(NAMES))
    sides = [20, 40, 80, 200]                         # levels 2, 3, 4, 5 (k0 = 4, s0 = 56)
    boxes = [torch.tensor([[0.0, 0.0, s, s] for s in sides]), torch.tensor([[8.0, 8, 30, 30]])]
    for layer in (MultiScaleRoIAlign(NAMES, (3, 2), 2, canonical_scale=56),
                  MultiScaleRoIPool(NAMES, (3, 2), canonical_scale=56)):
        out = layer(x, boxes, [(256, 256), (200, 256)])
        assert out.shape == (5, 3, 3, 2)
        # (to float32 rounding: the bilinear weights of a bin sum to 1 up to it)
        torch.testing.assert_close(out[:, 0, 0, 0], torch.tensor([1.0, 2.0, 3.0, 4.0, 1.0]))
        torch.testing.assert_close(out, out[:, :1, :1, :1].expand_as(out))


# --------------------------------------------------------------------------- vs torchvision


@pytest.mark.parametrize("output_size, sampling_ratio, canonical", [
    (7, 2, (56, 4)), ((5, 3), -1, (56, 4)), (4, 1, (28, 3)), (7, 2, (224, 4))])
def test_matches_torchvision(output_size, sampling_ratio, canonical):
    s0, k0 = canonical
    x = pyramid(n=3, h=64, w=80)
    shapes = [(256, 320), (230, 300), (256, 290)]
    boxes = [random_boxes(40, 256, 320, seed=0), torch.zeros(0, 4),
             random_boxes(25, 230, 300, seed=2)]
    ours = MultiScaleRoIAlign(NAMES, output_size, sampling_ratio,
                              canonical_scale=s0, canonical_level=k0)
    theirs = torchvision.ops.MultiScaleRoIAlign(NAMES, output_size, sampling_ratio,
                                                canonical_scale=s0, canonical_level=k0)
    levels = ours.levels_of(boxes, 2, 5)
    if s0 == 56:   # the boxes span all four levels
        assert set(levels.tolist()) == {0, 1, 2, 3}
    a, b = run(ours, x, boxes, shapes), run(theirs, x, boxes, shapes)
    assert a[0].shape == (65, 4) + ((output_size,) * 2 if isinstance(output_size, int)
                                    else output_size)
    assert a[1]["pool"] is None                       # never pooled from
    assert_same(a, b)


def test_matches_torchvision_edge_cases():
    x = pyramid(n=3, h=40, w=40, channels_last=True)
    shapes = [(160, 160)] * 3
    ours = MultiScaleRoIAlign(NAMES, 7, 2, canonical_scale=56)
    theirs = lambda: torchvision.ops.MultiScaleRoIAlign(NAMES, 7, 2, canonical_scale=56)  # noqa
    # Every image without boxes: an empty result that still backpropagates (zeros).
    empty = [torch.zeros(0, 4)] * 3
    a, b = run(ours, x, empty, shapes), run(theirs(), x, empty, shapes)
    assert a[0].shape == (0, 4, 7, 7)
    assert_same(a, b)
    # Boxes wholly outside the image, degenerate ones, one box in one level only.
    boxes = [torch.tensor([[500.0, 500, 600, 650], [10, 10, 10, 10], [30, 40, 20, 60]]),
             torch.tensor([[0.0, 0, 159, 159]]), torch.zeros(0, 4)]
    assert_same(run(ours, x, boxes, shapes), run(theirs(), x, boxes, shapes))
    # Feature maps that are not a power of two smaller than the images: 40 / 100
    # rounds (in log scale) to 1/2, 5 / 100 to 1/16; levels 1 to 4.
    shapes = [(100, 100), (90, 100), (100, 80)]
    boxes = [random_boxes(30, 100, 100, lo=2, hi=120, seed=s) for s in range(3)]
    assert ours.infer_scales(list(x.values())[:4], shapes) == [1 / 2, 1 / 4, 1 / 8, 1 / 16]
    assert_same(run(ours, x, boxes, shapes), run(theirs(), x, boxes, shapes))


def test_single_level_and_feature_order_match_torchvision():
    x = pyramid(n=2, h=32, w=48)
    shapes = [(128, 192), (100, 180)]
    boxes = [random_boxes(30, 128, 192, seed=3), random_boxes(10, 100, 180, seed=4)]
    # One level: every box from it, whatever its size.
    assert_same(run(MultiScaleRoIAlign(["2"], 5, 2), x, boxes, shapes),
                run(torchvision.ops.MultiScaleRoIAlign(["2"], 5, 2), x, boxes, shapes))
    # Feature maps are taken in the input's order, not featmap_names' (as torchvision does).
    assert_same(run(MultiScaleRoIAlign(["3", "1"], 5, 2, canonical_scale=40), x, boxes, shapes),
                run(torchvision.ops.MultiScaleRoIAlign(["3", "1"], 5, 2, canonical_scale=40),
                    x, boxes, shapes))


def test_float64_matches_torchvision():
    x = pyramid(n=2, h=32, w=32, dtype=torch.float64)
    boxes = [random_boxes(30, 128, 128, seed=5).double(), random_boxes(5, 128, 128).double()]
    shapes = [(128, 128), (120, 128)]
    tight = dict(rtol=1e-12, atol=1e-12)
    assert_same(run(MultiScaleRoIAlign(NAMES, 6, 3, canonical_scale=40), x, boxes, shapes),
                run(torchvision.ops.MultiScaleRoIAlign(NAMES, 6, 3, canonical_scale=40),
                    x, boxes, shapes), tight, tight)


@pytest.mark.parametrize("output_size", [7, (4, 6)])
def test_roi_pool_matches_torchvision_roi_pool(roi_pool_reference, output_size):
    x = pyramid(n=3, h=64, w=80)
    shapes = [(256, 320), (256, 300), (240, 320)]
    boxes = [random_boxes(30, 256, 320, seed=7), random_boxes(20, 256, 300, seed=8),
             torch.zeros(0, 4)]
    ours = MultiScaleRoIPool(NAMES, output_size, canonical_scale=56)
    assert set(ours.levels_of(boxes, 2, 5).tolist()) == {0, 1, 2, 3}
    # Max pooling picks feature values and routes each gradient to one cell:
    # outputs and gradients are exact.
    exact = dict(rtol=0, atol=0)
    assert_same(run(ours, x, boxes, shapes),
                run(roi_pool_reference(NAMES, output_size, canonical_scale=56), x, boxes, shapes),
                exact, exact)


def test_pools_with_kernelzoos_ops(monkeypatch):
    """The layers call kernelzoo.ops.roi_align / roi_pool (not torchvision's)."""
    calls = []
    real_align, real_pool = kernelzoo.ops.roi_align, kernelzoo.ops.roi_pool

    def align(*args, **kw):
        calls.append(("roi_align", kw))
        return real_align(*args, **kw)

    def pool(*args, **kw):
        calls.append(("roi_pool", kw))
        return real_pool(*args, **kw)

    monkeypatch.setattr(kernelzoo.ops, "roi_align", align)
    monkeypatch.setattr(kernelzoo.ops, "roi_pool", pool)
    x = pyramid(n=1, h=16, w=16)
    boxes = [torch.tensor([[0.0, 0, 20, 20], [0, 0, 60, 60]])]
    MultiScaleRoIAlign(["0", "1"], 3, 2, canonical_scale=32)(x, boxes, [(64, 64)])
    assert calls == [("roi_align", dict(spatial_scale=0.25, sampling_ratio=2, aligned=False)),
                     ("roi_align", dict(spatial_scale=0.125, sampling_ratio=2, aligned=False))]
    calls.clear()
    MultiScaleRoIPool(["1"], 3)(x, boxes, [(64, 64)])
    assert calls == [("roi_pool", dict(spatial_scale=0.125))]


@pytest.mark.cuda
@pytest.mark.parametrize("cls", ["align", "pool"])
def test_matches_torchvision_on_cuda(cls, roi_pool_reference):
    x = OrderedDict((k, v.detach().cuda().requires_grad_())
                    for k, v in pyramid(n=3, h=64, w=80).items())
    shapes = [(256, 320), (230, 300), (256, 290)]
    boxes = [random_boxes(40, 256, 320, seed=0).cuda(), torch.zeros(0, 4, device="cuda"),
             random_boxes(25, 230, 300, seed=2).cuda()]
    if cls == "align":
        ours = MultiScaleRoIAlign(NAMES, 7, 2, canonical_scale=56)
        theirs = torchvision.ops.MultiScaleRoIAlign(NAMES, 7, 2, canonical_scale=56)
    else:
        ours = MultiScaleRoIPool(NAMES, 7, canonical_scale=56)
        theirs = roi_pool_reference(NAMES, 7, canonical_scale=56)
    a = run(ours, x, boxes, shapes)
    assert a[0].device.type == "cuda"
    assert_same(a, run(theirs, x, boxes, shapes))


# --------------------------------------------------------------------------- torch.compile


@pytest.mark.parametrize("cls", [MultiScaleRoIAlign, MultiScaleRoIPool])
def test_torch_compile_fullgraph(cls):
    """One graph (the per-level box selection has data-dependent sizes, which
    dynamo captures), same outputs and gradients as eager."""
    import torch._dynamo as dynamo

    dynamo.reset()
    layer = cls(NAMES, 5, 2, canonical_scale=56) if cls is MultiScaleRoIAlign else \
        cls(NAMES, 5, canonical_scale=56)
    x = pyramid(n=2, h=64, w=64)
    shapes = [(256, 256), (250, 256)]
    boxes = [random_boxes(30, 256, 256, seed=9), random_boxes(12, 250, 256, seed=10)]
    eager = run(layer, x, boxes, shapes)
    compiled = torch.compile(layer, fullgraph=True)
    exact = dict(rtol=0, atol=0)
    assert_same(run(compiled, x, boxes, shapes), eager, exact, BWD_TOL)
    # Other boxes, other counts per level: still right.
    boxes = [random_boxes(7, 256, 256, seed=11), torch.zeros(0, 4)]
    assert_same(run(compiled, x, boxes, shapes), run(layer, x, boxes, shapes), exact, BWD_TOL)


# --------------------------------------------------------------------------- errors, repr


def test_errors():
    x = pyramid(n=1, h=8, w=8)
    boxes = [torch.tensor([[0.0, 0, 4, 4]])]
    with pytest.raises(ValueError, match=r"none of the feature maps \['a', 'b'\] is in the "
                                         r"input \(it has \['0', '1', '2', '3', 'pool'\]\)"):
        MultiScaleRoIAlign(["a", "b"], 7, 2)(x, boxes, [(32, 32)])
    with pytest.raises(ValueError, match="images list should not be empty"):
        MultiScaleRoIAlign(NAMES, 7, 2)(x, boxes, [])
    with pytest.raises(ValueError, match=r"output_size must be an int or a pair of ints "
                                         r"\(height, width\), got \(1, 2, 3\)"):
        MultiScaleRoIAlign(NAMES, (1, 2, 3), 2)
    with pytest.raises(TypeError, match="featmap_names must be a list of feature map names, "
                                        "got the string '0'"):
        MultiScaleRoIPool("0", 7)
    with pytest.raises(ValueError, match="featmap_names must name at least one feature map"):
        MultiScaleRoIPool([], 7)


def test_repr_and_attributes():
    layer = MultiScaleRoIAlign(["0", "1"], 7, 2)
    assert (layer.featmap_names, layer.output_size, layer.sampling_ratio) == (["0", "1"], (7, 7), 2)
    # With the default canonical scale and level, torchvision's repr exactly;
    # other values are shown (torchvision's repr never shows them).
    assert repr(layer) == ("MultiScaleRoIAlign(featmap_names=['0', '1'], output_size=(7, 7), "
                           "sampling_ratio=2)")
    assert repr(layer) == repr(torchvision.ops.MultiScaleRoIAlign(["0", "1"], (7, 7), 2))
    assert repr(MultiScaleRoIAlign(["0"], (7, 5), -1, canonical_scale=56)) == (
        "MultiScaleRoIAlign(featmap_names=['0'], output_size=(7, 5), sampling_ratio=-1, "
        "canonical_scale=56, canonical_level=4)")
    assert repr(MultiScaleRoIPool(["0"], [5])) == (
        "MultiScaleRoIPool(featmap_names=['0'], output_size=(5, 5))")
    assert repr(MultiScaleRoIPool(["0"], 5, canonical_level=3)) == (
        "MultiScaleRoIPool(featmap_names=['0'], output_size=(5, 5), canonical_scale=224, "
        "canonical_level=3)")
    assert isinstance(kernelzoo.nn.MultiScaleRoIAlign, type)
    assert {"MultiScaleRoIAlign", "MultiScaleRoIPool"} <= set(kernelzoo.nn.__all__)


# --------------------------------------------------------------------------- drop-in


def _layers():
    return [MultiScaleRoIAlign(NAMES, 5, 2, canonical_scale=56),
            MultiScaleRoIAlign(["2"], (4, 3), -1),
            MultiScaleRoIPool(NAMES, (3, 4), canonical_scale=56)]


def _inputs():
    x = pyramid(n=2, h=64, w=64)
    shapes = [(256, 256), (250, 256)]
    boxes = [random_boxes(30, 256, 256, seed=12), random_boxes(12, 250, 256, seed=13)]
    return x, boxes, shapes


def test_torchscript():
    """Scripted layers (and scripted, saved and loaded) give the eager layers'
    values, as torchvision's MultiScaleRoIAlign is scriptable."""
    x, boxes, shapes = _inputs()
    for layer in _layers():
        check_script(layer, x, boxes, shapes)
    # one image without boxes
    check_script(_layers()[0], x, [boxes[0], torch.zeros(0, 4)], shapes)


def test_torch_fx():
    """symbolic_trace keeps the pooling as one call node (torch.fx.wrap), as
    torchvision's layer, instead of failing on the loops over levels and boxes."""
    x, boxes, shapes = _inputs()
    for layer in _layers():
        check_fx(layer, x, boxes, shapes, calls=[_multiscale_pool])


class _Head(torch.nn.Module):
    """A small detection head: a conv over two pyramid levels, the pooler, a linear layer."""

    def __init__(self, pooler):
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.pooler = pooler
        self.fc = torch.nn.Linear(4 * 5 * 5, 3)

    def forward(self, f0, f1, boxes):
        feats = {"0": torch.relu(self.conv(f0)), "1": torch.relu(self.conv(f1))}
        pooled = self.pooler(feats, boxes, [(256, 256), (250, 256)])
        return self.fc(pooled.flatten(1))


def test_feature_extraction():
    """torchvision.models.feature_extraction traces models with the layer (it
    is no leaf module there, unlike torchvision's own): the extractor gives
    the pooled features and the model's output."""
    from torchvision.models.feature_extraction import create_feature_extractor

    torch.manual_seed(0)
    x, boxes, _ = _inputs()
    f0, f1 = x["0"].detach(), x["1"].detach()
    for pooler in [MultiScaleRoIAlign(["0", "1"], 5, 2, canonical_scale=56),
                   MultiScaleRoIPool(["0", "1"], 5, canonical_scale=56)]:
        model = _Head(pooler).eval()
        extractor = create_feature_extractor(model, {"pooler": "pooled", "fc": "out"})
        got = extractor(f0, f1, boxes)
        feats = {"0": torch.relu(model.conv(f0)), "1": torch.relu(model.conv(f1))}
        assert torch.equal(got["pooled"], pooler(feats, boxes, [(256, 256), (250, 256)]))
        assert torch.equal(got["out"], model(f0, f1, boxes))


def test_feature_extraction_node_names():
    # torchvision's own test of its layer (test_is_leaf_node): a module calling
    # the layer has its inputs and one node for the pooling.
    from torchvision.models.feature_extraction import get_graph_node_names

    class Wrapper(torch.nn.Module):
        def __init__(self, layer):
            super().__init__()
            self.layer = layer

        def forward(self, a, b, c):
            return self.layer(a, b, c)

    for layer in [MultiScaleRoIAlign(["0"], (7, 7), 2), MultiScaleRoIPool(["0", "1"], 7)]:
        train, evaluation = get_graph_node_names(Wrapper(layer))
        assert train == evaluation and len(train) == 4, train


def test_torch_export():
    x, boxes, shapes = _inputs()
    x = {k: v.detach() for k, v in x.items()}
    for layer, op in zip(_layers(), ["roi_align", "roi_align", "roi_pool"]):
        check_export(_Fixed(layer, shapes), x, boxes, ops=[op])


class _Fixed(torch.nn.Module):
    """The layer with its image shapes fixed (torch.export takes tensors and
    containers of them as inputs; the shapes are Python ints)."""

    def __init__(self, layer, shapes):
        super().__init__()
        self.layer, self.shapes = layer, shapes

    def forward(self, x, boxes):
        return self.layer(x, boxes, self.shapes)
