"""nn.Module layers over kernelzoo's operators."""

from .pixel_shuffle import PixelShuffle, PixelUnshuffle

__all__ = ["PixelShuffle", "PixelUnshuffle"]
