// Host-side pieces of roi_pool shared by the CPU and CUDA implementations and
// the C++ tests: the op's arguments, validation and output allocation.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace kernelzoo {
namespace roi_pool_detail {

struct Args {
  double spatial_scale;
  int64_t pooled_h, pooled_w;
};

struct Forward {
  at::Tensor input;   // (N, C, H, W), any strides
  at::Tensor rois;    // (K, 5), any strides
  at::Tensor output;  // (K, C, PH, PW), contiguous, on input's device
  at::Tensor argmax;  // int32, same shape, contiguous
  Args args;
};

Forward prepare_forward(const at::Tensor& input, const at::Tensor& rois, const Args& args);

struct Backward {
  at::Tensor grad;        // (K, C, PH, PW), any strides
  at::Tensor rois;        // (K, 5)
  at::Tensor argmax;      // int32 (K, C, PH, PW), contiguous
  at::Tensor grad_input;  // (N, C, H, W), contiguous, uninitialised: the kernels write all of it
  Args args;
  int64_t batch_size, channels, height, width;
};

Backward prepare_backward(const at::Tensor& grad, const at::Tensor& rois, const at::Tensor& argmax,
                          const Args& args, int64_t batch_size, int64_t channels, int64_t height,
                          int64_t width);

}  // namespace roi_pool_detail
}  // namespace kernelzoo
