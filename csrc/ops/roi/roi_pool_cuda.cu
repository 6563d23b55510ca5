// CUDA launchers of roi_pool and its backward (see roi_align_cuda.cu).
#include <ATen/Context.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "roi_cuda_launch.h"
#include "roi_pool_host.h"
#include "roi_pool_launch.cuh"

namespace kernelzoo {
namespace roi_pool_detail {
namespace {

std::tuple<at::Tensor, at::Tensor> roi_pool_cuda(const at::Tensor& input, const at::Tensor& rois,
                                                 double spatial_scale, int64_t pooled_h,
                                                 int64_t pooled_w) {
  c10::cuda::CUDAGuard guard(input.device());
  const Forward f = prepare_forward(input, rois, Args{spatial_scale, pooled_h, pooled_w});
  launch_forward(f, roi_detail::CudaLaunch{});
  return {f.output, f.argmax};
}

at::Tensor roi_pool_backward_cuda(const at::Tensor& grad, const at::Tensor& rois,
                                  const at::Tensor& argmax, double spatial_scale, int64_t pooled_h,
                                  int64_t pooled_w, int64_t batch_size, int64_t channels,
                                  int64_t height, int64_t width) {
  c10::cuda::CUDAGuard guard(grad.device());
  const Backward b = prepare_backward(grad, rois, argmax, Args{spatial_scale, pooled_h, pooled_w},
                                      batch_size, channels, height, width);
  if (at::globalContext().deterministicAlgorithms()) {
    launch_backward_deterministic(b, roi_detail::CudaLaunch{});
  } else {
    launch_backward_atomic(b, roi_detail::CudaLaunch{});
  }
  return b.grad_input;
}

}  // namespace
}  // namespace roi_pool_detail
}  // namespace kernelzoo

TORCH_LIBRARY_IMPL(kernelzoo, CUDA, m) {
  m.impl("roi_pool", &kernelzoo::roi_pool_detail::roi_pool_cuda);
  m.impl("_roi_pool_backward", &kernelzoo::roi_pool_detail::roi_pool_backward_cuda);
}
