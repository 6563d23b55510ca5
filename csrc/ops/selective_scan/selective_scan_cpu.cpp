// selective scan on the CPU: the scan, its backward and the decoding step.
//
// A task is (batch b, a block of up to kLanes = 16 channels inside one group of
// B/C): the channels are the vector lanes, so the recurrence
//   x[n] = exp(dt * A[n]) * x[n] + dt * B[n] * u,   y = sum_n x[n] * C[n]
// runs on 16 channels at once with no reduction across lanes (a variable B or C
// is one value per (position, state) shared by the block's channels). Inputs
// are read a chunk of kChunk = 64 positions at a time into (position, lane)
// tiles, transposed from the (channel, position) layout, and the output is
// written back the same way.
//
// The forward saves the state entering every chunk (the checkpoints). The
// backward walks the chunks in reverse: it recomputes the chunk's states from
// its checkpoint, then runs the adjoint recurrence through it:
//   h += dy * C;  da = h * x_prev;  dt += da * a * A + h * B * u;  h *= a
// (h being the gradient of the state, starting from the gradient of the last
// state). Gradients shared between tasks (A, D, delta_bias, constant B/C over
// the batch; variable B/C over the channels of a group) are written per task
// and summed afterwards in a fixed order: results do not depend on the number
// of threads.
//
// Packed sequences (cu_seqlens, batch 1): the state restarts at each sequence's
// first position (from its initial state or zero), the last state of each
// sequence is its state after its last position, and in the backward the
// gradient of the state restarts from the sequence's last-state gradient.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "../../common/acc_type.h"
#include "../../common/cpu_math.h"
#include "../../common/cpu_vec.h"
#include "../../common/dispatch.h"
#include "../../common/macros.h"
#include "../../common/parallel.h"
#include "../../common/tensor_data.h"
#include "selective_scan_args.h"

namespace kernelzoo {
namespace selective_scan_detail {

constexpr int kLanes = 16;  // channels per task, one per vector lane

// --- one position of the recurrence, on kLanes channels ------------------------------------
// Constant B/C: one value per (state, lane), `b + n * kLanes`; variable: one per
// state, shared by the lanes, `b + n`. Pointers are KZ_RESTRICT (no argument
// overlaps another), which lets the compiler vectorize the lane loops.
template <typename acc_t, bool VarB, bool VarC>
KZ_ALWAYS_INLINE void step_impl(int64_t N, const acc_t* KZ_RESTRICT dt, const acc_t* KZ_RESTRICT u,
                                const acc_t* KZ_RESTRICT A, const acc_t* KZ_RESTRICT B,
                                const acc_t* KZ_RESTRICT C, acc_t* KZ_RESTRICT x,
                                acc_t* KZ_RESTRICT y) {
  acc_t dtu[kLanes], acc[kLanes] = {};
  for (int c = 0; c < kLanes; ++c) dtu[c] = dt[c] * u[c];
  for (int64_t n = 0; n < N; ++n) {
    acc_t* KZ_RESTRICT xn = x + n * kLanes;
    const acc_t* KZ_RESTRICT An = A + n * kLanes;
    for (int c = 0; c < kLanes; ++c) {
      const acc_t b = VarB ? B[n] : B[n * kLanes + c];
      const acc_t cc = VarC ? C[n] : C[n * kLanes + c];
      xn[c] = exp_lane(dt[c] * An[c]) * xn[c] + dtu[c] * b;
      acc[c] += xn[c] * cc;
    }
  }
  for (int c = 0; c < kLanes; ++c) y[c] = acc[c];
}

// The adjoint of one position: h (the gradient of the state after it) becomes
// the gradient of the state before it; dy the gradient of y; xb / xa the
// states before / after the position. Accumulates ddt, du (per lane), dA
// (per state and lane), dB/dC (per state and lane when constant, per state
// summed over the lanes when variable).
template <typename acc_t, bool VarB, bool VarC>
KZ_ALWAYS_INLINE void step_back_impl(int64_t N, const acc_t* KZ_RESTRICT dt,
                                     const acc_t* KZ_RESTRICT u, const acc_t* KZ_RESTRICT A,
                                     const acc_t* KZ_RESTRICT B, const acc_t* KZ_RESTRICT C,
                                     const acc_t* KZ_RESTRICT xb, const acc_t* KZ_RESTRICT xa,
                                     const acc_t* KZ_RESTRICT dy, acc_t* KZ_RESTRICT h,
                                     acc_t* KZ_RESTRICT ddt, acc_t* KZ_RESTRICT du,
                                     acc_t* KZ_RESTRICT dA, acc_t* KZ_RESTRICT dB,
                                     acc_t* KZ_RESTRICT dC) {
  acc_t ddt_acc[kLanes] = {}, du_acc[kLanes] = {}, dtu[kLanes];
  for (int c = 0; c < kLanes; ++c) dtu[c] = dt[c] * u[c];
  for (int64_t n = 0; n < N; ++n) {
    acc_t* KZ_RESTRICT hn = h + n * kLanes;
    acc_t* KZ_RESTRICT dAn = dA + n * kLanes;
    const acc_t* KZ_RESTRICT An = A + n * kLanes;
    const acc_t* KZ_RESTRICT xbn = xb + n * kLanes;
    const acc_t* KZ_RESTRICT xan = xa + n * kLanes;
    acc_t gB[kLanes], gC[kLanes];
    for (int c = 0; c < kLanes; ++c) {
      const acc_t b = VarB ? B[n] : B[n * kLanes + c];
      const acc_t cc = VarC ? C[n] : C[n * kLanes + c];
      gC[c] = dy[c] * xan[c];
      const acc_t hv = hn[c] + dy[c] * cc;
      const acc_t a = exp_lane(dt[c] * An[c]);
      const acc_t da = hv * xbn[c] * a;
      ddt_acc[c] += da * An[c] + hv * b * u[c];
      dAn[c] += da * dt[c];
      du_acc[c] += hv * dt[c] * b;
      gB[c] = hv * dtu[c];
      hn[c] = a * hv;
    }
    if constexpr (VarB) {
      acc_t sum = 0;
      for (int c = 0; c < kLanes; ++c) sum += gB[c];
      dB[n] += sum;
    } else {
      for (int c = 0; c < kLanes; ++c) dB[n * kLanes + c] += gB[c];
    }
    if constexpr (VarC) {
      acc_t sum = 0;
      for (int c = 0; c < kLanes; ++c) sum += gC[c];
      dC[n] += sum;
    } else {
      for (int c = 0; c < kLanes; ++c) dC[n * kLanes + c] += gC[c];
    }
  }
  for (int c = 0; c < kLanes; ++c) {
    ddt[c] += ddt_acc[c];
    du[c] += du_acc[c];
  }
}

// Non-template entry points, so that each is compiled for every KZ_CPU_CLONES
// target (the templates above are inlined into them).
#define KZ_SCAN_STEPS(T, VB, VC)                                                                  \
  KZ_CPU_CLONES void step(std::integral_constant<bool, VB>, std::integral_constant<bool, VC>,     \
                          int64_t N, const T* KZ_RESTRICT dt, const T* KZ_RESTRICT u,             \
                          const T* KZ_RESTRICT A, const T* KZ_RESTRICT B, const T* KZ_RESTRICT C, \
                          T* KZ_RESTRICT x, T* KZ_RESTRICT y) {                                   \
    step_impl<T, VB, VC>(N, dt, u, A, B, C, x, y);                                                \
  }                                                                                               \
  KZ_CPU_CLONES void step_back(                                                                   \
      std::integral_constant<bool, VB>, std::integral_constant<bool, VC>, int64_t N,              \
      const T* KZ_RESTRICT dt, const T* KZ_RESTRICT u, const T* KZ_RESTRICT A,                    \
      const T* KZ_RESTRICT B, const T* KZ_RESTRICT C, const T* KZ_RESTRICT xb,                    \
      const T* KZ_RESTRICT xa, const T* KZ_RESTRICT dy, T* KZ_RESTRICT h, T* KZ_RESTRICT ddt,     \
      T* KZ_RESTRICT du, T* KZ_RESTRICT dA, T* KZ_RESTRICT dB, T* KZ_RESTRICT dC) {               \
    step_back_impl<T, VB, VC>(N, dt, u, A, B, C, xb, xa, dy, h, ddt, du, dA, dB, dC);             \
  }
KZ_SCAN_STEPS(float, false, false)
KZ_SCAN_STEPS(float, false, true)
KZ_SCAN_STEPS(float, true, false)
KZ_SCAN_STEPS(float, true, true)
KZ_SCAN_STEPS(double, false, false)
KZ_SCAN_STEPS(double, false, true)
KZ_SCAN_STEPS(double, true, false)
KZ_SCAN_STEPS(double, true, true)
#undef KZ_SCAN_STEPS

// --- elementwise work over a (position, lane) tile of kChunk x kLanes values ----------------

// dt = softplus(delta + bias) (or without softplus), pre = delta + bias.
template <typename acc_t>
KZ_ALWAYS_INLINE void delta_tile_impl(acc_t* KZ_RESTRICT dt, acc_t* KZ_RESTRICT pre,
                                      const acc_t* KZ_RESTRICT bias, bool softplus) {
  for (int64_t l = 0; l < kChunk; ++l) {
    for (int c = 0; c < kLanes; ++c) pre[l * kLanes + c] = dt[l * kLanes + c] + bias[c];
  }
  if (softplus) {
    for (int64_t e = 0; e < kChunk * kLanes; ++e) dt[e] = softplus_lane(pre[e]);
  } else {
    for (int64_t e = 0; e < kChunk * kLanes; ++e) dt[e] = pre[e];
  }
}

// out = (y + D u) * silu(z), in place of y (z null: no gate).
template <typename acc_t>
KZ_ALWAYS_INLINE void output_tile_impl(acc_t* KZ_RESTRICT y, const acc_t* KZ_RESTRICT u,
                                       const acc_t* KZ_RESTRICT z, const acc_t* KZ_RESTRICT D) {
  for (int64_t l = 0; l < kChunk; ++l) {
    for (int c = 0; c < kLanes; ++c) y[l * kLanes + c] += D[c] * u[l * kLanes + c];
  }
  if (z) {
    for (int64_t e = 0; e < kChunk * kLanes; ++e) y[e] *= z[e] * sigmoid_lane(z[e]);
  }
}

// From dout (in place: becomes dy, the gradient of y): dz, du = dy D (du is
// then completed by the scan), dD += dy u.
template <typename acc_t>
KZ_ALWAYS_INLINE void output_grad_tile_impl(acc_t* KZ_RESTRICT g, const acc_t* KZ_RESTRICT y,
                                            const acc_t* KZ_RESTRICT u, const acc_t* KZ_RESTRICT z,
                                            const acc_t* KZ_RESTRICT D, acc_t* KZ_RESTRICT dz,
                                            acc_t* KZ_RESTRICT du, acc_t* KZ_RESTRICT dD) {
  if (z) {
    for (int64_t l = 0; l < kChunk; ++l) {
      for (int c = 0; c < kLanes; ++c) {
        const int64_t e = l * kLanes + c;
        const acc_t sg = sigmoid_lane(z[e]);
        dz[e] = g[e] * (y[e] + D[c] * u[e]) * sg * (acc_t(1) + z[e] * (acc_t(1) - sg));
        g[e] *= z[e] * sg;
      }
    }
  }
  acc_t acc[kLanes] = {};
  for (int64_t l = 0; l < kChunk; ++l) {
    for (int c = 0; c < kLanes; ++c) {
      du[l * kLanes + c] = g[l * kLanes + c] * D[c];
      acc[c] += g[l * kLanes + c] * u[l * kLanes + c];
    }
  }
  for (int c = 0; c < kLanes; ++c) dD[c] += acc[c];
}

// ddelta = ddt * softplus'(pre) in place; dbias += ddelta.
template <typename acc_t>
KZ_ALWAYS_INLINE void delta_grad_tile_impl(acc_t* KZ_RESTRICT ddt, const acc_t* KZ_RESTRICT pre,
                                           bool softplus, acc_t* KZ_RESTRICT dbias) {
  if (softplus) {
    for (int64_t e = 0; e < kChunk * kLanes; ++e) {
      ddt[e] = pre[e] <= acc_t(20) ? ddt[e] * sigmoid_lane(pre[e]) : ddt[e];
    }
  }
  acc_t acc[kLanes] = {};
  for (int64_t l = 0; l < kChunk; ++l) {
    for (int c = 0; c < kLanes; ++c) acc[c] += ddt[l * kLanes + c];
  }
  for (int c = 0; c < kLanes; ++c) dbias[c] += acc[c];
}

#define KZ_SCAN_TILES(T)                                                                           \
  KZ_CPU_CLONES void delta_tile(T* dt, T* pre, const T* bias, bool softplus) {                     \
    delta_tile_impl(dt, pre, bias, softplus);                                                      \
  }                                                                                                \
  KZ_CPU_CLONES void output_tile(T* y, const T* u, const T* z, const T* D) {                       \
    output_tile_impl(y, u, z, D);                                                                  \
  }                                                                                                \
  KZ_CPU_CLONES void output_grad_tile(T* g, const T* y, const T* u, const T* z, const T* D, T* dz, \
                                      T* du, T* dD) {                                              \
    output_grad_tile_impl(g, y, u, z, D, dz, du, dD);                                              \
  }                                                                                                \
  KZ_CPU_CLONES void delta_grad_tile(T* ddt, const T* pre, bool softplus, T* dbias) {              \
    delta_grad_tile_impl(ddt, pre, softplus, dbias);                                               \
  }
KZ_SCAN_TILES(float)
KZ_SCAN_TILES(double)
#undef KZ_SCAN_TILES

namespace {

// Where the sequences of a batch row start and end: start_of / end_of map a
// position to the non-empty sequence that starts / ends (last position) there,
// -1 elsewhere.
struct Marks {
  std::vector<int64_t> start_of, end_of;
};

Marks marks(const Scan& s) {
  const Sequences q = sequences(s);
  Marks m;
  m.start_of.assign(s.seqlen, -1);
  m.end_of.assign(s.seqlen, -1);
  for (size_t i = 0; i < q.start.size(); ++i) {
    if (q.end[i] > q.start[i]) {
      m.start_of[q.start[i]] = static_cast<int64_t>(i);
      m.end_of[q.end[i] - 1] = static_cast<int64_t>(i);
    }
  }
  return m;
}

// The tasks: (batch row, channel block), blocks never straddling a group.
struct Task {
  int64_t b, g, c0, nc, block;  // block: index inside the group
};

std::vector<Task> tasks(const Scan& s) {
  std::vector<Task> t;
  const int64_t per_group = s.dim / s.groups;
  const int64_t blocks = (per_group + kLanes - 1) / kLanes;
  for (int64_t b = 0; b < s.batch; ++b) {
    for (int64_t g = 0; g < s.groups; ++g) {
      for (int64_t k = 0; k < blocks; ++k) {
        const int64_t c0 = g * per_group + k * kLanes;
        t.push_back({b, g, c0, std::min<int64_t>(kLanes, (g + 1) * per_group - c0), k});
      }
    }
  }
  return t;
}

int64_t blocks_per_group(const Scan& s) { return (s.dim / s.groups + kLanes - 1) / kLanes; }

// (channel, position) rows of `src` -> a (position, lane) tile, zero in the
// lanes past nc.
template <typename scalar_t, typename acc_t>
void load_tile(const scalar_t* src, int64_t row_stride, int64_t nc, int64_t len, acc_t* dst) {
  std::fill(dst, dst + kChunk * kLanes, acc_t(0));
  for (int64_t c = 0; c < nc; ++c) {
    const scalar_t* row = src + c * row_stride;
    for (int64_t l = 0; l < len; ++l) dst[l * kLanes + c] = static_cast<acc_t>(row[l]);
  }
}

template <typename scalar_t, typename acc_t>
void store_tile(const acc_t* src, int64_t nc, int64_t len, scalar_t* dst, int64_t row_stride) {
  for (int64_t c = 0; c < nc; ++c) {
    scalar_t* row = dst + c * row_stride;
    for (int64_t l = 0; l < len; ++l) row[l] = static_cast<scalar_t>(src[l * kLanes + c]);
  }
}

// (channel, state) rows -> (state, lane) lanes, zero past nc.
template <typename acc_t>
void load_lanes(const acc_t* src, int64_t N, int64_t nc, acc_t* dst) {
  std::fill(dst, dst + N * kLanes, acc_t(0));
  for (int64_t c = 0; c < nc; ++c) {
    for (int64_t n = 0; n < N; ++n) dst[n * kLanes + c] = src[c * N + n];
  }
}

template <typename acc_t>
void store_lanes(const acc_t* src, int64_t N, int64_t nc, acc_t* dst) {
  for (int64_t c = 0; c < nc; ++c) {
    for (int64_t n = 0; n < N; ++n) dst[c * N + n] = src[n * kLanes + c];
  }
}

template <typename acc_t>
struct Buffers {
  std::vector<acc_t> u, dt, pre, z, y, dout, x, A, B, C, xs, h, du, ddt, dz, dA, dB, dC, tmp;
  std::vector<acc_t> Dl, bias, dD, dbias;  // per-lane vectors
};

// What a task reads, with its pointers resolved.
template <typename scalar_t, typename acc_t>
struct TaskView {
  const Scan& s;
  const Task& t;
  int64_t L, N;
  const scalar_t* u;  // row c0 of batch b
  const scalar_t* delta;
  const scalar_t* z;  // or null
  const acc_t* Bvar;  // (L, N) of (b, g), when variable
  const acc_t* Cvar;

  TaskView(const Scan& s_, const Task& t_) : s(s_), t(t_), L(s_.seqlen), N(s_.dstate) {
    const int64_t row = (t.b * s.dim + t.c0) * L;
    u = s.u.const_data_ptr<scalar_t>() + row;
    delta = s.delta.const_data_ptr<scalar_t>() + row;
    z = s.z.defined() ? s.z.const_data_ptr<scalar_t>() + row : nullptr;
    const int64_t gB = t.c0 / (s.dim / s.groups_B), gC = t.c0 / (s.dim / s.groups_C);
    Bvar = s.var_B ? s.B.const_data_ptr<acc_t>() + (t.b * s.groups_B + gB) * L * N : nullptr;
    Cvar = s.var_C ? s.C.const_data_ptr<acc_t>() + (t.b * s.groups_C + gC) * L * N : nullptr;
  }

  // The chunk's u and dt tiles (dt after delta_bias and softplus; buf.pre
  // before softplus). Lanes past nc hold u = 0: their state stays zero.
  void load_inputs(int64_t l0, int64_t len, Buffers<acc_t>& buf) const {
    load_tile(u + l0, L, t.nc, len, buf.u.data());
    load_tile(delta + l0, L, t.nc, len, buf.dt.data());
    delta_tile(buf.dt.data(), buf.pre.data(), buf.bias.data(), s.softplus);
  }

  // The block's per-channel vectors as lanes (zero past nc): D, delta_bias.
  void load_vectors(Buffers<acc_t>& buf) const {
    buf.Dl.assign(kLanes, acc_t(0));
    buf.bias.assign(kLanes, acc_t(0));
    for (int64_t c = 0; c < t.nc; ++c) {
      if (s.D.defined()) buf.Dl[c] = s.D.const_data_ptr<acc_t>()[t.c0 + c];
      if (s.delta_bias.defined()) buf.bias[c] = s.delta_bias.const_data_ptr<acc_t>()[t.c0 + c];
    }
  }

  // A, and constant B/C, as (state, lane) lanes.
  void load_parameters(Buffers<acc_t>& buf) const {
    load_lanes(s.A.const_data_ptr<acc_t>() + t.c0 * N, N, t.nc, buf.A.data());
    if (!s.var_B) load_lanes(s.B.const_data_ptr<acc_t>() + t.c0 * N, N, t.nc, buf.B.data());
    if (!s.var_C) load_lanes(s.C.const_data_ptr<acc_t>() + t.c0 * N, N, t.nc, buf.C.data());
    load_vectors(buf);
  }

  const acc_t* B_at(const Buffers<acc_t>& buf, int64_t gl) const {
    return s.var_B ? Bvar + gl * N : buf.B.data();
  }
  const acc_t* C_at(const Buffers<acc_t>& buf, int64_t gl) const {
    return s.var_C ? Cvar + gl * N : buf.C.data();
  }

  // The state a sequence starts from: its initial state, or zero.
  void reset(int64_t seq, acc_t* x) const {
    const int64_t gs = s.cu_seqlens.defined() ? seq : t.b;
    if (s.initial_state.defined()) {
      load_lanes(s.initial_state.const_data_ptr<acc_t>() + (gs * s.dim + t.c0) * N, N, t.nc, x);
    } else {
      std::fill(x, x + N * kLanes, acc_t(0));
    }
  }
  int64_t global_seq(int64_t seq) const { return s.cu_seqlens.defined() ? seq : t.b; }
};

template <typename acc_t>
void run_step(const Scan& s, int64_t N, const acc_t* dt, const acc_t* u, const acc_t* A,
              const acc_t* B, const acc_t* C, acc_t* x, acc_t* y) {
  using F = std::false_type;
  using T = std::true_type;
  if (s.var_B) {
    if (s.var_C)
      step(T{}, T{}, N, dt, u, A, B, C, x, y);
    else
      step(T{}, F{}, N, dt, u, A, B, C, x, y);
  } else {
    if (s.var_C)
      step(F{}, T{}, N, dt, u, A, B, C, x, y);
    else
      step(F{}, F{}, N, dt, u, A, B, C, x, y);
  }
}

template <typename acc_t>
void run_step_back(const Scan& s, int64_t N, const acc_t* dt, const acc_t* u, const acc_t* A,
                   const acc_t* B, const acc_t* C, const acc_t* xb, const acc_t* xa,
                   const acc_t* dy, acc_t* h, acc_t* ddt, acc_t* du, acc_t* dA, acc_t* dB,
                   acc_t* dC) {
  using F = std::false_type;
  using T = std::true_type;
  if (s.var_B) {
    if (s.var_C)
      step_back(T{}, T{}, N, dt, u, A, B, C, xb, xa, dy, h, ddt, du, dA, dB, dC);
    else
      step_back(T{}, F{}, N, dt, u, A, B, C, xb, xa, dy, h, ddt, du, dA, dB, dC);
  } else {
    if (s.var_C)
      step_back(F{}, T{}, N, dt, u, A, B, C, xb, xa, dy, h, ddt, du, dA, dB, dC);
    else
      step_back(F{}, F{}, N, dt, u, A, B, C, xb, xa, dy, h, ddt, du, dA, dB, dC);
  }
}

// Runs the recurrence over positions [l0, l0 + len) of one chunk from the state
// in buf.x, restarting it at sequence starts; writes y per position (buf.y),
// and, when `states` is not null, the states before and after each position
// (2 * N * kLanes values per position); `on_end(seq)` is called with buf.x
// holding the state after a sequence's last position.
template <typename scalar_t, typename acc_t, typename OnEnd>
void run_chunk(const TaskView<scalar_t, acc_t>& v, const Marks& q, int64_t l0, int64_t len,
               Buffers<acc_t>& buf, acc_t* states, const OnEnd& on_end) {
  const int64_t N = v.N, S = N * kLanes;
  for (int64_t l = 0; l < len; ++l) {
    const int64_t gl = l0 + l;
    if (q.start_of[gl] >= 0) v.reset(q.start_of[gl], buf.x.data());
    if (states) std::copy(buf.x.begin(), buf.x.begin() + S, states + 2 * l * S);
    run_step(v.s, N, buf.dt.data() + l * kLanes, buf.u.data() + l * kLanes, buf.A.data(),
             v.B_at(buf, gl), v.C_at(buf, gl), buf.x.data(), buf.y.data() + l * kLanes);
    if (states) std::copy(buf.x.begin(), buf.x.begin() + S, states + (2 * l + 1) * S);
    if (q.end_of[gl] >= 0) on_end(q.end_of[gl]);
  }
}

template <typename acc_t>
void size_buffers(Buffers<acc_t>& buf, int64_t N) {
  const int64_t T = kChunk * kLanes, S = std::max<int64_t>(N, 1) * kLanes;
  for (auto* b : {&buf.u, &buf.dt, &buf.pre, &buf.z, &buf.y, &buf.dout, &buf.du, &buf.ddt, &buf.dz,
                  &buf.tmp}) {
    b->resize(T);
  }
  for (auto* b : {&buf.x, &buf.A, &buf.B, &buf.C, &buf.h}) b->resize(S);
}

// out = (y + D u) * silu(z) over a chunk's tile (in place in buf.y).
template <typename scalar_t, typename acc_t>
void finish_output(const TaskView<scalar_t, acc_t>& v, int64_t l0, int64_t len,
                   Buffers<acc_t>& buf) {
  if (v.z) load_tile(v.z + l0, v.L, v.t.nc, len, buf.z.data());
  output_tile(buf.y.data(), buf.u.data(), v.z ? buf.z.data() : nullptr, buf.Dl.data());
}

template <typename scalar_t>
void forward_cpu(const Scan& s, at::Tensor& out, at::Tensor& last, at::Tensor& ckpt) {
  using acc_t = acc_type_t<scalar_t>;
  const Marks q = marks(s);
  const std::vector<Task> ts = tasks(s);
  const int64_t N = s.dstate, L = s.seqlen, chunks = s.chunks();
  scalar_t* out_p = out.mutable_data_ptr<scalar_t>();
  acc_t* last_p = last.mutable_data_ptr<acc_t>();
  acc_t* ckpt_p = ckpt.mutable_data_ptr<acc_t>();
  const int64_t work = s.batch * s.dim * L * std::max<int64_t>(N, 1) * 8;
  for_each_task<Buffers<acc_t>>(
      static_cast<int64_t>(ts.size()), work, [&](int64_t i, Buffers<acc_t>& buf) {
        const Task& t = ts[i];
        const TaskView<scalar_t, acc_t> v(s, t);
        size_buffers(buf, N);
        v.load_parameters(buf);
        std::fill(buf.x.begin(), buf.x.end(), acc_t(0));
        auto on_end = [&](int64_t seq) {
          store_lanes(buf.x.data(), N, t.nc, last_p + (v.global_seq(seq) * s.dim + t.c0) * N);
        };
        for (int64_t k = 0; k < chunks; ++k) {
          const int64_t l0 = k * kChunk, len = std::min(kChunk, L - l0);
          v.load_inputs(l0, len, buf);
          if (q.start_of[l0] >= 0) v.reset(q.start_of[l0], buf.x.data());
          // the state entering chunk k, for every channel of the task
          for (int64_t c = 0; c < t.nc; ++c) {
            acc_t* dst = ckpt_p + (((t.b * s.dim + t.c0 + c) * chunks) + k) * N;
            for (int64_t n = 0; n < N; ++n) dst[n] = buf.x[n * kLanes + c];
          }
          run_chunk(v, q, l0, len, buf, static_cast<acc_t*>(nullptr), on_end);
          finish_output(v, l0, len, buf);
          store_tile(buf.y.data(), t.nc, len, out_p + (t.b * s.dim + t.c0) * L + l0, L);
        }
      });
  empty_sequences(s, s.initial_state, last);
}

template <typename scalar_t>
void backward_cpu(const Scan& s, const at::Tensor& dout, const at::Tensor& dlast,
                  const at::Tensor& ckpt, at::Tensor& du, at::Tensor& ddelta, at::Tensor& dz,
                  at::Tensor& dinit, at::Tensor& dA_part, at::Tensor& dD_part,
                  at::Tensor& dbias_part, at::Tensor& dB_part, at::Tensor& dC_part) {
  using acc_t = acc_type_t<scalar_t>;
  const Marks q = marks(s);
  const std::vector<Task> ts = tasks(s);
  const int64_t N = s.dstate, L = s.seqlen, chunks = s.chunks(), S = N * kLanes;
  const int64_t bpg = blocks_per_group(s);
  const scalar_t* dout_p = dout.const_data_ptr<scalar_t>();
  const acc_t* dlast_p = data_or_null<acc_t>(dlast);
  const acc_t* ckpt_p = ckpt.const_data_ptr<acc_t>();
  scalar_t* du_p = du.mutable_data_ptr<scalar_t>();
  scalar_t* ddelta_p = ddelta.mutable_data_ptr<scalar_t>();
  scalar_t* dz_p = mutable_data_or_null<scalar_t>(dz);
  acc_t* dinit_p = dinit.mutable_data_ptr<acc_t>();
  acc_t* dA_p = dA_part.mutable_data_ptr<acc_t>();
  acc_t* dD_p = dD_part.mutable_data_ptr<acc_t>();
  acc_t* dbias_p = dbias_part.mutable_data_ptr<acc_t>();
  acc_t* dB_p = dB_part.mutable_data_ptr<acc_t>();
  acc_t* dC_p = dC_part.mutable_data_ptr<acc_t>();
  const int64_t work = s.batch * s.dim * L * std::max<int64_t>(N, 1) * 16;

  for_each_task<Buffers<acc_t>>(
      static_cast<int64_t>(ts.size()), work, [&](int64_t i, Buffers<acc_t>& buf) {
        const Task& t = ts[i];
        const TaskView<scalar_t, acc_t> v(s, t);
        size_buffers(buf, N);
        buf.xs.resize(2 * kChunk * S);
        buf.dA.assign(S, acc_t(0));
        // constant B/C: (state, lane); variable: this task's (L, N) slice
        acc_t* dB = s.var_B ? dB_p + (((t.b * s.groups + t.g) * bpg + t.block) * L) * N : nullptr;
        acc_t* dC = s.var_C ? dC_p + (((t.b * s.groups + t.g) * bpg + t.block) * L) * N : nullptr;
        if (!s.var_B) buf.dB.assign(S, acc_t(0));
        if (!s.var_C) buf.dC.assign(S, acc_t(0));
        v.load_parameters(buf);
        buf.dD.assign(kLanes, acc_t(0));
        buf.dbias.assign(kLanes, acc_t(0));
        std::fill(buf.h.begin(), buf.h.end(), acc_t(0));
        for (int64_t k = chunks - 1; k >= 0; --k) {
          const int64_t l0 = k * kChunk, len = std::min(kChunk, L - l0);
          v.load_inputs(l0, len, buf);
          // recompute the chunk's states from its checkpoint
          for (int64_t c = 0; c < kLanes; ++c) {
            for (int64_t n = 0; n < N; ++n) {
              buf.x[n * kLanes + c] =
                  c < t.nc ? ckpt_p[(((t.b * s.dim + t.c0 + c) * chunks) + k) * N + n] : acc_t(0);
            }
          }
          run_chunk(v, q, l0, len, buf, buf.xs.data(), [](int64_t) {});
          // dy and dz from dout
          load_tile(dout_p + (t.b * s.dim + t.c0) * L + l0, L, t.nc, len, buf.dout.data());
          if (v.z) load_tile(v.z + l0, L, t.nc, len, buf.z.data());
          std::fill(buf.ddt.begin(), buf.ddt.end(), acc_t(0));
          output_grad_tile(buf.dout.data(), buf.y.data(), buf.u.data(),
                           v.z ? buf.z.data() : nullptr, buf.Dl.data(), buf.dz.data(),
                           buf.du.data(), buf.dD.data());
          for (int64_t l = len - 1; l >= 0; --l) {
            const int64_t gl = l0 + l;
            if (q.end_of[gl] >= 0) {  // the gradient of the sequence's last state
              const int64_t gs = v.global_seq(q.end_of[gl]);
              if (dlast_p)
                load_lanes(dlast_p + (gs * s.dim + t.c0) * N, N, t.nc, buf.h.data());
              else
                std::fill(buf.h.begin(), buf.h.end(), acc_t(0));
            }
            run_step_back(s, N, buf.dt.data() + l * kLanes, buf.u.data() + l * kLanes, buf.A.data(),
                          v.B_at(buf, gl), v.C_at(buf, gl), buf.xs.data() + 2 * l * S,
                          buf.xs.data() + (2 * l + 1) * S, buf.dout.data() + l * kLanes,
                          buf.h.data(), buf.ddt.data() + l * kLanes, buf.du.data() + l * kLanes,
                          buf.dA.data(), s.var_B ? dB + gl * N : buf.dB.data(),
                          s.var_C ? dC + gl * N : buf.dC.data());
            if (q.start_of[gl] >= 0) {  // h is now the gradient of the sequence's initial state
              const int64_t gs = v.global_seq(q.start_of[gl]);
              store_lanes(buf.h.data(), N, t.nc, dinit_p + (gs * s.dim + t.c0) * N);
            }
          }
          // ddelta from ddt through softplus; delta_bias's gradient is its sum
          delta_grad_tile(buf.ddt.data(), buf.pre.data(), s.softplus, buf.dbias.data());
          const int64_t row = (t.b * s.dim + t.c0) * L + l0;
          store_tile(buf.du.data(), t.nc, len, du_p + row, L);
          store_tile(buf.ddt.data(), t.nc, len, ddelta_p + row, L);
          if (dz_p) store_tile(buf.dz.data(), t.nc, len, dz_p + row, L);
        }
        store_lanes(buf.dA.data(), N, t.nc, dA_p + (t.b * s.dim + t.c0) * N);
        if (!s.var_B) store_lanes(buf.dB.data(), N, t.nc, dB_p + (t.b * s.dim + t.c0) * N);
        if (!s.var_C) store_lanes(buf.dC.data(), N, t.nc, dC_p + (t.b * s.dim + t.c0) * N);
        for (int64_t c = 0; c < t.nc; ++c) {
          dD_p[t.b * s.dim + t.c0 + c] = buf.dD[c];
          dbias_p[t.b * s.dim + t.c0 + c] = buf.dbias[c];
        }
      });
  empty_sequences(s, dlast, dinit);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> selective_scan_forward_cpu(
    const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
    const at::Tensor& C, const std::optional<at::Tensor>& D, const std::optional<at::Tensor>& z,
    const std::optional<at::Tensor>& delta_bias, bool delta_softplus,
    const std::optional<at::Tensor>& initial_state, const std::optional<at::Tensor>& cu_seqlens) {
  const Scan s =
      prepare_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, cu_seqlens);
  auto [out, last, ckpt] = allocate_outputs(s);
  KZ_DISPATCH_FLOATING_TYPES(u.scalar_type(), "selective_scan_forward",
                             [&] { forward_cpu<scalar_t>(s, out, last, ckpt); });
  return {out, last, ckpt};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor, at::Tensor>
selective_scan_backward_cpu(const at::Tensor& dout, const std::optional<at::Tensor>& dlast_state,
                            const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                            const at::Tensor& B, const at::Tensor& C,
                            const std::optional<at::Tensor>& D, const std::optional<at::Tensor>& z,
                            const std::optional<at::Tensor>& delta_bias, bool delta_softplus,
                            const std::optional<at::Tensor>& initial_state,
                            const std::optional<at::Tensor>& cu_seqlens,
                            const at::Tensor& checkpoints) {
  const ScanBackward b =
      prepare_scan_backward(dout, dlast_state, u, delta, A, B, C, D, z, delta_bias,
                            delta_softplus, initial_state, cu_seqlens, checkpoints);
  const Scan& s = b.s;
  ScanGrads g = allocate_grads(s, blocks_per_group(s));
  KZ_DISPATCH_FLOATING_TYPES(u.scalar_type(), "selective_scan_backward", [&] {
    backward_cpu<scalar_t>(s, b.dout, b.dlast, b.checkpoints, g.du, g.ddelta, g.dz, g.dinit,
                           g.dA_part, g.dD_part, g.dbias_part, g.dB, g.dC);
  });
  return finish_grads(s, g);
}

namespace {

// One row of the state: s = s * exp(dt A) + dt B x in place; returns sum s C.
template <typename state_t, typename acc_t>
KZ_ALWAYS_INLINE acc_t update_row_impl(state_t* KZ_RESTRICT row, const acc_t* KZ_RESTRICT A,
                                       const acc_t* KZ_RESTRICT B, const acc_t* KZ_RESTRICT C,
                                       acc_t dt, acc_t x, int64_t N) {
  acc_t y = 0;
  for (int64_t n = 0; n < N; ++n) {
    const acc_t v = static_cast<acc_t>(row[n]) * exp_lane(dt * A[n]) + dt * B[n] * x;
    row[n] = static_cast<state_t>(v);
    y += v * C[n];
  }
  return y;
}

KZ_CPU_CLONES float update_row(float* row, const float* A, const float* B, const float* C, float dt,
                               float x, int64_t N) {
  return update_row_impl(row, A, B, C, dt, x, N);
}
template <typename state_t, typename acc_t>
acc_t update_row(state_t* row, const acc_t* A, const acc_t* B, const acc_t* C, acc_t dt, acc_t x,
                 int64_t N) {
  return update_row_impl(row, A, B, C, dt, x, N);
}

template <typename acc_t>
KZ_ALWAYS_INLINE void softplus_rows_impl(acc_t* KZ_RESTRICT v, int64_t n) {
  for (int64_t i = 0; i < n; ++i) v[i] = softplus_lane(v[i]);
}
template <typename acc_t>
KZ_ALWAYS_INLINE void silu_rows_impl(acc_t* KZ_RESTRICT v, int64_t n) {
  for (int64_t i = 0; i < n; ++i) v[i] *= sigmoid_lane(v[i]);
}
KZ_CPU_CLONES void softplus_rows(float* v, int64_t n) { softplus_rows_impl(v, n); }
KZ_CPU_CLONES void silu_rows(float* v, int64_t n) { silu_rows_impl(v, n); }
void softplus_rows(double* v, int64_t n) { softplus_rows_impl(v, n); }
void silu_rows(double* v, int64_t n) { silu_rows_impl(v, n); }

template <typename scalar_t, typename state_t>
void state_update_cpu(const StateUpdate& su, at::Tensor& out) {
  using acc_t = acc_type_t<scalar_t>;
  const int64_t batch = su.state.size(0), H = su.state.size(1), P = su.state.size(2),
                N = su.state.size(3), G = su.B.size(1);
  const int64_t ss0 = su.state.stride(0), ss1 = su.state.stride(1), ss2 = su.state.stride(2);
  state_t* st = su.state.mutable_data_ptr<state_t>();
  const scalar_t *x = su.x.const_data_ptr<scalar_t>(), *dt = su.dt.const_data_ptr<scalar_t>();
  const scalar_t* z = data_or_null<scalar_t>(su.z);
  const acc_t *A = su.A.const_data_ptr<acc_t>(), *B = su.B.const_data_ptr<acc_t>(),
              *C = su.C.const_data_ptr<acc_t>();
  const acc_t* D = data_or_null<acc_t>(su.D);
  const acc_t* bias = data_or_null<acc_t>(su.dt_bias);
  scalar_t* o = out.mutable_data_ptr<scalar_t>();
  // tasks: (batch, head, block of kRows channels), so that the flat form
  // (one head) runs in parallel too
  constexpr int64_t kRows = 64;
  const int64_t blocks = (P + kRows - 1) / kRows;
  for_each_task<int>(batch * H * blocks, batch * H * P * N * 4, [&](int64_t task, int&) {
    const int64_t b = task / (H * blocks), h = task / blocks % H, g = h / (H / G);
    const int64_t p0 = task % blocks * kRows, p1 = std::min(P, p0 + kRows);
    const acc_t* Bb = B + (b * G + g) * N;
    const acc_t* Cb = C + (b * G + g) * N;
    // the rows' step sizes and gates first, vectorized across the rows
    const int64_t e0 = (b * H + h) * P + p0, hp0 = h * P + p0, n = p1 - p0;
    acc_t d[kRows], gate[kRows];
    for (int64_t i = 0; i < n; ++i) {
      d[i] = static_cast<acc_t>(dt[e0 + i]) + (bias ? bias[hp0 + i] : acc_t(0));
      gate[i] = z ? static_cast<acc_t>(z[e0 + i]) : acc_t(0);
    }
    if (su.softplus) softplus_rows(d, n);
    if (z) silu_rows(gate, n);
    for (int64_t i = 0; i < n; ++i) {
      const acc_t xv = static_cast<acc_t>(x[e0 + i]);
      state_t* row = st + b * ss0 + h * ss1 + (p0 + i) * ss2;
      // from the new state before its rounding, as mamba_ssm's kernel
      acc_t y = update_row(row, A + (hp0 + i) * N, Bb, Cb, d[i], xv, N);
      if (D) y += xv * D[hp0 + i];
      if (z) y *= gate[i];
      o[e0 + i] = static_cast<scalar_t>(y);
    }
  });
}

}  // namespace

at::Tensor selective_state_update_cpu(const at::Tensor& state, const at::Tensor& x,
                                      const at::Tensor& dt, const at::Tensor& A,
                                      const at::Tensor& B, const at::Tensor& C,
                                      const std::optional<at::Tensor>& D,
                                      const std::optional<at::Tensor>& z,
                                      const std::optional<at::Tensor>& dt_bias, bool dt_softplus) {
  const StateUpdate su = prepare_state_update(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus);
  at::Tensor out = at::empty(su.x.sizes(), su.x.options());
  KZ_DISPATCH_FLOATING_TYPES(su.x.scalar_type(), "selective_state_update", [&] {
    using x_t = scalar_t;
    KZ_DISPATCH_FLOATING_TYPES(state.scalar_type(), "selective_state_update",
                               [&] { state_update_cpu<x_t, scalar_t>(su, out); });
  });
  out = out.to(x.scalar_type());
  return su.heads ? out : out.squeeze(1);
}

}  // namespace selective_scan_detail
}  // namespace kernelzoo

TORCH_LIBRARY_IMPL(kernelzoo, CPU, m) {
  m.impl("selective_scan_forward", &kernelzoo::selective_scan_detail::selective_scan_forward_cpu);
  m.impl("_selective_scan_backward",
         &kernelzoo::selective_scan_detail::selective_scan_backward_cpu);
  m.impl("selective_state_update", &kernelzoo::selective_scan_detail::selective_state_update_cpu);
}
