// CUDA entry points of the selective scan, its backward and the decoding step.
// Argument handling is shared with the CPU path (prepare_*, selective_scan.cpp),
// what is launched with the CPU-harness tests (selective_scan_plan.h); this file
// launches on the current stream under a device guard, the backward the way
// backward_path() says.
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../../common/backward.h"
#include "../../common/cuda_launch.h"
#include "selective_scan_args.h"
#include "selective_scan_plan.h"

namespace kernelzoo {
namespace selective_scan_detail {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> selective_scan_forward_cuda(
    const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
    const at::Tensor& C, const std::optional<at::Tensor>& D, const std::optional<at::Tensor>& z,
    const std::optional<at::Tensor>& delta_bias, bool delta_softplus,
    const std::optional<at::Tensor>& initial_state, const std::optional<at::Tensor>& cu_seqlens) {
  c10::cuda::CUDAGuard guard(u.device());
  const Scan s =
      prepare_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, cu_seqlens);
  auto [out, last, ckpt] = allocate_outputs(s);
  launch_forward(s, out, last, ckpt, CudaLaunch{});
  return {out, last, ckpt};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor, at::Tensor>
selective_scan_backward_cuda(const at::Tensor& dout, const std::optional<at::Tensor>& dlast_state,
                             const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                             const at::Tensor& B, const at::Tensor& C,
                             const std::optional<at::Tensor>& D, const std::optional<at::Tensor>& z,
                             const std::optional<at::Tensor>& delta_bias, bool delta_softplus,
                             const std::optional<at::Tensor>& initial_state,
                             const std::optional<at::Tensor>& cu_seqlens,
                             const at::Tensor& checkpoints) {
  c10::cuda::CUDAGuard guard(u.device());
  const ScanBackward b =
      prepare_scan_backward(dout, dlast_state, u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                            initial_state, cu_seqlens, checkpoints);
  return finish_grads(b.s, launch_backward(b, CudaLaunch{}, backward_path()));
}

at::Tensor selective_state_update_cuda(const at::Tensor& state, const at::Tensor& x,
                                       const at::Tensor& dt, const at::Tensor& A,
                                       const at::Tensor& B, const at::Tensor& C,
                                       const std::optional<at::Tensor>& D,
                                       const std::optional<at::Tensor>& z,
                                       const std::optional<at::Tensor>& dt_bias, bool dt_softplus) {
  c10::cuda::CUDAGuard guard(state.device());
  const StateUpdate su = prepare_state_update(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus);
  const at::Tensor out = launch_state_update(su, CudaLaunch{}).to(x.scalar_type());
  return su.heads ? out : out.squeeze(1);
}

}  // namespace
}  // namespace selective_scan_detail
}  // namespace kernelzoo

TORCH_LIBRARY_IMPL(kernelzoo, CUDA, m) {
  m.impl("selective_scan_forward", &kernelzoo::selective_scan_detail::selective_scan_forward_cuda);
  m.impl("_selective_scan_backward",
         &kernelzoo::selective_scan_detail::selective_scan_backward_cuda);
  m.impl("selective_state_update", &kernelzoo::selective_scan_detail::selective_state_update_cuda);
}
