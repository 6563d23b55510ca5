// Host side of roi_align and roi_pool shared by their CPU and CUDA entry points
// and the C++ tests: the ops' validated arguments and allocated outputs
// (prepare_forward / prepare_backward, defined in roi.cpp with the checks that
// raise the documented errors, mirrored by the fake kernels in
// pyext/kernelzoo/ops/_roi.py).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <string>

namespace kernelzoo {
namespace roi_detail {

enum class RoiOp { Align, Pool };

// "roi_align" / "roi_pool", and their backward ops' names.
const char* op_name(RoiOp op);
const char* backward_name(RoiOp op);

struct Args {
  double spatial_scale;
  int64_t pooled_h, pooled_w;
  int64_t sampling_ratio = 0;  // roi_align: samples per bin and axis; <= 0 (stored as 0): adaptive
  bool aligned = false;        // roi_align: half-pixel offset
};

struct Forward {
  RoiOp op;
  at::Tensor input;   // (N, C, H, W), any strides
  at::Tensor rois;    // (K, 5), any strides
  at::Tensor output;  // (K, C, PH, PW), contiguous, on input's device
  at::Tensor argmax;  // roi_pool: int32, same shape, contiguous; undefined for roi_align
  Args args;
};

Forward prepare_forward(RoiOp op, const at::Tensor& input, const at::Tensor& rois,
                        const Args& args);

struct Backward {
  RoiOp op;
  at::Tensor grad;        // (K, C, PH, PW), any strides
  at::Tensor rois;        // (K, 5)
  at::Tensor argmax;      // roi_pool: int32 (K, C, PH, PW), contiguous; undefined for roi_align
  at::Tensor grad_input;  // (N, C, H, W), contiguous, uninitialised: the kernels write all of it
  Args args;
  int64_t batch_size, channels, height, width;
};

// `argmax` is roi_pool's second output; pass an undefined tensor for roi_align.
Backward prepare_backward(RoiOp op, const at::Tensor& grad, const at::Tensor& rois,
                          const at::Tensor& argmax, const Args& args, int64_t batch_size,
                          int64_t channels, int64_t height, int64_t width);

}  // namespace roi_detail
}  // namespace kernelzoo
