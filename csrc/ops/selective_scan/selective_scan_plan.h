// Launch plan of the selective scan CUDA kernels (selective_scan_kernel.cuh):
// element types, parameters, grids, scratch buffers and the host work around
// the kernels, for a launch functor called as launch(kernel, grid, block,
// shared_bytes, args...) (common/cuda_launch.h). selective_scan_cuda.cu passes
// CudaLaunch; the CPU-harness tests pass HarnessLaunch, so that they run exactly
// the launches the launcher makes. Host code.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "../../common/acc_type.h"
#include "../../common/backward.h"
#include "../../common/dispatch.h"
#include "../../common/tensor_data.h"
#include "selective_scan_args.h"
#include "selective_scan_kernel.cuh"

namespace kernelzoo {
namespace selective_scan_detail {

// Thread blocks per (batch row, group): kScanWarps channels each.
inline int64_t scan_blocks_per_group(const Scan& s) {
  return (s.dim / s.groups + kScanWarps - 1) / kScanWarps;
}

inline int64_t scan_blocks(const Scan& s) {
  const int64_t blocks = s.batch * s.groups * scan_blocks_per_group(s);
  TORCH_CHECK(blocks <= std::numeric_limits<int32_t>::max(),
              "selective_scan: batch * dim too large for one launch (", blocks, " thread blocks)");
  return s.seqlen > 0 ? blocks : 0;
}

// The problem's inputs; cu: cu_seqlens on the kernels' device (or undefined).
template <typename scalar_t>
ScanParams<scalar_t, acc_type_t<scalar_t>> scan_params(const Scan& s, const at::Tensor& cu) {
  using acc_t = acc_type_t<scalar_t>;
  ScanParams<scalar_t, acc_t> p;
  p.u = s.u.const_data_ptr<scalar_t>();
  p.delta = s.delta.const_data_ptr<scalar_t>();
  p.z = data_or_null<scalar_t>(s.z);
  p.A = s.A.const_data_ptr<acc_t>();
  p.B = s.B.const_data_ptr<acc_t>();
  p.C = s.C.const_data_ptr<acc_t>();
  p.D = data_or_null<acc_t>(s.D);
  p.delta_bias = data_or_null<acc_t>(s.delta_bias);
  p.initial_state = data_or_null<acc_t>(s.initial_state);
  p.cu_seqlens = data_or_null<int32_t>(cu);
  p.batch = s.batch;
  p.dim = s.dim;
  p.seqlen = s.seqlen;
  p.dstate = s.dstate;
  p.nseq = s.nseq;
  p.groups_B = s.groups_B;
  p.groups_C = s.groups_C;
  p.groups = s.groups;
  p.blocks_per_group = scan_blocks_per_group(s);
  p.var_B = s.var_B;
  p.var_C = s.var_C;
  p.softplus = s.softplus;
  return p;
}

inline at::Tensor device_cu_seqlens(const Scan& s) {
  return s.cu_seqlens.defined() ? s.cu_seqlens.to(s.u.device()) : at::Tensor();
}

// Fills out (u's shape, contiguous), last (nseq, dim, N) and ckpt (batch, dim,
// chunks, N).
template <typename Launch>
void launch_forward(const Scan& s, const at::Tensor& out, const at::Tensor& last,
                    const at::Tensor& ckpt, const Launch& launch) {
  const int64_t blocks = scan_blocks(s);
  if (blocks > 0) {
    const at::Tensor cu = device_cu_seqlens(s);
    KZ_DISPATCH_FLOATING_TYPES(s.u.scalar_type(), "selective_scan_forward", [&] {
      using acc_t = acc_type_t<scalar_t>;
      auto p = scan_params<scalar_t>(s, cu);
      p.out = out.mutable_data_ptr<scalar_t>();
      p.last_state = last.mutable_data_ptr<acc_t>();
      p.checkpoints = ckpt.mutable_data_ptr<acc_t>();
      launch(selective_scan_forward_kernel<scalar_t>, dim3(static_cast<unsigned>(blocks)),
             dim3(kScanThreads), 0, p);
    });
  }
  at::Tensor last_ = last;
  empty_sequences(s, s.initial_state, last_);
}

// The gradients' parts (selective_scan_args.h), the way `path` says
// (common/backward.h: the CUDA launcher passes backward_path(), the tests both).
template <typename Launch>
ScanGrads launch_backward(const ScanBackward& b, const Launch& launch, BackwardPath path) {
  const Scan& s = b.s;
  const bool deterministic = path == BackwardPath::Deterministic;
  ScanGrads g = allocate_grads(s, deterministic ? scan_blocks_per_group(s) : 0);
  const int64_t blocks = scan_blocks(s);
  if (blocks > 0) {
    const at::Tensor cu = device_cu_seqlens(s);
    const at::Tensor grad_carry = at::empty({s.batch, s.dim, s.dstate}, s.A.options());
    KZ_DISPATCH_FLOATING_TYPES(s.u.scalar_type(), "selective_scan_backward", [&] {
      using acc_t = acc_type_t<scalar_t>;
      auto p = scan_params<scalar_t>(s, cu);
      p.checkpoints = const_cast<acc_t*>(b.checkpoints.const_data_ptr<acc_t>());  // read only
      p.dout = b.dout.const_data_ptr<scalar_t>();
      p.dlast = data_or_null<acc_t>(b.dlast);
      p.du = g.du.mutable_data_ptr<scalar_t>();
      p.ddelta = g.ddelta.mutable_data_ptr<scalar_t>();
      p.dz = mutable_data_or_null<scalar_t>(g.dz);
      p.dinit = g.dinit.mutable_data_ptr<acc_t>();
      p.dA_part = g.dA_part.mutable_data_ptr<acc_t>();
      p.dD_part = g.dD_part.mutable_data_ptr<acc_t>();
      p.dbias_part = g.dbias_part.mutable_data_ptr<acc_t>();
      p.dB = g.dB.mutable_data_ptr<acc_t>();
      p.dC = g.dC.mutable_data_ptr<acc_t>();
      p.deterministic = deterministic;
      p.grad_carry = grad_carry.mutable_data_ptr<acc_t>();
      launch(selective_scan_backward_kernel<scalar_t>, dim3(static_cast<unsigned>(blocks)),
             dim3(kScanThreads), 0, p);
    });
  }
  empty_sequences(s, b.dlast, g.dinit);
  return g;
}

// One decoding step: updates su.state in place, returns the output (x's
// prepared shape and dtype, (batch, nheads, headdim)).
template <typename Launch>
at::Tensor launch_state_update(const StateUpdate& su, const Launch& launch) {
  at::Tensor out = at::empty(su.x.sizes(), su.x.options());
  const int64_t rows = su.x.numel();
  if (rows == 0) return out;
  const int64_t blocks = std::min<int64_t>((rows + kStateUpdateWarps - 1) / kStateUpdateWarps,
                                           int64_t{1} << 20);  // the rest by the kernel's loop
  KZ_DISPATCH_FLOATING_TYPES(su.x.scalar_type(), "selective_state_update", [&] {
    using x_t = scalar_t;
    using acc_t = acc_type_t<x_t>;
    KZ_DISPATCH_FLOATING_TYPES(su.state.scalar_type(), "selective_state_update", [&] {
      using state_t = scalar_t;
      if constexpr (std::is_same_v<state_t, double> && !std::is_same_v<x_t, double>) {
        // prepare_state_update makes everything float64 when anything is
        TORCH_CHECK(false, "selective_state_update: float64 state with ",
                    c10::toString(su.x.scalar_type()), " x");
      } else {
        StateUpdateParams<x_t, state_t, acc_t> p;
        p.state = su.state.mutable_data_ptr<state_t>();
        p.state_s0 = su.state.stride(0);
        p.state_s1 = su.state.stride(1);
        p.state_s2 = su.state.stride(2);
        p.x = su.x.const_data_ptr<x_t>();
        p.dt = su.dt.const_data_ptr<x_t>();
        p.z = data_or_null<x_t>(su.z);
        p.A = su.A.const_data_ptr<acc_t>();
        p.B = su.B.const_data_ptr<acc_t>();
        p.C = su.C.const_data_ptr<acc_t>();
        p.D = data_or_null<acc_t>(su.D);
        p.dt_bias = data_or_null<acc_t>(su.dt_bias);
        p.out = out.mutable_data_ptr<x_t>();
        p.batch = su.state.size(0);
        p.nheads = su.state.size(1);
        p.headdim = su.state.size(2);
        p.dstate = su.state.size(3);
        p.groups = su.B.size(1);
        p.softplus = su.softplus;
        launch(selective_state_update_kernel<x_t, state_t>, dim3(static_cast<unsigned>(blocks)),
               dim3(32 * kStateUpdateWarps), 0, p);
      }
    });
  });
  return out;
}

}  // namespace selective_scan_detail
}  // namespace kernelzoo
