// CUDA launchers of roi_align and its backward: argument handling is shared
// with the CPU path (roi_align.cpp), what is launched with the CPU-harness
// tests (roi_align_launch.cuh); this file picks the backward path and launches
// on the current stream.
#include <ATen/Context.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "roi_align_host.h"
#include "roi_align_launch.cuh"
#include "roi_cuda_launch.h"

namespace kernelzoo {
namespace roi_align_detail {
namespace {

at::Tensor roi_align_cuda(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                          int64_t pooled_h, int64_t pooled_w, int64_t sampling_ratio,
                          bool aligned) {
  c10::cuda::CUDAGuard guard(input.device());
  const Forward f =
      prepare_forward(input, rois, Args{spatial_scale, pooled_h, pooled_w, sampling_ratio, aligned});
  launch_forward(f, roi_detail::CudaLaunch{});
  return f.output;
}

at::Tensor roi_align_backward_cuda(const at::Tensor& grad, const at::Tensor& rois,
                                   double spatial_scale, int64_t pooled_h, int64_t pooled_w,
                                   int64_t batch_size, int64_t channels, int64_t height,
                                   int64_t width, int64_t sampling_ratio, bool aligned) {
  c10::cuda::CUDAGuard guard(grad.device());
  const Backward b =
      prepare_backward(grad, rois, Args{spatial_scale, pooled_h, pooled_w, sampling_ratio, aligned},
                       batch_size, channels, height, width);
  if (at::globalContext().deterministicAlgorithms()) {
    launch_backward_deterministic(b, roi_detail::CudaLaunch{});
  } else {
    launch_backward_atomic(b, roi_detail::CudaLaunch{});
  }
  return b.grad_input;
}

}  // namespace
}  // namespace roi_align_detail
}  // namespace kernelzoo

TORCH_LIBRARY_IMPL(kernelzoo, CUDA, m) {
  m.impl("roi_align", &kernelzoo::roi_align_detail::roi_align_cuda);
  m.impl("_roi_align_backward", &kernelzoo::roi_align_detail::roi_align_backward_cuda);
}
