// CUDA kernel bodies of the selective scan (Mamba's S6) and its decoding step.
// Kernel-safe: no tensor or runtime host headers, so the C++ tests run them
// through the CPU harness. Semantics and layouts are the CPU kernels'
// (selective_scan_cpu.cpp); the launches are in selective_scan_plan.h.
//
// The scan. One thread block per (batch row, block of kScanWarps channels
// inside one group of B/C); each warp owns one channel and walks the sequence
// in chunks of kChunk = 64 positions, lane i holding positions 2i and 2i + 1 of
// the chunk. For every state n the recurrence x_l = a_l x_{l-1} + b_l (a_l =
// exp(dt_l A_n), b_l = dt_l B_l u_l) is an affine map per position; maps
// compose associatively, (a1, b1) then (a2, b2) = (a1 a2, a2 b1 + b2), so a
// warp scans a chunk with five shuffle steps (each lane first composing its own
// two positions), and applies the exclusive prefix to the state carried in
// from the previous chunk. The carried state lives in the checkpoint tensor:
// the forward writes the state entering each chunk there (the CPU kernels'
// checkpoints, which the backward of either device reads).
//
// A sequence start (position 0, or a cu_seqlens boundary) restarts the state
// from the sequence's initial state h0 (or zero): its map becomes (0, a h0 + b),
// so that no state crosses a boundary, and the position's "state before" is h0.
//
// The backward walks the chunks in reverse. Per chunk it recomputes y (when z
// needs it) and, per state, the chunk's states from its checkpoint; then the
// adjoint runs backwards, also as a scan of affine maps: with g_l the gradient
// of x_l and q_l = a_l g_l what flows to x_{l-1},
//   g_l = dy_l C_l + (l ends a sequence ? dlast : q_{l+1})
// so q_l = alpha_l q_{l+1} + beta_l with alpha_l = a_l (0 at a sequence end)
// and beta_l = a_l (dy_l C_l + [end] dlast): a scan towards lower lanes
// (shuffle down) with the gradient carried between chunks in a scratch tensor.
// Gradients per position (du, ddelta, dz) are the lane's; dA, dD, ddelta_bias
// and constant dB/dC are sums over the sequence, reduced across the warp with
// a butterfly and accumulated by lane 0 per (batch, channel), summed over the
// batch afterwards (the plan): no atomics. Variable dB/dC (per position and
// state, shared by the channels of a group) are first summed over the block's
// warps in shared memory, in order, then either added into a float32 buffer
// with atomicAdd (fast; the order of blocks varies the last bits) or written
// to one slice per block and summed afterwards in a fixed order (bitwise
// reproducible, under torch.use_deterministic_algorithms(True)).
//
// The decoding step (selective_state_update): one warp per state row (batch,
// head, channel), the lanes over the states, the output a butterfly sum.
#pragma once

#include <cstdint>

#include "../../common/acc_type.h"
#include "../../common/macros.h"
#include "selective_scan_math.h"
#include "selective_scan_params.h"

namespace kernelzoo {
namespace selective_scan_detail {

constexpr int kScanWarps = 4;  // channels per thread block, one warp each
constexpr int kScanThreads = 32 * kScanWarps;
constexpr int kScanItems = 2;  // consecutive positions per lane
static_assert(32 * kScanItems == kChunk, "a warp scans one checkpoint chunk at a time");
static_assert(kScanThreads == 2 * kChunk,
              "the block sum of variable dB/dC takes one thread per (B or C, position)");
constexpr int kStateUpdateWarps = 4;  // state rows per thread block of the decoding step
constexpr unsigned kFullMask = 0xffffffffu;

// What a thread of a scan block works on.
struct ScanThread {
  int64_t b, g, blk, c;  // batch row, group, block inside the group, channel
  int64_t block_c0;      // the block's first channel
  int warp, lane;
  bool active;  // the warp has a channel (the last block of a group may have fewer)
};

template <typename scalar_t, typename acc_t>
KZ_DEVICE KZ_INLINE ScanThread scan_thread(const ScanParams<scalar_t, acc_t>& p) {
  ScanThread t;
  t.warp = static_cast<int>(threadIdx.x) / 32;
  t.lane = static_cast<int>(threadIdx.x) % 32;
  const int64_t id = blockIdx.x;
  t.blk = id % p.blocks_per_group;
  t.g = (id / p.blocks_per_group) % p.groups;
  t.b = id / (p.blocks_per_group * p.groups);
  const int64_t per_group = p.dim / p.groups;
  t.block_c0 = t.g * per_group + t.blk * kScanWarps;
  t.c = t.block_c0 + t.warp;
  t.active = t.blk * kScanWarps + t.warp < per_group;
  return t;
}

// The sequence starting and the one ending at position l of batch row b (-1: none).
struct PositionMarks {
  int64_t start, end;
};

template <typename scalar_t, typename acc_t>
KZ_DEVICE KZ_INLINE PositionMarks position_marks(const ScanParams<scalar_t, acc_t>& p, int64_t b,
                                                 int64_t l) {
  if (p.cu_seqlens == nullptr) return {l == 0 ? b : -1, l == p.seqlen - 1 ? b : -1};
  // The last sequence starting at or before l: it holds l (so is not empty).
  int64_t lo = 0, hi = p.nseq - 1;
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (p.cu_seqlens[mid] <= l) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return {p.cu_seqlens[lo] == l ? lo : -1, p.cu_seqlens[lo + 1] - 1 == l ? lo : -1};
}

// One lane's positions of a chunk: l0 + kScanItems * lane + i.
template <typename acc_t>
struct Items {
  int64_t l[kScanItems];
  bool valid[kScanItems];
  PositionMarks mark[kScanItems];
  acc_t u[kScanItems], pre[kScanItems], dt[kScanItems];  // pre: delta + delta_bias
};

template <typename scalar_t, typename acc_t>
KZ_DEVICE KZ_INLINE Items<acc_t> load_items(const ScanParams<scalar_t, acc_t>& p,
                                            const ScanThread& t, int64_t chunk) {
  Items<acc_t> it;
  const int64_t row = (t.b * p.dim + t.c) * p.seqlen;
  const acc_t bias = t.active && p.delta_bias ? p.delta_bias[t.c] : acc_t(0);
  for (int i = 0; i < kScanItems; ++i) {
    const int64_t l = chunk * kChunk + t.lane * kScanItems + i;
    it.l[i] = l;
    it.valid[i] = t.active && l < p.seqlen;
    it.mark[i] = {-1, -1};
    it.u[i] = it.pre[i] = it.dt[i] = acc_t(0);
    if (it.valid[i]) {
      it.mark[i] = position_marks(p, t.b, l);
      it.u[i] = static_cast<acc_t>(p.u[row + l]);
      it.pre[i] = static_cast<acc_t>(p.delta[row + l]) + bias;
      it.dt[i] = step_size(it.pre[i], p.softplus);
    }
  }
  return it;
}

// B or C of the thread's channel at position l, state n.
template <typename scalar_t, typename acc_t>
KZ_DEVICE KZ_INLINE acc_t bc_value(const ScanParams<scalar_t, acc_t>& p, const acc_t* t, bool var,
                                   int64_t groups, const ScanThread& th, int64_t l, int64_t n) {
  if (!var) return t[th.c * p.dstate + n];
  const int64_t g = th.c / (p.dim / groups);
  return t[((th.b * groups + g) * p.seqlen + l) * p.dstate + n];
}

// The state a sequence restarts from: its initial state, or zero.
template <typename scalar_t, typename acc_t>
KZ_DEVICE KZ_INLINE acc_t restart_state(const ScanParams<scalar_t, acc_t>& p, int64_t seq,
                                        int64_t c, int64_t n) {
  return p.initial_state ? p.initial_state[(seq * p.dim + c) * p.dstate + n] : acc_t(0);
}

template <typename acc_t>
KZ_DEVICE KZ_INLINE acc_t warp_sum(acc_t v) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(kFullMask, v, off);
  return v;
}

// Exclusive scan of affine maps over the warp. On entry (a, b) is the lane's
// map; on return, the composition of the maps of the lanes before it: lanes
// 0..lane-1 (kDown false; lane 0's applied first), or lanes 31..lane+1 (kDown
// true, the adjoint's direction; lane 31's applied first). The first lane gets
// the identity (1, 0).
template <bool kDown, typename acc_t>
KZ_DEVICE KZ_INLINE void exclusive_scan(acc_t& a, acc_t& b, int lane) {
  auto shfl = [](acc_t v, int off) {
    return kDown ? __shfl_down_sync(kFullMask, v, off) : __shfl_up_sync(kFullMask, v, off);
  };
  for (int off = 1; off < 32; off <<= 1) {
    const acc_t pa = shfl(a, off), pb = shfl(b, off);
    if (kDown ? lane + off < 32 : lane >= off) {
      b = a * pb + b;
      a = a * pa;
    }
  }
  const acc_t ea = shfl(a, 1), eb = shfl(b, 1);
  const bool first = kDown ? lane == 31 : lane == 0;
  a = first ? acc_t(1) : ea;
  b = first ? acc_t(0) : eb;
}

// The states of one state index n over a lane's positions.
template <typename acc_t>
struct States {
  acc_t decay[kScanItems];   // a = exp(dt A_n)
  acc_t before[kScanItems];  // the state entering the position (h0 at a sequence start)
  acc_t after[kScanItems];   // the state after it
  acc_t carry_out;           // the state after the chunk (every lane)
};

// Scans state n over the chunk from `carry` (the state entering the chunk,
// the same in every lane).
template <typename scalar_t, typename acc_t>
KZ_DEVICE KZ_INLINE States<acc_t> chunk_states(const ScanParams<scalar_t, acc_t>& p,
                                               const ScanThread& t, const Items<acc_t>& it,
                                               acc_t A_n, int64_t n, acc_t carry) {
  States<acc_t> st;
  acc_t ma[kScanItems], mb[kScanItems];  // the positions' maps
  acc_t ca = acc_t(1), cb = acc_t(0);    // the lane's composition
  for (int i = 0; i < kScanItems; ++i) {
    st.decay[i] = acc_t(1);
    ma[i] = acc_t(1);
    mb[i] = acc_t(0);
    if (it.valid[i]) {
      st.decay[i] = scan_exp(it.dt[i] * A_n);
      ma[i] = st.decay[i];
      mb[i] = it.dt[i] * bc_value(p, p.B, p.var_B, p.groups_B, t, it.l[i], n) * it.u[i];
      if (it.mark[i].start >= 0) {
        mb[i] += st.decay[i] * restart_state(p, it.mark[i].start, t.c, n);
        ma[i] = acc_t(0);
      }
    }
    cb = ma[i] * cb + mb[i];
    ca = ma[i] * ca;
  }
  exclusive_scan<false>(ca, cb, t.lane);
  acc_t x = ca * carry + cb;
  for (int i = 0; i < kScanItems; ++i) {
    st.before[i] = it.mark[i].start >= 0 ? restart_state(p, it.mark[i].start, t.c, n) : x;
    x = ma[i] * x + mb[i];
    st.after[i] = x;
  }
  st.carry_out = __shfl_sync(kFullMask, x, 31);
  return st;
}

// The state entering chunk `chunk` for state n, as the forward saved it (lane
// 0 reads, every lane gets it).
template <typename scalar_t, typename acc_t>
KZ_DEVICE KZ_INLINE acc_t checkpoint_in(const ScanParams<scalar_t, acc_t>& p, const ScanThread& t,
                                        int64_t chunk, int64_t n) {
  const int64_t chunks = (p.seqlen + kChunk - 1) / kChunk;
  acc_t v = acc_t(0);
  if (t.lane == 0 && t.active)
    v = p.checkpoints[((t.b * p.dim + t.c) * chunks + chunk) * p.dstate + n];
  return __shfl_sync(kFullMask, v, 0);
}

// y = sum_n x_n C_n over the lane's positions of the chunk, from the checkpoints.
template <typename scalar_t, typename acc_t>
KZ_DEVICE KZ_INLINE void recompute_y(const ScanParams<scalar_t, acc_t>& p, const ScanThread& t,
                                     const Items<acc_t>& it, int64_t chunk, acc_t* y) {
  for (int i = 0; i < kScanItems; ++i) y[i] = acc_t(0);
  for (int64_t n = 0; n < p.dstate; ++n) {
    const acc_t A_n = t.active ? p.A[t.c * p.dstate + n] : acc_t(0);
    const States<acc_t> st = chunk_states(p, t, it, A_n, n, checkpoint_in(p, t, chunk, n));
    for (int i = 0; i < kScanItems; ++i) {
      if (it.valid[i]) y[i] += st.after[i] * bc_value(p, p.C, p.var_C, p.groups_C, t, it.l[i], n);
    }
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kScanThreads)
    selective_scan_forward_kernel(const ScanParams<scalar_t, acc_type_t<scalar_t>> p) {
  using acc_t = acc_type_t<scalar_t>;
  const ScanThread t = scan_thread(p);
  if (!t.active) return;  // no block-wide barrier in the forward
  const int64_t L = p.seqlen, N = p.dstate, chunks = (L + kChunk - 1) / kChunk;
  const int64_t row = (t.b * p.dim + t.c) * L;
  acc_t* ckpt = p.checkpoints + (t.b * p.dim + t.c) * chunks * N;
  const acc_t D = p.D ? p.D[t.c] : acc_t(0);
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    const Items<acc_t> it = load_items(p, t, chunk);
    acc_t y[kScanItems] = {};
    for (int64_t n = 0; n < N; ++n) {
      const acc_t A_n = p.A[t.c * N + n];
      // The state carried from the previous chunk (lane 0 wrote it there).
      acc_t carry = acc_t(0);
      if (t.lane == 0 && chunk > 0) carry = ckpt[chunk * N + n];
      carry = __shfl_sync(kFullMask, carry, 0);
      const States<acc_t> st = chunk_states(p, t, it, A_n, n, carry);
      if (t.lane == 0) {
        // The checkpoint: the state entering the chunk (the restart state at a
        // sequence start, as the CPU kernel saves it).
        const int64_t seq = it.mark[0].start;
        ckpt[chunk * N + n] = seq >= 0 ? restart_state(p, seq, t.c, n) : carry;
        if (chunk + 1 < chunks) ckpt[(chunk + 1) * N + n] = st.carry_out;
      }
      for (int i = 0; i < kScanItems; ++i) {
        if (!it.valid[i]) continue;
        y[i] += st.after[i] * bc_value(p, p.C, p.var_C, p.groups_C, t, it.l[i], n);
        const int64_t seq = it.mark[i].end;
        if (seq >= 0) p.last_state[(seq * p.dim + t.c) * N + n] = st.after[i];
      }
    }
    for (int i = 0; i < kScanItems; ++i) {
      if (!it.valid[i]) continue;
      acc_t o = y[i] + D * it.u[i];
      if (p.z) {
        const acc_t zv = static_cast<acc_t>(p.z[row + it.l[i]]);
        o *= zv * scan_sigmoid(zv);
      }
      p.out[row + it.l[i]] = static_cast<scalar_t>(o);
    }
  }
}

// Variable B's or C's gradient of state n over the chunk: the block's warps'
// contributions (vals[which][warp][position], which 0: B, 1: C) summed in
// order by one thread per (which, position), then added (atomic) or stored
// (deterministic).
template <typename scalar_t, typename acc_t>
KZ_DEVICE KZ_INLINE void block_bc_grad(const ScanParams<scalar_t, acc_t>& p, const ScanThread& t,
                                       acc_t (*vals)[kScanWarps][kChunk], int64_t chunk,
                                       int64_t n) {
  const int which = static_cast<int>(threadIdx.x) / static_cast<int>(kChunk);
  const int pos = static_cast<int>(threadIdx.x) % static_cast<int>(kChunk);
  const int64_t l = chunk * kChunk + pos;
  const bool var = which == 0 ? p.var_B : p.var_C;
  if (!var || l >= p.seqlen) return;
  acc_t sum = acc_t(0);
  for (int w = 0; w < kScanWarps; ++w) sum += vals[which][w][pos];
  acc_t* dst = which == 0 ? p.dB : p.dC;
  if (p.deterministic) {
    const int64_t slice = (t.b * p.groups + t.g) * p.blocks_per_group + t.blk;
    dst[(slice * p.seqlen + l) * p.dstate + n] = sum;
  } else {
    const int64_t groups = which == 0 ? p.groups_B : p.groups_C;
    const int64_t g = t.block_c0 / (p.dim / groups);
    atomicAdd(dst + ((t.b * groups + g) * p.seqlen + l) * p.dstate + n, sum);
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kScanThreads)
    selective_scan_backward_kernel(const ScanParams<scalar_t, acc_type_t<scalar_t>> p) {
  using acc_t = acc_type_t<scalar_t>;
  __shared__ acc_t vals[2][kScanWarps][kChunk];
  // Every warp stays to the end, with or without a channel: the block sums of
  // variable dB/dC need all of them at their barriers.
  const ScanThread t = scan_thread(p);
  const int64_t L = p.seqlen, N = p.dstate, chunks = (L + kChunk - 1) / kChunk;
  const int64_t row = (t.b * p.dim + t.c) * L;
  const int64_t bc = t.b * p.dim + t.c;  // (batch, channel) of the partial sums
  const bool var_bc = p.var_B || p.var_C;
  const acc_t D = t.active && p.D ? p.D[t.c] : acc_t(0);
  acc_t dD = acc_t(0), dbias = acc_t(0);  // this lane's share
  for (int64_t chunk = chunks - 1; chunk >= 0; --chunk) {
    const Items<acc_t> it = load_items(p, t, chunk);
    acc_t dy[kScanItems], dz[kScanItems], du[kScanItems], ddt[kScanItems];
    for (int i = 0; i < kScanItems; ++i) {
      dy[i] = it.valid[i] ? static_cast<acc_t>(p.dout[row + it.l[i]]) : acc_t(0);
      dz[i] = ddt[i] = acc_t(0);
    }
    if (p.z) {  // the gate needs y: one more pass over the states
      acc_t y[kScanItems];
      recompute_y(p, t, it, chunk, y);
      for (int i = 0; i < kScanItems; ++i) {
        if (!it.valid[i]) continue;
        const acc_t zv = static_cast<acc_t>(p.z[row + it.l[i]]);
        const acc_t sg = scan_sigmoid(zv);
        dz[i] = dy[i] * (y[i] + D * it.u[i]) * sg * (acc_t(1) + zv * (acc_t(1) - sg));
        dy[i] *= zv * sg;
      }
    }
    for (int i = 0; i < kScanItems; ++i) {
      du[i] = dy[i] * D;
      dD += dy[i] * it.u[i];
    }
    for (int64_t n = 0; n < N; ++n) {
      const acc_t A_n = t.active ? p.A[t.c * N + n] : acc_t(0);
      const States<acc_t> st = chunk_states(p, t, it, A_n, n, checkpoint_in(p, t, chunk, n));
      // The adjoint's maps q_l = alpha q_{l+1} + beta, composed from the last position.
      acc_t Cn[kScanItems], dlast[kScanItems], alpha[kScanItems], beta[kScanItems];
      acc_t ca = acc_t(1), cb = acc_t(0);
      for (int i = kScanItems - 1; i >= 0; --i) {
        Cn[i] = dlast[i] = beta[i] = acc_t(0);
        alpha[i] = acc_t(1);
        if (it.valid[i]) {
          Cn[i] = bc_value(p, p.C, p.var_C, p.groups_C, t, it.l[i], n);
          const int64_t seq = it.mark[i].end;
          if (seq >= 0 && p.dlast) dlast[i] = p.dlast[(seq * p.dim + t.c) * N + n];
          alpha[i] = seq >= 0 ? acc_t(0) : st.decay[i];
          beta[i] = st.decay[i] * (dy[i] * Cn[i] + dlast[i]);
        }
        cb = alpha[i] * cb + beta[i];
        ca = alpha[i] * ca;
      }
      exclusive_scan<true>(ca, cb, t.lane);
      // The state gradient flowing in from the next chunk.
      acc_t carry = acc_t(0);
      if (t.lane == 0 && t.active && chunk + 1 < chunks) carry = p.grad_carry[bc * N + n];
      carry = __shfl_sync(kFullMask, carry, 0);
      acc_t q = ca * carry + cb;
      acc_t dA = acc_t(0), gB_sum = acc_t(0), gC_sum = acc_t(0);
      acc_t gB[kScanItems], gC[kScanItems];
      for (int i = kScanItems - 1; i >= 0; --i) {
        gB[i] = gC[i] = acc_t(0);
        if (!it.valid[i]) continue;
        const acc_t Bn = bc_value(p, p.B, p.var_B, p.groups_B, t, it.l[i], n);
        const acc_t g = dy[i] * Cn[i] + (it.mark[i].end >= 0 ? dlast[i] : q);
        const acc_t da = g * st.before[i] * st.decay[i];
        gC[i] = dy[i] * st.after[i];
        gB[i] = g * it.dt[i] * it.u[i];
        ddt[i] += da * A_n + g * Bn * it.u[i];
        du[i] += g * it.dt[i] * Bn;
        dA += da * it.dt[i];
        q = st.decay[i] * g;
        const int64_t seq = it.mark[i].start;
        if (seq >= 0) p.dinit[(seq * p.dim + t.c) * N + n] = q;
        gB_sum += gB[i];
        gC_sum += gC[i];
      }
      if (t.lane == 0 && t.active && chunk > 0) p.grad_carry[bc * N + n] = q;
      dA = warp_sum(dA);
      if (!p.var_B) gB_sum = warp_sum(gB_sum);
      if (!p.var_C) gC_sum = warp_sum(gC_sum);
      if (t.lane == 0 && t.active) {
        p.dA_part[bc * N + n] += dA;
        if (!p.var_B) p.dB[bc * N + n] += gB_sum;
        if (!p.var_C) p.dC[bc * N + n] += gC_sum;
      }
      if (var_bc) {
        for (int i = 0; i < kScanItems; ++i) {
          vals[0][t.warp][t.lane * kScanItems + i] = gB[i];
          vals[1][t.warp][t.lane * kScanItems + i] = gC[i];
        }
        __syncthreads();
        block_bc_grad(p, t, vals, chunk, n);
        __syncthreads();  // before the next state overwrites vals
      }
    }
    for (int i = 0; i < kScanItems; ++i) {
      if (!it.valid[i]) continue;
      // through softplus (mamba's threshold: the identity above 20)
      const acc_t dd =
          p.softplus && it.pre[i] <= acc_t(20) ? ddt[i] * scan_sigmoid(it.pre[i]) : ddt[i];
      dbias += dd;
      p.du[row + it.l[i]] = static_cast<scalar_t>(du[i]);
      p.ddelta[row + it.l[i]] = static_cast<scalar_t>(dd);
      if (p.dz) p.dz[row + it.l[i]] = static_cast<scalar_t>(dz[i]);
    }
  }
  dD = warp_sum(dD);
  dbias = warp_sum(dbias);
  if (t.lane == 0 && t.active) {
    p.dD_part[bc] = dD;
    p.dbias_part[bc] = dbias;
  }
}

template <typename x_t, typename state_t>
__global__ void __launch_bounds__(32 * kStateUpdateWarps)
    selective_state_update_kernel(const StateUpdateParams<x_t, state_t, acc_type_t<x_t>> p) {
  using acc_t = acc_type_t<x_t>;
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int64_t H = p.nheads, P = p.headdim, N = p.dstate;
  const int64_t rows = p.batch * H * P;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kStateUpdateWarps + warp; r < rows;
       r += static_cast<int64_t>(gridDim.x) * kStateUpdateWarps) {
    const int64_t b = r / (H * P), hp = r % (H * P), h = hp / P, pp = hp % P;
    const int64_t g = h / (H / p.groups);
    acc_t d = static_cast<acc_t>(p.dt[r]) + (p.dt_bias ? p.dt_bias[hp] : acc_t(0));
    if (p.softplus) d = scan_softplus(d);
    const acc_t xv = static_cast<acc_t>(p.x[r]);
    state_t* state = p.state + b * p.state_s0 + h * p.state_s1 + pp * p.state_s2;
    const acc_t* A = p.A + hp * N;
    const acc_t* B = p.B + (b * p.groups + g) * N;
    const acc_t* C = p.C + (b * p.groups + g) * N;
    acc_t y = acc_t(0);
    for (int64_t n = lane; n < N; n += 32) {
      // y from the new state before its rounding to state_t, as mamba_ssm
      const acc_t v = static_cast<acc_t>(state[n]) * scan_exp(d * A[n]) + d * B[n] * xv;
      state[n] = static_cast<state_t>(v);
      y += v * C[n];
    }
    y = warp_sum(y);
    if (lane == 0) {
      if (p.D) y += xv * p.D[hp];
      if (p.z) {
        const acc_t zv = static_cast<acc_t>(p.z[r]);
        y *= zv * scan_sigmoid(zv);
      }
      p.out[r] = static_cast<x_t>(y);
    }
  }
}

}  // namespace selective_scan_detail
}  // namespace kernelzoo
