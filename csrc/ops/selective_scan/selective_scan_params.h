// Plain parameter structs of the selective scan CUDA kernels
// (selective_scan_kernel.cuh), filled by the launch plan (selective_scan_plan.h).
// Kernel-safe: no tensor or runtime headers.
#pragma once

#include <cstdint>

namespace kernelzoo {
namespace selective_scan_detail {

// The forward saves the state entering every kChunk-th position (the
// checkpoints); the backward recomputes the states of one chunk at a time from
// them. CPU and CUDA kernels share the spacing, so the checkpoints of one
// device's forward serve the other device's backward.
constexpr int64_t kChunk = 64;

// Everything the scan's forward and backward kernels read and write. Layouts
// (all contiguous): u, delta, z, out, dout, du, ddelta, dz (batch, dim, seqlen)
// in scalar_t; the rest in acc_t (float32, float64 for float64 u): A (dim, N);
// B and C constant (dim, N) or variable (batch, groups_B|C, seqlen, N); D,
// delta_bias (dim); initial_state, last_state, dlast, dinit (nseq, dim, N);
// checkpoints (batch, dim, chunks, N); cu_seqlens int32 (nseq + 1). Pointers of
// absent arguments are null.
template <typename scalar_t, typename acc_t>
struct ScanParams {
  const scalar_t *u = nullptr, *delta = nullptr, *z = nullptr;
  const acc_t *A = nullptr, *B = nullptr, *C = nullptr, *D = nullptr, *delta_bias = nullptr;
  const acc_t* initial_state = nullptr;
  const int32_t* cu_seqlens = nullptr;
  int64_t batch = 0, dim = 0, seqlen = 0, dstate = 0, nseq = 0;
  int64_t groups_B = 1, groups_C = 1, groups = 1;  // groups: lcm(groups_B, groups_C)
  int64_t blocks_per_group = 0;                    // thread blocks per (batch, group)
  bool var_B = false, var_C = false, softplus = false;

  // forward
  scalar_t* out = nullptr;
  acc_t* last_state = nullptr;
  acc_t* checkpoints = nullptr;  // written by the forward, read by the backward

  // backward
  const scalar_t* dout = nullptr;
  const acc_t* dlast = nullptr;
  scalar_t *du = nullptr, *ddelta = nullptr, *dz = nullptr;
  acc_t* dinit = nullptr;
  // Per (batch, channel) partial sums, zeroed by the plan: dA_part (batch, dim,
  // N), dD_part and dbias_part (batch, dim), and constant B/C's dB/dC (batch,
  // dim, N).
  acc_t *dA_part = nullptr, *dD_part = nullptr, *dbias_part = nullptr;
  // Variable B/C's gradients: atomic, added into (batch, groups_B|C, seqlen, N)
  // (zeroed); deterministic, one slice per thread block, (batch, groups,
  // blocks_per_group, seqlen, N), summed afterwards in a fixed order.
  acc_t *dB = nullptr, *dC = nullptr;
  bool deterministic = false;
  acc_t* grad_carry = nullptr;  // (batch, dim, N) scratch: the state gradient between chunks
};

// selective_state_update in the head-grouped form: state (batch, nheads,
// headdim, N) through its strides (last dimension contiguous); x, dt, z, out
// (batch, nheads, headdim) contiguous in x_t; A (nheads, headdim, N), D,
// dt_bias (nheads, headdim), B, C (batch, groups, N) contiguous in acc_t.
template <typename x_t, typename state_t, typename acc_t>
struct StateUpdateParams {
  state_t* state = nullptr;
  int64_t state_s0 = 0, state_s1 = 0, state_s2 = 0;
  const x_t *x = nullptr, *dt = nullptr, *z = nullptr;
  const acc_t *A = nullptr, *B = nullptr, *C = nullptr, *D = nullptr, *dt_bias = nullptr;
  x_t* out = nullptr;
  int64_t batch = 0, nheads = 0, headdim = 0, dstate = 0, groups = 1;
  bool softplus = false;
};

}  // namespace selective_scan_detail
}  // namespace kernelzoo
