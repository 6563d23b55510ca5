"""nn.Module layers over kernelzoo's operators."""

from .pixel_shuffle import PixelShuffle, PixelUnshuffle
from .roi import RoIAlign, RoIPool

__all__ = ["PixelShuffle", "PixelUnshuffle", "RoIAlign", "RoIPool"]
