// The launch functor of the roi CUDA launchers (roi_align_cuda.cu,
// roi_pool_cuda.cu): kernel<<<grid, block, 0, stream>>>(args...) on the
// current stream, then the launch check. nvcc only.
#pragma once

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <utility>

namespace kernelzoo {
namespace roi_detail {

struct CudaLaunch {
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  template <typename... Params, typename... Args>
  void operator()(void (*kernel)(Params...), unsigned grid, int block, Args&&... args) const {
    kernel<<<grid, block, 0, stream>>>(std::forward<Args>(args)...);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

}  // namespace roi_detail
}  // namespace kernelzoo
