// Host side of deform_conv2d shared by its CPU and CUDA entry points and the
// C++ tests: the validated problem (prepare, defined in deform_conv2d.cpp with
// the checks that raise the documented errors, mirrored by the fake kernels in
// pyext/kernelzoo/ops/deform_conv2d.py), and the sizes of the chunks of images
// the kernels work on.
#pragma once

#include <ATen/core/Tensor.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <tuple>

#include "deform_conv2d_params.h"

namespace kernelzoo {
namespace deform_detail {

struct Problem {
  // Contiguous: input (N, C, H, W), weight, offset, mask (undefined for v1),
  // bias (undefined when absent); all of input's dtype and device.
  at::Tensor input, weight, offset, mask, bias;
  Geometry g;
};

// The forward's arguments (name: the op, for messages).
Problem prepare(const char* name, const at::Tensor& input, const at::Tensor& weight,
                const at::Tensor& offset, const std::optional<at::Tensor>& mask,
                const std::optional<at::Tensor>& bias, int64_t stride_h, int64_t stride_w,
                int64_t pad_h, int64_t pad_w, int64_t dil_h, int64_t dil_w, int64_t groups,
                int64_t offset_groups);

// The backward's: the forward's problem and grad (N, C_out, H_out, W_out),
// contiguous.
struct BackwardProblem {
  Problem p;
  at::Tensor grad;
};

BackwardProblem prepare_backward(const at::Tensor& grad, const at::Tensor& input,
                                 const at::Tensor& weight, const at::Tensor& offset,
                                 const std::optional<at::Tensor>& mask,
                                 const std::optional<at::Tensor>& bias, int64_t stride_h,
                                 int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dil_h,
                                 int64_t dil_w, int64_t groups, int64_t offset_groups);

// The backward's outputs: the gradients of input, weight, offset and mask
// (empty without a mask), allocated like them, uninitialised; and the bias's
// gradient (the sum of grad over N, H, W; empty without a bias).
struct Grads {
  at::Tensor input, weight, offset, mask, bias;
  std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> tuple() const {
    return {input, weight, offset, mask, bias};
  }
};
Grads allocate_grads(const BackwardProblem& b);

// The forward's output (N, C_out, H_out, W_out), contiguous, uninitialised.
at::Tensor allocate_output(const Problem& p);

// Images per chunk: the column buffer (C * kh * kw rows of acc_t, one column
// per output position of the chunk's images) and the sampling table (a
// Sample per offset group, tap and position) stay within about kChunkBytes;
// at least one image.
constexpr int64_t kChunkBytes = int64_t{64} << 20;
template <typename acc_t>
int64_t images_per_chunk(const Geometry& g) {
  const int64_t per_image = g.taps() * g.positions() *
                            (g.C * static_cast<int64_t>(sizeof(acc_t)) +
                             g.offset_groups * static_cast<int64_t>(sizeof(Sample<acc_t>)));
  return std::max<int64_t>(1,
                           std::min<int64_t>(g.N, kChunkBytes / std::max<int64_t>(per_image, 1)));
}

}  // namespace deform_detail
}  // namespace kernelzoo
