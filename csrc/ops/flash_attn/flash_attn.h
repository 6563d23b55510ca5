// kernelzoo C++ API: flash attention through the dispatcher, for LibTorch users.
// Semantics are flash-attn 2.8's (see the Python docstrings of
// kernelzoo.ops.flash_attn_func and kernelzoo.reference.flash_attn):
//   dense:  q (batch, seqlen_q, nheads, d), k (batch, seqlen_k, nheads_k, d),
//           v (batch, seqlen_k, nheads_k, dv); cu_seqlens undefined.
//   varlen: q (total_q, nheads, d), k/v (total_k, nheads_k, d|dv), cu_seqlens_q/k
//           int32 (batch + 1), max_seqlen_q/k at least every sequence's length.
// window (left, right), -1 unbounded, aligned to the bottom-right corner (causal
// is right = 0); softcap 0 is off; alibi_slopes float32 (nheads) or (batch,
// nheads), or undefined; dropout with the counter-based mask keyed by
// (seed, offset) described in flash_attn_math.h, the seed an int64 tensor of one
// element (needed when dropout_p > 0; a tensor, so that torch.compile traces
// the random draw that makes it).
// Returns (out, softmax_lse, S_dmask): out like q with v's last dimension;
// softmax_lse float32 (float64 for float64 inputs) (batch, nheads, seqlen_q) or
// (nheads, total_q); S_dmask the
// probabilities, dropped ones negated, (batch, nheads, seqlen_q, seqlen_k) when
// return_softmax, else empty. deterministic: the backward of this forward (through
// autograd) is bitwise reproducible on CUDA (the CPU backward always is).
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

namespace kernelzoo {

std::tuple<at::Tensor, at::Tensor, at::Tensor> flash_attn_forward(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const std::optional<at::Tensor>& cu_seqlens_q, const std::optional<at::Tensor>& cu_seqlens_k,
    int64_t max_seqlen_q, int64_t max_seqlen_k, double dropout_p, double softmax_scale,
    int64_t window_left, int64_t window_right, double softcap,
    const std::optional<at::Tensor>& alibi_slopes, bool return_softmax,
    const std::optional<at::Tensor>& dropout_seed, int64_t offset, bool deterministic = false);

// Gradients (dq, dk, dv) of flash_attn_forward's out (with its saved out and
// softmax_lse), deterministic whatever the number of threads.
std::tuple<at::Tensor, at::Tensor, at::Tensor> flash_attn_backward(
    const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& out, const at::Tensor& softmax_lse,
    const std::optional<at::Tensor>& cu_seqlens_q, const std::optional<at::Tensor>& cu_seqlens_k,
    int64_t max_seqlen_q, int64_t max_seqlen_k, double dropout_p, double softmax_scale,
    int64_t window_left, int64_t window_right, double softcap,
    const std::optional<at::Tensor>& alibi_slopes, bool deterministic,
    const std::optional<at::Tensor>& dropout_seed, int64_t offset);

// Decoding with a KV cache: k/v (batch, seqlen_new, nheads_k, d) are written into
// k_cache/v_cache (batch_cache, seqlen_cache, nheads_k, d) at cache_seqlens
// (int32 (batch)) of the cache rows cache_batch_idx (int32 (batch), default the
// batch index), in place; q (batch, seqlen_q, nheads, d) then attends to the
// first cache_seqlens + seqlen_new keys of its row (all of them without
// cache_seqlens). Returns (out, softmax_lse).
std::tuple<at::Tensor, at::Tensor> flash_attn_kvcache(
    const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
    const std::optional<at::Tensor>& k, const std::optional<at::Tensor>& v,
    const std::optional<at::Tensor>& cache_seqlens, const std::optional<at::Tensor>& cache_batch_idx,
    double softmax_scale, int64_t window_left, int64_t window_right, double softcap,
    const std::optional<at::Tensor>& alibi_slopes);

}  // namespace kernelzoo
