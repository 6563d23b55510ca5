// kernelzoo C++ API: roi_align and roi_pool through the dispatcher, for LibTorch
// users. Semantics are torchvision::ops' (Mask R-CNN's RoIAlign, Fast R-CNN's
// RoIPool); the Python functions kernelzoo.ops.roi_align / roi_pool also take
// boxes as a list of (L, 4) tensors.
//   input: (N, C, H, W) float64/float32/float16/bfloat16, any layout
//   rois:  (K, 5) rows (batch_index, x1, y1, x2, y2) in input coordinates /
//          spatial_scale, same dtype and device as input
// Outputs are contiguous. The backward functions are deterministic on CPU; on
// CUDA, deterministic when at::globalContext().deterministicAlgorithms() is set.
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

namespace kernelzoo {

// output[k, c, ph, pw] is the average of sampling_ratio x sampling_ratio
// bilinear samples (adaptive, ceil(roi size / output size), when
// sampling_ratio <= 0) in bin (ph, pw) of roi k on input[rois[k, 0], c];
// (K, C, pooled_height, pooled_width). aligned=true shifts the box by -0.5
// pixel (Detectron2).
at::Tensor roi_align(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                     int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio = -1,
                     bool aligned = false);

// The gradient of roi_align with respect to its input: (batch_size, channels,
// height, width).
at::Tensor roi_align_backward(const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                              int64_t pooled_height, int64_t pooled_width, int64_t batch_size,
                              int64_t channels, int64_t height, int64_t width,
                              int64_t sampling_ratio, bool aligned);

// The box is rounded to whole pixels (scaled by spatial_scale), split into
// pooled_height x pooled_width bins with floor/ceil edges, and each bin takes
// the maximum of input[rois[k, 0], c] over its pixels (0 for an empty bin).
// Returns (output, argmax): output (K, C, pooled_height, pooled_width); argmax
// int32 of the same shape, the index y * W + x of each bin's maximum in its
// input plane (-1: empty bin, or no value above -FLT_MAX), for the backward.
std::tuple<at::Tensor, at::Tensor> roi_pool(const at::Tensor& input, const at::Tensor& rois,
                                            double spatial_scale, int64_t pooled_height,
                                            int64_t pooled_width);

// The gradient of roi_pool with respect to its input: grad[k, c, ph, pw] added
// at input[rois[k, 0], c] (argmax[k, c, ph, pw]); (batch_size, channels,
// height, width).
at::Tensor roi_pool_backward(const at::Tensor& grad, const at::Tensor& rois,
                             const at::Tensor& argmax, double spatial_scale, int64_t pooled_height,
                             int64_t pooled_width, int64_t batch_size, int64_t channels,
                             int64_t height, int64_t width);

}  // namespace kernelzoo
