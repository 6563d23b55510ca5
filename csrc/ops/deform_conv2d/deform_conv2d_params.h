// Plain structs of deform_conv2d shared by its CPU kernels, CUDA kernels and
// launch plan: the convolution's geometry and the sampling table. Kernel-safe:
// no tensor or runtime headers.
#pragma once

#include <cstdint>

#include "../../common/macros.h"

namespace kernelzoo {
namespace deform_detail {

// The convolution: input (N, C, H, W), weight (C_out, C / groups, kh, kw),
// offset (N, 2 * offset_groups * kh * kw, H_out, W_out), mask (N, offset_groups
// * kh * kw, H_out, W_out), output (N, C_out, H_out, W_out).
struct Geometry {
  int64_t N = 0, C = 0, H = 0, W = 0, C_out = 0, H_out = 0, W_out = 0;
  int64_t kh = 1, kw = 1, stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0;
  int64_t dil_h = 1, dil_w = 1, groups = 1, offset_groups = 1;
  KZ_HOST_DEVICE int64_t taps() const { return kh * kw; }
  KZ_HOST_DEVICE int64_t positions() const { return H_out * W_out; }
};

// One bilinear sample of a tap at an output position, for every channel of
// its offset group: the four neighbouring pixels (offsets into an H x W plane;
// -1 for a neighbour off the map, which reads zero and is not read) and their
// weights. w includes the mask; wu does not (the mask's gradient); wy / wx are
// the derivatives of the unmasked weights with respect to the sample's y and x
// (the offset's gradient; at an integer coordinate the weights of floor and
// floor + 1 are used, the derivative from above, as torchvision, also at -1).
// Readers test idx >= 0, not a weight: a neighbour on the map with weight zero
// (an integer coordinate) still carries a derivative.
template <typename acc_t>
struct Sample {
  int32_t idx[4];
  acc_t w[4], wu[4], wy[4], wx[4];
  acc_t mask;
};

}  // namespace deform_detail
}  // namespace kernelzoo
