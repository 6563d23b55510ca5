// What the roi_align CUDA launchers launch: element and index types, parameters,
// grids, scratch buffers and the order of the kernels, for a `launch` functor
// called as launch(kernel, grid, block, args...). roi_cuda.cu passes one
// that runs kernel<<<grid, block, 0, stream>>>(args...); the C++ tests pass
// one that runs the CPU execution harness, so that they test exactly the
// launches the launcher makes. Host code: include it after the ATen headers it
// names (in the tests: before cuda_harness.h) and roi_align_host.h.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include "../../common/index_width.h"
#include "roi_align_host.h"
#include "roi_host.h"
#include "roi_align_kernel.cuh"

namespace kernelzoo {
namespace roi_align_detail {

template <typename index_t>
AlignParams<index_t> make_params(int64_t total, const at::Tensor& t4, const at::Tensor& rois,
                                 int64_t batch_size, int64_t channels, int64_t height,
                                 int64_t width, const Args& a) {
  AlignParams<index_t> p;
  roi_detail::fill_params(p, total, t4, rois, batch_size, channels, height, width, a.pooled_h,
                          a.pooled_w, a.spatial_scale);
  p.sampling_ratio = static_cast<int>(a.sampling_ratio);
  p.aligned = a.aligned;
  return p;
}

// Fills f.output (no launch when it is empty).
template <typename Launch>
void launch_forward(const Forward& f, const Launch& launch, Index index = Index::Auto) {
  const int64_t total = f.output.numel();
  if (total == 0) return;
  const bool small = use_int32(index, {total, extent(f.input), extent(f.rois)});
  const at::Tensor& in = f.input;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.scalar_type(), "roi_align", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    auto go = [&](auto index_tag) {
      using index_t = decltype(index_tag);
      launch(roi_align_forward_kernel<scalar_t, acc_t, index_t>, grid_blocks(total),
             kBlockThreads, in.const_data_ptr<scalar_t>(),
             f.rois.const_data_ptr<scalar_t>(), f.output.mutable_data_ptr<scalar_t>(),
             make_params<index_t>(total, in, f.rois, in.size(0), in.size(1), in.size(2),
                                  in.size(3), f.args));
    };
    small ? go(int32_t{}) : go(int64_t{});
  });
}

// Atomic backward: fills b.grad_input. float16/bfloat16 gradients are summed
// in a float32 buffer and converted once at the end.
template <typename Launch>
void launch_backward_atomic(const Backward& b, const Launch& launch, Index index = Index::Auto) {
  if (b.grad_input.numel() == 0) return;
  const int64_t total = b.grad.numel();
  const bool small = use_int32(
      index, {total, b.grad_input.numel(), extent(b.grad), extent(b.rois)});
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, b.grad.scalar_type(),
                                  "_roi_align_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const at::Tensor accum = roi_detail::zeroed_accumulator<scalar_t, acc_t>(b.grad_input);
    if (total > 0) {
      auto go = [&](auto index_tag) {
        using index_t = decltype(index_tag);
        launch(roi_align_backward_atomic_kernel<scalar_t, acc_t, index_t>,
               grid_blocks(total), kBlockThreads,
               b.grad.const_data_ptr<scalar_t>(), b.rois.const_data_ptr<scalar_t>(),
               accum.mutable_data_ptr<acc_t>(),
               make_params<index_t>(total, b.grad, b.rois, b.batch_size, b.channels, b.height,
                                    b.width, b.args));
      };
      small ? go(int32_t{}) : go(int64_t{});
    }
    roi_detail::finish_accumulator(b.grad_input, accum);
  });
}

// Deterministic backward (a gather, see roi_align_kernel.cuh): fills b.grad_input.
template <typename Launch>
void launch_backward_deterministic(const Backward& b, const Launch& launch,
                                   Index index = Index::Auto) {
  const int64_t total = b.grad_input.numel();
  if (total == 0) return;
  const int64_t k = b.rois.size(0);
  if (k == 0) {
    b.grad_input.zero_();
    return;
  }
  const auto acc_options = [&](at::ScalarType t) { return b.grad.options().dtype(t); };
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, b.grad.scalar_type(),
                                  "_roi_align_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto acc_type = c10::CppTypeToScalarType<acc_t>::value;
    const at::Tensor wy = at::zeros({k, b.args.pooled_h, b.height}, acc_options(acc_type));
    const at::Tensor wx = at::zeros({k, b.args.pooled_w, b.width}, acc_options(acc_type));
    const at::Tensor count = at::empty({k}, acc_options(acc_type));
    const at::Tensor bounds = at::empty({k, 5}, acc_options(at::kInt));
    static_assert(sizeof(roi_detail::RoiBounds) == 5 * sizeof(int32_t));
    auto* bounds_ptr = reinterpret_cast<roi_detail::RoiBounds*>(bounds.mutable_data_ptr<int32_t>());
    const bool small =
        use_int32(index, {total, wy.numel(), wx.numel(), extent(b.grad), extent(b.rois)});
    auto go = [&](auto index_tag) {
      using index_t = decltype(index_tag);
      launch(roi_align_backward_weights_kernel<scalar_t, acc_t, index_t>,
             grid_blocks(k), kBlockThreads,
             b.rois.const_data_ptr<scalar_t>(), wy.mutable_data_ptr<acc_t>(),
             wx.mutable_data_ptr<acc_t>(), count.mutable_data_ptr<acc_t>(), bounds_ptr,
             make_params<index_t>(k, b.grad, b.rois, b.batch_size, b.channels, b.height, b.width,
                                  b.args));
      launch(roi_align_backward_gather_kernel<scalar_t, acc_t, index_t>,
             grid_blocks(total), kBlockThreads,
             b.grad.const_data_ptr<scalar_t>(), wy.const_data_ptr<acc_t>(),
             wx.const_data_ptr<acc_t>(), count.const_data_ptr<acc_t>(),
             static_cast<const roi_detail::RoiBounds*>(bounds_ptr),
             b.grad_input.mutable_data_ptr<scalar_t>(),
             make_params<index_t>(total, b.grad, b.rois, b.batch_size, b.channels, b.height,
                                  b.width, b.args));
    };
    small ? go(int32_t{}) : go(int64_t{});
  });
}

}  // namespace roi_align_detail
}  // namespace kernelzoo
