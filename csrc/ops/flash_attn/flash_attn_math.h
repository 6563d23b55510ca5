// Per-element math of flash attention shared by the CPU and CUDA
// kernels and tested against the Python reference (kernelzoo.reference.flash_attn):
// which keys a query row sees, and the dropout mask. Kernel-safe: no tensor or
// runtime headers.
#pragma once

#include <cstdint>

#include "../../common/macros.h"

namespace kernelzoo {
namespace flash_attn_detail {

// The keys query row i (of sq rows) sees among sk keys: [lo, hi). With
// shift = sk - sq (flash-attn aligns the causal and window masks to the
// bottom-right corner), row i sees keys j with
//   i + shift - left <= j <= i + shift + right,
// a bound of -1 being unbounded; lo >= hi when it sees none.
struct KeyRange {
  int64_t lo, hi;
};

KZ_HOST_DEVICE KZ_INLINE KeyRange visible_keys(int64_t i, int64_t sq, int64_t sk, int64_t left,
                                               int64_t right) {
  const int64_t shift = sk - sq;
  int64_t lo = left >= 0 ? i + shift - left : 0;
  int64_t hi = right >= 0 ? i + shift + right + 1 : sk;
  lo = lo < 0 ? 0 : lo;
  hi = hi > sk ? sk : hi;
  return {lo, hi};
}

// Sequence b of a problem: its query rows start at q0 (varlen offsets; 0
// dense) and number sq; its keys start at k0 and number sk, in kv batch kv_b
// (a KV cache's row). P: FlashParams (flash_attn_params.h).
struct Seq {
  int64_t q0, sq, k0, sk, kv_b;
};

template <typename P>
KZ_HOST_DEVICE KZ_INLINE Seq sequence(const P& p, int64_t b) {
  if (p.cu_seqlens_q) {
    return {p.cu_seqlens_q[b], p.cu_seqlens_q[b + 1] - p.cu_seqlens_q[b], p.cu_seqlens_k[b],
            p.cu_seqlens_k[b + 1] - p.cu_seqlens_k[b], 0};
  }
  return {0, p.seqlen_q, 0, p.seqused_k ? p.seqused_k[b] : p.seqlen_k,
          p.kv_batch_idx ? p.kv_batch_idx[b] : b};
}

// The keys the rows [i0, i1) (i0 < i1) of a sequence see together: [lo, hi).
template <typename P>
KZ_HOST_DEVICE KZ_INLINE KeyRange block_keys(const P& p, const Seq& s, int64_t i0, int64_t i1) {
  const KeyRange first = visible_keys(i0, s.sq, s.sk, p.window_left, p.window_right);
  const KeyRange last = visible_keys(i1 - 1, s.sq, s.sk, p.window_left, p.window_right);
  return {first.lo, last.hi};
}

// The query rows of a sequence that see some key of [j0, j1): [lo, hi).
template <typename P>
KZ_HOST_DEVICE KZ_INLINE KeyRange block_rows(const P& p, const Seq& s, int64_t j0, int64_t j1) {
  const int64_t shift = s.sk - s.sq;
  int64_t lo = p.window_right >= 0 ? j0 - shift - p.window_right : 0;
  int64_t hi = p.window_left >= 0 ? j1 - shift + p.window_left : s.sq;
  lo = lo < 0 ? 0 : lo;
  hi = hi > s.sq ? s.sq : hi;
  return {lo, hi};
}

// Philox4x32-10 (Salmon et al., SC 2011; the Random123 convention: ten rounds,
// the key bumped between consecutive rounds).
struct Philox4 {
  uint32_t x[4];
};

KZ_HOST_DEVICE KZ_INLINE Philox4 philox4x32_10(Philox4 c, uint32_t k0, uint32_t k1) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      k0 += kW0;
      k1 += kW1;
    }
    const uint64_t p0 = static_cast<uint64_t>(kM0) * c.x[0];
    const uint64_t p1 = static_cast<uint64_t>(kM1) * c.x[2];
    const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    c = Philox4{{hi1 ^ c.x[1] ^ k0, lo1, hi0 ^ c.x[3] ^ k1, lo0}};
  }
  return c;
}

// The dropout mask: the probability of (batch or sequence b, query head h of
// nheads, row i, column j) is kept iff u >= dropout_p, u the 24-bit uniform
// from word (j & 3) of Philox4x32-10 at counter (j >> 2, i, b * nheads + h,
// offset) under key (seed low, seed high). Four consecutive columns share one
// Philox call: `keep4` fills the four decisions of columns j4 * 4 .. j4 * 4 + 3.
KZ_HOST_DEVICE KZ_INLINE Philox4 dropout_bits(uint64_t seed, uint64_t offset, int64_t b, int64_t h,
                                              int64_t nheads, int64_t i, int64_t j4) {
  const Philox4 counter{{static_cast<uint32_t>(j4), static_cast<uint32_t>(i),
                         static_cast<uint32_t>(b * nheads + h), static_cast<uint32_t>(offset)}};
  return philox4x32_10(counter, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// u >= dropout_p with u = (word >> 8) / 2^24 exactly, as an integer compare
// against dropout_threshold(dropout_p) = ceil(dropout_p * 2^24) (computed once,
// in double, on the host).
KZ_HOST_DEVICE KZ_INLINE bool dropout_keep(uint32_t word, uint32_t threshold) {
  return (word >> 8) >= threshold;
}

// The decision for one element (b, h, i, j), for kernels that visit elements
// one at a time (the CUDA kernels; the CPU kernel draws four columns per call).
template <typename P>
KZ_HOST_DEVICE KZ_INLINE bool dropout_keep_at(const P& p, int64_t b, int64_t h, int64_t i,
                                              int64_t j) {
  const Philox4 r = dropout_bits(p.seed, p.offset, b, h, p.nheads, i, j >> 2);
  return dropout_keep(r.x[j & 3], p.dropout_threshold);
}

}  // namespace flash_attn_detail
}  // namespace kernelzoo
