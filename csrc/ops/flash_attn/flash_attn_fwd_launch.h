// Definitions of the forward's run_* functions declared in flash_attn_plan.h:
// grid, block and shared memory of each kernel. Included by the instantiation
// translation units (flash_attn_fwd_*.cu) and by the CPU-harness tests; it
// pulls in the kernel bodies.
#pragma once

#include "flash_attn_fwd_kernel.cuh"
#include "flash_attn_plan.h"
#include "flash_attn_simt_kernel.cuh"

namespace kernelzoo {
namespace flash_attn_detail {

// Grid: (query blocks, heads, batch x splits).
inline dim3 fwd_grid(const FlashKernelParams& p) {
  return dim3(static_cast<unsigned>((p.seqlen_q + kFwdBlockM - 1) / kFwdBlockM),
              static_cast<unsigned>(p.nheads), static_cast<unsigned>(p.batch * p.num_splits));
}

template <typename T, int kHeadDim, typename Launch>
void run_fwd(const FlashKernelParams& p, const Launch& launch) {
  using Traits = FwdTraits<kHeadDim>;
  static_assert(Traits::kBlockM == kFwdBlockM, "the plan's query block");
  launch(flash_fwd_kernel<T, kHeadDim>, fwd_grid(p), dim3(Traits::kThreads),
         fwd_shared_bytes<Traits>(), p);
}

template <typename scalar_t, int kMaxHeadDim, typename Launch>
void run_fwd_simt(const FlashKernelParams& p, const Launch& launch) {
  using acc_t = acc_type_t<scalar_t>;
  static_assert(kSimtRows == kFwdBlockM, "the plan's query block");
  launch(flash_simt_fwd_kernel<scalar_t, acc_t, kMaxHeadDim>, fwd_grid(p), dim3(kSimtRows),
         simt_shared_bytes<acc_t>(kMaxHeadDim), p);
}

template <typename scalar_t, typename Launch>
void run_combine(const FlashKernelParams& p, const Launch& launch) {
  const int64_t n = p.batch * p.nheads * p.seqlen_q * p.headdim_v;
  if (n == 0) return;
  const int64_t blocks = std::min<int64_t>((n + 255) / 256, int64_t{1} << 16);
  launch(flash_combine_kernel<scalar_t, acc_type_t<scalar_t>>, dim3(static_cast<unsigned>(blocks)),
         dim3(256), 0, p);
}

template <typename scalar_t, typename Launch>
void run_probs(const FlashKernelParams& p, const Launch& launch) {
  const int64_t n = p.seqlen_q * p.seqlen_k;
  if (n == 0 || p.batch == 0 || p.nheads == 0) return;
  const int64_t blocks = std::min<int64_t>((n + 255) / 256, 1024);
  launch(flash_probs_kernel<scalar_t, acc_type_t<scalar_t>>,
         dim3(static_cast<unsigned>(blocks), static_cast<unsigned>(p.nheads),
              static_cast<unsigned>(p.batch)),
         dim3(256), 0, p);
}

}  // namespace flash_attn_detail
}  // namespace kernelzoo
