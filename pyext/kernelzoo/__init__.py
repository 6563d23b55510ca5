"""kernelzoo: hand-written C++/CUDA operators for PyTorch.

    import kernelzoo
    kernelzoo.ops.pixel_shuffle(x, 2)          # or torch.ops.kernelzoo.pixel_shuffle
    kernelzoo.nn.PixelShuffle(2)

Importing the package loads the compiled operators; it imports no model plugin.
"""

from ._loader import build_info, load as _load

_load()

from . import ops, nn, reference  # noqa: E402

__version__ = build_info()["version"]

__all__ = ["ops", "nn", "reference", "build_info", "__version__"]
