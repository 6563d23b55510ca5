// Plain parameters of the flash-attention kernels, shared by the host code and
// the kernels (CPU now; the CUDA kernels of the next issue take the same).
// Kernel-safe: no tensor or runtime headers.
//
// Layouts. q, k, v and out are read through element strides [batch, row, head]
// with the head dimension contiguous: dense tensors are (batch, seqlen, heads,
// dim); varlen ones are (total, heads, dim) with batch stride 0 and the rows of
// sequence b starting at cu_seqlens[b]. softmax_lse is float32 (float64 for
// float64 inputs) (batch, heads, seqlen_q) dense or (heads, total_q) varlen.
#pragma once

#include <cstdint>

namespace kernelzoo {
namespace flash_attn_detail {

struct FlashParams {
  int64_t batch, nheads, nheads_k, headdim, headdim_v;
  int64_t seqlen_q, seqlen_k;  // dense: the lengths; varlen: max_seqlen_q / max_seqlen_k
  int64_t q_batch_stride, q_row_stride, q_head_stride;
  int64_t k_batch_stride, k_row_stride, k_head_stride;
  int64_t v_batch_stride, v_row_stride, v_head_stride;
  int64_t o_batch_stride, o_row_stride, o_head_stride;
  int64_t lse_batch_stride, lse_head_stride;  // the row stride is 1
  const int32_t* cu_seqlens_q = nullptr;  // varlen: batch + 1 offsets
  const int32_t* cu_seqlens_k = nullptr;
  const int32_t* seqused_k = nullptr;     // kvcache: keys in use per batch (else seqlen_k)
  const int32_t* kv_batch_idx = nullptr;  // kvcache: the cache row of each batch (else b)
  double scale;                   // softmax_scale
  double softcap;                 // 0: off; else s = softcap * tanh(scale * qk / softcap)
  int64_t window_left, window_right;  // -1: unbounded (causal is window_right == 0)
  const float* alibi_slopes = nullptr;  // (nheads) or (batch, nheads): batch stride below
  int64_t alibi_batch_stride = 0;
  double dropout_p = 0;           // 0: no dropout
  uint32_t dropout_threshold = 0;  // ceil(dropout_p * 2^24): see flash_attn_math.h
  uint64_t seed = 0, offset = 0;
};

}  // namespace flash_attn_detail
}  // namespace kernelzoo
