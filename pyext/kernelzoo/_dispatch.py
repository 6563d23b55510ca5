"""What the dispatcher knows about kernelzoo's operators."""

import torch

from ._loader import build_info

BACKEND_KEYS = ("CPU", "CUDA", "Meta", "Autograd")


def op_names() -> list[str]:
    """Names of the registered kernelzoo operators (without the namespace)."""
    names = torch._C._dispatch_get_all_op_names()
    return sorted(n.split("::", 1)[1] for n in names if n.startswith("kernelzoo::"))


def op_backends(name: str) -> dict[str, str]:
    """For each backend key: 'kernel', 'stub' (CUDA in a CPU-only build: raises a
    rebuild message) or 'none'."""
    qualified = f"kernelzoo::{name}"
    cuda_built = build_info().get("cuda", False)
    out = {}
    for key in BACKEND_KEYS:
        has = torch._C._dispatch_has_kernel_for_dispatch_key(qualified, key)
        if has and key == "CUDA" and not cuda_built:
            out[key] = "stub"
        else:
            out[key] = "kernel" if has else "none"
    return out
