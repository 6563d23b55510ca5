// The flash-attention CUDA kernels that do not use tensor cores: the forward
// for float32 and float64 (flash-attn has none: its issue #622; correct, and
// several times slower than the float16/bfloat16 kernel), the probabilities
// S_dmask (return_attn_probs, for tests), and the merge of split-KV partial
// results. Kernel-safe: no tensor or runtime host headers.
#pragma once

#include <math.h>

#include <cstdint>

#include "../../common/macros.h"
#include "flash_attn_block.cuh"

namespace kernelzoo {
namespace flash_attn_detail {

// The kernels' dynamic shared memory (declared at namespace scope: the CPU
// harness defines it once per test, KZ_HARNESS_DYNAMIC_SHARED).
extern __shared__ __align__(16) unsigned char flash_smem[];

// The forward without tensor cores: one thread per query row, kSimtRows rows
// per block; the key and value tiles (kSimtKeys keys, converted to acc_t) are
// staged in shared memory for all of them. Same grid, splits and outputs as
// flash_fwd_kernel.
constexpr int kSimtRows = 64;
constexpr int kSimtKeys = 16;

template <typename acc_t>
constexpr int simt_shared_bytes(int max_head_dim) {
  return 2 * kSimtKeys * max_head_dim * static_cast<int>(sizeof(acc_t));
}

template <typename scalar_t, typename acc_t, int kMaxHeadDim>
__global__ void __launch_bounds__(kSimtRows) flash_simt_fwd_kernel(const FlashKernelParams p) {
  acc_t* sK = reinterpret_cast<acc_t*>(flash_smem);  // kSimtKeys x kMaxHeadDim
  acc_t* sV = sK + kSimtKeys * kMaxHeadDim;

  const int64_t b = blockIdx.z / p.num_splits, split = blockIdx.z % p.num_splits;
  const int64_t h = blockIdx.y, m0 = int64_t(blockIdx.x) * kSimtRows;
  const Seq s = sequence(p, b);
  if (m0 >= s.sq) return;
  const HeadOffsets off = head_offsets(p, s, b, h);
  const int64_t rows = s.sq - m0 < kSimtRows ? s.sq - m0 : kSimtRows;
  KeyRange keys = block_keys(p, s, m0, m0 + rows);
  if (p.num_splits > 1) {
    const int64_t lo = split * p.split_keys, hi = lo + p.split_keys;
    keys.lo = keys.lo > lo ? keys.lo : lo;
    keys.hi = keys.hi < hi ? keys.hi : hi;
  }
  const int64_t D = p.headdim, Dv = p.headdim_v;
  const int64_t i = m0 + threadIdx.x;  // this thread's row (may be >= sq: it only helps load)
  const bool active = i < s.sq;

  acc_t q[kMaxHeadDim], o[kMaxHeadDim];
  const scalar_t* qrow = static_cast<const scalar_t*>(p.q) + off.q + i * p.q_row_stride;
  for (int c = 0; c < kMaxHeadDim; ++c) {
    q[c] = active && c < D ? static_cast<acc_t>(qrow[c]) : acc_t(0);
    o[c] = acc_t(0);
  }
  const ScoreMap<acc_t> map = score_map<acc_t>(p, s, b, h);
  const bool dropout = p.dropout_p > 0;
  const acc_t keep_scale = dropout ? acc_t(1) / (acc_t(1) - static_cast<acc_t>(p.dropout_p)) : acc_t(1);
  acc_t m = -acc_t(INFINITY), l = acc_t(0);
  const scalar_t* k = static_cast<const scalar_t*>(p.k) + off.k;
  const scalar_t* v = static_cast<const scalar_t*>(p.v) + off.v;

  for (int64_t n0 = keys.lo; n0 < keys.hi; n0 += kSimtKeys) {
    const int64_t cols = keys.hi - n0 < kSimtKeys ? keys.hi - n0 : kSimtKeys;
    for (int e = threadIdx.x; e < kSimtKeys * kMaxHeadDim; e += kSimtRows) {
      const int r = e / kMaxHeadDim, c = e % kMaxHeadDim;
      sK[e] = r < cols && c < D ? static_cast<acc_t>(k[(n0 + r) * p.k_row_stride + c]) : acc_t(0);
      sV[e] = r < cols && c < Dv ? static_cast<acc_t>(v[(n0 + r) * p.v_row_stride + c]) : acc_t(0);
    }
    __syncthreads();  // (1) the tile is complete
    if (active) {
      acc_t sc[kSimtKeys];
      acc_t mx = m;
      for (int r = 0; r < cols; ++r) {
        acc_t x = acc_t(0);
        for (int c = 0; c < kMaxHeadDim; ++c) x += q[c] * sK[r * kMaxHeadDim + c];
        sc[r] = map(x, i, n0 + r);
        mx = sc[r] > mx ? sc[r] : mx;
      }
      if (mx != -acc_t(INFINITY)) {
        const acc_t corr = exp(m - mx);  // 0 while m = -inf
        acc_t sum = acc_t(0);
        for (int r = 0; r < cols; ++r) {
          sc[r] = exp(sc[r] - mx);
          sum += sc[r];
          if (dropout) sc[r] = dropout_keep_at(p, b, h, i, n0 + r) ? sc[r] * keep_scale : acc_t(0);
        }
        l = l * corr + sum;
        m = mx;
        for (int c = 0; c < kMaxHeadDim; ++c) {
          acc_t acc = o[c] * corr;
          for (int r = 0; r < cols; ++r) acc += sc[r] * sV[r * kMaxHeadDim + c];
          o[c] = acc;
        }
      }
    }
    __syncthreads();  // (2) every thread is done with the tile before it is refilled
  }
  if (!active) return;
  const acc_t inv = l > acc_t(0) ? acc_t(1) / l : acc_t(0);
  if (p.num_splits > 1) {
    const int64_t row = ((split * p.batch + b) * p.nheads + h) * p.seqlen_q + i;
    acc_t* oacc = static_cast<acc_t*>(p.oaccum) + row * Dv;
    for (int c = 0; c < Dv && c < kMaxHeadDim; ++c) oacc[c] = o[c] * inv;
    static_cast<acc_t*>(p.lseaccum)[row] = l > acc_t(0) ? m + log(l) : -acc_t(INFINITY);
  } else {
    scalar_t* out = static_cast<scalar_t*>(p.out) + off.o + i * p.o_row_stride;
    for (int c = 0; c < Dv && c < kMaxHeadDim; ++c) out[c] = static_cast<scalar_t>(o[c] * inv);
    static_cast<acc_t*>(p.lse)[off.lse + i] = l > acc_t(0) ? m + log(l) : acc_t(INFINITY);
  }
}

// Merges the split-KV partial results: per row (b, h, i) of a dense problem,
// lse = log sum_s exp(lse_s) and out = sum_s exp(lse_s - lse) o_s (splits
// that saw no key have lse_s = -inf; a row no split saw gets out 0 and lse
// +inf). One thread per (row, output column); the column-0 thread writes lse.
template <typename scalar_t, typename acc_t>
__global__ void flash_combine_kernel(const FlashKernelParams p) {
  const int64_t rows = p.batch * p.nheads * p.seqlen_q, Dv = p.headdim_v;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < rows * Dv;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = e / Dv, c = e % Dv;
    const acc_t* lse_s = static_cast<const acc_t*>(p.lseaccum) + row;
    acc_t mx = -acc_t(INFINITY);
    for (int64_t sp = 0; sp < p.num_splits; ++sp) mx = lse_s[sp * rows] > mx ? lse_s[sp * rows] : mx;
    acc_t sum = acc_t(0), acc = acc_t(0);
    if (mx != -acc_t(INFINITY)) {
      for (int64_t sp = 0; sp < p.num_splits; ++sp) {
        const acc_t w = exp(lse_s[sp * rows] - mx);
        sum += w;
        acc += w * static_cast<const acc_t*>(p.oaccum)[(sp * rows + row) * Dv + c];
      }
    }
    const int64_t i = row % p.seqlen_q, h = (row / p.seqlen_q) % p.nheads,
                  b = row / (p.seqlen_q * p.nheads);
    const int64_t o_off = b * p.o_batch_stride + i * p.o_row_stride + h * p.o_head_stride;
    static_cast<scalar_t*>(p.out)[o_off + c] = static_cast<scalar_t>(sum > acc_t(0) ? acc / sum : acc_t(0));
    if (c == 0) {
      static_cast<acc_t*>(p.lse)[b * p.lse_batch_stride + h * p.lse_head_stride + i] =
          sum > acc_t(0) ? mx + log(sum) : acc_t(INFINITY);
    }
  }
}

// S_dmask (return_attn_probs): P = exp(score - lse) of every (b, h, i, j) of
// (batch, nheads, seqlen_q, seqlen_k), negated where dropout drops it, 0
// outside the row's visible keys and past a sequence's lengths (the buffer is
// zeroed by the host; this kernel writes the visible entries). One thread per
// element of rows within their sequence.
template <typename scalar_t, typename acc_t>
__global__ void flash_probs_kernel(const FlashKernelParams p) {
  const int64_t b = blockIdx.z, h = blockIdx.y;
  const Seq s = sequence(p, b);
  const HeadOffsets off = head_offsets(p, s, b, h);
  const ScoreMap<acc_t> map = score_map<acc_t>(p, s, b, h);
  const scalar_t* q = static_cast<const scalar_t*>(p.q) + off.q;
  const scalar_t* k = static_cast<const scalar_t*>(p.k) + off.k;
  const acc_t* lse = static_cast<const acc_t*>(p.lse) + off.lse;
  scalar_t* dst = static_cast<scalar_t*>(p.s_dmask) + (b * p.nheads + h) * p.seqlen_q * p.seqlen_k;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < s.sq * s.sk;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = e / s.sk, j = e % s.sk;
    acc_t x = acc_t(0);
    for (int64_t c = 0; c < p.headdim; ++c) {
      x += static_cast<acc_t>(q[i * p.q_row_stride + c]) * static_cast<acc_t>(k[j * p.k_row_stride + c]);
    }
    const acc_t sc = map(x, i, j);
    const acc_t e_ij = sc == -acc_t(INFINITY) || isinf(lse[i]) ? acc_t(0) : exp(sc - lse[i]);
    const bool kept = p.dropout_p <= 0 || dropout_keep_at(p, b, h, i, j);
    dst[i * p.seqlen_k + j] = static_cast<scalar_t>(kept ? e_ij : -e_ij);
  }
}

}  // namespace flash_attn_detail
}  // namespace kernelzoo
