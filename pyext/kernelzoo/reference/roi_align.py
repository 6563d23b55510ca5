"""Reference roi_align / roi_pool written from their definitions (torchvision's
semantics) in plain PyTorch: one Python iteration per box, tensor ops within it.

Box geometry (corners, bin edges, sample positions, the adaptive sampling grid)
is computed with 0-d tensors in the precision the kernels use for it: float64
for float64 boxes, float32 otherwise. Discrete choices (the sampling grid, the
rounded roi_pool corners, floor/ceil bin edges) then agree with the kernels
even where float32 and float64 would round differently; pass float32 boxes with
a float64 input to get float32 geometry and float64 values. Differentiable with
respect to ``input`` through autograd. Batch indices are not checked.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn.modules.utils import _pair

from ..ops._roi import as_rois

__all__ = ["roi_align", "roi_pool"]

_FLT_MAX = 3.4028234663852886e38


def _geometry_dtype(rois: Tensor) -> torch.dtype:
    return torch.float64 if rois.dtype == torch.float64 else torch.float32


def _interp(coords: Tensor, size: int):
    """Linear interpolation of each coordinate along an axis of `size` pixels:
    (lo, hi, w_lo, w_hi, valid). Coordinates outside [-1, size] are invalid;
    those in [-1, 0] clamp to 0, those past the last pixel to it."""
    valid = (coords >= -1) & (coords <= size)
    c = torch.where(valid, coords, torch.zeros_like(coords)).clamp(min=0)
    lo = c.floor().to(torch.int64)  # c >= 0: truncation == floor
    at_end = lo >= size - 1
    last = torch.full_like(lo, max(size - 1, 0))
    lo = torch.where(at_end, last, lo)
    hi = torch.where(at_end, last, lo + 1)
    c = torch.where(at_end, lo.to(c.dtype), c)
    frac = c - lo.to(c.dtype)
    return lo, hi, 1 - frac, frac, valid


def roi_align(input: Tensor, boxes, output_size, spatial_scale: float = 1.0,
              sampling_ratio: int = -1, aligned: bool = False) -> Tensor:
    rois = as_rois("roi_align", boxes)
    ph, pw = _pair(output_size)
    _, channels, height, width = input.shape
    g = _geometry_dtype(rois)
    r = rois.detach().to("cpu", g)
    scale = torch.tensor(spatial_scale, dtype=g)
    offset = torch.tensor(0.5 if aligned else 0.0, dtype=g)
    one = torch.tensor(1.0, dtype=g)
    out = []
    for k in range(r.shape[0]):
        b = int(r[k, 0])
        x1, y1, x2, y2 = (r[k, i] * scale - offset for i in range(1, 5))
        roi_w, roi_h = x2 - x1, y2 - y1
        if not aligned:  # malformed boxes are forced to be at least 1x1
            roi_w, roi_h = torch.maximum(roi_w, one), torch.maximum(roi_h, one)
        bin_h, bin_w = roi_h / ph, roi_w / pw
        if sampling_ratio > 0:
            grid_h = grid_w = sampling_ratio
        else:
            grid_h = max(int(math.ceil(float(roi_h / ph))), 0) if torch.isfinite(roi_h) else 0
            grid_w = max(int(math.ceil(float(roi_w / pw))), 0) if torch.isfinite(roi_w) else 0
        count = max(grid_h * grid_w, 1)
        if grid_h == 0 or grid_w == 0 or height == 0 or width == 0:
            out.append(input.new_zeros((channels, ph, pw)))
            continue
        # sample coordinates: start + p * bin + (i + 0.5) * bin / grid
        p = torch.arange(ph, dtype=g)[:, None]
        i = torch.arange(grid_h, dtype=g)[None, :]
        ys = (y1 + p * bin_h) + (i + 0.5) * bin_h / grid_h  # (PH, GH)
        p = torch.arange(pw, dtype=g)[:, None]
        i = torch.arange(grid_w, dtype=g)[None, :]
        xs = (x1 + p * bin_w) + (i + 0.5) * bin_w / grid_w  # (PW, GW)
        ylo, yhi, wylo, wyhi, yv = _interp(ys.reshape(-1), height)
        xlo, xhi, wxlo, wxhi, xv = _interp(xs.reshape(-1), width)
        wy = torch.stack([wylo, wyhi]) * yv          # (2, PH*GH)
        wx = torch.stack([wxlo, wxhi]) * xv          # (2, PW*GW)
        rows = torch.stack([ylo, yhi])               # (2, PH*GH)
        cols = torch.stack([xlo, xhi])               # (2, PW*GW)
        feat = input[b]                              # (C, H, W)
        # values at every (row tap, col tap): (C, 2, PH*GH, 2, PW*GW)
        v = feat[:, rows[:, :, None, None], cols[None, None, :, :]]
        w = (wy[:, :, None, None] * wx[None, None, :, :]).to(input.dtype)
        s = (v * w).sum(dim=(1, 3))                  # (C, PH*GH, PW*GW)
        s = s.reshape(channels, ph, grid_h, pw, grid_w).sum(dim=(2, 4))
        out.append(s / count)
    if not out:
        return input.new_zeros((0, channels, ph, pw))
    return torch.stack(out)


def _round_half_away(v: Tensor) -> int:
    x = float(v)
    if not math.isfinite(x):
        return -(1 << 29)
    r = math.floor(abs(x) + 0.5)
    return int(r if x >= 0 else -r)


def roi_pool(input: Tensor, boxes, output_size, spatial_scale: float = 1.0) -> Tensor:
    rois = as_rois("roi_pool", boxes)
    ph, pw = _pair(output_size)
    _, channels, height, width = input.shape
    g = _geometry_dtype(rois)
    r = rois.detach().to("cpu", g)
    scale = torch.tensor(spatial_scale, dtype=g)
    out = []
    for k in range(r.shape[0]):
        b = int(r[k, 0])
        x1, y1, x2, y2 = (_round_half_away(r[k, i] * scale) for i in range(1, 5))
        roi_w, roi_h = max(x2 - x1 + 1, 1), max(y2 - y1 + 1, 1)
        bin_h = torch.tensor(roi_h, dtype=g) / ph
        bin_w = torch.tensor(roi_w, dtype=g) / pw

        def edges(p, bin_size, start, size):
            lo = int(torch.floor(p * bin_size)) + start
            hi = int(torch.ceil((p + 1) * bin_size)) + start
            return min(max(lo, 0), size), min(max(hi, 0), size)

        rows = []
        for y in range(ph):
            h0, h1 = edges(y, bin_h, y1, height)
            cols = []
            for x in range(pw):
                w0, w1 = edges(x, bin_w, x1, width)
                if h1 <= h0 or w1 <= w0:
                    cols.append(input.new_zeros((channels,)))
                else:
                    window = input[b, :, h0:h1, w0:w1].reshape(channels, -1)
                    # The maximum starts at -FLT_MAX (a window of -inf gives -FLT_MAX;
                    # float16 and bfloat16 round it to -inf).
                    floor = torch.tensor(-_FLT_MAX).to(input.dtype).to(input.device)
                    floor = floor.expand(channels, 1)
                    # max(dim) picks (and differentiates) the first maximum, as the
                    # kernels' strict ">" does: ties go to the first pixel in row-major order.
                    cols.append(torch.cat([floor, window], dim=1).max(dim=1).values)
            rows.append(torch.stack(cols, dim=-1))
        out.append(torch.stack(rows, dim=-2))
    if not out:
        return input.new_zeros((0, channels, ph, pw))
    return torch.stack(out)
