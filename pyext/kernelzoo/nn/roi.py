"""RoIAlign / RoIPool layers: drop-ins for torchvision.ops.RoIAlign / RoIPool
(same constructor arguments and repr) on kernelzoo's operators. Scriptable,
fx-traceable and exportable, as the functions they call."""

from torch import Tensor, nn

from .. import ops
from ..ops._roi import BoxesType


class RoIAlign(nn.Module):
    """See :func:`kernelzoo.ops.roi_align`."""

    def __init__(self, output_size, spatial_scale: float, sampling_ratio: int,
                 aligned: bool = False) -> None:
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned

    def forward(self, input: Tensor, rois: BoxesType) -> Tensor:
        return ops.roi_align(input, rois, self.output_size, self.spatial_scale,
                             self.sampling_ratio, self.aligned)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(output_size={self.output_size}, "
                f"spatial_scale={self.spatial_scale}, sampling_ratio={self.sampling_ratio}, "
                f"aligned={self.aligned})")


class RoIPool(nn.Module):
    """See :func:`kernelzoo.ops.roi_pool`."""

    def __init__(self, output_size, spatial_scale: float) -> None:
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale

    def forward(self, input: Tensor, rois: BoxesType) -> Tensor:
        return ops.roi_pool(input, rois, self.output_size, self.spatial_scale)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(output_size={self.output_size}, "
                f"spatial_scale={self.spatial_scale})")
