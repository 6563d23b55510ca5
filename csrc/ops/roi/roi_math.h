// Geometry of roi_align and roi_pool, shared by their CPU and CUDA kernels.
// Kernel-safe: no tensor or runtime headers.
//
// Every function here reproduces torchvision's definition of the ops
// (torchvision/csrc/ops/{cpu,cuda}/roi_{align,pool}_kernel.*) in the
// accumulation type acc_t (float for float16/bfloat16/float32, double for
// float64), with the arithmetic in the same order so that float32 and float64
// results agree with torchvision's to the last bits. Where torchvision's code
// has undefined behaviour (NaN or astronomically large box coordinates cast to
// int) the values are clamped first; the results for finite boxes are unchanged.
//
// Non-finite values (README, "Differences from the peers"): a bilinear tap of
// weight zero and a sample outside the map contribute nothing, so a NaN or inf
// pixel reaches exactly the bins that sample it with a non-zero weight (and
// likewise for the gradient). torchvision's CPU kernel multiplies such taps by
// zero (0 * inf = NaN) and reads pixel (0, 0) for samples outside the map.
#pragma once

#include <cstdint>

#include "../../common/bilinear.h"
#include "../../common/macros.h"
#include "../../common/scalar_math.h"

namespace kernelzoo {
namespace roi_detail {

// The batch index of a roi (column 0): torchvision casts it to int, i.e.
// truncates toward zero. Returns -1 unless the truncated value is a valid
// index in [0, batch_size) (NaN included). The CPU ops raise an error for such
// a roi; the CUDA kernels, which cannot raise without a host sync, give its
// output zeros and its gradient nothing (documented in the Python docstrings).
template <typename acc_t>
KZ_HOST_DEVICE KZ_INLINE int64_t batch_index(acc_t v, int64_t batch_size) {
  // trunc(v) lies in [0, n) exactly when -1 < v < n.
  if (!(v > acc_t(-1) && v < static_cast<acc_t>(batch_size))) return -1;
  return static_cast<int64_t>(v);
}

// One row (batch_index, x1, y1, x2, y2) of the rois, in acc_t.
template <typename acc_t>
struct RoiBox {
  int64_t batch;  // batch_index(): -1 when invalid
  acc_t x1, y1, x2, y2;
};

// Row k of a (K, 5) rois tensor with strides (row, col).
template <typename acc_t, typename scalar_t, typename index_t>
KZ_HOST_DEVICE KZ_INLINE RoiBox<acc_t> load_roi(const scalar_t* rois, index_t k, index_t row,
                                                index_t col, int64_t batch_size) {
  const scalar_t* r = rois + k * row;
  return {batch_index(static_cast<acc_t>(r[0]), batch_size), static_cast<acc_t>(r[col]),
          static_cast<acc_t>(r[2 * col]), static_cast<acc_t>(r[3 * col]),
          static_cast<acc_t>(r[4 * col])};
}

// Coordinates (n, c, h, w) of element e of a contiguous (N, C, H, W) tensor:
// the kernels give each thread one element of an output (K, C, PH, PW) or of a
// gradient (N, C, H, W) in this order.
template <typename index_t>
struct Nchw {
  index_t n, c;
  int h, w;
};

template <typename index_t>
KZ_HOST_DEVICE KZ_INLINE Nchw<index_t> unravel_nchw(index_t e, index_t channels, int height,
                                                    int width) {
  const int w = static_cast<int>(e % width);
  index_t t = e / width;
  const int h = static_cast<int>(t % height);
  t /= height;
  return {t / channels, t % channels, h, w};
}

// Inclusive pixel range [lo, hi] along one axis, empty while lo > hi: the
// extent of what a roi touches, grown one tap or bin at a time.
struct Span {
  int lo, hi;
  KZ_HOST_DEVICE KZ_INLINE void include(int a, int b) {
    lo = a < lo ? a : lo;
    hi = b > hi ? b : hi;
  }
};

// ---------------------------------------------------------------------------
// roi_align
// ---------------------------------------------------------------------------

// Largest sampling ratio a caller may pass (roi.cpp rejects larger ones): a bin
// then has up to 2^20 samples. torchvision accepts any int, and a ratio near
// 2^31 would take hours per bin on either device.
constexpr int kMaxSamplingRatio = 1 << 10;

// Largest adaptive sampling grid per bin and axis: torchvision's int. An
// adaptive grid is ceil(roi size / output size), so it reaches this only for
// boxes more than 2^31 pixels tall or wide (where torchvision's int overflows);
// such a grid is clamped here. The samples on the map, the only ones that
// contribute, are found without visiting the others (sample_range).
constexpr int kMaxAdaptiveGrid = 2147483647;

template <typename acc_t>
struct AlignRoi {
  acc_t start_h, start_w;  // top-left corner on the feature map
  acc_t bin_h, bin_w;      // bin size (may be negative for aligned, reversed boxes)
  int grid_h, grid_w;      // samples per bin along each axis (>= 0)
  acc_t count;             // samples per bin, at least 1: the divisor of the average
};

// Samples per bin along one axis: sampling_ratio, or ceil(roi_size / pooled)
// when sampling_ratio <= 0.
template <typename acc_t>
KZ_HOST_DEVICE KZ_INLINE int align_grid(acc_t roi_size, int pooled, int sampling_ratio) {
  if (sampling_ratio > 0) return sampling_ratio;
  const acc_t g = kz_ceil(roi_size / static_cast<acc_t>(pooled));
  if (!(g > acc_t(0))) return 0;  // empty, reversed or NaN boxes: no samples
  return g < acc_t(kMaxAdaptiveGrid) ? static_cast<int>(g) : kMaxAdaptiveGrid;  // (2^31 is exact)
}

// Geometry of one roi from its box in input coordinates.
template <typename acc_t>
KZ_HOST_DEVICE KZ_INLINE AlignRoi<acc_t> align_roi(const RoiBox<acc_t>& b, acc_t spatial_scale,
                                                   int pooled_h, int pooled_w, int sampling_ratio,
                                                   bool aligned) {
  AlignRoi<acc_t> r;
  // Half-pixel offset for aligned=True; no rounding (as torchvision).
  const acc_t offset = aligned ? acc_t(0.5) : acc_t(0);
  r.start_w = b.x1 * spatial_scale - offset;
  r.start_h = b.y1 * spatial_scale - offset;
  const acc_t end_w = b.x2 * spatial_scale - offset;
  const acc_t end_h = b.y2 * spatial_scale - offset;
  acc_t roi_w = end_w - r.start_w;
  acc_t roi_h = end_h - r.start_h;
  if (!aligned) {
    // Legacy mode: malformed boxes are forced to be at least 1x1.
    roi_w = roi_w < acc_t(1) ? acc_t(1) : roi_w;
    roi_h = roi_h < acc_t(1) ? acc_t(1) : roi_h;
  }
  r.bin_h = roi_h / static_cast<acc_t>(pooled_h);
  r.bin_w = roi_w / static_cast<acc_t>(pooled_w);
  r.grid_h = align_grid(roi_h, pooled_h, sampling_ratio);
  r.grid_w = align_grid(roi_w, pooled_w, sampling_ratio);
  const acc_t count = static_cast<acc_t>(r.grid_h) * static_cast<acc_t>(r.grid_w);
  r.count = count > acc_t(1) ? count : acc_t(1);
  return r;
}

// Coordinate of sample i (of `grid`) in bin p along one axis.
template <typename acc_t>
KZ_HOST_DEVICE KZ_INLINE acc_t sample_coord(acc_t start, acc_t bin, int p, int i, int grid) {
  return start + static_cast<acc_t>(p) * bin +
         static_cast<acc_t>(i + .5f) * bin / static_cast<acc_t>(grid);
}

// Sample i of bin p along one axis as a linear interpolation (roi_align's
// border rule: common/bilinear.h's ClampBorder); false when it contributes nothing.
template <typename acc_t>
KZ_HOST_DEVICE KZ_INLINE bool align_sample(acc_t start, acc_t bin, int p, int i, int grid,
                                           int size, Interp<acc_t>& out) {
  return interp1d<ClampBorder>(sample_coord(start, bin, p, i, grid), size, out);
}

// The samples [first, last) of bin p along one axis that may lie on the map:
// those whose coordinate is in [-1, size], the range where ClampBorder takes a
// sample. The coordinate is monotone in i (each rounding step is), so the
// range is contiguous and two bisections find it exactly, with the very
// arithmetic of sample_coord; small grids are returned whole (align_sample
// rejects the rest). A huge grid (adaptive sampling of a huge box, most of it
// off the map) thus costs the samples on the map, not the whole grid.
template <typename acc_t>
KZ_HOST_DEVICE KZ_INLINE void sample_range(acc_t start, acc_t bin, int p, int grid, int size,
                                           int& first, int& last) {
  first = 0;
  last = grid;
  if (grid <= 16) return;
  const acc_t top = static_cast<acc_t>(size);
  if (!(bin == bin) || !(start == start)) {  // NaN: no sample is on the map
    last = 0;
    return;
  }
  const bool up = bin >= acc_t(0);
  // The first i in [lo, grid) at which `past` holds (monotone: false, then true).
  auto bisect = [&](int lo, bool below) {
    int hi = grid;
    while (lo < hi) {
      const int mid = lo + (hi - lo) / 2;
      const acc_t v = sample_coord(start, bin, p, mid, grid);
      // up: past the low end is v >= -1, past the high end v > size;
      // down: past the high end is v <= size, past the low end v < -1.
      const bool past = below ? (up ? v >= acc_t(-1) : v <= top) : (up ? v > top : v < acc_t(-1));
      if (past) {
        hi = mid;
      } else {
        lo = mid + 1;
      }
    }
    return lo;
  };
  first = bisect(0, true);
  last = bisect(first, false);
}

// Calls f(y, x) with the two axes' interpolations of every sample of bin
// (ph, pw) that contributes, row by row.
template <typename acc_t, typename F>
KZ_HOST_DEVICE KZ_INLINE void for_each_sample(const AlignRoi<acc_t>& g, int ph, int pw,
                                              int height, int width, F&& f) {
  int y0, y1, x0, x1;
  sample_range(g.start_h, g.bin_h, ph, g.grid_h, height, y0, y1);
  sample_range(g.start_w, g.bin_w, pw, g.grid_w, width, x0, x1);
  for (int iy = y0; iy < y1; ++iy) {
    Interp<acc_t> y;
    if (!align_sample(g.start_h, g.bin_h, ph, iy, g.grid_h, height, y)) continue;
    for (int ix = x0; ix < x1; ++ix) {
      Interp<acc_t> x;
      if (!align_sample(g.start_w, g.bin_w, pw, ix, g.grid_w, width, x)) continue;
      f(y, x);
    }
  }
}

// ---------------------------------------------------------------------------
// roi_pool
// ---------------------------------------------------------------------------

template <typename acc_t>
struct PoolRoi {
  int64_t start_h, start_w;  // rounded top-left corner on the feature map
  acc_t bin_h, bin_w;        // bin size; the roi is at least 1x1 pixel
};

// A rounded coordinate as an integer, as torchvision's cast to int, clamped
// into a range where int64 sums cannot overflow (NaN goes to the low end).
template <typename acc_t>
KZ_HOST_DEVICE KZ_INLINE int64_t clamp_to_int64(acc_t v) {
  constexpr acc_t kLimit = acc_t(int64_t{1} << 60);
  if (!(v >= -kLimit)) return -(int64_t{1} << 60);
  if (v > kLimit) return int64_t{1} << 60;
  return static_cast<int64_t>(v);
}

// As torchvision: corners rounded to whole pixels in acc_t, the roi size and
// every bin edge formed in integers from there (exact on any map), the bin
// size in acc_t.
template <typename acc_t>
KZ_HOST_DEVICE KZ_INLINE PoolRoi<acc_t> pool_roi(const RoiBox<acc_t>& b, acc_t spatial_scale,
                                                 int pooled_h, int pooled_w) {
  PoolRoi<acc_t> r;
  r.start_w = clamp_to_int64(kz_round(b.x1 * spatial_scale));
  r.start_h = clamp_to_int64(kz_round(b.y1 * spatial_scale));
  const int64_t end_w = clamp_to_int64(kz_round(b.x2 * spatial_scale));
  const int64_t end_h = clamp_to_int64(kz_round(b.y2 * spatial_scale));
  // Malformed rois are forced to be 1x1 (inclusive end: +1).
  const int64_t roi_w = end_w - r.start_w + 1 > 1 ? end_w - r.start_w + 1 : 1;
  const int64_t roi_h = end_h - r.start_h + 1 > 1 ? end_h - r.start_h + 1 : 1;
  r.bin_h = static_cast<acc_t>(roi_h) / static_cast<acc_t>(pooled_h);
  r.bin_w = static_cast<acc_t>(roi_w) / static_cast<acc_t>(pooled_w);
  return r;
}

// Pixel range [lo, hi) of bin p along one axis, clipped to [0, size]; empty when
// hi <= lo. As torchvision: floor / ceil of p * bin in acc_t, then the roi
// start added in integers.
template <typename acc_t>
KZ_HOST_DEVICE KZ_INLINE void pool_bin(int64_t start, acc_t bin, int p, int size, int& lo,
                                       int& hi) {
  int64_t l = clamp_to_int64(kz_floor(static_cast<acc_t>(p) * bin)) + start;
  int64_t h = clamp_to_int64(kz_ceil(static_cast<acc_t>(p + 1) * bin)) + start;
  l = l < 0 ? 0 : (l > size ? size : l);
  h = h < 0 ? 0 : (h > size ? size : h);
  lo = static_cast<int>(l);
  hi = static_cast<int>(h);
}

// Start value of a bin's maximum (torchvision: -FLT_MAX; values not above it,
// -inf and NaN, are never selected, and an all-such bin keeps argmax -1).
constexpr float kPoolLowest = -3.40282346638528859811704183484516925e+38f;

}  // namespace roi_detail
}  // namespace kernelzoo
