// Index math of pixel_shuffle / pixel_unshuffle shared by the CPU and CUDA
// kernels (the bijection is described in pixel_shuffle_params.h). Kernel-safe:
// no tensor or runtime headers.
#pragma once

#include "../../common/macros.h"
#include "pixel_shuffle_params.h"

namespace kernelzoo {
namespace pixel_shuffle_detail {

// Offset into `lo` of the element that corresponds to hi[n, c, oh, ow].
template <typename index_t>
KZ_HOST_DEVICE KZ_INLINE index_t lo_offset_of_hi(const ShapeT<index_t>& s,
                                                 const Strides4T<index_t>& lo, index_t n,
                                                 index_t c, index_t oh, index_t ow) {
  const index_t h = oh / s.r, i = oh - h * s.r;
  const index_t w = ow / s.r, j = ow - w * s.r;
  return n * lo.n + (c * s.r * s.r + i * s.r + j) * lo.c + h * lo.h + w * lo.w;
}

// Offset into `hi` of the element that corresponds to lo[n, oc, h, w].
template <typename index_t>
KZ_HOST_DEVICE KZ_INLINE index_t hi_offset_of_lo(const ShapeT<index_t>& s,
                                                 const Strides4T<index_t>& hi, index_t n,
                                                 index_t oc, index_t h, index_t w) {
  const index_t rr = s.r * s.r;
  const index_t c = oc / rr, ij = oc - c * rr;
  const index_t i = ij / s.r, j = ij - i * s.r;
  return n * hi.n + c * hi.c + (h * s.r + i) * hi.h + (w * s.r + j) * hi.w;
}

}  // namespace pixel_shuffle_detail
}  // namespace kernelzoo
