"""Plain-PyTorch references of kernelzoo's operators: same signatures, slow and
clear. Tests and benchmarks compare against them; they also help debugging."""

from .deform_conv2d import deform_conv2d
from .flash_attn import (flash_attn_func, flash_attn_kvpacked_func, flash_attn_qkvpacked_func,
                         flash_attn_varlen_func, flash_attn_varlen_kvpacked_func,
                         flash_attn_varlen_qkvpacked_func, flash_attn_with_kvcache)
from .pixel_shuffle import pixel_shuffle, pixel_unshuffle
from .roi_align import roi_align
from .roi_pool import roi_pool
from .selective_scan import selective_scan_fn, selective_state_update

__all__ = ["deform_conv2d", "flash_attn_func", "flash_attn_kvpacked_func",
           "flash_attn_qkvpacked_func", "flash_attn_varlen_func",
           "flash_attn_varlen_kvpacked_func", "flash_attn_varlen_qkvpacked_func",
           "flash_attn_with_kvcache", "pixel_shuffle", "pixel_unshuffle", "roi_align",
           "roi_pool", "selective_scan_fn", "selective_state_update"]
