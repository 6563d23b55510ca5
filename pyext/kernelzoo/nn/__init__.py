"""nn.Module layers over kernelzoo's operators."""

from .pixel_shuffle import PixelShuffle, PixelUnshuffle
from .roi import RoIAlign, RoIPool
from .multiscale_roi_align import MultiScaleRoIAlign, MultiScaleRoIPool
from .deform_conv import (DeformConv2d, DeformConv2dPack, ModulatedDeformConv2dPack,
                          make_deformable)

__all__ = ["PixelShuffle", "PixelUnshuffle", "RoIAlign", "RoIPool", "MultiScaleRoIAlign",
           "MultiScaleRoIPool", "DeformConv2d", "DeformConv2dPack",
           "ModulatedDeformConv2dPack", "make_deformable"]
