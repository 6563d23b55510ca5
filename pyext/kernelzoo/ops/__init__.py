"""kernelzoo's operators, with the call signatures of their peer libraries.

Each is also reachable as ``torch.ops.kernelzoo.<name>``; importing this package
registers their fake (meta) kernels and autograd formulas.
"""

from .pixel_shuffle import pixel_shuffle, pixel_unshuffle
from .roi_align import roi_align
from .roi_pool import roi_pool

__all__ = ["pixel_shuffle", "pixel_unshuffle", "roi_align", "roi_pool"]
