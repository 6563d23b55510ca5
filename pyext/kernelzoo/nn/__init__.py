"""nn.Module layers over kernelzoo's operators."""

from .pixel_shuffle import PixelShuffle, PixelUnshuffle
from .roi import RoIAlign, RoIPool
from .multiscale_roi_align import MultiScaleRoIAlign, MultiScaleRoIPool

__all__ = ["PixelShuffle", "PixelUnshuffle", "RoIAlign", "RoIPool", "MultiScaleRoIAlign",
           "MultiScaleRoIPool"]
