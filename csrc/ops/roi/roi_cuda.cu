// CUDA entry points of roi_align, roi_pool and their backward ops (one file:
// nvcc parses the torch host headers once for both). Argument handling is
// shared with the CPU path (prepare_*, roi.cpp), what is launched with the
// CPU-harness tests (roi_plan.h); this file launches on the current stream
// under a device guard, the backward the way backward_path() says.
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../../common/backward.h"
#include "../../common/cuda_launch.h"
#include "roi_args.h"
#include "roi_plan.h"

namespace kernelzoo {
namespace roi_detail {
namespace {

at::Tensor roi_align_cuda(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                          int64_t pooled_h, int64_t pooled_w, int64_t sampling_ratio,
                          bool aligned) {
  c10::cuda::CUDAGuard guard(input.device());
  const Forward f = prepare_forward(RoiOp::Align, input, rois,
                                    Args{spatial_scale, pooled_h, pooled_w, sampling_ratio, aligned});
  launch_forward(f, CudaLaunch{});
  return f.output;
}

std::tuple<at::Tensor, at::Tensor> roi_pool_cuda(const at::Tensor& input, const at::Tensor& rois,
                                                 double spatial_scale, int64_t pooled_h,
                                                 int64_t pooled_w) {
  c10::cuda::CUDAGuard guard(input.device());
  const Forward f =
      prepare_forward(RoiOp::Pool, input, rois, Args{spatial_scale, pooled_h, pooled_w});
  launch_forward(f, CudaLaunch{});
  return {f.output, f.argmax};
}

at::Tensor backward(RoiOp op, const at::Tensor& grad, const at::Tensor& rois,
                    const at::Tensor& argmax, const Args& args, int64_t batch_size,
                    int64_t channels, int64_t height, int64_t width) {
  c10::cuda::CUDAGuard guard(grad.device());
  const Backward b =
      prepare_backward(op, grad, rois, argmax, args, batch_size, channels, height, width);
  launch_backward(b, CudaLaunch{}, backward_path());
  return b.grad_input;
}

at::Tensor roi_align_backward_cuda(const at::Tensor& grad, const at::Tensor& rois,
                                   double spatial_scale, int64_t pooled_h, int64_t pooled_w,
                                   int64_t batch_size, int64_t channels, int64_t height,
                                   int64_t width, int64_t sampling_ratio, bool aligned) {
  return backward(RoiOp::Align, grad, rois, at::Tensor(),
                  Args{spatial_scale, pooled_h, pooled_w, sampling_ratio, aligned}, batch_size,
                  channels, height, width);
}

at::Tensor roi_pool_backward_cuda(const at::Tensor& grad, const at::Tensor& rois,
                                  const at::Tensor& argmax, double spatial_scale, int64_t pooled_h,
                                  int64_t pooled_w, int64_t batch_size, int64_t channels,
                                  int64_t height, int64_t width) {
  return backward(RoiOp::Pool, grad, rois, argmax, Args{spatial_scale, pooled_h, pooled_w},
                  batch_size, channels, height, width);
}

}  // namespace
}  // namespace roi_detail
}  // namespace kernelzoo

TORCH_LIBRARY_IMPL(kernelzoo, CUDA, m) {
  m.impl("roi_align", &kernelzoo::roi_detail::roi_align_cuda);
  m.impl("_roi_align_backward", &kernelzoo::roi_detail::roi_align_backward_cuda);
  m.impl("roi_pool", &kernelzoo::roi_detail::roi_pool_cuda);
  m.impl("_roi_pool_backward", &kernelzoo::roi_detail::roi_pool_backward_cuda);
}
