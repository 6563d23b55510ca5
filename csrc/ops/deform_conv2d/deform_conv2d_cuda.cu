// CUDA entry points of deform_conv2d and its backward. Argument handling is
// shared with the CPU path (prepare, deform_conv2d.cpp), what is launched with
// the CPU-harness tests (deform_conv2d_plan.h); this file launches on the
// current stream under a device guard, the backward the way backward_path()
// says.
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../../common/backward.h"
#include "../../common/cuda_launch.h"
#include "deform_conv2d_args.h"
#include "deform_conv2d_plan.h"

namespace kernelzoo {
namespace deform_detail {
namespace {

at::Tensor deform_conv2d_cuda(const at::Tensor& input, const at::Tensor& weight,
                              const at::Tensor& offset, const std::optional<at::Tensor>& mask,
                              const std::optional<at::Tensor>& bias, int64_t stride_h,
                              int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dil_h,
                              int64_t dil_w, int64_t groups, int64_t offset_groups) {
  c10::cuda::CUDAGuard guard(input.device());
  const Problem p = prepare("deform_conv2d", input, weight, offset, mask, bias, stride_h, stride_w,
                            pad_h, pad_w, dil_h, dil_w, groups, offset_groups);
  at::Tensor output = allocate_output(p);
  launch_forward(p, output, CudaLaunch{});
  return output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> deform_conv2d_backward_cuda(
    const at::Tensor& grad, const at::Tensor& input, const at::Tensor& weight,
    const at::Tensor& offset, const std::optional<at::Tensor>& mask,
    const std::optional<at::Tensor>& bias, int64_t stride_h, int64_t stride_w, int64_t pad_h,
    int64_t pad_w, int64_t dil_h, int64_t dil_w, int64_t groups, int64_t offset_groups) {
  c10::cuda::CUDAGuard guard(input.device());
  const BackwardProblem b =
      prepare_backward(grad, input, weight, offset, mask, bias, stride_h, stride_w, pad_h, pad_w,
                       dil_h, dil_w, groups, offset_groups);
  return launch_backward(b, CudaLaunch{}, backward_path());
}

}  // namespace
}  // namespace deform_detail
}  // namespace kernelzoo

TORCH_LIBRARY_IMPL(kernelzoo, CUDA, m) {
  m.impl("deform_conv2d", &kernelzoo::deform_detail::deform_conv2d_cuda);
  m.impl("_deform_conv2d_backward", &kernelzoo::deform_detail::deform_conv2d_backward_cuda);
}
