"""ESPCN: efficient sub-pixel convolutional network (Shi et al., CVPR 2016).

Three convolutions on the low-resolution image (5x5 to 64 channels, 3x3 to 32,
3x3 to ``channels * scale**2``) with tanh after the first two, then a pixel
shuffle that rearranges the last layer's channels into a ``scale`` times
larger image. Every convolution is "same"-padded, so an ``H x W`` input gives
an ``H*scale x W*scale`` output. Weights use PyTorch's default initialisation;
the last convolution's bias starts at 0.5, the middle of the [0, 1] range.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from kernelzoo.nn import PixelShuffle

__all__ = ["ESPCNConfig", "ESPCN"]


@dataclasses.dataclass(frozen=True)
class ESPCNConfig:
    """Configuration of :class:`ESPCN`.

    Attributes:
        scale: upscaling factor ``r``.
        channels: image channels in and out (1: luminance, 3: RGB).
        features: output channels of the first two convolutions.
        kernel_sizes: kernel sizes of the three convolutions (odd).
    """

    scale: int = 3
    channels: int = 1
    features: tuple[int, int] = (64, 32)
    kernel_sizes: tuple[int, int, int] = (5, 3, 3)

    def __post_init__(self) -> None:
        def positive_int(v):
            return isinstance(v, int) and not isinstance(v, bool) and v > 0

        if not positive_int(self.scale):
            raise ValueError(f"ESPCNConfig: scale must be a positive int, got {self.scale!r}")
        if not positive_int(self.channels):
            raise ValueError(f"ESPCNConfig: channels must be a positive int, "
                             f"got {self.channels!r}")
        if len(self.features) != 2 or not all(map(positive_int, self.features)):
            raise ValueError(f"ESPCNConfig: features must be two positive ints, "
                             f"got {self.features!r}")
        if len(self.kernel_sizes) != 3 or not all(positive_int(k) and k % 2 == 1
                                                  for k in self.kernel_sizes):
            raise ValueError(f"ESPCNConfig: kernel_sizes must be three odd positive ints, "
                             f"got {self.kernel_sizes!r}")


class ESPCN(nn.Module):
    """ESPCN super-resolution network; input ``(N, channels, H, W)`` in [0, 1],
    output ``(N, channels, H*scale, W*scale)``."""

    def __init__(self, config: ESPCNConfig | None = None) -> None:
        super().__init__()
        config = config or ESPCNConfig()
        self.config = config
        self.scale = config.scale
        self.in_channels = config.channels
        (f1, f2), (k1, k2, k3) = config.features, config.kernel_sizes
        c, r = config.channels, config.scale
        self.conv1 = nn.Conv2d(c, f1, k1, padding=k1 // 2)
        self.conv2 = nn.Conv2d(f1, f2, k2, padding=k2 // 2)
        self.conv3 = nn.Conv2d(f2, c * r * r, k3, padding=k3 // 2)
        self.pixel_shuffle = PixelShuffle(r)
        # Images are in [0, 1]: start the output at mid-grey rather than 0, which
        # saves the first training steps the trip there.
        nn.init.constant_(self.conv3.bias, 0.5)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.size(1) != self.in_channels:
            raise ValueError(f"ESPCN expects input (N, {self.in_channels}, H, W), "
                             f"got {tuple(x.shape)}")
        x = torch.tanh(self.conv1(x))
        x = torch.tanh(self.conv2(x))
        return self.pixel_shuffle(self.conv3(x))
