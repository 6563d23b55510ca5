// kernelzoo C++ API: roi_pool through the dispatcher, for LibTorch users.
// Semantics are those of torchvision::ops::roi_pool (Fast R-CNN's RoIPool): the
// box is rounded to whole pixels (scaled by spatial_scale), split into
// pooled_height x pooled_width bins with floor/ceil edges, and each bin takes
// the maximum of input[rois[k, 0], c] over its pixels (0 for an empty bin).
//   input: (N, C, H, W) float64/float32/float16/bfloat16, any layout
//   rois:  (K, 5) rows (batch_index, x1, y1, x2, y2), same dtype and device as input
//   returns (output, argmax): output (K, C, pooled_height, pooled_width), contiguous;
//   argmax int32 of the same shape, the index y * W + x of each bin's maximum in
//   its input plane (-1: empty bin, or no value above -FLT_MAX), for the backward.
// The Python function kernelzoo.ops.roi_pool returns only the output and also
// takes boxes as a list of (L, 4) tensors.
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

namespace kernelzoo {

std::tuple<at::Tensor, at::Tensor> roi_pool(const at::Tensor& input, const at::Tensor& rois,
                                            double spatial_scale, int64_t pooled_height,
                                            int64_t pooled_width);

// The gradient of roi_pool with respect to its input: grad[k, c, ph, pw] added
// at input[rois[k, 0], c] (argmax[k, c, ph, pw]); (batch_size, channels, height,
// width), contiguous. Deterministic on CPU; on CUDA deterministic when
// at::globalContext().deterministicAlgorithms() is set.
at::Tensor roi_pool_backward(const at::Tensor& grad, const at::Tensor& rois,
                             const at::Tensor& argmax, double spatial_scale, int64_t pooled_height,
                             int64_t pooled_width, int64_t batch_size, int64_t channels,
                             int64_t height, int64_t width);

}  // namespace kernelzoo
