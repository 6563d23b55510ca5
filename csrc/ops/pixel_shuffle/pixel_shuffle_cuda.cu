// CUDA launchers of pixel_shuffle / pixel_unshuffle: argument handling is shared
// with the CPU path (pixel_shuffle.cpp), the choice of element type, index width
// and grid with the CPU-harness tests (dispatch_kernel in pixel_shuffle_host.h);
// this file only launches the kernel on the current stream.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "pixel_shuffle_host.h"
#include "pixel_shuffle_kernel.cuh"

namespace kernelzoo {
namespace pixel_shuffle_detail {
namespace {

// Runs the kernel dispatch_kernel() picks on the current stream.
struct CudaLauncher {
  const Problem& p;
  cudaStream_t stream;

  template <typename T, typename index_t>
  void launch(const KernelParams<index_t>& params, unsigned grid, int block) const {
    pixel_shuffle_kernel<T, index_t><<<grid, block, 0, stream>>>(
        static_cast<T*>(p.dst.mutable_data_ptr()), static_cast<const T*>(p.src.const_data_ptr()),
        params);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

at::Tensor forward(const at::Tensor& input, int64_t factor, Direction direction) {
  c10::cuda::CUDAGuard guard(input.device());
  Problem p = prepare(input, factor, direction);
  if (p.output.numel() == 0) return p.output;
  dispatch_kernel(p, CudaLauncher{p, c10::cuda::getCurrentCUDAStream()});
  return p.output;
}

at::Tensor pixel_shuffle_cuda(const at::Tensor& input, int64_t upscale_factor) {
  return forward(input, upscale_factor, Direction::Shuffle);
}

at::Tensor pixel_unshuffle_cuda(const at::Tensor& input, int64_t downscale_factor) {
  return forward(input, downscale_factor, Direction::Unshuffle);
}

}  // namespace
}  // namespace pixel_shuffle_detail
}  // namespace kernelzoo

TORCH_LIBRARY_IMPL(kernelzoo, CUDA, m) {
  m.impl("pixel_shuffle", &kernelzoo::pixel_shuffle_detail::pixel_shuffle_cuda);
  m.impl("pixel_unshuffle", &kernelzoo::pixel_shuffle_detail::pixel_unshuffle_cuda);
}
