// kernelzoo C++ API: Mamba's selective scan through the dispatcher, for LibTorch
// users. Semantics are mamba_ssm's selective_scan_fn (see the Python docstring
// of kernelzoo.ops.selective_scan_fn and kernelzoo.reference.selective_scan):
//   u, delta (batch, dim, seqlen); A (dim, dstate) real; B, C constant
//   (dim, dstate), variable (batch, dstate, seqlen) or grouped (batch, groups,
//   dstate, seqlen); D, delta_bias (dim) or undefined; z (batch, dim, seqlen) or
//   undefined; initial_state (nseq, dim, dstate) or undefined; cu_seqlens int32
//   (nseq + 1) with batch 1 for sequences packed along seqlen, or undefined.
// Returns (out, last_state, checkpoints): out like u; last_state (nseq, dim,
// dstate) float32 (float64 for float64 u); checkpoints, the saved states the
// backward recomputes from (batch, dim, ceil(seqlen / 64), dstate).
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

namespace kernelzoo {

std::tuple<at::Tensor, at::Tensor, at::Tensor> selective_scan_forward(
    const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
    const at::Tensor& C, const std::optional<at::Tensor>& D, const std::optional<at::Tensor>& z,
    const std::optional<at::Tensor>& delta_bias, bool delta_softplus,
    const std::optional<at::Tensor>& initial_state, const std::optional<at::Tensor>& cu_seqlens);

// One decoding step of mamba_ssm's selective_state_update: updates `state` in
// place and returns the output. Shapes: state (batch, dim, dstate) with x, dt,
// z (batch, dim), A (dim, dstate), B, C (batch, dstate) or (batch, groups,
// dstate), D, dt_bias (dim); or the head-grouped form state (batch, nheads,
// headdim, dstate), x/dt/z (batch, nheads, headdim), A (nheads, headdim,
// dstate), D/dt_bias (nheads, headdim).
at::Tensor selective_state_update(const at::Tensor& state, const at::Tensor& x,
                                  const at::Tensor& dt, const at::Tensor& A, const at::Tensor& B,
                                  const at::Tensor& C, const std::optional<at::Tensor>& D,
                                  const std::optional<at::Tensor>& z,
                                  const std::optional<at::Tensor>& dt_bias, bool dt_softplus);

}  // namespace kernelzoo
