// The tensor-core forward of flash attention (FlashAttention-2's structure),
// float16 and bfloat16. One thread block of kWarps warps per (block of kBlockM
// query rows, query head, sequence [, KV split]): the query tile is copied to
// shared memory once; the key and value tiles of the keys the block sees are
// streamed through two shared-memory buffers with cp.async (the next tile is
// in flight while the current one is used); each warp owns 16 query rows and
// computes S = Q K^T and O += P V with mma.m16n8k16 (float32 accumulators),
// the scores being transformed, masked and folded into an online softmax in
// registers (flash_attn_softmax.cuh). The epilogue writes O / l and the
// log-sum-exp; with split-KV, the split's normalised O and its log-sum-exp go
// to the accumulators merged by flash_combine_kernel (flash_attn_simt_kernel.cuh).
//
// Requirements the host guarantees (flash_attn_plan.h): q, k, v 16-byte
// aligned, every batch / row / head stride a multiple of 8 elements, headdim
// and headdim_v multiples of 8 and at most kHeadDim (columns past them are
// zero-filled in shared memory, so padding changes nothing). Kernel-safe: no
// tensor or runtime host headers.
#pragma once

#include <cstdint>

#include "../../common/macros.h"
#include "../../common/mma.cuh"
#include "flash_attn_block.cuh"
#include "flash_attn_softmax.cuh"

namespace kernelzoo {
namespace flash_attn_detail {

// The kernels' dynamic shared memory (declared at namespace scope: the CPU
// harness defines it once per test, KZ_HARNESS_DYNAMIC_SHARED).
extern __shared__ __align__(16) unsigned char flash_smem[];

// Compile-time tiles per head-dimension bucket.
template <int kHeadDim_>
struct FwdTraits {
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kWarps = 4;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kBlockM = 16 * kWarps;               // query rows per block
  static constexpr int kBlockN = kHeadDim <= 128 ? 64 : 32;  // keys per streamed tile
  // Shared-memory rows are padded by 8 elements (16 bytes): consecutive rows
  // then start in different banks, and ldmatrix's 16-byte rows stay aligned.
  static constexpr int kStride = kHeadDim + 8;
  static constexpr int kTileQ = kBlockM * kStride;  // elements
  static constexpr int kTileKV = kBlockN * kStride;
  static constexpr int kSmemElements = kTileQ + 4 * kTileKV;  // Q, 2 x K, 2 x V
  static_assert(kHeadDim % 32 == 0 && kHeadDim <= kMaxHeadDim, "a head-dimension bucket");
};

template <typename Traits>
constexpr int fwd_shared_bytes() {
  return Traits::kSmemElements * 2;
}

// Copies rows [0, rows) x columns [0, cols) of a tile of Traits::kHeadDim
// columns from global (row stride `stride` elements) to shared memory (row
// stride Traits::kStride), zero-filling rows >= rows and columns >= cols up to
// kTileRows x kHeadDim, 16 bytes per cp.async, all threads of the block. Not
// committed: the caller commits.
template <typename Traits, int kTileRows, typename T>
KZ_DEVICE KZ_INLINE void load_tile_async(T* smem, const T* gmem, int64_t stride, int64_t rows,
                                         int64_t cols) {
  constexpr int kChunksPerRow = Traits::kHeadDim / 8;
  for (int c = threadIdx.x; c < kTileRows * kChunksPerRow; c += Traits::kThreads) {
    const int r = c / kChunksPerRow, col = (c % kChunksPerRow) * 8;
    const bool valid = r < rows && col < cols;
    const T* src = valid ? gmem + r * stride + col : gmem;
    mma::cp_async_zfill<16>(smem + r * Traits::kStride + col, src, valid ? 16 : 0);
  }
}

template <typename T, int kHeadDim>
__global__ void __launch_bounds__(FwdTraits<kHeadDim>::kThreads)
    flash_fwd_kernel(const FlashKernelParams p) {
  using Traits = FwdTraits<kHeadDim>;
  constexpr int kBlockM = Traits::kBlockM, kBlockN = Traits::kBlockN, kStride = Traits::kStride;
  constexpr int kNTiles = kBlockN / 8;   // 8-key tiles of S
  constexpr int kDTiles = kHeadDim / 8;  // 8-column tiles of O
  T* sQ = reinterpret_cast<T*>(flash_smem);
  T* sK = sQ + Traits::kTileQ;      // two buffers of kTileKV
  T* sV = sK + 2 * Traits::kTileKV;  // two buffers of kTileKV

  const int64_t b = blockIdx.z / p.num_splits, split = blockIdx.z % p.num_splits;
  const int64_t h = blockIdx.y, m0 = int64_t(blockIdx.x) * kBlockM;
  const Seq s = sequence(p, b);
  if (m0 >= s.sq) return;  // varlen: a shorter sequence
  const HeadOffsets off = head_offsets(p, s, b, h);
  const int64_t rows = s.sq - m0 < kBlockM ? s.sq - m0 : kBlockM;

  // The key tiles this block visits: those some row of it sees, within its split.
  KeyRange keys = block_keys(p, s, m0, m0 + rows);
  if (p.num_splits > 1) {
    const int64_t lo = split * p.split_keys, hi = lo + p.split_keys;
    keys.lo = keys.lo > lo ? keys.lo : lo;
    keys.hi = keys.hi < hi ? keys.hi : hi;
  }
  const int64_t n_begin = keys.lo < keys.hi ? keys.lo / kBlockN * kBlockN : 0;
  const int64_t n_end = keys.lo < keys.hi ? keys.hi : 0;

  const T* q = static_cast<const T*>(p.q) + off.q + m0 * p.q_row_stride;
  const T* k = static_cast<const T*>(p.k) + off.k;
  const T* v = static_cast<const T*>(p.v) + off.v;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;

  float o[kDTiles][4];
#pragma unroll
  for (int d = 0; d < kDTiles; ++d) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.f;
  OnlineSoftmax softmax;

  if (n_begin < n_end) {
    load_tile_async<Traits, kBlockM>(sQ, q, p.q_row_stride, rows, p.headdim);
    mma::cp_async_commit();
    load_tile_async<Traits, kBlockN>(sK, k + n_begin * p.k_row_stride, p.k_row_stride,
                                     s.sk - n_begin, p.headdim);
    load_tile_async<Traits, kBlockN>(sV, v + n_begin * p.v_row_stride, p.v_row_stride,
                                     s.sk - n_begin, p.headdim_v);
    mma::cp_async_commit();
  }
  const ScoreMap<float> map = score_map<float>(p, s, b, h);
  const bool dropout = p.dropout_p > 0;
  const float keep_scale = dropout ? float(1.0 / (1.0 - p.dropout_p)) : 1.f;
  // Without softcap and ALiBi a score is the scaled product wherever it is
  // visible: rows see keys [lo, hi) with both bounds non-decreasing in the row,
  // so a tile within [lo of the last row, hi of the first row) is unmasked.
  const bool plain = !(map.softcap > 0.f) && map.slope == 0.f;
  const KeyRange first_row_keys = visible_keys(m0, s.sq, s.sk, p.window_left, p.window_right);
  const KeyRange last_row_keys =
      visible_keys(m0 + rows - 1, s.sq, s.sk, p.window_left, p.window_right);
  // The two query rows (sequence-local) of this lane.
  const int64_t row0 = m0 + warp * 16 + g, row1 = row0 + 8;

  for (int64_t n0 = n_begin, it = 0; n0 < n_end; n0 += kBlockN, ++it) {
    const int buf = static_cast<int>(it & 1);
    if (n0 + kBlockN < n_end) {  // the next tile into the other buffer
      const int64_t n1 = n0 + kBlockN;
      load_tile_async<Traits, kBlockN>(sK + (buf ^ 1) * Traits::kTileKV, k + n1 * p.k_row_stride,
                                       p.k_row_stride, s.sk - n1, p.headdim);
      load_tile_async<Traits, kBlockN>(sV + (buf ^ 1) * Traits::kTileKV, v + n1 * p.v_row_stride,
                                       p.v_row_stride, s.sk - n1, p.headdim_v);
      mma::cp_async_commit();
      mma::cp_async_wait<1>();  // everything but the next tile has landed
    } else {
      mma::cp_async_wait<0>();
    }
    __syncthreads();  // (1) every thread's copies of the current tile (and Q) are visible
    const T* tK = sK + buf * Traits::kTileKV;
    const T* tV = sV + buf * Traits::kTileKV;

    // S (16 x kBlockN per warp) = Q K^T
    float sc[kNTiles][4];
#pragma unroll
    for (int n = 0; n < kNTiles; ++n) sc[n][0] = sc[n][1] = sc[n][2] = sc[n][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < kHeadDim / 16; ++kk) {
      uint32_t a[4];  // Q rows warp*16.., columns kk*16..: four 8x8 matrices
      {
        const int i = lane / 8;
        mma::ldmatrix(a, sQ + (warp * 16 + (i % 2) * 8 + lane % 8) * kStride + kk * 16 + (i / 2) * 8);
      }
#pragma unroll
      for (int n = 0; n < kNTiles; n += 2) {
        uint32_t bk[4];  // K rows (keys) of tiles n, n + 1, columns kk*16.. (B stored [n][k])
        const int i = lane / 8;
        mma::ldmatrix(bk, tK + ((n + i / 2) * 8 + lane % 8) * kStride + kk * 16 + (i % 2) * 8);
        const uint32_t b0[2] = {bk[0], bk[1]}, b1[2] = {bk[2], bk[3]};
        mma::mma_m16n8k16<T>(sc[n], a, b0, sc[n]);
        mma::mma_m16n8k16<T>(sc[n + 1], a, b1, sc[n + 1]);
      }
    }
    // Scores: scaled, capped, biased and masked per element (c_coord layout);
    // only scaled on a tile that every row of the block sees whole.
    if (plain && n0 >= last_row_keys.lo && n0 + kBlockN <= first_row_keys.hi) {
#pragma unroll
      for (int n = 0; n < kNTiles; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) sc[n][e] *= map.scale;
      }
    } else {
#pragma unroll
      for (int n = 0; n < kNTiles; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int64_t i = e < 2 ? row0 : row1, j = n0 + n * 8 + 2 * t + (e & 1);
          sc[n][e] = map(sc[n][e], i, j);
        }
      }
    }
    float corr[2];
    softmax.update(sc, corr);
#pragma unroll
    for (int d = 0; d < kDTiles; ++d) {
      o[d][0] *= corr[0];
      o[d][1] *= corr[0];
      o[d][2] *= corr[1];
      o[d][3] *= corr[1];
    }
    if (dropout) {  // P for P V only: the sums above are the undropped ones
#pragma unroll
      for (int n = 0; n < kNTiles; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int64_t i = e < 2 ? row0 : row1, j = n0 + n * 8 + 2 * t + (e & 1);
          sc[n][e] = dropout_keep_at(p, b, h, i, j) ? sc[n][e] * keep_scale : 0.f;
        }
      }
    }
    // O (16 x kHeadDim per warp) += P V: the S fragments of key tiles 2kt and
    // 2kt + 1 are the A fragment of k-step kt.
#pragma unroll
    for (int kt = 0; kt < kBlockN / 16; ++kt) {
      const uint32_t a[4] = {mma::pack2<T>(sc[2 * kt][0], sc[2 * kt][1]),
                             mma::pack2<T>(sc[2 * kt][2], sc[2 * kt][3]),
                             mma::pack2<T>(sc[2 * kt + 1][0], sc[2 * kt + 1][1]),
                             mma::pack2<T>(sc[2 * kt + 1][2], sc[2 * kt + 1][3])};
#pragma unroll
      for (int d = 0; d < kDTiles; d += 2) {
        uint32_t bv[4];  // V rows (keys) kt*16.., columns of tiles d, d + 1 (B stored [k][n])
        const int i = lane / 8;
        mma::ldmatrix_trans(bv, tV + (kt * 16 + (i % 2) * 8 + lane % 8) * kStride + (d + i / 2) * 8);
        const uint32_t b0[2] = {bv[0], bv[1]}, b1[2] = {bv[2], bv[3]};
        mma::mma_m16n8k16<T>(o[d], a, b0, o[d]);
        mma::mma_m16n8k16<T>(o[d + 1], a, b1, o[d + 1]);
      }
    }
    __syncthreads();  // (2) every warp is done with this buffer before it is refilled
  }

  // Epilogue: O / l and the log-sum-exp (+inf, or -inf for a split, where a
  // row saw no key: its output is 0).
  softmax.finish();
  const bool split_out = p.num_splits > 1;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int64_t i = r == 0 ? row0 : row1;
    if (i >= s.sq) continue;
    const float l = softmax.l[r];
    const float inv = l > 0.f ? 1.f / l : 0.f;
    const float lse = l > 0.f ? softmax.m[r] + logf(l) : (split_out ? -INFINITY : INFINITY);
    if (split_out) {
      const int64_t row = ((split * p.batch + b) * p.nheads + h) * p.seqlen_q + i;
      float* oacc = static_cast<float*>(p.oaccum) + row * p.headdim_v;
#pragma unroll
      for (int d = 0; d < kDTiles; ++d) {
        const int64_t c = d * 8 + 2 * t;
        if (c < p.headdim_v) oacc[c] = o[d][2 * r] * inv;
        if (c + 1 < p.headdim_v) oacc[c + 1] = o[d][2 * r + 1] * inv;
      }
      if (t == 0) static_cast<float*>(p.lseaccum)[row] = lse;
    } else {
      T* out = static_cast<T*>(p.out) + off.o + i * p.o_row_stride;
#pragma unroll
      for (int d = 0; d < kDTiles; ++d) {
        const int64_t c = d * 8 + 2 * t;
        if (c < p.headdim_v) out[c] = T(o[d][2 * r] * inv);
        if (c + 1 < p.headdim_v) out[c + 1] = T(o[d][2 * r + 1] * inv);
      }
      if (t == 0) static_cast<float*>(p.lse)[off.lse + i] = lse;
    }
  }
}

}  // namespace flash_attn_detail
}  // namespace kernelzoo
