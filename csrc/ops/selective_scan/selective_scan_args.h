// Host side of the selective scan shared by the CPU entry points and the C++
// tests: the validated problem. prepare_scan / prepare_scan_backward (in
// selective_scan.cpp) raise the documented errors, mirrored by the fake
// kernels in pyext/kernelzoo/ops/selective_scan.py.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

namespace kernelzoo {
namespace selective_scan_detail {

// The forward saves the state entering every kChunk-th position; the backward
// recomputes the states of one chunk at a time from it.
constexpr int64_t kChunk = 64;

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
