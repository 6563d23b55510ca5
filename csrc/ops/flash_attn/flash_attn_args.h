// Host side of flash attention shared by the CPU entry points and the C++
// tests: the validated problem (prepare_* in flash_attn.cpp raise the
// documented errors, mirrored by the fake kernels in pyext/kernelzoo/ops/flash_attn.py).
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

#include "flash_attn_params.h"

namespace kernelzoo {
namespace flash_attn_detail {

struct Forward {
  at::Tensor q, k, v;          // last dimension contiguous
  at::Tensor out, lse, s_dmask;  // out contiguous; s_dmask empty unless asked for
  at::Tensor cu_seqlens_q, cu_seqlens_k, seqused_k, kv_batch_idx, alibi_slopes;  // int32 / float32 or undefined
  FlashParams params;          // strides and sizes, no pointers filled
  bool varlen = false;
};

struct Options {
  double dropout_p = 0, softmax_scale = 1;
  int64_t window_left = -1, window_right = -1;
  double softcap = 0;
  int64_t seed = 0, offset = 0;
  bool has_seed = false;  // a dropout_seed was given
};

// The options of the dispatcher ops' arguments (dropout_seed: an int64 tensor
// of one element, read on the host).
Options make_options(double dropout_p, double softmax_scale, int64_t window_left,
                     int64_t window_right, double softcap,
                     const std::optional<at::Tensor>& dropout_seed, int64_t offset);

Forward prepare_forward(const at::Tensor& q, const at::Tensor& k,
                        const at::Tensor& v, const std::optional<at::Tensor>& cu_seqlens_q,
                        const std::optional<at::Tensor>& cu_seqlens_k, int64_t max_seqlen_q,
                        int64_t max_seqlen_k, const std::optional<at::Tensor>& alibi_slopes,
                        const Options& o, bool return_softmax);

struct Backward {
  Forward f;                 // the forward's problem (out and lse are the saved ones)
  at::Tensor dout;           // like out, last dimension contiguous
  at::Tensor dq, dk, dv;     // contiguous, like q, k, v
};

Backward prepare_backward(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k,
                          const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
                          const std::optional<at::Tensor>& cu_seqlens_q,
                          const std::optional<at::Tensor>& cu_seqlens_k, int64_t max_seqlen_q,
                          int64_t max_seqlen_k, const std::optional<at::Tensor>& alibi_slopes,
                          const Options& o);

// Checks the kvcache arguments, writes k/v into the caches, and returns the
// attention problem over the caches (seqused_k, kv_batch_idx set).
Forward prepare_kvcache(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                        const std::optional<at::Tensor>& k, const std::optional<at::Tensor>& v,
                        const std::optional<at::Tensor>& cache_seqlens,
                        const std::optional<at::Tensor>& cache_batch_idx,
                        const std::optional<at::Tensor>& alibi_slopes, const Options& o);

}  // namespace flash_attn_detail
}  // namespace kernelzoo
