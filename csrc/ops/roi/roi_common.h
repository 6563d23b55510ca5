// Geometry shared by the CPU and CUDA kernels of roi_align and roi_pool.
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

#include <math.h>

#include <cstdint>

#include "../../common/launch.h"
#include "../../common/macros.h"

namespace kernelzoo {
namespace roi_detail {

// math.h's functions by overload: the float versions on both sides of nvcc and
// in host code (std:: overloads are not all device functions).
HOST_DEVICE KZ_INLINE float kz_floor(float v) { return floorf(v); }
HOST_DEVICE KZ_INLINE double kz_floor(double v) { return floor(v); }
HOST_DEVICE KZ_INLINE float kz_ceil(float v) { return ceilf(v); }
HOST_DEVICE KZ_INLINE double kz_ceil(double v) { return ceil(v); }
HOST_DEVICE KZ_INLINE float kz_round(float v) { return roundf(v); }  // half away from zero
HOST_DEVICE KZ_INLINE double kz_round(double v) { return round(v); }

// The batch index of a roi (column 0): torchvision casts it to int, i.e.
// truncates toward zero. Returns -1 unless the truncated value is a valid
// index in [0, batch_size) (NaN included). The CPU ops raise an error for such
// a roi; the CUDA kernels, which cannot raise without a host sync, give its
// output zeros and its gradient nothing (documented in the Python docstrings).
template <typename acc_t>
HOST_DEVICE KZ_INLINE int64_t batch_index(acc_t v, int64_t batch_size) {
  // trunc(v) lies in [0, n) exactly when -1 < v < n.
  if (!(v > acc_t(-1) && v < static_cast<acc_t>(batch_size))) return -1;
  return static_cast<int64_t>(v);
}

// Clamps a rounded coordinate into a range where int arithmetic cannot
// overflow; NaN goes to the low end. Finite boxes on any real feature map are
// far inside it.
constexpr int kCoordLimit = 1 << 29;
template <typename acc_t>
HOST_DEVICE KZ_INLINE int clamp_to_int(acc_t v) {
  if (!(v >= acc_t(-kCoordLimit))) return -kCoordLimit;
  if (v > acc_t(kCoordLimit)) return kCoordLimit;
  return static_cast<int>(v);
}

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
HOST_DEVICE KZ_INLINE int align_grid(acc_t roi_size, int pooled, int sampling_ratio) {
  if (sampling_ratio > 0) return sampling_ratio;
  const acc_t g = kz_ceil(roi_size / static_cast<acc_t>(pooled));
  if (!(g > acc_t(0))) return 0;  // empty, reversed or NaN boxes: no samples
  return g < acc_t(kMaxAdaptiveGrid) ? static_cast<int>(g) : kMaxAdaptiveGrid;
}

// Geometry of one roi from its box (x1, y1, x2, y2) in input coordinates.
template <typename acc_t>
HOST_DEVICE KZ_INLINE AlignRoi<acc_t> align_roi(acc_t x1, acc_t y1, acc_t x2, acc_t y2,
                                                acc_t spatial_scale, int pooled_h, int pooled_w,
                                                int sampling_ratio, bool aligned) {
  AlignRoi<acc_t> r;
  // Half-pixel offset for aligned=True; no rounding (as torchvision).
  const acc_t offset = aligned ? acc_t(0.5) : acc_t(0);
  r.start_w = x1 * spatial_scale - offset;
  r.start_h = y1 * spatial_scale - offset;
  const acc_t end_w = x2 * spatial_scale - offset;
  const acc_t end_h = y2 * spatial_scale - offset;
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
HOST_DEVICE KZ_INLINE acc_t sample_coord(acc_t start, acc_t bin, int p, int i, int grid) {
  return start + static_cast<acc_t>(p) * bin +
         static_cast<acc_t>(i + .5f) * bin / static_cast<acc_t>(grid);
}

// Linear interpolation along one axis: the two neighbouring pixels and their
// weights. A bilinear sample is the product of one Interp per axis.
template <typename acc_t>
struct Interp {
  int lo, hi;      // pixel indices (equal at the far border)
  acc_t wlo, whi;  // weights, wlo + whi == 1
};

// False when the coordinate lies outside [-1, size]: such a sample contributes
// nothing (both axes must be valid for a sample to count). Coordinates in
// [-1, 0] are clamped to 0 and those past the last pixel to it.
template <typename acc_t>
HOST_DEVICE KZ_INLINE bool interp1d(acc_t v, int size, Interp<acc_t>& out) {
  // Written as !(in range) so that NaN takes this branch; an empty axis has no pixel.
  if (!(v >= acc_t(-1) && v <= static_cast<acc_t>(size)) || size <= 0) return false;
  if (v <= acc_t(0)) v = acc_t(0);
  int lo = static_cast<int>(v);
  int hi;
  if (lo >= size - 1) {
    hi = lo = size - 1;
    v = static_cast<acc_t>(lo);
  } else {
    hi = lo + 1;
  }
  const acc_t l = v - static_cast<acc_t>(lo);
  out.lo = lo;
  out.hi = hi;
  out.wlo = acc_t(1) - l;
  out.whi = l;
  return true;
}

// One bilinear sample of a plane with element strides (sh, sw), as torchvision's
// bilinear_interpolate: w1*v1 + w2*v2 + w3*v3 + w4*v4 with w = (y weight)*(x weight).
template <typename acc_t, typename scalar_t, typename index_t>
HOST_DEVICE KZ_INLINE acc_t bilinear(const scalar_t* plane, index_t sh, index_t sw,
                                     const Interp<acc_t>& y, const Interp<acc_t>& x) {
  const acc_t v1 = static_cast<acc_t>(plane[static_cast<index_t>(y.lo) * sh + static_cast<index_t>(x.lo) * sw]);
  const acc_t v2 = static_cast<acc_t>(plane[static_cast<index_t>(y.lo) * sh + static_cast<index_t>(x.hi) * sw]);
  const acc_t v3 = static_cast<acc_t>(plane[static_cast<index_t>(y.hi) * sh + static_cast<index_t>(x.lo) * sw]);
  const acc_t v4 = static_cast<acc_t>(plane[static_cast<index_t>(y.hi) * sh + static_cast<index_t>(x.hi) * sw]);
  const acc_t w1 = y.wlo * x.wlo, w2 = y.wlo * x.whi, w3 = y.whi * x.wlo, w4 = y.whi * x.whi;
  return w1 * v1 + w2 * v2 + w3 * v3 + w4 * v4;
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
HOST_DEVICE KZ_INLINE PoolRoi<acc_t> pool_roi(acc_t x1, acc_t y1, acc_t x2, acc_t y2,
                                              acc_t spatial_scale, int pooled_h, int pooled_w) {
  PoolRoi<acc_t> r;
  r.start_w = clamp_to_int(kz_round(x1 * spatial_scale));
  r.start_h = clamp_to_int(kz_round(y1 * spatial_scale));
  const int end_w = clamp_to_int(kz_round(x2 * spatial_scale));
  const int end_h = clamp_to_int(kz_round(y2 * spatial_scale));
  // Malformed rois are forced to be 1x1 (inclusive end: +1).
  const int roi_w = end_w - r.start_w + 1 > 1 ? end_w - r.start_w + 1 : 1;
  const int roi_h = end_h - r.start_h + 1 > 1 ? end_h - r.start_h + 1 : 1;
  r.bin_h = static_cast<acc_t>(roi_h) / static_cast<acc_t>(pooled_h);
  r.bin_w = static_cast<acc_t>(roi_w) / static_cast<acc_t>(pooled_w);
  return r;
}

// Pixel range [lo, hi) of bin p along one axis, clipped to [0, size]; empty when hi <= lo.
template <typename acc_t>
HOST_DEVICE KZ_INLINE void pool_bin(int start, acc_t bin, int p, int size, int& lo, int& hi) {
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

// ---------------------------------------------------------------------------
// CUDA kernel parameters
// ---------------------------------------------------------------------------

// What every roi kernel of both ops is given (roi_align_common.h adds the
// sampling grid and alignment); filled by fill_params() in roi_host.h.
template <typename index_t>
struct RoiParams {
  index_t total;     // threads' elements: K*C*PH*PW (forward, atomic backward) or N*C*H*W (gather)
  index_t num_rois;  // K
  index_t channels;  // C
  int height, width, pooled_h, pooled_w;
  int64_t batch_size;  // N
  // Element strides: input (forward) or grad (backward) as (N|K, C, H|PH, W|PW).
  index_t s0, s1, s2, s3;
  index_t roi_row, roi_col;  // strides of the (K, 5) rois
  double spatial_scale;
};

// Coordinates (n, c, h, w) of element e of a contiguous (N, C, H, W) tensor:
// the kernels give each thread one element of an output (K, C, PH, PW) or of a
// gradient (N, C, H, W) in this order.
template <typename index_t>
struct Nchw {
  index_t n, c;
  int h, w;
};

template <typename index_t>
HOST_DEVICE KZ_INLINE Nchw<index_t> unravel_nchw(index_t e, index_t channels, int height,
                                                 int width) {
  const int w = static_cast<int>(e % width);
  index_t t = e / width;
  const int h = static_cast<int>(t % height);
  t /= height;
  return {t / channels, t % channels, h, w};
}

// Per-roi summary written by the first kernel of the deterministic backward
// passes: the batch index (-1: invalid) and the inclusive pixel bounds that the
// roi's samples or bins touch (row_lo > row_hi when none).
struct RoiBounds {
  int batch, row_lo, row_hi, col_lo, col_hi;
};

}  // namespace roi_detail
}  // namespace kernelzoo
