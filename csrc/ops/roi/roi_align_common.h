// Parameters of the roi_align CUDA kernels (roi_align_kernel.cuh), filled by
// the host code in roi_align_launch.cuh. Kernel-safe: no tensor or runtime headers.
#pragma once

#include "roi_common.h"

namespace kernelzoo {
namespace roi_align_detail {

template <typename index_t>
struct AlignParams : roi_detail::RoiParams<index_t> {
  int sampling_ratio;
  bool aligned;
};

}  // namespace roi_align_detail
}  // namespace kernelzoo
