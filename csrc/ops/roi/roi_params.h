// Plain parameter structs of the roi_align / roi_pool CUDA kernels, filled by
// the launch plan (roi_plan.h). Kernel-safe: no tensor or runtime headers.
#pragma once

#include <cstdint>

namespace kernelzoo {
namespace roi_detail {

// What every roi kernel of both ops is given.
template <typename index_t>
struct RoiParams {
  index_t total;     // threads' elements: K*C*PH*PW (forward, atomic backward) or N*C*H*W (gather)
  index_t num_rois;  // K
  index_t channels;  // C
  int height, width, pooled_h, pooled_w;
  int64_t batch_size;  // N
  // Element strides: input (forward) or grad (backward) as (N|K, C, H|PH, W|PW).
  index_t s0, s1, s2, s3;
  index_t roi_row, roi_col;  // strides of the (K, 5) rois
  double spatial_scale;
  int sampling_ratio;  // roi_align: samples per bin and axis; 0: adaptive
  bool aligned;        // roi_align: half-pixel offset
};

// Per-roi summary written by the first kernel of the deterministic backward
// passes: the batch index (-1: invalid) and the inclusive pixel bounds that the
// roi's samples or bins touch (row_lo > row_hi when none).
struct RoiBounds {
  int batch, row_lo, row_hi, col_lo, col_hi;
};

}  // namespace roi_detail
}  // namespace kernelzoo
