// Launch plan of the deform_conv2d CUDA kernels (deform_conv2d_kernel.cuh): the
// chunks of images, the sampling table and column buffers, the kernels and the
// matrix products between them (at::mm: cuBLAS on the GPU), for a launch
// functor called as launch(kernel, grid, block, shared_bytes, args...)
// (common/cuda_launch.h). deform_conv2d_cuda.cu passes CudaLaunch; the
// CPU-harness tests pass HarnessLaunch, so that they run exactly the launches
// the launcher makes (the products then run on the CPU). Host code.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <cstdint>
#include <tuple>
#include <vector>

#include "../../common/acc_type.h"
#include "../../common/backward.h"
#include "../../common/dispatch.h"
#include "../../common/launch.h"
#include "../../common/tensor_data.h"
#include "deform_conv2d_args.h"
#include "deform_conv2d_kernel.cuh"

namespace kernelzoo {
namespace deform_detail {

// The chunk's sampling table: (nb, OG, K, P) Samples in a byte tensor.
template <typename scalar_t, typename acc_t, typename Launch>
at::Tensor launch_table(const Problem& p, const Chunk& ch, const Launch& launch) {
  const Geometry& g = p.g;
  const int64_t entries = ch.nb * g.offset_groups * g.taps() * g.positions();
  at::Tensor table = at::empty({entries * static_cast<int64_t>(sizeof(Sample<acc_t>))},
                               p.input.options().dtype(at::kByte));
  launch(deform_table_kernel<scalar_t, acc_t>, grid_blocks(entries), kBlockThreads, 0, g, ch,
         p.offset.const_data_ptr<scalar_t>(), data_or_null<scalar_t>(p.mask),
         reinterpret_cast<Sample<acc_t>*>(table.mutable_data_ptr<uint8_t>()));
  return table;
}

template <typename acc_t>
const Sample<acc_t>* samples(const at::Tensor& table) {
  return reinterpret_cast<const Sample<acc_t>*>(table.const_data_ptr<uint8_t>());
}

// The chunk's columns (C * K, nb * P) in acc_t.
template <typename scalar_t, typename acc_t, typename Launch>
at::Tensor launch_im2col(const Problem& p, const Chunk& ch, const at::Tensor& table,
                         const Launch& launch) {
  const Geometry& g = p.g;
  const int64_t rows = g.C * g.taps(), width = ch.nb * g.positions();
  at::Tensor cols =
      at::empty({rows, width}, p.input.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
  launch(deform_im2col_kernel<scalar_t, acc_t>, grid_blocks(rows * width), kBlockThreads, 0, g, ch,
         p.input.const_data_ptr<scalar_t>(), samples<acc_t>(table), cols.mutable_data_ptr<acc_t>());
  return cols;
}

// Fills output (N, C_out, H_out, W_out), contiguous, input's dtype.
template <typename Launch>
void launch_forward(const Problem& p, const at::Tensor& output, const Launch& launch) {
  const Geometry& g = p.g;
  if (output.numel() == 0) return;
  KZ_DISPATCH_FLOATING_TYPES(p.input.scalar_type(), "deform_conv2d", [&] {
    using acc_t = acc_type_t<scalar_t>;
    const auto acc = c10::CppTypeToScalarType<acc_t>::value;
    const int64_t P = g.positions(), cin_g = g.C / g.groups * g.taps();
    const int64_t cout_g = g.C_out / g.groups;
    const at::Tensor w = p.weight.to(acc).reshape({g.C_out, cin_g});
    const at::Tensor bias = p.bias.defined() ? p.bias.to(acc).view({g.C_out, 1}) : at::Tensor();
    const int64_t chunk = images_per_chunk<acc_t>(g);
    for (int64_t n0 = 0; n0 < g.N; n0 += chunk) {
      const Chunk ch{n0, std::min(chunk, g.N - n0)};
      const at::Tensor table = launch_table<scalar_t, acc_t>(p, ch, launch);
      const at::Tensor cols = launch_im2col<scalar_t, acc_t>(p, ch, table, launch);
      std::vector<at::Tensor> parts;
      for (int64_t gr = 0; gr < g.groups; ++gr) {
        parts.push_back(
            at::mm(w.narrow(0, gr * cout_g, cout_g), cols.narrow(0, gr * cin_g, cin_g)));
      }
      at::Tensor out = g.groups == 1 ? parts[0] : at::cat(parts, 0);
      if (bias.defined()) out.add_(bias);
      output.narrow(0, n0, ch.nb)
          .copy_(out.view({g.C_out, ch.nb, g.H_out, g.W_out}).transpose(0, 1));
    }
  });
}

// The gradients (input, weight, offset, mask, bias), those of an absent mask or
// bias empty; the input's the way `path` says (common/backward.h).
template <typename Launch>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> launch_backward(
    const BackwardProblem& b, const Launch& launch, BackwardPath path) {
  const Problem& p = b.p;
  const Geometry& g = p.g;
  const Grads grads = allocate_grads(b);
  KZ_DISPATCH_FLOATING_TYPES(p.input.scalar_type(), "_deform_conv2d_backward", [&] {
    using acc_t = acc_type_t<scalar_t>;
    const auto acc = c10::CppTypeToScalarType<acc_t>::value;
    const int64_t P = g.positions(), K = g.taps(), cin_g = g.C / g.groups * K;
    const int64_t cout_g = g.C_out / g.groups;
    const at::Tensor w = p.weight.to(acc).reshape({g.C_out, cin_g});
    at::Tensor gw = at::zeros({g.C_out, cin_g}, p.input.options().dtype(acc));
    const AtomicAccumulator<scalar_t> gin(grads.input);  // zeroed; float32 for 16-bit inputs
    const int64_t chunk = images_per_chunk<acc_t>(g);
    for (int64_t n0 = 0; n0 < g.N; n0 += chunk) {
      const Chunk ch{n0, std::min(chunk, g.N - n0)};
      const int64_t width = ch.nb * P;
      const at::Tensor table = launch_table<scalar_t, acc_t>(p, ch, launch);
      const at::Tensor cols = launch_im2col<scalar_t, acc_t>(p, ch, table, launch);
      const at::Tensor gout = b.grad.narrow(0, n0, ch.nb)
                                  .view({ch.nb, g.C_out, P})
                                  .transpose(0, 1)
                                  .to(acc)
                                  .reshape({g.C_out, width});
      std::vector<at::Tensor> parts;
      for (int64_t gr = 0; gr < g.groups; ++gr) {
        const at::Tensor go = gout.narrow(0, gr * cout_g, cout_g);
        gw.narrow(0, gr * cout_g, cout_g).add_(at::mm(go, cols.narrow(0, gr * cin_g, cin_g).t()));
        parts.push_back(at::mm(w.narrow(0, gr * cout_g, cout_g).t(), go));
      }
      const at::Tensor gcols = (g.groups == 1 ? parts[0] : at::cat(parts, 0)).contiguous();
      const int64_t entries = ch.nb * g.offset_groups * K * P;
      launch(deform_offset_grad_kernel<scalar_t, acc_t>, grid_blocks(entries), kBlockThreads, 0, g,
             ch, p.input.const_data_ptr<scalar_t>(), samples<acc_t>(table),
             gcols.const_data_ptr<acc_t>(), grads.offset.mutable_data_ptr<scalar_t>(),
             p.mask.defined() ? grads.mask.mutable_data_ptr<scalar_t>() : nullptr);
      if (path == BackwardPath::Atomic) {
        launch(deform_col2im_atomic_kernel<acc_t>, grid_blocks(g.C * K * width), kBlockThreads, 0,
               g, ch, samples<acc_t>(table), gcols.const_data_ptr<acc_t>(), gin.data());
      } else {
        launch(deform_col2im_plane_kernel<acc_t>, grid_blocks(ch.nb * g.C), kBlockThreads, 0, g, ch,
               samples<acc_t>(table), gcols.const_data_ptr<acc_t>(), gin.data());
      }
    }
    gin.finish();
    grads.weight.copy_(gw.view(p.weight.sizes()));
  });
  return grads.tuple();
}

}  // namespace deform_detail
}  // namespace kernelzoo
