// What the roi_pool CUDA launchers launch, for a `launch` functor called as
// launch(kernel, grid, block, args...): see roi_align_launch.cuh.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>

#include "../../common/index_width.h"
#include "roi_host.h"
#include "roi_pool_host.h"
#include "roi_pool_kernel.cuh"

namespace kernelzoo {
namespace roi_pool_detail {

template <typename index_t>
PoolParams<index_t> make_params(int64_t total, const at::Tensor& t4, const at::Tensor& rois,
                                int64_t batch_size, int64_t channels, int64_t height,
                                int64_t width, const Args& a) {
  PoolParams<index_t> p;
  roi_detail::fill_params(p, total, t4, rois, batch_size, channels, height, width, a.pooled_h,
                          a.pooled_w, a.spatial_scale);
  return p;
}

// Fills f.output and f.argmax (no launch when they are empty).
template <typename Launch>
void launch_forward(const Forward& f, const Launch& launch, Index index = Index::Auto) {
  const int64_t total = f.output.numel();
  if (total == 0) return;
  const bool small = use_int32(index, {total, extent(f.input), extent(f.rois)});
  const at::Tensor& in = f.input;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.scalar_type(), "roi_pool", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    auto go = [&](auto index_tag) {
      using index_t = decltype(index_tag);
      launch(roi_pool_forward_kernel<scalar_t, acc_t, index_t>, grid_blocks(total),
             kBlockThreads, in.const_data_ptr<scalar_t>(),
             f.rois.const_data_ptr<scalar_t>(), f.output.mutable_data_ptr<scalar_t>(),
             f.argmax.mutable_data_ptr<int32_t>(),
             make_params<index_t>(total, in, f.rois, in.size(0), in.size(1), in.size(2),
                                  in.size(3), f.args));
    };
    small ? go(int32_t{}) : go(int64_t{});
  });
}

// Atomic backward: fills b.grad_input (float16/bfloat16 summed in float32).
template <typename Launch>
void launch_backward_atomic(const Backward& b, const Launch& launch, Index index = Index::Auto) {
  if (b.grad_input.numel() == 0) return;
  const int64_t total = b.grad.numel();
  const bool small = use_int32(
      index, {total, b.grad_input.numel(), extent(b.grad), extent(b.rois)});
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, b.grad.scalar_type(),
                                  "_roi_pool_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const at::Tensor accum = roi_detail::zeroed_accumulator<scalar_t, acc_t>(b.grad_input);
    if (total > 0) {
      auto go = [&](auto index_tag) {
        using index_t = decltype(index_tag);
        launch(roi_pool_backward_atomic_kernel<scalar_t, acc_t, index_t>,
               grid_blocks(total), kBlockThreads,
               b.grad.const_data_ptr<scalar_t>(), b.rois.const_data_ptr<scalar_t>(),
               b.argmax.const_data_ptr<int32_t>(), accum.mutable_data_ptr<acc_t>(),
               make_params<index_t>(total, b.grad, b.rois, b.batch_size, b.channels, b.height,
                                    b.width, b.args));
      };
      small ? go(int32_t{}) : go(int64_t{});
    }
    roi_detail::finish_accumulator(b.grad_input, accum);
  });
}

// Deterministic backward (a gather, see roi_pool_kernel.cuh): fills b.grad_input.
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
  const at::Tensor bounds = at::empty({k, 5}, b.grad.options().dtype(at::kInt));
  static_assert(sizeof(roi_detail::RoiBounds) == 5 * sizeof(int32_t));
  auto* bounds_ptr = reinterpret_cast<roi_detail::RoiBounds*>(bounds.mutable_data_ptr<int32_t>());
  const bool small = use_int32(
      index, {total, b.argmax.numel(), extent(b.grad), extent(b.rois)});
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, b.grad.scalar_type(),
                                  "_roi_pool_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    auto go = [&](auto index_tag) {
      using index_t = decltype(index_tag);
      launch(roi_pool_backward_bounds_kernel<scalar_t, acc_t, index_t>,
             grid_blocks(k), kBlockThreads,
             b.rois.const_data_ptr<scalar_t>(), bounds_ptr,
             make_params<index_t>(k, b.grad, b.rois, b.batch_size, b.channels, b.height, b.width,
                                  b.args));
      launch(roi_pool_backward_gather_kernel<scalar_t, acc_t, index_t>,
             grid_blocks(total), kBlockThreads,
             b.grad.const_data_ptr<scalar_t>(), b.rois.const_data_ptr<scalar_t>(),
             b.argmax.const_data_ptr<int32_t>(),
             static_cast<const roi_detail::RoiBounds*>(bounds_ptr),
             b.grad_input.mutable_data_ptr<scalar_t>(),
             make_params<index_t>(total, b.grad, b.rois, b.batch_size, b.channels, b.height,
                                  b.width, b.args));
    };
    small ? go(int32_t{}) : go(int64_t{});
  });
}

}  // namespace roi_pool_detail
}  // namespace kernelzoo
