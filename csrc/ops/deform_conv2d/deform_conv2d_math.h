// The sampling of deform_conv2d, shared by its CPU and CUDA kernels: where a
// tap of an output position samples the input, and the bilinear weights and
// their derivatives there (torchvision's rule: a neighbouring pixel off the map
// reads zero, so a sample outside (-1, H) x (-1, W) is zero). Kernel-safe:
// no tensor or runtime headers.
#pragma once

#include <cstdint>

#include "../../common/macros.h"
#include "../../common/scalar_math.h"
#include "deform_conv2d_params.h"

namespace kernelzoo {
namespace deform_detail {

// The sample of tap `tap` of offset group `og` at output position `pos` of
// image n. offset and mask are the (N, ..., H_out, W_out) contiguous tensors
// (mask null: v1, a mask of one).
template <typename acc_t, typename scalar_t>
KZ_HOST_DEVICE KZ_INLINE Sample<acc_t> make_sample(const Geometry& g, const scalar_t* offset,
                                                   const scalar_t* mask, int64_t n, int64_t og,
                                                   int64_t tap, int64_t pos) {
  const int64_t P = g.positions(), K = g.taps();
  const int64_t ho = pos / g.W_out, wo = pos % g.W_out, i = tap / g.kw, j = tap % g.kw;
  const scalar_t* off = offset + ((n * g.offset_groups + og) * 2 * K + 2 * tap) * P + pos;
  const acc_t y =
      static_cast<acc_t>(ho * g.stride_h - g.pad_h + i * g.dil_h) + static_cast<acc_t>(off[0]);
  const acc_t x =
      static_cast<acc_t>(wo * g.stride_w - g.pad_w + j * g.dil_w) + static_cast<acc_t>(off[P]);
  Sample<acc_t> s;
  s.mask =
      mask ? static_cast<acc_t>(mask[((n * g.offset_groups + og) * K + tap) * P + pos]) : acc_t(1);
  for (int t = 0; t < 4; ++t) {
    s.idx[t] = -1;
    s.w[t] = s.wu[t] = s.wy[t] = s.wx[t] = acc_t(0);
  }
  // Outside [-1, H) x [-1, W) no neighbour is on the map (written as !(inside)
  // so that NaN coordinates land here too). At y = -1 (or x = -1) exactly the
  // sample is zero, its one neighbour on the map having weight zero, but the
  // derivative from above is not: torchvision's offset gradient there.
  if (!(y >= acc_t(-1) && y < static_cast<acc_t>(g.H) && x >= acc_t(-1) &&
        x < static_cast<acc_t>(g.W))) {
    return s;
  }
  const acc_t fy = kz_floor(y), fx = kz_floor(x);
  const int y0 = static_cast<int>(fy), x0 = static_cast<int>(fx);
  const acc_t ly = y - fy, lx = x - fx;
  // neighbours in torchvision's order: (y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)
  for (int t = 0; t < 4; ++t) {
    const int dy = t / 2, dx = t % 2;
    const int yy = y0 + dy, xx = x0 + dx;
    if (yy < 0 || yy >= g.H || xx < 0 || xx >= g.W) continue;  // off the map: reads zero
    const acc_t wy = dy ? ly : acc_t(1) - ly, wx = dx ? lx : acc_t(1) - lx;
    s.idx[t] = static_cast<int32_t>(yy * g.W + xx);
    s.wu[t] = wy * wx;
    s.w[t] = s.wu[t] * s.mask;
    s.wy[t] = (dy ? acc_t(1) : acc_t(-1)) * wx;
    s.wx[t] = wy * (dx ? acc_t(1) : acc_t(-1));
  }
  return s;
}

// A sample's value in one plane with the weights w (one of the Sample's four
// sets: w, wu, wy, wx); a neighbour off the map is not read.
template <typename acc_t, typename scalar_t>
KZ_HOST_DEVICE KZ_INLINE acc_t sample_value(const Sample<acc_t>& s, const acc_t* w,
                                            const scalar_t* plane) {
  acc_t v = acc_t(0);
  for (int t = 0; t < 4; ++t) {
    if (s.idx[t] >= 0) v += w[t] * static_cast<acc_t>(plane[s.idx[t]]);
  }
  return v;
}

}  // namespace deform_detail
}  // namespace kernelzoo
