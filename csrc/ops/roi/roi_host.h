// Host-side pieces shared by roi_align and roi_pool: argument checks (the
// documented errors, mirrored by the fake kernels in pyext/kernelzoo/ops/) and,
// for the CPU kernels, the grouping of rois by batch index.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace kernelzoo {
namespace roi_detail {

// "float32" etc., as Python spells the dtype.
std::string dtype_name(at::ScalarType t);

// Checks of the forward ops, in this order: input rank, input dtype, boxes
// shape, boxes dtype, device, output size, feature-map size.
void check_forward_args(const char* op, const at::Tensor& input, const at::Tensor& rois,
                        int64_t pooled_h, int64_t pooled_w);

// Checks of the backward ops, in this order: sizes non-negative, output size,
// grad dtype, boxes shape, grad shape, boxes dtype, device, feature-map size.
void check_backward_args(const char* op, const at::Tensor& grad, const at::Tensor& rois,
                         int64_t pooled_h, int64_t pooled_w, int64_t batch_size,
                         int64_t channels, int64_t height, int64_t width);

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
