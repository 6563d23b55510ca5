// Bilinear sampling of a 2-d plane, shared by every op that samples a feature
// map at fractional coordinates (roi_align; deform_conv2d), on CPU and CUDA.
// Kernel-safe: no tensor or runtime headers.
//
// A bilinear sample is separable: along each axis a coordinate v picks two
// neighbouring pixels lo, hi and weights wlo + whi = 1 (an Interp), and the
// sample is  sum over a in {lo, hi} (y), b in {lo, hi} (x) of  wy_a * wx_b * plane[a][b].
// What happens at the border is the op's rule, a type parameter:
//
//   ClampBorder (torchvision's roi_align): a coordinate in [-1, size] is valid;
//     below 0 it is clamped to 0 and past the last pixel to it (both taps on the
//     border pixel); outside [-1, size] the sample contributes nothing.
//   ZeroBorder (torchvision's deform_conv2d): a coordinate in (-1, size) is
//     valid and never clamped; a tap that falls outside [0, size - 1] reads zero,
//     i.e. gets weight 0 (its index is moved onto the other, valid tap so that
//     reading it stays in bounds); outside (-1, size) the sample is zero.
//
// interp1d<Border>(v, size, out) returns false when the sample contributes
// nothing (NaN coordinates included); an empty axis (size 0) has no pixel.
#pragma once

#include "macros.h"
#include "scalar_math.h"

namespace kernelzoo {

template <typename acc_t>
struct Interp {
  int lo, hi;      // pixel indices, both in [0, size)
  acc_t wlo, whi;  // their weights
};

struct ClampBorder {
  template <typename acc_t>
  static KZ_HOST_DEVICE KZ_INLINE bool interp(acc_t v, int size, Interp<acc_t>& out) {
    // Written as !(in range) so that NaN takes this branch.
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
};

struct ZeroBorder {
  template <typename acc_t>
  static KZ_HOST_DEVICE KZ_INLINE bool interp(acc_t v, int size, Interp<acc_t>& out) {
    if (!(v > acc_t(-1) && v < static_cast<acc_t>(size)) || size <= 0) return false;
    const acc_t f = kz_floor(v);
    const acc_t l = v - f;
    int lo = static_cast<int>(f);
    int hi = lo + 1;
    acc_t wlo = acc_t(1) - l, whi = l;
    if (lo < 0) {  // v in (-1, 0): only the hi tap (pixel 0) is on the map
      lo = hi;
      wlo = acc_t(0);
    }
    if (hi > size - 1) {  // v in [size - 1, size): only the lo tap is on the map
      hi = lo;
      whi = acc_t(0);
    }
    out.lo = lo;
    out.hi = hi;
    out.wlo = wlo;
    out.whi = whi;
    return true;
  }
};

template <typename Border, typename acc_t>
KZ_HOST_DEVICE KZ_INLINE bool interp1d(acc_t v, int size, Interp<acc_t>& out) {
  return Border::interp(v, size, out);
}

// The taps of a sample: calls add(offset, weight) for each of the four taps of
// non-zero weight, in torchvision's order (lo/lo, lo/hi, hi/lo, hi/hi), with
// offsets into a plane of element strides (sh, sw). A backward scatters
// through it; bilinear() below gathers through it.
template <typename acc_t, typename index_t, typename Add>
KZ_HOST_DEVICE KZ_INLINE void bilinear_taps(index_t sh, index_t sw, const Interp<acc_t>& y,
                                            const Interp<acc_t>& x, Add&& add) {
  const index_t r0 = static_cast<index_t>(y.lo) * sh, r1 = static_cast<index_t>(y.hi) * sh;
  const index_t c0 = static_cast<index_t>(x.lo) * sw, c1 = static_cast<index_t>(x.hi) * sw;
  const acc_t w[4] = {y.wlo * x.wlo, y.wlo * x.whi, y.whi * x.wlo, y.whi * x.whi};
  const index_t off[4] = {r0 + c0, r0 + c1, r1 + c0, r1 + c1};
  for (int t = 0; t < 4; ++t) {
    if (w[t] != acc_t(0)) add(off[t], w[t]);
  }
}

// One bilinear sample of a plane with element strides (sh, sw): the taps'
// w * value with w = (y weight) * (x weight), summed in the order torchvision
// sums them. A tap of weight zero contributes nothing, not 0 * value, so that
// an inf or NaN pixel next to a sample that does not touch it stays out of the
// result; for finite values the sum is the same.
template <typename acc_t, typename scalar_t, typename index_t>
KZ_HOST_DEVICE KZ_INLINE acc_t bilinear(const scalar_t* plane, index_t sh, index_t sw,
                                        const Interp<acc_t>& y, const Interp<acc_t>& x) {
  acc_t sum = acc_t(0);
  bilinear_taps(sh, sw, y, x, [&](index_t off, acc_t w) {
    sum += w * static_cast<acc_t>(plane[off]);
  });
  return sum;
}

}  // namespace kernelzoo
