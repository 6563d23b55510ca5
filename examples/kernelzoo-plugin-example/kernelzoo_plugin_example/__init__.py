"""kernelzoo plugin example: the ``tinydenoiser`` model family.

kernelzoo finds this family through the entry point declared in
pyproject.toml and imports this module only when the family is first used.
"""

import torch

from kernelzoo import ModelFamily

from .model import TinyDenoiser

__all__ = ["TinyDenoiser", "family"]


def build(channels: int = 1, width: int = 32, depth: int = 2) -> TinyDenoiser:
    return TinyDenoiser(channels=channels, width=width, depth=depth)


def example_inputs(model: TinyDenoiser, batch_size: int = 2) -> tuple:
    return (torch.rand(batch_size, model.channels, 16, 20),)


family = ModelFamily(
    name="tinydenoiser",
    build=build,
    # Presets as dicts of keyword arguments for build (a dataclass instance
    # works too; build then receives it as its only argument).
    presets={
        "small": {"width": 32, "depth": 2},
        "base": {"width": 64, "depth": 4},
        "rgb": {"channels": 3, "width": 64, "depth": 4},
        "test": {"width": 8, "depth": 1},  # tiny: for check_family and CI
    },
    example_inputs=example_inputs,
    description="tiny residual denoiser on pixel_unshuffle/pixel_shuffle (kernelzoo example)",
)
