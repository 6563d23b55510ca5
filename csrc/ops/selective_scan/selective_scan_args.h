// Host side of the selective scan shared by the CPU entry points and the C++
// tests: the validated problem. prepare_scan / prepare_scan_backward (in
// selective_scan.cpp) raise the documented errors, mirrored by the fake
// kernels in pyext/kernelzoo/ops/selective_scan.py.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>
#include <vector>

#include "selective_scan_params.h"

namespace kernelzoo {
namespace selective_scan_detail {

struct Scan {
  // u, delta, z: (batch, dim, seqlen) contiguous, u's dtype (z undefined when absent).
  at::Tensor u, delta, z;
  // Everything else in the accumulation dtype (float32; float64 for float64 u),
  // contiguous: A (dim, dstate); B and C (dim, dstate) when constant, else
  // transposed to (batch, groups_B|C, seqlen, dstate); D, delta_bias (dim) or
  // undefined; initial_state (nseq, dim, dstate) or undefined.
  at::Tensor A, B, C, D, delta_bias, initial_state;
  at::Tensor cu_seqlens;  // int32 (nseq + 1) or undefined
  int64_t batch = 0, dim = 0, seqlen = 0, dstate = 0;
  int64_t groups_B = 1, groups_C = 1;  // channel groups of B and C (1 when constant)
  int64_t groups = 1;     // lcm(groups_B, groups_C): no task block straddles a group of either
  int64_t nseq = 0;       // sequences: batch, or cu_seqlens' count
  bool var_B = false, var_C = false, softplus = false;
  // The input layouts of B and C, for the gradients: true when variable
  // (batch, dstate, seqlen) without a groups dimension.
  bool B_ungrouped = false, C_ungrouped = false;
  int64_t chunks() const { return (seqlen + kChunk - 1) / kChunk; }
};

Scan prepare_scan(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                  const at::Tensor& B, const at::Tensor& C, const std::optional<at::Tensor>& D,
                  const std::optional<at::Tensor>& z, const std::optional<at::Tensor>& delta_bias,
                  bool delta_softplus, const std::optional<at::Tensor>& initial_state,
                  const std::optional<at::Tensor>& cu_seqlens);

// The forward's outputs, allocated on u's device: out (u's shape, contiguous),
// last_state (nseq, dim, N) and the checkpoints (batch, dim, chunks, N) in the
// accumulation dtype.
std::tuple<at::Tensor, at::Tensor, at::Tensor> allocate_outputs(const Scan& s);

// The backward's inputs after the checks: the problem, dout (contiguous), the
// gradient of the last state (accumulation dtype, contiguous; undefined when
// absent) and the forward's checkpoints (contiguous).
struct ScanBackward {
  Scan s;
  at::Tensor dout, dlast, checkpoints;
};

ScanBackward prepare_scan_backward(
    const at::Tensor& dout, const std::optional<at::Tensor>& dlast_state, const at::Tensor& u,
    const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
    const std::optional<at::Tensor>& D, const std::optional<at::Tensor>& z,
    const std::optional<at::Tensor>& delta_bias, bool delta_softplus,
    const std::optional<at::Tensor>& initial_state, const std::optional<at::Tensor>& cu_seqlens,
    const at::Tensor& checkpoints);

// What the backward kernels of either device fill: du, ddelta, dz (u's shape
// and dtype; dz undefined without z), dinit (nseq, dim, N); partial sums per
// batch row of dA (batch, dim, N), dD and ddelta_bias (batch, dim); dB and dC:
// (batch, dim, N) per batch row when constant; when variable, either one
// slice per channel block (batch, groups, blocks_per_group, seqlen, N) or
// already summed (batch, groups_B|C, seqlen, N). Partial sums start at zero.
struct ScanGrads {
  at::Tensor du, ddelta, dz, dinit, dA_part, dD_part, dbias_part, dB, dC;
};

// blocks_per_group: the kernel's channel blocks per group, for the per-block
// slices of a variable dB/dC (0: allocate the summed layout instead).
ScanGrads allocate_grads(const Scan& s, int64_t blocks_per_group);

// The op's nine gradients (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias,
// dinitial_state) in the layouts and dtypes of their inputs, absent ones as
// empty tensors: the partial sums added in a fixed order (deterministic).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor, at::Tensor>
finish_grads(const Scan& s, const ScanGrads& g);

// The sequences of one batch row, [start[i], end[i]) each: cu_seqlens' or the
// whole row.
struct Sequences {
  std::vector<int64_t> start, end;
};
Sequences sequences(const Scan& s);

// Sequences without positions: their last state is their initial state (or
// zero), and the gradient of their initial state is that of their last state
// (from: initial_state or dlast, possibly undefined; to: last_state or dinit).
void empty_sequences(const Scan& s, const at::Tensor& from, at::Tensor& to);

// The sum over the leading dimension, in order (the same whatever the thread count).
at::Tensor sum_leading(const at::Tensor& part);

// selective_state_update's arguments in the head-grouped form: state (batch,
// nheads, headdim, dstate) (a view of the caller's tensor, any float dtype,
// last dimension contiguous); x, dt, z (batch, nheads, headdim) x's dtype; A
// (nheads, headdim, dstate), D, dt_bias (nheads, headdim) and B, C (batch,
// groups, dstate), all in the accumulation dtype, contiguous.
struct StateUpdate {
  at::Tensor state, x, dt, z, A, B, C, D, dt_bias;
  bool softplus = false, heads = false;  // heads: the caller used the head-grouped form
};

StateUpdate prepare_state_update(const at::Tensor& state, const at::Tensor& x,
                                 const at::Tensor& dt, const at::Tensor& A, const at::Tensor& B,
                                 const at::Tensor& C, const std::optional<at::Tensor>& D,
                                 const std::optional<at::Tensor>& z,
                                 const std::optional<at::Tensor>& dt_bias, bool dt_softplus);

}  // namespace selective_scan_detail
}  // namespace kernelzoo
