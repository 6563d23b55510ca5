// CUDA entry points of pixel_shuffle / pixel_unshuffle: argument handling is
// shared with the CPU path (prepare, pixel_shuffle.cpp), what is launched with
// the CPU-harness tests (pixel_shuffle_plan.h); this file launches it on the
// current stream under a device guard.
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../../common/cuda_launch.h"
#include "pixel_shuffle_args.h"
#include "pixel_shuffle_plan.h"

namespace kernelzoo {
namespace pixel_shuffle_detail {
namespace {

at::Tensor forward(const at::Tensor& input, int64_t factor, Direction direction) {
  c10::cuda::CUDAGuard guard(input.device());
  const Problem p = prepare(input, factor, direction);
  launch_forward(p, CudaLaunch{});
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
