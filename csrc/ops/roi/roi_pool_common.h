// Parameters of the roi_pool CUDA kernels (roi_pool_kernel.cuh), filled by the
// host code in roi_pool_launch.cuh. Kernel-safe: no tensor or runtime headers.
#pragma once

#include <cstdint>

#include "roi_common.h"

namespace kernelzoo {
namespace roi_pool_detail {

template <typename index_t>
struct PoolParams {
  index_t total;     // threads' elements: K*C*PH*PW (forward, atomic backward) or N*C*H*W (gather)
  index_t num_rois;  // K
  index_t channels;  // C
  int height, width, pooled_h, pooled_w;
  int64_t batch_size;  // N
  // Element strides: input (forward) or grad (backward) as (N|K, C, H|PH, W|PW).
  index_t s0, s1, s2, s3;
  index_t roi_row, roi_col;  // strides of the (K, 5) rois
  double spatial_scale;
};

}  // namespace roi_pool_detail
}  // namespace kernelzoo
