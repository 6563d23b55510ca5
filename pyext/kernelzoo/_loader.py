"""Loads the compiled operators (kernelzoo._C) after checking the torch version."""

import json
import os

import torch

_HERE = os.path.dirname(os.path.abspath(__file__))

REBUILD_HINT = "pip install --no-build-isolation --force-reinstall --no-deps ."


def build_info() -> dict:
    """The configuration this copy of kernelzoo was built with.

    Keys include ``version``, ``torch`` (the torch version compiled against),
    ``torch_cuda``, ``cuda`` (whether CUDA kernels were compiled), ``cuda_reason``,
    ``arch_list``, ``nvcc``, ``cuda_home`` and ``max_jobs``.
    """
    path = os.path.join(_HERE, "_build_info.json")
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise ImportError(
            "kernelzoo is not built: its build record is missing. Install it with "
            "`pip install .` from a source checkout.") from None


def load() -> None:
    info = build_info()
    built, running = info["torch"], torch.__version__
    if built != running:
        raise ImportError(
            f"kernelzoo was built against torch {built}, but torch {running} is installed; "
            f"its compiled operators only load into the torch they were built with. Rebuild "
            f"kernelzoo against the installed torch from its source folder: `{REBUILD_HINT}` "
            f"(or install the torch it was built for: pip install torch=={built.split('+')[0]})")
    from . import _C  # noqa: F401  (registers the operators with the dispatcher)
