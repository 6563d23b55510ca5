// Device helpers shared by every flash-attention CUDA kernel: where a (batch,
// head) block's rows live, the transformed score of one (row, key) element
// (scale, softcap, ALiBi, mask), and the head-dimension buckets. Kernel-safe:
// no tensor or runtime host headers (also compiled by the CPU harness).
#pragma once

#include <math.h>

#include <cstdint>

#include "../../common/macros.h"
#include "flash_attn_math.h"
#include "flash_attn_params.h"

namespace kernelzoo {
namespace flash_attn_detail {

// Head dimensions are padded to a bucket, the tiles' compile-time width: 32,
// 64, 96, 128, 160, 192, 224 or 256.
constexpr int kMaxHeadDim = 256;

KZ_HOST_DEVICE KZ_INLINE int head_dim_bucket(int64_t d) {
  if (d > kMaxHeadDim) return -1;  // too large
  return d <= 32 ? 32 : static_cast<int>((d + 31) / 32 * 32);
}

// Keys per thread block of the tensor-core backward for a head-dimension
// bucket (flash_attn_bwd_mma_kernel.cuh); the launch plan sizes its grid and
// dQ slices with it.
KZ_HOST_DEVICE constexpr int bwd_mma_block_n(int bucket) { return bucket > 128 ? 32 : 64; }

// Element offsets of (sequence b, query head h) in q / out / lse / s_dmask and
// of its kv head in k / v, at row 0 of the sequence.
struct HeadOffsets {
  int64_t q, k, v, o, lse;
  int64_t rows_q, rows_k;  // row index of the sequence's first row in dq_accum / dk_accum
};

template <typename P>
KZ_HOST_DEVICE KZ_INLINE HeadOffsets head_offsets(const P& p, const Seq& s, int64_t b, int64_t h) {
  const int64_t hk = h / (p.nheads / p.nheads_k);
  HeadOffsets o;
  o.q = b * p.q_batch_stride + s.q0 * p.q_row_stride + h * p.q_head_stride;
  o.k = s.kv_b * p.k_batch_stride + s.k0 * p.k_row_stride + hk * p.k_head_stride;
  o.v = s.kv_b * p.v_batch_stride + s.k0 * p.v_row_stride + hk * p.v_head_stride;
  o.o = b * p.o_batch_stride + s.q0 * p.o_row_stride + h * p.o_head_stride;
  o.lse = b * p.lse_batch_stride + h * p.lse_head_stride + s.q0;
  const bool varlen = p.cu_seqlens_q != nullptr;
  o.rows_q = varlen ? s.q0 : b * p.seqlen_q;
  o.rows_k = varlen ? s.k0 : b * p.seqlen_k;
  return o;
}

template <typename acc_t, typename P>
KZ_HOST_DEVICE KZ_INLINE acc_t alibi_slope_of(const P& p, int64_t b, int64_t h) {
  return p.alibi_slopes ? static_cast<acc_t>(p.alibi_slopes[b * p.alibi_batch_stride + h])
                        : acc_t(0);
}

// What the kernels need to turn a raw product q.k into a score, per (b, h):
// the CPU kernel's transform_row for one element.
template <typename acc_t>
struct ScoreMap {
  acc_t scale, softcap, slope;
  int64_t sq, sk, left, right;

  // The score of row i, key j (sequence-local) from x = q_i . k_j: scaled (or
  // capped: softcap * tanh(scale * x / softcap)), minus slope * |i + sk - sq - j|,
  // -inf where row i does not see key j. *tanh_out (when not null) receives the
  // tanh for the backward.
  KZ_HOST_DEVICE KZ_INLINE acc_t operator()(acc_t x, int64_t i, int64_t j,
                                            acc_t* tanh_out = nullptr) const {
    const KeyRange r = visible_keys(i, sq, sk, left, right);
    if (j < r.lo || j >= r.hi) return -acc_t(INFINITY);
    acc_t s;
    if (softcap > acc_t(0)) {
      const acc_t t = tanh(x * scale / softcap);
      if (tanh_out) *tanh_out = t;
      s = softcap * t;
    } else {
      s = x * scale;
    }
    const acc_t d = static_cast<acc_t>(i + sk - sq - j);
    return s - slope * (d < acc_t(0) ? -d : d);
  }
};

template <typename acc_t, typename P>
KZ_HOST_DEVICE KZ_INLINE ScoreMap<acc_t> score_map(const P& p, const Seq& s, int64_t b, int64_t h) {
  return {static_cast<acc_t>(p.scale), static_cast<acc_t>(p.softcap), alibi_slope_of<acc_t>(p, b, h),
          s.sq, s.sk, p.window_left, p.window_right};
}

}  // namespace flash_attn_detail
}  // namespace kernelzoo
