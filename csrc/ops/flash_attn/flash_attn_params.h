// Plain parameters of the flash-attention kernels, shared by the host code and
// the CPU and CUDA kernels.
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

// What the CUDA kernels add: the tensors' device pointers (typed by the kernel:
// scalar_t for q, k, v, out, dout, dq, dk, dv, s_dmask; acc_t = acc_type_t<scalar_t>
// for lse and the accumulators) and their scratch buffers.
struct FlashKernelParams : FlashParams {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* out = nullptr;
  void* lse = nullptr;
  // Split-KV (decoding over long caches; dense problems only): num_splits > 1
  // splits each row's keys into num_splits ranges of split_keys keys (a
  // multiple of the kernel's key block), blockIdx.z being the split; each
  // writes its normalised partial output and its log-sum-exp (-inf when it saw
  // no key) to oaccum (num_splits, batch, nheads, seqlen_q, headdim_v) and
  // lseaccum (num_splits, batch, nheads, seqlen_q), contiguous acc_t, which
  // the combine kernel merges into out and lse.
  int64_t num_splits = 1, split_keys = 0;
  void* oaccum = nullptr;
  void* lseaccum = nullptr;
  // The backward. dout: strides of out (o_*). dsum: rowsum(dout * out), acc_t,
  // laid out like lse. dq_accum: acc_t, contiguous (rows_q, nheads, headdim),
  // rows_q = batch * seqlen_q (dense) or total_q (varlen), row r of sequence b
  // being b * seqlen_q + i (dense) or cu_seqlens_q[b] + i; with
  // dq_splits > 1 (deterministic), dq_splits such slices, one per key block,
  // summed in order afterwards. dk_accum / dv_accum: acc_t, contiguous
  // (rows_k, nheads, headdim | headdim_v) per QUERY head (summed over each
  // group of nheads / nheads_k afterwards), rows_k like rows_q for keys.
  // The backward's main kernels run the key blocks key_block0 + blockIdx.x
  // (several launches when the deterministic slices would take too much
  // memory); slice s of dq_accum belongs to blockIdx.x = s.
  const void* dout = nullptr;
  void* dsum = nullptr;
  void* dq_accum = nullptr;
  int64_t dq_splits = 1, key_block0 = 0, key_block_count = 0;
  void* dk_accum = nullptr;
  void* dv_accum = nullptr;
  void* s_dmask = nullptr;  // (batch, nheads, seqlen_q, seqlen_k) scalar_t, or null
};

}  // namespace flash_attn_detail
}  // namespace kernelzoo
