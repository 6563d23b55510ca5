// The tensor-core backward of flash attention (FlashAttention-2's structure),
// float16 and bfloat16, every head-dimension bucket. One thread block of 4
// warps per (block of kBlockN keys, query head, sequence): the block's K and V
// tiles stay in shared memory while the query blocks that see them stream
// through two buffers of Q and dO (cp.async). Per query block of kBlockM rows:
//   1. each warp computes S = Q K^T and dP = dO V^T for its 16 rows and its
//      share of the keys (mma.m16n8k16), recomputes P = exp(S - lse) from the
//      forward's log-sum-exp, forms dS = P (dP - rowsum(dO O)) (with the
//      forward's dropout mask and the softcap's derivative) and leaves P
//      (dropped) and dS in shared memory;
//   2. each warp adds dQ = dS K for its 16 rows and its share of the head
//      dimension to dq_accum (atomicAdd, or its key block's own slice when
//      deterministic: each element is then written by one lane);
//   3. each warp accumulates dV += P^T dO and dK += dS^T Q for its 16 keys and
//      its share of the head dimension in registers, written once at the end
//      to dk_accum / dv_accum (unscaled, per query head:
//      flash_attn_bwd_plan.h reduces them).
// Up to head dimension 128 a block has 64 keys and streams 64 rows, each warp
// taking whole rows / keys; above, 32 keys and 32 rows with the warps in 2 x 2
// (half the keys in 1, half the head dimension in 2 and 3), so that dK and dV
// stay at D / 2 floats per thread. dsum comes from flash_bwd_dsum_kernel
// (flash_attn_bwd_kernel.cuh), launched before.
//
// Requirements as for the forward (flash_attn_fwd_kernel.cuh): 16-byte
// aligned operands, strides and head dimensions multiples of 8 elements.
// Kernel-safe: no tensor or runtime host headers.
#pragma once

#include <cstdint>

#include "../../common/macros.h"
#include "../../common/mma.cuh"
#include "flash_attn_block.cuh"
#include "flash_attn_fwd_kernel.cuh"

namespace kernelzoo {
namespace flash_attn_detail {

template <int kHeadDim_>
struct BwdTraits {
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kWarps = 4;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kBlockN = bwd_mma_block_n(kHeadDim);  // keys per thread block
  static constexpr int kBlockM = kBlockN;                    // query rows per streamed block
  // The warps form a kSlots x kSplit grid: slot warp % kSlots owns 16 rows
  // (steps 1, 2) and 16 keys (step 3); split warp / kSlots owns a kWarpKeys
  // share of the keys (step 1) and a kWarpCols share of the head dimension
  // (steps 2, 3).
  static constexpr int kSlots = kBlockN / 16;
  static constexpr int kSplit = kWarps / kSlots;
  static constexpr int kWarpKeys = kBlockN / kSplit;
  static constexpr int kWarpCols = kHeadDim / kSplit;
  static constexpr int kStride = kHeadDim + 8;  // padded rows (see FwdTraits)
  static constexpr int kPStride = kBlockN + 8;
  static constexpr int kTileQ = kBlockM * kStride;
  static constexpr int kTileK = kBlockN * kStride;
  static constexpr int kTileP = kBlockM * kPStride;
  // K, V, 2 x Q, 2 x dO, P, dS
  static constexpr int kSmemElements = 2 * kTileK + 4 * kTileQ + 2 * kTileP;
  static_assert(kHeadDim % 32 == 0 && kHeadDim <= 256, "a head-dimension bucket");
  static_assert(kSlots * kSplit == kWarps, "warp layout");
  static_assert(kWarpKeys % 16 == 0 && kWarpCols % 16 == 0, "pairs of 8-wide tiles per warp");
};

template <typename T, int kHeadDim>
__global__ void __launch_bounds__(BwdTraits<kHeadDim>::kThreads)
    flash_bwd_mma_kernel(const FlashKernelParams p) {
  using Traits = BwdTraits<kHeadDim>;
  constexpr int kBlockM = Traits::kBlockM, kBlockN = Traits::kBlockN;
  constexpr int kStride = Traits::kStride, kPStride = Traits::kPStride;
  constexpr int kNTiles = Traits::kWarpKeys / 8;  // 8-key tiles of S and dP per warp
  constexpr int kDTiles = Traits::kWarpCols / 8;  // 8-column tiles of dQ, dK, dV per warp
  T* sK = reinterpret_cast<T*>(flash_smem);
  T* sV = sK + Traits::kTileK;
  T* sQ = sV + Traits::kTileK;   // two buffers
  T* sdO = sQ + 2 * Traits::kTileQ;  // two buffers
  T* sP = sdO + 2 * Traits::kTileQ;
  T* sdS = sP + Traits::kTileP;

  const int64_t b = blockIdx.z, h = blockIdx.y, n0 = (p.key_block0 + blockIdx.x) * kBlockN;
  const Seq s = sequence(p, b);
  if (n0 >= s.sk) return;
  const HeadOffsets off = head_offsets(p, s, b, h);
  const int64_t cols = s.sk - n0 < kBlockN ? s.sk - n0 : kBlockN;
  const KeyRange rows = block_rows(p, s, n0, n0 + cols);
  const int64_t m_begin = rows.lo < rows.hi ? rows.lo / kBlockM * kBlockM : 0;
  const int64_t m_end = rows.lo < rows.hi ? rows.hi : 0;

  const T* q = static_cast<const T*>(p.q) + off.q;
  const T* dout = static_cast<const T*>(p.dout) + off.o;
  const float* lse = static_cast<const float*>(p.lse) + off.lse;
  const float* dsum = static_cast<const float*>(p.dsum) + off.lse;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
  // Rows (steps 1, 2) and keys (step 3) 16 * slot..; keys split_keys.. (step 1),
  // columns split_cols.. (steps 2, 3).
  const int slot = warp % Traits::kSlots;
  const int split_keys = warp / Traits::kSlots * Traits::kWarpKeys;
  const int split_cols = warp / Traits::kSlots * Traits::kWarpCols;

  float dk[kDTiles][4], dv[kDTiles][4];  // keys 16 * slot + (g, g + 8), columns split_cols + (2t, 2t + 1)
#pragma unroll
  for (int d = 0; d < kDTiles; ++d) {
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[d][e] = dv[d][e] = 0.f;
  }

  if (m_begin < m_end) {
    load_tile_async<Traits, kBlockN>(sK, static_cast<const T*>(p.k) + off.k + n0 * p.k_row_stride,
                                     p.k_row_stride, cols, p.headdim);
    load_tile_async<Traits, kBlockN>(sV, static_cast<const T*>(p.v) + off.v + n0 * p.v_row_stride,
                                     p.v_row_stride, cols, p.headdim_v);
    load_tile_async<Traits, kBlockM>(sQ, q + m_begin * p.q_row_stride, p.q_row_stride,
                                     s.sq - m_begin, p.headdim);
    load_tile_async<Traits, kBlockM>(sdO, dout + m_begin * p.o_row_stride, p.o_row_stride,
                                     s.sq - m_begin, p.headdim_v);
    mma::cp_async_commit();
  }
  const ScoreMap<float> map = score_map<float>(p, s, b, h);
  const bool dropout = p.dropout_p > 0, softcap = p.softcap > 0;
  const float keep_scale = dropout ? float(1.0 / (1.0 - p.dropout_p)) : 1.f;
  const int64_t dq_row_stride = p.nheads * p.headdim;
  float* dq_accum = static_cast<float*>(p.dq_accum) + (off.rows_q * p.nheads + h) * p.headdim;
  const bool dq_slices = p.dq_splits > 1;  // deterministic: the key block's own slice
  if (dq_slices) {
    const int64_t rows_q = p.cu_seqlens_q ? p.cu_seqlens_q[p.batch] : p.batch * p.seqlen_q;
    dq_accum += int64_t(blockIdx.x) * rows_q * p.nheads * p.headdim;
  }

  for (int64_t m0 = m_begin, it = 0; m0 < m_end; m0 += kBlockM, ++it) {
    const int buf = static_cast<int>(it & 1);
    if (m0 + kBlockM < m_end) {
      const int64_t m1 = m0 + kBlockM;
      load_tile_async<Traits, kBlockM>(sQ + (buf ^ 1) * Traits::kTileQ, q + m1 * p.q_row_stride,
                                       p.q_row_stride, s.sq - m1, p.headdim);
      load_tile_async<Traits, kBlockM>(sdO + (buf ^ 1) * Traits::kTileQ,
                                       dout + m1 * p.o_row_stride, p.o_row_stride, s.sq - m1,
                                       p.headdim_v);
      mma::cp_async_commit();
      mma::cp_async_wait<1>();
    } else {
      mma::cp_async_wait<0>();
    }
    __syncthreads();  // (1) K, V and this block's Q, dO are visible to every thread
    const T* tQ = sQ + buf * Traits::kTileQ;
    const T* tdO = sdO + buf * Traits::kTileQ;
    const int i = lane / 8;  // the ldmatrix x4 matrix this lane addresses

    // 1. S = Q K^T and dP = dO V^T for the warp's 16 rows and kWarpKeys keys.
    float sc[kNTiles][4], dp[kNTiles][4];
#pragma unroll
    for (int n = 0; n < kNTiles; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) sc[n][e] = dp[n][e] = 0.f;
    }
#pragma unroll
    for (int kk = 0; kk < kHeadDim / 16; ++kk) {
      uint32_t aq[4], ado[4];
      const int a_off = (slot * 16 + (i % 2) * 8 + lane % 8) * kStride + kk * 16 + (i / 2) * 8;
      mma::ldmatrix(aq, tQ + a_off);
      mma::ldmatrix(ado, tdO + a_off);
#pragma unroll
      for (int n = 0; n < kNTiles; n += 2) {
        const int b_off = (split_keys + (n + i / 2) * 8 + lane % 8) * kStride + kk * 16 + (i % 2) * 8;
        uint32_t bk[4], bv[4];
        mma::ldmatrix(bk, sK + b_off);
        mma::ldmatrix(bv, sV + b_off);
        const uint32_t k0[2] = {bk[0], bk[1]}, k1[2] = {bk[2], bk[3]};
        const uint32_t v0[2] = {bv[0], bv[1]}, v1[2] = {bv[2], bv[3]};
        mma::mma_m16n8k16<T>(sc[n], aq, k0, sc[n]);
        mma::mma_m16n8k16<T>(sc[n + 1], aq, k1, sc[n + 1]);
        mma::mma_m16n8k16<T>(dp[n], ado, v0, dp[n]);
        mma::mma_m16n8k16<T>(dp[n + 1], ado, v1, dp[n + 1]);
      }
    }
    // P and dS per element; P (dropped) and dS to shared memory as T.
    const int64_t row[2] = {m0 + slot * 16 + g, m0 + slot * 16 + g + 8};
    float row_lse[2], row_dsum[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const bool valid = row[r] < s.sq;
      row_lse[r] = valid ? lse[row[r]] : INFINITY;
      row_dsum[r] = valid ? dsum[row[r]] : 0.f;
    }
#pragma unroll
    for (int n = 0; n < kNTiles; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = e / 2;
        const int64_t j = n0 + split_keys + n * 8 + 2 * t + (e & 1);
        float th = 0.f;
        const float score = map(sc[n][e], row[r], j, softcap ? &th : nullptr);
        const float prob =
            score == -INFINITY || row_lse[r] == INFINITY ? 0.f : expf(score - row_lse[r]);
        const bool keep = !dropout || dropout_keep_at(p, b, h, row[r], j);
        const float dpk = keep ? dp[n][e] * keep_scale : 0.f;
        float ds = prob * (dpk - row_dsum[r]);
        if (softcap) ds *= 1.f - th * th;
        sc[n][e] = keep ? prob * keep_scale : 0.f;  // P with dropout, for dV
        dp[n][e] = ds;
      }
      const int prow = slot * 16 + g, pcol = split_keys + n * 8 + 2 * t;
      *reinterpret_cast<uint32_t*>(sP + prow * kPStride + pcol) = mma::pack2<T>(sc[n][0], sc[n][1]);
      *reinterpret_cast<uint32_t*>(sP + (prow + 8) * kPStride + pcol) =
          mma::pack2<T>(sc[n][2], sc[n][3]);
      *reinterpret_cast<uint32_t*>(sdS + prow * kPStride + pcol) = mma::pack2<T>(dp[n][0], dp[n][1]);
      *reinterpret_cast<uint32_t*>(sdS + (prow + 8) * kPStride + pcol) =
          mma::pack2<T>(dp[n][2], dp[n][3]);
    }
    __syncthreads();  // (2) every warp's P and dS are in shared memory

    // 2. dQ (16 rows x kWarpCols) = dS K: A = dS stored [row][k = key]
    // (ldmatrix), B = K stored [k = key][n = d] (ldmatrix_trans).
    uint32_t ads[kBlockN / 16][4];
#pragma unroll
    for (int kt = 0; kt < kBlockN / 16; ++kt)
      mma::ldmatrix(ads[kt], sdS + (slot * 16 + (i % 2) * 8 + lane % 8) * kPStride + kt * 16 + (i / 2) * 8);
#pragma unroll
    for (int d = 0; d < kDTiles; d += 2) {
      float dq0[4] = {0.f, 0.f, 0.f, 0.f}, dq1[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
      for (int kt = 0; kt < kBlockN / 16; ++kt) {
        uint32_t bk[4];
        mma::ldmatrix_trans(bk, sK + (kt * 16 + (i % 2) * 8 + lane % 8) * kStride + split_cols +
                                    (d + i / 2) * 8);
        const uint32_t k0[2] = {bk[0], bk[1]}, k1[2] = {bk[2], bk[3]};
        mma::mma_m16n8k16<T>(dq0, ads[kt], k0, dq0);
        mma::mma_m16n8k16<T>(dq1, ads[kt], k1, dq1);
      }
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t r = row[e / 2];
        const int64_t c0 = split_cols + d * 8 + 2 * t + (e & 1), c1 = c0 + 8;
        if (r >= s.sq) continue;
        float* dst = dq_accum + r * dq_row_stride;
        if (dq_slices) {  // each element of the slice is this lane's alone
          if (c0 < p.headdim) dst[c0] = dq0[e];
          if (c1 < p.headdim) dst[c1] = dq1[e];
        } else {
          if (c0 < p.headdim) atomicAdd(dst + c0, dq0[e]);
          if (c1 < p.headdim) atomicAdd(dst + c1, dq1[e]);
        }
      }
    }

    // 3. dV += P^T dO and dK += dS^T Q for the warp's 16 keys and kWarpCols
    // columns: A = P^T read from P stored [row][key] (ldmatrix_trans), B = dO /
    // Q stored [k = row][n = d].
#pragma unroll
    for (int kk = 0; kk < kBlockM / 16; ++kk) {
      const int a_off = (kk * 16 + (i / 2) * 8 + lane % 8) * kPStride + slot * 16 + (i % 2) * 8;
      uint32_t ap[4], ads_t[4];
      mma::ldmatrix_trans(ap, sP + a_off);
      mma::ldmatrix_trans(ads_t, sdS + a_off);
#pragma unroll
      for (int d = 0; d < kDTiles; d += 2) {
        const int b_off = (kk * 16 + (i % 2) * 8 + lane % 8) * kStride + split_cols + (d + i / 2) * 8;
        uint32_t bo[4], bq[4];
        mma::ldmatrix_trans(bo, tdO + b_off);
        mma::ldmatrix_trans(bq, tQ + b_off);
        const uint32_t o0[2] = {bo[0], bo[1]}, o1[2] = {bo[2], bo[3]};
        const uint32_t q0[2] = {bq[0], bq[1]}, q1[2] = {bq[2], bq[3]};
        mma::mma_m16n8k16<T>(dv[d], ap, o0, dv[d]);
        mma::mma_m16n8k16<T>(dv[d + 1], ap, o1, dv[d + 1]);
        mma::mma_m16n8k16<T>(dk[d], ads_t, q0, dk[d]);
        mma::mma_m16n8k16<T>(dk[d + 1], ads_t, q1, dk[d + 1]);
      }
    }
    __syncthreads();  // (3) Q, dO, P and dS of this block are no longer read
  }

  // dK and dV of the block's keys (zero for keys no row sees).
  float* dk_accum = static_cast<float*>(p.dk_accum);
  float* dv_accum = static_cast<float*>(p.dv_accum);
#pragma unroll
  for (int e = 0; e < 4; e += 2) {
    const int64_t j = n0 + slot * 16 + g + (e / 2) * 8;
    if (j >= s.sk) continue;
    const int64_t r = (off.rows_k + j) * p.nheads + h;
#pragma unroll
    for (int d = 0; d < kDTiles; ++d) {
      const int64_t c = split_cols + d * 8 + 2 * t;
      if (c < p.headdim) dk_accum[r * p.headdim + c] = dk[d][e];
      if (c + 1 < p.headdim) dk_accum[r * p.headdim + c + 1] = dk[d][e + 1];
      if (c < p.headdim_v) dv_accum[r * p.headdim_v + c] = dv[d][e];
      if (c + 1 < p.headdim_v) dv_accum[r * p.headdim_v + c + 1] = dv[d][e + 1];
    }
  }
}

}  // namespace flash_attn_detail
}  // namespace kernelzoo
