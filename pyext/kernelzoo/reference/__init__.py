"""Plain-PyTorch references of kernelzoo's operators: same signatures, slow and
clear. Tests and benchmarks compare against them; they also help debugging."""

from .pixel_shuffle import pixel_shuffle, pixel_unshuffle
from .roi_align import roi_align
from .roi_pool import roi_pool

__all__ = ["pixel_shuffle", "pixel_unshuffle", "roi_align", "roi_pool"]
