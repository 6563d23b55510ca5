// run_bwd and run_bwd_mma (declared in flash_attn_bwd_plan.h): the launches of
// the flash-attention CUDA backward, without tensor cores for one dtype and
// accumulator width, and on tensor cores for one dtype and head-dimension
// bucket. Included by the generated flash_attn_bwd_*.cu (explicit
// instantiations for CudaLaunch) and by the CPU-harness tests (implicit ones
// for HarnessLaunch).
#pragma once

#include <cstdint>

#include "../../common/acc_type.h"
#include "flash_attn_bwd_kernel.cuh"
#include "flash_attn_bwd_mma_kernel.cuh"
#include "flash_attn_bwd_plan.h"
#include "flash_attn_params.h"

namespace kernelzoo {
namespace flash_attn_detail {

// rowsum(dout * out) into p.dsum, before either main kernel. The run_*
// functions launch it with the first range of key blocks (key_block0 == 0),
// then the main kernel over key_block_count blocks from key_block0.
template <typename scalar_t, typename Launch>
void launch_dsum(const FlashKernelParams& p, const Launch& launch) {
  if (p.seqlen_q == 0) return;
  const unsigned row_blocks = static_cast<unsigned>((p.seqlen_q + kDsumThreads - 1) / kDsumThreads);
  launch(flash_bwd_dsum_kernel<scalar_t>,
         dim3(row_blocks, static_cast<unsigned>(p.nheads), static_cast<unsigned>(p.batch)),
         dim3(kDsumThreads), 0, p);
}

template <typename scalar_t, int kMaxHeadDim, typename Launch>
void run_bwd(const FlashKernelParams& p, const Launch& launch) {
  using acc_t = acc_type_t<scalar_t>;
  if (p.batch == 0 || p.nheads == 0) return;
  if (p.key_block0 == 0) launch_dsum<scalar_t>(p, launch);
  if (p.key_block_count > 0) {
    launch(flash_bwd_simt_kernel<scalar_t, kMaxHeadDim>,
           dim3(static_cast<unsigned>(p.key_block_count), static_cast<unsigned>(p.nheads),
                static_cast<unsigned>(p.batch)),
           dim3(kBwdThreads),
           static_cast<std::size_t>(bwd_shared_bytes<acc_t>(p.headdim, p.headdim_v)), p);
  }
}

template <typename T, int kHeadDim, typename Launch>
void run_bwd_mma(const FlashKernelParams& p, const Launch& launch) {
  using Traits = BwdTraits<kHeadDim>;
  static_assert(Traits::kBlockN == bwd_mma_block_n(kHeadDim), "the plan's key blocks");
  if (p.batch == 0 || p.nheads == 0) return;
  if (p.key_block0 == 0) launch_dsum<T>(p, launch);
  if (p.key_block_count > 0) {
    launch(flash_bwd_mma_kernel<T, kHeadDim>,
           dim3(static_cast<unsigned>(p.key_block_count), static_cast<unsigned>(p.nheads),
                static_cast<unsigned>(p.batch)),
           dim3(Traits::kThreads), Traits::kSmemElements * 2, p);
  }
}

}  // namespace flash_attn_detail
}  // namespace kernelzoo
