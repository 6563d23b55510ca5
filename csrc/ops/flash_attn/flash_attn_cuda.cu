// CUDA entry points of flash attention: forward (dense and varlen), backward
// and the KV-cache forward. Argument handling is shared with the CPU path
// (prepare_*, flash_attn.cpp), what is launched with the CPU-harness tests
// (flash_attn_plan.h, flash_attn_bwd_plan.h); this file checks the device,
// launches on the current stream under a device guard, and runs the backward
// deterministically when asked to (deterministic=True, or
// torch.use_deterministic_algorithms(True)). The kernels themselves are
// instantiated in the generated flash_attn_fwd_*.cu and flash_attn_bwd_*.cu.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../../common/backward.h"
#include "../../common/cuda_launch.h"
#include "flash_attn_args.h"
#include "flash_attn_bwd_plan.h"
#include "flash_attn_plan.h"

namespace kernelzoo {
namespace flash_attn_detail {
namespace {

// The kernels use mma.m16n8k16 and cp.async: compute capability 8.0 or newer.
// Returns the device's multiprocessor count.
int check_device(const at::Tensor& q) {
  const cudaDeviceProp* prop = at::cuda::getDeviceProperties(q.get_device());
  TORCH_CHECK(prop->major >= 8,
              "flash_attn on CUDA needs a GPU of compute capability 8.0 (Ampere) or newer, but ",
              prop->name, " has ", prop->major, ".", prop->minor);
  return prop->multiProcessorCount;
}

ForwardConfig config_for(int sm_count) {
  ForwardConfig c;
  c.sm_count = sm_count;
  return c;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> flash_attn_forward_cuda(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const std::optional<at::Tensor>& cu_seqlens_q, const std::optional<at::Tensor>& cu_seqlens_k,
    int64_t max_seqlen_q, int64_t max_seqlen_k, double dropout_p, double softmax_scale,
    int64_t window_left, int64_t window_right, double softcap,
    const std::optional<at::Tensor>& alibi_slopes, bool return_softmax,
    const std::optional<at::Tensor>& dropout_seed, int64_t offset,
    bool /*deterministic: the backward's, read by autograd*/) {
  c10::cuda::CUDAGuard guard(q.device());
  const int sm_count = check_device(q);
  Forward f = prepare_forward(
      q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, alibi_slopes,
      make_options(dropout_p, softmax_scale, window_left, window_right, softcap, dropout_seed, offset),
      return_softmax);
  launch_forward(f, CudaLaunch{}, config_for(sm_count));
  return {f.out, f.lse, f.s_dmask};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> flash_attn_backward_cuda(
    const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& out, const at::Tensor& softmax_lse,
    const std::optional<at::Tensor>& cu_seqlens_q, const std::optional<at::Tensor>& cu_seqlens_k,
    int64_t max_seqlen_q, int64_t max_seqlen_k, double dropout_p, double softmax_scale,
    int64_t window_left, int64_t window_right, double softcap,
    const std::optional<at::Tensor>& alibi_slopes, bool deterministic,
    const std::optional<at::Tensor>& dropout_seed, int64_t offset) {
  c10::cuda::CUDAGuard guard(q.device());
  check_device(q);
  const Backward bw = prepare_backward(
      dout, q, k, v, out, softmax_lse, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
      alibi_slopes,
      make_options(dropout_p, softmax_scale, window_left, window_right, softcap, dropout_seed, offset));
  launch_backward(bw, CudaLaunch{},
                  deterministic ? BackwardPath::Deterministic : backward_path());
  return {bw.dq, bw.dk, bw.dv};
}

std::tuple<at::Tensor, at::Tensor> flash_attn_kvcache_cuda(
    const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
    const std::optional<at::Tensor>& k, const std::optional<at::Tensor>& v,
    const std::optional<at::Tensor>& cache_seqlens, const std::optional<at::Tensor>& cache_batch_idx,
    double softmax_scale, int64_t window_left, int64_t window_right, double softcap,
    const std::optional<at::Tensor>& alibi_slopes) {
  c10::cuda::CUDAGuard guard(q.device());
  const int sm_count = check_device(q);  // before the caches are written
  Forward f = prepare_kvcache(
      q, k_cache, v_cache, k, v, cache_seqlens, cache_batch_idx, alibi_slopes,
      make_options(0.0, softmax_scale, window_left, window_right, softcap, std::nullopt, 0));
  launch_forward(f, CudaLaunch{}, config_for(sm_count));
  return {f.out, f.lse};
}

}  // namespace
}  // namespace flash_attn_detail
}  // namespace kernelzoo

TORCH_LIBRARY_IMPL(kernelzoo, CUDA, m) {
  m.impl("flash_attn_forward", &kernelzoo::flash_attn_detail::flash_attn_forward_cuda);
  m.impl("_flash_attn_backward", &kernelzoo::flash_attn_detail::flash_attn_backward_cuda);
  m.impl("flash_attn_kvcache", &kernelzoo::flash_attn_detail::flash_attn_kvcache_cuda);
}
