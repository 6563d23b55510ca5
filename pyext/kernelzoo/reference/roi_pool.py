"""Reference roi_pool: see roi_align.py (both references live there)."""

from .roi_align import roi_pool

__all__ = ["roi_pool"]
