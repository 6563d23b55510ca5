"""A tiny denoiser that works at half resolution.

``PixelUnshuffle(2)`` folds each 2x2 block of pixels into channels, a few 3x3
convolutions estimate the noise there, and ``PixelShuffle(2)`` unfolds the
estimate, which is subtracted from the input (residual learning).
"""

from torch import Tensor, nn

from kernelzoo.nn import PixelShuffle, PixelUnshuffle


class TinyDenoiser(nn.Module):
    def __init__(self, channels: int = 1, width: int = 32, depth: int = 2) -> None:
        super().__init__()
        if channels < 1 or width < 1 or depth < 1:
            raise ValueError(f"TinyDenoiser: channels, width and depth must be positive, "
                             f"got {channels}, {width}, {depth}")
        self.channels = channels
        layers = [PixelUnshuffle(2), nn.Conv2d(4 * channels, width, 3, padding=1), nn.ReLU()]
        for _ in range(depth - 1):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
        layers += [nn.Conv2d(width, 4 * channels, 3, padding=1), PixelShuffle(2)]
        self.body = nn.Sequential(*layers)

    def forward(self, noisy: Tensor) -> Tensor:
        # noisy: (N, channels, H, W) with H and W even.
        return noisy - self.body(noisy)
