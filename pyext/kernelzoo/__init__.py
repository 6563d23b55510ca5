"""kernelzoo: hand-written C++/CUDA operators for PyTorch.

    import kernelzoo
    kernelzoo.ops.pixel_shuffle(x, 2)          # or torch.ops.kernelzoo.pixel_shuffle
    kernelzoo.nn.PixelShuffle(2)
    kernelzoo.create_model("espcn-x3")         # model families: kernelzoo.list_models()

Importing the package loads the compiled operators; it imports no model plugin.
"""

from ._loader import build_info, load as _load

_load()

from . import ops, nn, reference  # noqa: E402
from . import registry, testing  # noqa: E402  (neither imports a plugin)
from .registry import (ModelFamily, create_model, from_pretrained,  # noqa: E402
                       list_families, list_models, list_plugins, register_family, get_family)

__version__ = build_info()["version"]

__all__ = ["ops", "nn", "reference", "build_info", "__version__",
           "ModelFamily", "create_model", "from_pretrained", "list_families", "list_models", "list_plugins",
           "register_family", "get_family", "registry", "testing"]
