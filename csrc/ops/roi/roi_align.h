// kernelzoo C++ API: roi_align through the dispatcher, for LibTorch users.
// Semantics are those of torchvision::ops::roi_align (Mask R-CNN's RoIAlign):
// output[k, c, ph, pw] is the average of sampling_ratio x sampling_ratio
// bilinear samples (adaptive, ceil(roi size / output size), when
// sampling_ratio <= 0) in bin (ph, pw) of roi k on input[rois[k, 0], c].
//   input: (N, C, H, W) float64/float32/float16/bfloat16, any layout
//   rois:  (K, 5) rows (batch_index, x1, y1, x2, y2) in input coordinates / spatial_scale,
//          same dtype and device as input
//   returns (K, C, pooled_height, pooled_width), contiguous
// aligned=true shifts the box by -0.5 pixel (Detectron2). The Python function
// kernelzoo.ops.roi_align also takes boxes as a list of (L, 4) tensors.
#pragma once

#include <ATen/core/Tensor.h>

namespace kernelzoo {

at::Tensor roi_align(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                     int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio = -1,
                     bool aligned = false);

// The gradient of roi_align with respect to its input: (N, C, H, W) =
// (batch_size, channels, height, width), contiguous. Deterministic on CPU; on
// CUDA deterministic when at::globalContext().deterministicAlgorithms() is set.
at::Tensor roi_align_backward(const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                              int64_t pooled_height, int64_t pooled_width, int64_t batch_size,
                              int64_t channels, int64_t height, int64_t width,
                              int64_t sampling_ratio, bool aligned);

}  // namespace kernelzoo
