"""Build of kernelzoo: one extension module, kernelzoo._C, through
torch.utils.cpp_extension. See README.md ("Build options") for the knobs:
FORCE_CUDA, TORCH_CUDA_ARCH_LIST, MAX_JOBS, KERNELZOO_CPU_ONLY.
"""

import glob
import json
import os
import platform
import re
import shutil
import sys

from setuptools import find_packages, setup

import torch
from torch.utils import cpp_extension

ROOT = os.path.dirname(os.path.abspath(__file__))
BUILD_INFO = os.path.join(ROOT, "pyext", "kernelzoo", "_build_info.json")
DEFAULT_ARCH_LIST = "8.0;8.6;8.9;9.0+PTX"


def log(msg):
    print(f"kernelzoo build: {msg}", flush=True)


def env_flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def is_toolkit(d):
    if not d:
        return False
    has_lib = any(glob.glob(os.path.join(d, sub, "libcudart.so*")) for sub in ("lib64", "lib"))
    return os.path.exists(os.path.join(d, "include", "cuda_runtime.h")) and has_lib


def resolve_cuda_home():
    """torch finds CUDA_HOME from $CUDA_HOME or from the nvcc on PATH; an nvcc
    that is a wrapper script (/usr/local/bin/nvcc here) makes that /usr/local,
    which has neither the runtime headers nor libcudart. Fall back to the
    usual toolkit folders then."""
    home = cpp_extension.CUDA_HOME
    if is_toolkit(home) or os.environ.get("CUDA_HOME"):
        return home
    for cand in (os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if is_toolkit(cand):
            log(f"CUDA_HOME {home} is not a toolkit; using {cand}")
            cpp_extension.CUDA_HOME = cand
            os.environ["CUDA_HOME"] = cand
            return cand
    return home


def cuda_decision():
    """(build_cuda, reason)."""
    if env_flag("KERNELZOO_CPU_ONLY"):
        return False, "KERNELZOO_CPU_ONLY is set"
    if torch.version.cuda is None:
        return False, f"torch {torch.__version__} was built without CUDA"
    home = resolve_cuda_home()
    if home is None or shutil.which(os.path.join(home, "bin", "nvcc")) is None:
        return False, "no CUDA toolkit (nvcc) found; set CUDA_HOME"
    if env_flag("FORCE_CUDA"):
        return True, "FORCE_CUDA=1"
    if torch.cuda.is_available():
        return True, "a GPU is visible"
    return False, "no GPU visible and FORCE_CUDA is not set"


def nvidia_wheel_include_dirs():
    """Include folders of NVIDIA's pip wheels (site-packages/nvidia/*/include).

    Torch's CUDA headers include headers (cusparse.h, cublas_v2.h, ...) that a
    slim system toolkit may lack; torch's own wheel dependencies ship them.
    They are passed with -isystem, which is searched after every -I folder, so
    the system toolkit's headers keep precedence wherever it has them.
    """
    site = os.path.dirname(os.path.dirname(torch.__file__))
    dirs = sorted(glob.glob(os.path.join(site, "nvidia", "*", "include")))
    return [d for d in dirs if os.path.isdir(d)]


def missing_toolkit_headers(cuda_home):
    probe = ["cusparse.h", "cublas_v2.h", "cusolverDn.h", "curand.h"]
    inc = os.path.join(cuda_home, "include")
    return [h for h in probe if not os.path.exists(os.path.join(inc, h))]


def sources(pattern):
    """Every csrc file matching pattern. An op may have any number of CUDA
    translation units (one per template instantiation, as a big kernel has):
    each is its own ninja job, so MAX_JOBS compiles them in parallel."""
    return sorted(glob.glob(os.path.join("csrc", "**", pattern), recursive=True))


def cxx_standard():
    """The C++ standard, stated once in CMakeLists.txt (KERNELZOO_CXX_STANDARD)."""
    with open(os.path.join(ROOT, "CMakeLists.txt")) as f:
        m = re.search(r"set\(KERNELZOO_CXX_STANDARD (\d+)\)", f.read())
    if not m:
        raise RuntimeError("CMakeLists.txt does not set KERNELZOO_CXX_STANDARD")
    return m.group(1)


def nvcc_threads(arch_list, jobs):
    """nvcc --threads compiles a file's GPU targets in parallel: worth it when
    there are several targets and cores to spare beyond MAX_JOBS jobs."""
    targets = 0
    for arch in arch_list.replace(",", ";").replace(" ", ";").split(";"):
        if arch:
            targets += 2 if arch.endswith("+PTX") else 1
    spare = max(1, (os.cpu_count() or 1) // max(1, jobs))
    return min(targets, spare)


def make_extension():
    build_cuda, reason = cuda_decision()
    # -fopenmp: at::parallel_for is an inline OpenMP region in ATen's headers
    # (torch is built with AT_PARALLEL_OPENMP); without it, it runs serially.
    std = f"-std=c++{cxx_standard()}"
    cxx_flags = ["-O3", "-fopenmp", "-fdiagnostics-color=always", std]
    nvcc_flags = ["-O3", "--expt-relaxed-constexpr", "-lineinfo", std]
    define_macros = []
    srcs = sources("*.cpp")
    info = {
        "version": VERSION,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "compiler": os.environ.get("CXX", "c++"),
        "cuda": build_cuda,
        "cuda_reason": reason,
        "cuda_home": None,
        "nvcc": None,
        "arch_list": None,
        "max_jobs": os.environ.get("MAX_JOBS"),
        "extra_include_dirs": [],
    }
    if build_cuda:
        cuda_home = cpp_extension.CUDA_HOME
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_ARCH_LIST
        srcs += sources("*.cu")
        jobs = int(os.environ.get("MAX_JOBS") or os.cpu_count() or 1)
        threads = nvcc_threads(os.environ.get("TORCH_CUDA_ARCH_LIST") or "", jobs)
        if threads > 1:
            nvcc_flags.append(f"--threads={threads}")
        info["nvcc_threads"] = threads
        define_macros.append(("KERNELZOO_WITH_CUDA", None))
        missing = missing_toolkit_headers(cuda_home)
        if missing:
            extra = nvidia_wheel_include_dirs()
            log(f"the CUDA toolkit at {cuda_home} lacks {', '.join(missing)}; "
                f"adding NVIDIA wheel headers: {', '.join(extra) or 'none found'}")
            for d in extra:
                cxx_flags += ["-isystem", d]
                nvcc_flags += ["-isystem", d]
            info["extra_include_dirs"] = extra
        info["cuda_home"] = cuda_home
        info["nvcc"] = nvcc_version(cuda_home)
        info["arch_list"] = os.environ.get("TORCH_CUDA_ARCH_LIST") or "visible GPUs"
        ext_cls = cpp_extension.CUDAExtension
        extra_compile_args = {"cxx": cxx_flags, "nvcc": nvcc_flags}
    else:
        ext_cls = cpp_extension.CppExtension
        extra_compile_args = {"cxx": cxx_flags}

    log(f"torch {info['torch']} (CUDA {info['torch_cuda']}), python {info['python']}")
    log(f"CUDA kernels: {'yes' if build_cuda else 'no'} ({reason})")
    if build_cuda:
        log(f"nvcc: {info['nvcc']}; CUDA_HOME: {info['cuda_home']}; "
            f"TORCH_CUDA_ARCH_LIST: {info['arch_list']}")
    log(f"MAX_JOBS: {info['max_jobs'] or 'default'}; {len(srcs)} source files")

    os.makedirs(os.path.dirname(BUILD_INFO), exist_ok=True)
    with open(BUILD_INFO, "w") as f:
        json.dump(info, f, indent=2, sort_keys=True)

    return ext_cls(
        name="kernelzoo._C",
        sources=srcs,
        include_dirs=[os.path.join(ROOT, "csrc")],
        define_macros=define_macros,
        extra_compile_args=extra_compile_args,
        extra_link_args=["-fopenmp"],
    )


def nvcc_version(cuda_home):
    import subprocess

    try:
        out = subprocess.check_output([os.path.join(cuda_home, "bin", "nvcc"), "--version"],
                                      text=True)
        return out.strip().splitlines()[-1]
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


VERSION = "0.1.0"

packages = find_packages("pyext") + [
    "kernelzoo.plugins." + p for p in find_packages("plugins")] + ["kernelzoo.plugins"]

setup(
    version=VERSION,
    packages=packages,
    package_dir={"": "pyext", "kernelzoo.plugins": "plugins"},
    package_data={"kernelzoo": ["_build_info.json"]},
    ext_modules=[make_extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
    zip_safe=False,
)
