// The one way kernelzoo launches a CUDA kernel. nvcc only: include it from a
// launcher (<op>_cuda.cu), never from a kernel body.
//
//     CudaLaunch{}(kernel, grid, block, shared_bytes, args...);
//
// launches kernel<<<grid, block, shared_bytes, stream>>>(args...) on the current
// stream of the current device (read at the call, so a functor built earlier
// follows later stream changes), raising the kernel's dynamic shared-memory
// limit first when it asks for more than the default 48 KiB, then checks the
// launch. Launch plans (<op>_plan.h) are templates over a functor with this call;
// the C++ tests pass the CPU-harness adapter (tests/cpp/harness/harness_launch.h)
// instead, so that they run exactly the launches the plan makes.
#pragma once

#if !defined(__CUDACC__)
#error "cuda_launch.h is for CUDA launchers (*_cuda.cu) compiled by nvcc"
#endif

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <utility>

#include "index_width.h"

namespace kernelzoo {

struct CudaLaunch {
  // Launches pick int32 indices whenever every offset fits.
  static constexpr Index index = Index::Auto;

  template <typename... Params, typename... Args>
  void operator()(void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t shared_bytes,
                  Args&&... args) const {
    constexpr std::size_t kDefaultSharedLimit = 48 * 1024;
    if (shared_bytes > kDefaultSharedLimit) {
      C10_CUDA_CHECK(cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel),
                                          cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(shared_bytes)));
    }
    kernel<<<grid, block, shared_bytes, c10::cuda::getCurrentCUDAStream()>>>(
        std::forward<Args>(args)...);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

}  // namespace kernelzoo
