// The flash-attention backward without tensor cores, in flash-attn 2's
// structure (generic in the dtype; the plan runs it for float32 and float64,
// float16 / bfloat16 take flash_attn_bwd_mma_kernel.cuh, which shares the
// dsum kernel): a kernel for dsum = rowsum(dout * out), then one
// block per (key block, query head, sequence) that walks the query rows seeing
// its keys, recomputes P = exp(score - lse), and accumulates dK and dV of its
// keys in registers and dQ of the rows in dq_accum. Semantics are the CPU
// backward's (flash_attn_cpu.cpp: backward_cpu, score_grads); the host scales
// dq and dk by softmax_scale and sums the query heads of each kv head
// (flash_attn_bwd_plan.h). Kernel-safe: no tensor or runtime host headers.
//
// Synchronisation of flash_bwd_simt_kernel, per step of kBwdBlockM query rows:
// (1) after the Q / dO / lse / dsum tiles are written to shared memory, before
// any thread reads them; (2) after the P / dS tiles are written, before the dK,
// dV and dQ products read them; (3) after those products, before the next step
// overwrites the tiles. Every thread of the block reaches all three (the loop
// bounds are the same for the whole block). dK / dV elements are owned by one
// thread each; dQ is added with atomicAdd (dq_splits == 1) or stored, each
// element by one thread, to the block's own slice (dq_splits > 1, the slices
// zeroed by the host).
#pragma once

#include <math.h>

#include <cstdint>

#include "../../common/acc_type.h"
#include "../../common/macros.h"
#include "flash_attn_block.cuh"
#include "flash_attn_math.h"
#include "flash_attn_params.h"

namespace kernelzoo {
namespace flash_attn_detail {

constexpr int kBwdBlockN = 64;     // keys per block
constexpr int kBwdBlockM = 16;     // query rows per step
constexpr int kBwdThreads = 256;   // threads of flash_bwd_simt_kernel
constexpr int kDsumThreads = 128;  // threads (rows) per block of flash_bwd_dsum_kernel

// The dynamic shared memory of flash_bwd_simt_kernel. Declared at namespace
// scope: under the CPU harness (thread_local), GCC 12 compiles a block-scope
// extern declaration in a kernel template into a call of a TLS init function
// that does not exist.
extern __shared__ __align__(16) unsigned char flash_smem[];

static_assert(kBwdThreads % kBwdBlockN == 0 && (kBwdBlockM * kBwdBlockN) % kBwdThreads == 0,
              "the score step gives every thread whole rows of one key");

// Dynamic shared memory of flash_bwd_simt_kernel (acc_t): Q (kBwdBlockM x D),
// dO (kBwdBlockM x Dv), P with dropout and dS (kBwdBlockM x kBwdBlockN each),
// lse and dsum (kBwdBlockM each).
template <typename acc_t>
KZ_HOST_DEVICE KZ_INLINE int64_t bwd_shared_bytes(int64_t d, int64_t dv) {
  return static_cast<int64_t>(sizeof(acc_t)) *
         (kBwdBlockM * (d + dv) + 2 * kBwdBlockM * kBwdBlockN + 2 * kBwdBlockM);
}

// dsum[row] = sum_c dout[row, c] * out[row, c] (acc_t, laid out like lse): one
// thread per (sequence blockIdx.z, head blockIdx.y, row).
template <typename scalar_t>
__global__ void __launch_bounds__(kDsumThreads) flash_bwd_dsum_kernel(const FlashKernelParams p) {
  using acc_t = acc_type_t<scalar_t>;
  const int64_t b = blockIdx.z, h = blockIdx.y;
  const int64_t i = int64_t(blockIdx.x) * kDsumThreads + threadIdx.x;
  const Seq s = sequence(p, b);
  if (i >= s.sq) return;
  const HeadOffsets off = head_offsets(p, s, b, h);
  const int64_t row = off.o + i * p.o_row_stride;
  const scalar_t* o = static_cast<const scalar_t*>(p.out) + row;
  const scalar_t* d = static_cast<const scalar_t*>(p.dout) + row;
  acc_t sum = acc_t(0);
  for (int64_t c = 0; c < p.headdim_v; ++c)
    sum += static_cast<acc_t>(d[c]) * static_cast<acc_t>(o[c]);
  static_cast<acc_t*>(p.dsum)[off.lse + i] = sum;
}

// dK, dV (unscaled, per query head) of keys [j0, j0 + kBwdBlockN) of sequence
// blockIdx.z, query head blockIdx.y, j0 = (key_block0 + blockIdx.x) * kBwdBlockN, and their
// share of dQ (unscaled). kMaxHeadDim >= max(headdim, headdim_v) sizes the
// per-thread accumulators.
template <typename scalar_t, int kMaxHeadDim>
__global__ void __launch_bounds__(kBwdThreads) flash_bwd_simt_kernel(const FlashKernelParams p) {
  using acc_t = acc_type_t<scalar_t>;
  constexpr int kN = kBwdBlockN, kM = kBwdBlockM, kT = kBwdThreads;
  constexpr int kKV = kN * kMaxHeadDim / kT;  // dK (and dV) elements per thread
  constexpr int kQ = kM * kMaxHeadDim / kT;   // dQ elements per thread and step
  constexpr int kRows = kM * kN / kT;         // score rows per thread and step
  constexpr int kRowStep = kT / kN;           // between a thread's score rows
  static_assert(kKV * kT == kN * kMaxHeadDim && kQ * kT == kM * kMaxHeadDim,
                "kMaxHeadDim must be a multiple of kBwdThreads / kBwdBlockM");
  const int64_t b = blockIdx.z, h = blockIdx.y, j0 = (p.key_block0 + blockIdx.x) * kN;
  const Seq s = sequence(p, b);
  if (j0 >= s.sk) return;  // the whole block: no barrier is skipped by some threads only
  const int64_t D = p.headdim, Dv = p.headdim_v, H = p.nheads;
  const int64_t cols = s.sk - j0 < kN ? s.sk - j0 : kN;
  const HeadOffsets off = head_offsets(p, s, b, h);
  const int tid = threadIdx.x;

  acc_t* sQ = reinterpret_cast<acc_t*>(flash_smem);  // kM x D
  acc_t* sdO = sQ + kM * D;                          // kM x Dv
  acc_t* sP = sdO + kM * Dv;                         // kM x kN: P with dropout
  acc_t* sdS = sP + kM * kN;                         // kM x kN
  acc_t* sLse = sdS + kM * kN;                       // kM
  acc_t* sDsum = sLse + kM;                          // kM

  const scalar_t* q = static_cast<const scalar_t*>(p.q) + off.q;
  const scalar_t* dout = static_cast<const scalar_t*>(p.dout) + off.o;
  const scalar_t* k = static_cast<const scalar_t*>(p.k) + off.k + j0 * p.k_row_stride;
  const scalar_t* v = static_cast<const scalar_t*>(p.v) + off.v + j0 * p.v_row_stride;
  const acc_t* lse = static_cast<const acc_t*>(p.lse) + off.lse;
  const acc_t* dsum = static_cast<const acc_t*>(p.dsum) + off.lse;
  acc_t* dq_accum = static_cast<acc_t*>(p.dq_accum);
  if (p.dq_splits > 1) {
    const int64_t rows_q = p.cu_seqlens_q ? p.cu_seqlens_q[p.batch] : p.batch * p.seqlen_q;
    dq_accum += int64_t(blockIdx.x) * rows_q * H * D;
  }

  const ScoreMap<acc_t> map = score_map<acc_t>(p, s, b, h);
  const bool dropout = p.dropout_p > 0;
  const bool softcap = p.softcap > 0;
  const acc_t keep_scale =
      dropout ? acc_t(1) / (acc_t(1) - static_cast<acc_t>(p.dropout_p)) : acc_t(1);

  // The score step: this thread's key jn and rows r0 + m * kRowStep.
  const int jn = tid % kN, r0 = tid / kN;
  const bool key_ok = jn < cols;
  const scalar_t* krow = k + jn * p.k_row_stride;
  const scalar_t* vrow = v + jn * p.v_row_stride;

  acc_t dk[kKV], dv[kKV];
#pragma unroll
  for (int m = 0; m < kKV; ++m) dk[m] = dv[m] = acc_t(0);

  const KeyRange rows = block_rows(p, s, j0, j0 + cols);
  for (int64_t i0 = rows.lo; i0 < rows.hi; i0 += kM) {
    const int nrows = static_cast<int>(rows.hi - i0 < kM ? rows.hi - i0 : kM);
    // Q, dO, lse, dsum of rows [i0, i0 + nrows); rows past them zero (they
    // multiply zeros of dS and P below: no NaN from stale shared memory).
    for (int64_t e = tid; e < kM * D; e += kT) {
      const int64_t r = e / D, c = e % D;
      sQ[e] = r < nrows ? static_cast<acc_t>(q[(i0 + r) * p.q_row_stride + c]) : acc_t(0);
    }
    for (int64_t e = tid; e < kM * Dv; e += kT) {
      const int64_t r = e / Dv, c = e % Dv;
      sdO[e] = r < nrows ? static_cast<acc_t>(dout[(i0 + r) * p.o_row_stride + c]) : acc_t(0);
    }
    if (tid < kM) {
      sLse[tid] = tid < nrows ? lse[i0 + tid] : acc_t(INFINITY);
      sDsum[tid] = tid < nrows ? dsum[i0 + tid] : acc_t(0);
    }
    __syncthreads();  // (1)

    // S = Q K^T and dP = dO V^T for key jn and this thread's rows, then P and dS.
    acc_t x[kRows], dp[kRows];
#pragma unroll
    for (int m = 0; m < kRows; ++m) x[m] = dp[m] = acc_t(0);
    if (key_ok) {
      for (int64_t c = 0; c < D; ++c) {
        const acc_t kc = static_cast<acc_t>(krow[c]);
#pragma unroll
        for (int m = 0; m < kRows; ++m) x[m] += sQ[(r0 + m * kRowStep) * D + c] * kc;
      }
      for (int64_t c = 0; c < Dv; ++c) {
        const acc_t vc = static_cast<acc_t>(vrow[c]);
#pragma unroll
        for (int m = 0; m < kRows; ++m) dp[m] += sdO[(r0 + m * kRowStep) * Dv + c] * vc;
      }
    }
#pragma unroll
    for (int m = 0; m < kRows; ++m) {
      const int r = r0 + m * kRowStep;
      acc_t pd = acc_t(0), ds = acc_t(0);
      if (key_ok && r < nrows) {
        const int64_t i = i0 + r, j = j0 + jn;
        acc_t t = acc_t(0);
        const acc_t score = map(x[m], i, j, &t);
        // a row that sees no key (lse = +inf) gets exp(-inf) = 0
        const acc_t pr = exp(score - sLse[r]);
        acc_t g = dp[m];
        pd = pr;
        if (dropout) {
          const bool keep = dropout_keep_at(p, b, h, i, j);
          g = keep ? g * keep_scale : acc_t(0);
          pd = keep ? pr * keep_scale : acc_t(0);
        }
        ds = pr * (g - sDsum[r]);
        if (softcap) ds *= acc_t(1) - t * t;
      }
      sP[r * kN + jn] = pd;
      sdS[r * kN + jn] = ds;
    }
    __syncthreads();  // (2)

    // dK[jj, c] += sum_r dS[r, jj] Q[r, c]; dV[jj, c] += sum_r P[r, jj] dO[r, c].
#pragma unroll
    for (int m = 0; m < kKV; ++m) {
      const int e = m * kT + tid, jj = e / kMaxHeadDim, c = e % kMaxHeadDim;
      if (c < D) {
        for (int r = 0; r < nrows; ++r) dk[m] += sdS[r * kN + jj] * sQ[r * D + c];
      }
      if (c < Dv) {
        for (int r = 0; r < nrows; ++r) dv[m] += sP[r * kN + jj] * sdO[r * Dv + c];
      }
    }
    // dQ[r, c] = sum_jj dS[r, jj] K[jj, c] over this block's keys.
#pragma unroll 1
    for (int m = 0; m < kQ; ++m) {
      const int e = m * kT + tid, r = e / kMaxHeadDim, c = e % kMaxHeadDim;
      if (r < nrows && c < D) {
        acc_t a = acc_t(0);
        for (int jj = 0; jj < cols; ++jj) {
          a += sdS[r * kN + jj] * static_cast<acc_t>(k[jj * p.k_row_stride + c]);
        }
        acc_t* dst = dq_accum + ((off.rows_q + i0 + r) * H + h) * D + c;
        if (p.dq_splits > 1) {
          *dst = a;
        } else {
          atomicAdd(dst, a);
        }
      }
    }
    __syncthreads();  // (3)
  }

  // Every key of the block is written, zero when no row sees it.
  acc_t* dk_accum = static_cast<acc_t*>(p.dk_accum);
  acc_t* dv_accum = static_cast<acc_t*>(p.dv_accum);
#pragma unroll
  for (int m = 0; m < kKV; ++m) {
    const int e = m * kT + tid, jj = e / kMaxHeadDim, c = e % kMaxHeadDim;
    if (jj < cols) {
      const int64_t row = (off.rows_k + j0 + jj) * H + h;
      if (c < D) dk_accum[row * D + c] = dk[m];
      if (c < Dv) dv_accum[row * Dv + c] = dv[m];
    }
  }
}

}  // namespace flash_attn_detail
}  // namespace kernelzoo
