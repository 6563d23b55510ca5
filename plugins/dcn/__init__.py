"""The ``dcn`` model family: deformable ResNets (Dai et al., 2017; Zhu et al., 2019).

Models ``dcn-resnet50`` and ``dcn-resnet101`` are torchvision's ResNet-50 and
ResNet-101, with torchvision's module names, whose 3x3 convolutions in stages
``layer2`` to ``layer4`` (the paper's conv3 to conv5) are modulated deformable
convolutions (:class:`kernelzoo.nn.ModulatedDeformConv2dPack`, the DCNv2
setting). A torchvision ResNet state dict loads into them with
:func:`load_torchvision_state_dict` (only the zero-initialised offset
convolutions are missing). ``dcn-test`` is a tiny ResNet-like network for tests
and for ``kernelzoo train dcn-test``, which trains it on synthetic shapes under
random scale and rotation next to the same network with plain convolutions.

The models come randomly initialised (kernelzoo downloads nothing). This
family does not need torchvision.
"""

from __future__ import annotations

import torch

from kernelzoo.registry import ModelFamily

from .model import (DCNResNetConfig, DeformableResNet, load_torchvision_state_dict,
                    make_deformable, offset_keys)

__all__ = ["DCNResNetConfig", "DeformableResNet", "load_torchvision_state_dict",
           "make_deformable", "offset_keys", "build", "example_inputs", "family"]


def build(config: DCNResNetConfig) -> DeformableResNet:
    return DeformableResNet(config)


def example_inputs(model: DeformableResNet, batch_size: int = 2) -> tuple:
    """A batch of random images at the preset's ``image_size``."""
    s = model.config.image_size
    return (torch.rand(batch_size, model.in_channels, s, s),)


def train_example(model_name: str, **options) -> dict:
    """``kernelzoo train``: see :func:`kernelzoo.plugins.dcn.train.train`."""
    from .train import train  # imported only when used

    return train(model_name, **options)


_presets = {
    "resnet50": DCNResNetConfig(block="bottleneck", layers=(3, 4, 6, 3)),
    "resnet101": DCNResNetConfig(block="bottleneck", layers=(3, 4, 23, 3)),
    # Basic blocks, one per stage, 8 to 64 channels, one-channel 32x32 images
    # with a stride-1 stem, so that the deformable stages see 16x16, 8x8 and
    # 4x4 maps; 4 classes (the training example's shapes).
    "test": DCNResNetConfig(block="basic", layers=(1, 1, 1, 1), width=8, num_classes=4,
                            in_channels=1, small_stem=True, image_size=32),
}

family = ModelFamily(
    name="dcn",
    build=build,
    presets=_presets,
    example_inputs=example_inputs,
    description="deformable ResNets (DCNv2 in layer2-4) on kernelzoo's deform_conv2d, "
                "torchvision ResNet names",
    train=train_example,
)
