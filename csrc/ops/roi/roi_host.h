// Host-side pieces shared by roi_align and roi_pool: argument checks (the
// documented errors, mirrored by the fake kernels in pyext/kernelzoo/ops/), the
// CUDA kernels' common parameters and, for the CPU kernels, the grouping of
// rois by batch index.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <type_traits>
#include <string>
#include <vector>

#include "roi_common.h"

namespace kernelzoo {
namespace roi_detail {

// "float32" etc., as Python spells the dtype.
std::string dtype_name(at::ScalarType t);

// Checks of the forward ops, in this order: input rank, input dtype, boxes
// shape, boxes dtype, device, output size (positive, below 2^31), feature-map
// size. roi_align then checks its sampling ratio (below 2^31).
void check_forward_args(const char* op, const at::Tensor& input, const at::Tensor& rois,
                        int64_t pooled_h, int64_t pooled_w);

// Checks of the backward ops, in this order: sizes non-negative, output size,
// grad dtype, boxes shape, grad shape, boxes dtype, device, feature-map size.
void check_backward_args(const char* op, const at::Tensor& grad, const at::Tensor& rois,
                         int64_t pooled_h, int64_t pooled_w, int64_t batch_size,
                         int64_t channels, int64_t height, int64_t width);

// The zeroed buffer the atomic CUDA backwards add into: grad_input itself when
// scalar_t is already the accumulation type, else a float32 twin that
// finish_accumulator() converts into grad_input once at the end.
template <typename scalar_t, typename acc_t>
at::Tensor zeroed_accumulator(const at::Tensor& grad_input) {
  at::Tensor accum = std::is_same_v<scalar_t, acc_t>
                         ? grad_input
                         : at::empty(grad_input.sizes(), grad_input.options().dtype(
                                                             c10::CppTypeToScalarType<acc_t>::value));
  return accum.zero_();
}

inline void finish_accumulator(const at::Tensor& grad_input, const at::Tensor& accum) {
  if (!accum.is_same(grad_input)) grad_input.copy_(accum);
}

// The kernel parameters both ops share (the launch headers roi_*_launch.cuh):
// `total` threads' elements, t4 the 4-d tensor read through its strides (input
// or grad), the (N, C, H, W) problem and the op's pooled size and scale.
template <typename index_t>
void fill_params(RoiParams<index_t>& p, int64_t total, const at::Tensor& t4,
                 const at::Tensor& rois, int64_t batch_size, int64_t channels, int64_t height,
                 int64_t width, int64_t pooled_h, int64_t pooled_w, double spatial_scale) {
  p.total = static_cast<index_t>(total);
  p.num_rois = static_cast<index_t>(rois.size(0));
  p.channels = static_cast<index_t>(channels);
  p.height = static_cast<int>(height);
  p.width = static_cast<int>(width);
  p.pooled_h = static_cast<int>(pooled_h);
  p.pooled_w = static_cast<int>(pooled_w);
  p.batch_size = batch_size;
  p.s0 = static_cast<index_t>(t4.stride(0));
  p.s1 = static_cast<index_t>(t4.stride(1));
  p.s2 = static_cast<index_t>(t4.stride(2));
  p.s3 = static_cast<index_t>(t4.stride(3));
  p.roi_row = static_cast<index_t>(rois.stride(0));
  p.roi_col = static_cast<index_t>(rois.stride(1));
  p.spatial_scale = spatial_scale;
}

// CPU only. The rois grouped by batch index: rois order[begin[n]], ...,
// order[begin[n+1] - 1] belong to image n, in increasing roi order. Raises the
// documented error for a batch index outside [0, batch_size).
struct BatchGroups {
  std::vector<int64_t> order;  // K roi indices
  std::vector<int64_t> begin;  // batch_size + 1 offsets into order
};
BatchGroups group_by_batch(const char* op, const at::Tensor& rois, int64_t batch_size);

}  // namespace roi_detail
}  // namespace kernelzoo
