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

// Clamps a rounded coordinate into a range where int arithmetic cannot
// overflow; NaN goes to the low end. Finite boxes on any real feature map are
// far inside it.
constexpr int kCoordLimit = 1 << 29;
template <typename acc_t>
KZ_HOST_DEVICE KZ_INLINE int clamp_to_int(acc_t v) {
  if (!(v >= acc_t(-kCoordLimit))) return -kCoordLimit;
  if (v > acc_t(kCoordLimit)) return kCoordLimit;
  return static_cast<int>(v);
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

// Largest adaptive sampling grid per bin and axis (torchvision: unbounded, with
// int overflow past 2^31). A bin that needs more samples than this spans more
// than 2^16 feature-map pixels along one axis.
constexpr int kMaxAdaptiveGrid = 1 << 16;

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
  return g < acc_t(kMaxAdaptiveGrid) ? static_cast<int>(g) : kMaxAdaptiveGrid;
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

// Calls f(y, x) with the two axes' interpolations of every sample of bin
// (ph, pw) that contributes, row by row.
template <typename acc_t, typename F>
KZ_HOST_DEVICE KZ_INLINE void for_each_sample(const AlignRoi<acc_t>& g, int ph, int pw,
                                              int height, int width, F&& f) {
  for (int iy = 0; iy < g.grid_h; ++iy) {
    Interp<acc_t> y;
    if (!align_sample(g.start_h, g.bin_h, ph, iy, g.grid_h, height, y)) continue;
    for (int ix = 0; ix < g.grid_w; ++ix) {
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
  int start_h, start_w;  // rounded top-left corner on the feature map
  acc_t bin_h, bin_w;    // bin size; the roi is at least 1x1 pixel
};

template <typename acc_t>
KZ_HOST_DEVICE KZ_INLINE PoolRoi<acc_t> pool_roi(const RoiBox<acc_t>& b, acc_t spatial_scale,
                                                 int pooled_h, int pooled_w) {
  PoolRoi<acc_t> r;
  r.start_w = clamp_to_int(kz_round(b.x1 * spatial_scale));
  r.start_h = clamp_to_int(kz_round(b.y1 * spatial_scale));
  const int end_w = clamp_to_int(kz_round(b.x2 * spatial_scale));
  const int end_h = clamp_to_int(kz_round(b.y2 * spatial_scale));
  // Malformed rois are forced to be 1x1 (inclusive end: +1).
  const int roi_w = end_w - r.start_w + 1 > 1 ? end_w - r.start_w + 1 : 1;
  const int roi_h = end_h - r.start_h + 1 > 1 ? end_h - r.start_h + 1 : 1;
  r.bin_h = static_cast<acc_t>(roi_h) / static_cast<acc_t>(pooled_h);
  r.bin_w = static_cast<acc_t>(roi_w) / static_cast<acc_t>(pooled_w);
  return r;
}

// Pixel range [lo, hi) of bin p along one axis, clipped to [0, size]; empty when hi <= lo.
template <typename acc_t>
KZ_HOST_DEVICE KZ_INLINE void pool_bin(int start, acc_t bin, int p, int size, int& lo, int& hi) {
  // floor/ceil of the bin edges, offset by the roi start, then clipped. Done in
  // acc_t so that no int can overflow; exact for any coordinate below 2^24.
  acc_t l = kz_floor(static_cast<acc_t>(p) * bin) + static_cast<acc_t>(start);
  acc_t h = kz_ceil(static_cast<acc_t>(p + 1) * bin) + static_cast<acc_t>(start);
  const acc_t top = static_cast<acc_t>(size);
  l = l < acc_t(0) ? acc_t(0) : (l > top ? top : l);
  h = h < acc_t(0) ? acc_t(0) : (h > top ? top : h);
  lo = static_cast<int>(l);
  hi = static_cast<int>(h);
}

// Start value of a bin's maximum (torchvision: -FLT_MAX; values not above it,
// -inf and NaN, are never selected, and an all-such bin keeps argmax -1).
constexpr float kPoolLowest = -3.40282346638528859811704183484516925e+38f;

}  // namespace roi_detail
}  // namespace kernelzoo
