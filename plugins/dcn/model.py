"""Deformable ResNets: torchvision's ResNet with deformable 3x3 convolutions.

The network is torchvision's ResNet (He et al., 2016, in torchvision's "v1.5"
form, which strides in the 3x3 convolution of a bottleneck), with the same
module names: ``conv1``, ``bn1``, ``relu``, ``maxpool``, ``layer1`` ...
``layer4`` (each a ``Sequential`` of blocks with ``conv1``, ``bn1``, ``conv2``,
``bn2`` [, ``conv3``, ``bn3``] and ``downsample``), ``avgpool`` and ``fc``. In
the stages listed in ``dcn_stages`` (the DCNv2 setting: 2, 3 and 4, i.e.
``layer2`` to ``layer4``, the paper's conv3 to conv5), the 3x3 convolution of
every block, ``conv2``, is a :class:`kernelzoo.nn.ModulatedDeformConv2dPack`
(``modulated=False``: :class:`kernelzoo.nn.DeformConv2dPack`, DCNv1). Its
weight keeps the key ``layerX.Y.conv2.weight``; the offset (and mask)
convolution adds ``layerX.Y.conv2.conv_offset.weight`` and ``.bias``,
zero-initialised. A torchvision ResNet state dict therefore loads with only the
``conv_offset`` keys missing (:func:`load_torchvision_state_dict`), and the
loaded model then computes torchvision's ResNet exactly for DCNv1, and with
every 3x3 convolution of the deformable stages scaled by the mask,
``sigmoid(0) = 0.5``, for DCNv2 until training moves the mask.

The blocks are written here (torchvision is not needed); their layout, strides
and initialisation follow torchvision's ResNet.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from kernelzoo.checkpoints import CheckpointError
from kernelzoo.nn import make_deformable

__all__ = ["DCNResNetConfig", "DeformableResNet", "BasicBlock", "Bottleneck",
           "make_deformable", "load_torchvision_state_dict", "offset_keys"]

BLOCKS = ("basic", "bottleneck")


@dataclasses.dataclass(frozen=True)
class DCNResNetConfig:
    """Configuration of :class:`DeformableResNet`.

    Attributes:
        block: ``"bottleneck"`` (ResNet-50/101/152) or ``"basic"`` (ResNet-18/34).
        layers: blocks in each of the four stages (``layer1`` ... ``layer4``).
        dcn_stages: the stages (1 to 4) whose blocks' 3x3 convolution
            (``conv2``) is deformable; ``(2, 3, 4)`` is the DCNv2 setting and
            ``()`` gives the plain ResNet.
        modulated: DCNv2 (modulated, ``ModulatedDeformConv2dPack``) if true,
            DCNv1 (``DeformConv2dPack``) if false.
        deform_groups: offset groups of each deformable convolution.
        width: channels of the stem and of ``layer1``'s 3x3 convolutions
            (torchvision: 64); stage ``i`` uses ``width * 2**(i-1)``.
        num_classes: outputs of ``fc``.
        in_channels: image channels.
        small_stem: a 3x3, stride-1 ``conv1`` and no max pooling (``maxpool``
            is an ``Identity``), for small images; torchvision's stem (7x7,
            stride 2, then a 3x3 stride-2 max pool) otherwise.
        zero_init_residual: zero the last batch norm of each residual branch
            (torchvision's option of that name).
        image_size: the image size the preset is meant for (example inputs
            and the training example); the network accepts any size.
    """

    block: str = "bottleneck"
    layers: tuple[int, int, int, int] = (3, 4, 6, 3)
    dcn_stages: tuple[int, ...] = (2, 3, 4)
    modulated: bool = True
    deform_groups: int = 1
    width: int = 64
    num_classes: int = 1000
    in_channels: int = 3
    small_stem: bool = False
    zero_init_residual: bool = False
    image_size: int = 224

    def __post_init__(self) -> None:
        def fail(field, msg):
            raise ValueError(f"DCNResNetConfig: {field} {msg}, got {getattr(self, field)!r}")

        def positive_int(v):
            return isinstance(v, int) and not isinstance(v, bool) and v > 0

        if self.block not in BLOCKS:
            fail("block", f"must be one of {', '.join(map(repr, BLOCKS))}")
        if len(self.layers) != 4 or not all(map(positive_int, self.layers)):
            fail("layers", "must be four positive ints")
        stages = tuple(self.dcn_stages)
        if not all(isinstance(s, int) and 1 <= s <= 4 for s in stages) or \
                len(set(stages)) != len(stages):
            fail("dcn_stages", "must be distinct stage numbers from 1 to 4")
        for f in ("deform_groups", "width", "num_classes", "in_channels", "image_size"):
            if not positive_int(getattr(self, f)):
                fail(f, "must be a positive int")


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """torchvision's ``BasicBlock``: two 3x3 convolutions (the first strided)."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """torchvision's ``Bottleneck``: 1x1 reduce, 3x3 (strided), 1x1 expand by 4."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class DeformableResNet(nn.Module):
    """A ResNet with torchvision's module names whose 3x3 convolutions in
    ``config.dcn_stages`` are deformable. Input ``(N, in_channels, H, W)``,
    output the logits ``(N, num_classes)``."""

    def __init__(self, config: DCNResNetConfig | None = None) -> None:
        super().__init__()
        config = config or DCNResNetConfig()
        self.config = config
        self.in_channels = config.in_channels
        block = Bottleneck if config.block == "bottleneck" else BasicBlock
        w = config.width
        if config.small_stem:
            self.conv1 = nn.Conv2d(config.in_channels, w, 3, stride=1, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(config.in_channels, w, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity() if config.small_stem else nn.MaxPool2d(3, 2, 1)
        cin = w
        for i, n in enumerate(config.layers):
            planes, stride = w * 2 ** i, 1 if i == 0 else 2
            blocks = []
            for b in range(n):
                down = None
                if b == 0 and (stride != 1 or cin != planes * block.expansion):
                    down = nn.Sequential(
                        nn.Conv2d(cin, planes * block.expansion, 1, stride=stride, bias=False),
                        nn.BatchNorm2d(planes * block.expansion))
                blocks.append(block(cin, planes, stride if b == 0 else 1, down))
                cin = planes * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(cin, config.num_classes)
        self.num_features = cin

        # torchvision's initialisation: Kaiming-normal (fan out) convolutions,
        # batch norms at weight 1 and bias 0; Linear keeps PyTorch's default.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if config.zero_init_residual:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    nn.init.zeros_(m.last_bn().weight)
        # The deformable layers take over the initialised 3x3 weights.
        make_deformable(self, config.dcn_stages, modulated=config.modulated,
                        deform_groups=config.deform_groups)

    def forward_features(self, x: Tensor) -> Tensor:
        """The pooled features ``(N, num_features)`` before ``fc``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.size(1) != self.in_channels:
            raise ValueError(f"DeformableResNet expects input (N, {self.in_channels}, H, W), "
                             f"got {tuple(x.shape)}")
        return self.fc(self.forward_features(x))


def offset_keys(model: nn.Module) -> list[str]:
    """The state-dict keys of the offset (and mask) convolutions, which a
    plain ResNet checkpoint lacks."""
    return [k for k in model.state_dict() if ".conv_offset." in k]


def load_torchvision_state_dict(model: nn.Module, state_dict) -> list[str]:
    """Loads a torchvision ResNet state dict (``torchvision.models.resnet50().
    state_dict()``, or a checkpoint of one) into ``model``, a
    :class:`DeformableResNet` of the same architecture.

    Only the ``conv_offset`` keys of the deformable layers may be missing from
    ``state_dict``; they keep their values (zero after initialisation, so the
    model starts by sampling the regular grid). Anything else is an error
    (:class:`kernelzoo.checkpoints.CheckpointError`, a ``ValueError``, naming
    the key): a key the model lacks, a missing key that is not an offset
    convolution's, a shape that differs. Returns the missing keys (the
    ``conv_offset`` ones), in the model's order.
    """
    own = model.state_dict()
    unexpected = [k for k in state_dict if k not in own]
    if unexpected:
        raise CheckpointError(
            f"unexpected key {unexpected[0]!r} (not in the model" +
            (f"; {len(unexpected)} unexpected keys in all" if len(unexpected) > 1 else "") +
            "): is this a state dict of a torchvision ResNet of the same depth?")
    missing = [k for k in own if k not in state_dict]
    required = [k for k in missing if ".conv_offset." not in k]
    if required:
        raise CheckpointError(
            f"missing key {required[0]!r}" +
            (f" ({len(required)} missing keys in all)" if len(required) > 1 else "") +
            " (only the deformable layers' conv_offset keys may be missing)")
    for k, t in state_dict.items():
        if tuple(t.shape) != tuple(own[k].shape):
            raise CheckpointError(f"key {k!r} has shape {tuple(t.shape)} in the state dict but "
                                  f"{tuple(own[k].shape)} in the model")
    result = model.load_state_dict(state_dict, strict=False)
    assert sorted(result.missing_keys) == sorted(missing) and not result.unexpected_keys, result
    return missing
