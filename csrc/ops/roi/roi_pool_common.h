// Parameters of the roi_pool CUDA kernels (roi_pool_kernel.cuh), filled by the
// host code in roi_pool_launch.cuh. Kernel-safe: no tensor or runtime headers.
#pragma once

#include "roi_common.h"

namespace kernelzoo {
namespace roi_pool_detail {

// roi_pool needs nothing beyond what both ops share.
template <typename index_t>
using PoolParams = roi_detail::RoiParams<index_t>;

}  // namespace roi_pool_detail
}  // namespace kernelzoo
