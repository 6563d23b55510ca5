// Launch plan of the flash-attention CUDA backward
// (flash_attn_bwd_mma_kernel.cuh for float16 / bfloat16,
// flash_attn_bwd_kernel.cuh for float32 / float64) for a launch functor
// called as launch(kernel, grid, block, shared_bytes, args...): the
// parameters, the scratch buffers (dsum, dq_accum, dk_accum, dv_accum; layouts
// in flash_attn_params.h), the dtype and head-dimension dispatch, and the
// reductions into dq / dk / dv. The CUDA launcher passes CudaLaunch; the
// CPU-harness tests pass HarnessLaunch. run_bwd and run_bwd_mma are defined in
// flash_attn_bwd_launch.h and instantiated in the generated
// flash_attn_bwd_*.cu. Host code.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <limits>
#include <type_traits>

#include "../../common/acc_type.h"
#include "../../common/backward.h"
#include "../../common/dispatch.h"
#include "../../common/tensor_data.h"
#include "flash_attn_args.h"
#include "flash_attn_bwd_kernel.cuh"
#include "flash_attn_params.h"
#include "flash_attn_plan.h"

namespace kernelzoo {
namespace flash_attn_detail {

// Without tensor cores (scalar_t = float or double): launches
// flash_bwd_dsum_kernel then flash_bwd_simt_kernel<scalar_t, kMaxHeadDim> (p
// complete: pointers and scratch set).
template <typename scalar_t, int kMaxHeadDim, typename Launch>
void run_bwd(const FlashKernelParams& p, const Launch& launch);

// The kernel's accumulator width: the smallest of 64, 128, 256 that holds both
// head dimensions (-1: none).
inline int bwd_max_head_dim(int64_t d, int64_t dv) {
  const int64_t m = d > dv ? d : dv;
  return m <= 64 ? 64 : m <= 128 ? 128 : m <= 256 ? 256 : -1;
}

// Tensor cores (T = c10::Half or c10::BFloat16, kHeadDim a bucket).
template <typename T, int kHeadDim, typename Launch>
void run_bwd_mma(const FlashKernelParams& p, const Launch& launch);

// Fills bw.dq, bw.dk, bw.dv. path: Atomic adds dQ with atomicAdd;
// Deterministic gives every key block its own dQ slice, summed in order
// afterwards (bitwise reproducible). The slices of one launch take at most
// dq_budget_bytes (at least one slice): beyond it, the key blocks run in
// several launches whose slices are summed in launch order.
template <typename Launch>
void launch_backward(const Backward& bw, const Launch& launch, BackwardPath path,
                     int64_t dq_budget_bytes = int64_t{1} << 30) {
  const Forward& f = bw.f;
  FlashKernelParams p;
  static_cast<FlashParams&>(p) = f.params;
  const int64_t B = p.batch, H = p.nheads, Hk = p.nheads_k, D = p.headdim, Dv = p.headdim_v;
  const int64_t rows_q = f.varlen ? f.q.size(0) : f.q.size(0) * f.q.size(1);
  const int64_t rows_k = f.varlen ? f.k.size(0) : f.k.size(0) * f.k.size(1);
  const int max_head_dim = bwd_max_head_dim(D, Dv);
  TORCH_CHECK(max_head_dim > 0,
              "_flash_attn_backward: head dimensions up to 256 are supported, but got ", D, " and ",
              Dv);
  const at::ScalarType dtype = f.q.scalar_type();
  // float16 / bfloat16 on tensor cores (run_bwd_mma), float32 / float64 without (run_bwd).
  const bool mma = dtype == at::kHalf || dtype == at::kBFloat16;
  const int bucket = head_dim_bucket(std::max(D, Dv));
  const int64_t block_n = mma ? bwd_mma_block_n(bucket) : kBwdBlockN;  // keys per thread block
  const int64_t key_blocks = (p.seqlen_k + block_n - 1) / block_n;
  const bool launch_any = B > 0 && H > 0 && key_blocks > 0;
  TORCH_CHECK(B <= 65535 && H <= 65535 && key_blocks <= std::numeric_limits<int32_t>::max(),
              "_flash_attn_backward: batch (", B, ") and nheads (", H,
              ") must be at most 65535 on CUDA");

  // out and dout are read with the same strides (p.o_*): both contiguous, or
  // on tensor cores both as chunk_aligned_copy makes them (for cp.async:
  // 16-byte aligned, head dimension padded with zeros to a multiple of 8, as
  // q, k and v, which changes no product).
  at::Tensor out = f.out.contiguous();
  at::Tensor dout = bw.dout.contiguous();
  if (mma) {
    out = chunk_aligned_copy(out);
    dout = chunk_aligned_copy(dout);
  }
  const at::Tensor q = mma ? chunk_aligned_copy(f.q) : f.q;
  const at::Tensor k = mma ? chunk_aligned_copy(f.k) : f.k;
  const at::Tensor v = mma ? chunk_aligned_copy(f.v) : f.v;
  strides_of(out, f.varlen, p.o_batch_stride, p.o_row_stride, p.o_head_stride);
  strides_of(q, f.varlen, p.q_batch_stride, p.q_row_stride, p.q_head_stride);
  strides_of(k, f.varlen, p.k_batch_stride, p.k_row_stride, p.k_head_stride);
  strides_of(v, f.varlen, p.v_batch_stride, p.v_row_stride, p.v_head_stride);
  const auto acc = f.lse.options();  // acc_t: float32, or float64 for float64
  // Deterministic: a dQ slice per key block (one key block: its atomicAdd onto
  // zero is the only addition to each element, hence reproducible too).
  const bool slices = path == BackwardPath::Deterministic && key_blocks > 1;
  const int64_t slice_bytes = rows_q * H * D * static_cast<int64_t>(acc.dtype().itemsize());
  const int64_t per_launch =
      slices ? std::max<int64_t>(1, std::min<int64_t>(key_blocks, dq_budget_bytes /
                                                                      std::max<int64_t>(slice_bytes, 1)))
             : key_blocks;
  at::Tensor dsum = at::empty(f.lse.sizes(), acc);
  // Zeroed: atomics add into it, and a deterministic slice holds only the rows
  // its key block sees.
  at::Tensor dq_accum = at::zeros({slices ? per_launch : 1, rows_q, H, D}, acc);
  // Every key's row is written by the block that owns it.
  at::Tensor dk_accum = at::empty({rows_k, H, D}, acc);
  at::Tensor dv_accum = at::empty({rows_k, H, Dv}, acc);

  p.q = q.const_data_ptr();
  p.k = k.const_data_ptr();
  p.v = v.const_data_ptr();
  p.out = const_cast<void*>(out.const_data_ptr());    // read only
  p.lse = const_cast<void*>(f.lse.const_data_ptr());  // read only
  p.dout = dout.const_data_ptr();
  p.cu_seqlens_q = data_or_null<int32_t>(f.cu_seqlens_q);
  p.cu_seqlens_k = data_or_null<int32_t>(f.cu_seqlens_k);
  p.seqused_k = data_or_null<int32_t>(f.seqused_k);
  p.kv_batch_idx = data_or_null<int32_t>(f.kv_batch_idx);
  p.alibi_slopes = data_or_null<float>(f.alibi_slopes);
  p.dsum = dsum.mutable_data_ptr();
  p.dq_accum = dq_accum.mutable_data_ptr();
  p.dq_splits = slices ? per_launch : 1;
  p.dk_accum = dk_accum.mutable_data_ptr();
  p.dv_accum = dv_accum.mutable_data_ptr();

  at::Tensor dq;  // the sum of the slices, in launch order
  if (launch_any) {
    for (int64_t kb0 = 0; kb0 < key_blocks; kb0 += per_launch) {
      p.key_block0 = kb0;
      p.key_block_count = std::min(per_launch, key_blocks - kb0);
      KZ_DISPATCH_FLOATING_TYPES(dtype, "_flash_attn_backward", [&] {
        if constexpr (std::is_same_v<scalar_t, c10::Half> ||
                      std::is_same_v<scalar_t, c10::BFloat16>) {
          with_bucket(bucket,
                      [&](auto d) { run_bwd_mma<scalar_t, decltype(d)::value>(p, launch); });
        } else {
          switch (max_head_dim) {
            case 64: run_bwd<scalar_t, 64>(p, launch); break;
            case 128: run_bwd<scalar_t, 128>(p, launch); break;
            default: run_bwd<scalar_t, 256>(p, launch); break;
          }
        }
      });
      if (slices) {
        const at::Tensor part = dq_accum.narrow(0, 0, p.key_block_count).sum(at::IntArrayRef{0});
        dq = dq.defined() ? dq.add_(part) : part;
        if (kb0 + per_launch < key_blocks) dq_accum.zero_();
      }
    }
  } else {
    dk_accum.zero_();
    dv_accum.zero_();
  }
  if (!dq.defined()) dq = dq_accum.select(0, 0);

  // dq = scale * (sum of the slices); dk = scale * (sum over the query heads
  // of each kv head); dv = that sum.
  const int64_t group = Hk > 0 ? H / Hk : 0;
  bw.dq.copy_(dq.mul(p.scale).view(bw.dq.sizes()));
  at::Tensor dk = dk_accum.view({rows_k, Hk, group, D}).sum(at::IntArrayRef{2});
  bw.dk.copy_(dk.mul_(p.scale).view(bw.dk.sizes()));
  at::Tensor dv = dv_accum.view({rows_k, Hk, group, Dv}).sum(at::IntArrayRef{2});
  bw.dv.copy_(dv.view(bw.dv.sizes()));
}

}  // namespace flash_attn_detail
}  // namespace kernelzoo
