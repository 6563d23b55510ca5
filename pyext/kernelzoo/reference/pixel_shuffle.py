"""Reference pixel_shuffle / pixel_unshuffle as reshape + permute."""

from torch import Tensor


def pixel_shuffle(input: Tensor, upscale_factor: int) -> Tensor:
    r = upscale_factor
    *batch, c, h, w = input.shape
    x = input.reshape(*batch, c // (r * r), r, r, h, w)      # (.., C, i, j, H, W)
    nb = len(batch)
    x = x.permute(*range(nb), nb, nb + 3, nb + 1, nb + 4, nb + 2)  # (.., C, H, i, W, j)
    return x.reshape(*batch, c // (r * r), h * r, w * r)


def pixel_unshuffle(input: Tensor, downscale_factor: int) -> Tensor:
    r = downscale_factor
    *batch, c, h, w = input.shape
    x = input.reshape(*batch, c, h // r, r, w // r, r)       # (.., C, H, i, W, j)
    nb = len(batch)
    x = x.permute(*range(nb), nb, nb + 2, nb + 4, nb + 1, nb + 3)  # (.., C, i, j, H, W)
    return x.reshape(*batch, c * r * r, h // r, w // r)
