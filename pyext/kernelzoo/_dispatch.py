"""What the dispatcher knows about kernelzoo's operators."""

import torch

BACKEND_KEYS = ("CPU", "CUDA", "Meta", "Autograd")


def op_names() -> list[str]:
    """Names of the registered kernelzoo operators (without the namespace)."""
    names = torch._C._dispatch_get_all_op_names()
    return sorted(n.split("::", 1)[1] for n in names if n.startswith("kernelzoo::"))


# The "file" the CUDA stubs are registered from (csrc/common/library.h).
_NOT_BUILT = "[kernelzoo CUDA stub: not built]"
_NOT_WRITTEN = "[kernelzoo CUDA stub: not written yet]"


def op_backends(name: str) -> dict[str, str]:
    """For each backend key: 'kernel', 'none', or for CUDA 'stub' (a CPU-only
    build: raises a rebuild message) or 'not written' (an op whose CUDA kernels
    do not exist yet: raises a message saying so)."""
    qualified = f"kernelzoo::{name}"
    out = {}
    for key in BACKEND_KEYS:
        has = torch._C._dispatch_has_kernel_for_dispatch_key(qualified, key)
        out[key] = "kernel" if has else "none"
    if out["CUDA"] == "kernel":
        cuda_lines = [ln for ln in torch._C._dispatch_dump(qualified).splitlines()
                      if ln.startswith("CUDA:")]
        if any(_NOT_WRITTEN in ln for ln in cuda_lines):
            out["CUDA"] = "not written"
        elif any(_NOT_BUILT in ln for ln in cuda_lines):
            out["CUDA"] = "stub"
    return out
