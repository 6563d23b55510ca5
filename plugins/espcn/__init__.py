"""The ``espcn`` model family: ESPCN super-resolution (Shi et al., 2016).

Models ``espcn-x2``, ``espcn-x3``, ``espcn-x4`` work on one channel (the
luminance channel, as in the paper); ``espcn-x2-rgb`` … ``espcn-x4-rgb`` on
three. ``espcn-test`` is a tiny model for tests. ``kernelzoo train espcn-x3``
trains one on synthetic images and compares it with bicubic upsampling.
"""

from __future__ import annotations

import torch

from kernelzoo.registry import ModelFamily

from .model import ESPCN, ESPCNConfig

__all__ = ["ESPCN", "ESPCNConfig", "family"]


def build(config: ESPCNConfig) -> ESPCN:
    return ESPCN(config)


def example_inputs(model: ESPCN, batch_size: int = 2) -> tuple:
    # An odd, non-square low-resolution image.
    return (torch.rand(batch_size, model.in_channels, 11, 13),)


def train_example(model_name: str, **options) -> dict:
    """``kernelzoo train``: see :func:`kernelzoo.plugins.espcn.train.train`."""
    from .train import train  # the training code is imported only when used

    return train(model_name, **options)


_presets = {}
for _r in (2, 3, 4):
    _presets[f"x{_r}"] = ESPCNConfig(scale=_r, channels=1)
    _presets[f"x{_r}-rgb"] = ESPCNConfig(scale=_r, channels=3)
_presets["test"] = ESPCNConfig(scale=3, channels=3, features=(8, 4))

family = ModelFamily(
    name="espcn",
    build=build,
    presets=_presets,
    example_inputs=example_inputs,
    description="ESPCN super-resolution (Shi et al., 2016) on kernelzoo's pixel_shuffle",
    train=train_example,
)
