// Launch plan of the roi_align / roi_pool CUDA kernels (roi_kernel.cuh): element
// and index types, parameters, grids, scratch buffers and the order of the
// kernels, for a launch functor called as launch(kernel, grid, block,
// shared_bytes, args...) (common/cuda_launch.h). roi_cuda.cu passes CudaLaunch;
// the CPU-harness tests pass HarnessLaunch (tests/cpp/harness/harness_launch.h),
// so that they run exactly the launches the launcher makes. Host code.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include "../../common/acc_type.h"
#include "../../common/backward.h"
#include "../../common/dispatch.h"
#include "../../common/index_width.h"
#include "../../common/launch.h"
#include "roi_args.h"
#include "roi_kernel.cuh"

namespace kernelzoo {
namespace roi_detail {

// Parameters for `total` threads' elements; t4 is the 4-d tensor read through
// its strides (input or grad) and (n, c, h, w) the feature maps' sizes.
template <typename index_t>
RoiParams<index_t> make_params(int64_t total, const at::Tensor& t4, const at::Tensor& rois,
                               int64_t batch_size, int64_t channels, int64_t height,
                               int64_t width, const Args& a) {
  RoiParams<index_t> p;
  p.total = static_cast<index_t>(total);
  p.num_rois = static_cast<index_t>(rois.size(0));
  p.channels = static_cast<index_t>(channels);
  p.height = static_cast<int>(height);
  p.width = static_cast<int>(width);
  p.pooled_h = static_cast<int>(a.pooled_h);
  p.pooled_w = static_cast<int>(a.pooled_w);
  p.batch_size = batch_size;
  p.s0 = static_cast<index_t>(t4.stride(0));
  p.s1 = static_cast<index_t>(t4.stride(1));
  p.s2 = static_cast<index_t>(t4.stride(2));
  p.s3 = static_cast<index_t>(t4.stride(3));
  p.roi_row = static_cast<index_t>(rois.stride(0));
  p.roi_col = static_cast<index_t>(rois.stride(1));
  p.spatial_scale = a.spatial_scale;
  p.sampling_ratio = static_cast<int>(a.sampling_ratio);
  p.aligned = a.aligned;
  return p;
}

// Runs f(type_tag<scalar_t>{}, index_t{}) for the input's (or grad's) dtype,
// already checked by prepare_*, and the index width that covers `extents`.
template <typename Launch, typename F>
void dispatch_types(at::ScalarType dtype, const Launch& launch,
                    std::initializer_list<int64_t> extents, F&& f) {
  KZ_DISPATCH_FLOATING_TYPES(dtype, "roi_plan", [&] {
    dispatch_index_width(launch.index, extents,
                         [&](auto index_tag) { f(type_tag<scalar_t>{}, index_tag); });
  });
}

// Fills f.output (and roi_pool's f.argmax): one thread per output element.
template <typename Launch>
void launch_forward(const Forward& f, const Launch& launch) {
  const int64_t total = f.output.numel();
  if (total == 0) return;
  const at::Tensor& in = f.input;
  dispatch_types(in.scalar_type(), launch, {total, extent(in), extent(f.rois)},
                 [&](auto type, auto index_tag) {
    using scalar_t = typename decltype(type)::type;
    using index_t = decltype(index_tag);
    const auto p = make_params<index_t>(total, in, f.rois, in.size(0), in.size(1), in.size(2),
                                        in.size(3), f.args);
    const scalar_t* input = in.const_data_ptr<scalar_t>();
    const scalar_t* rois = f.rois.const_data_ptr<scalar_t>();
    scalar_t* output = f.output.mutable_data_ptr<scalar_t>();
    if (f.op == RoiOp::Align) {
      launch(roi_align_forward_kernel<scalar_t, index_t>, grid_blocks(total), kBlockThreads, 0,
             input, rois, output, p);
    } else {
      launch(roi_pool_forward_kernel<scalar_t, index_t>, grid_blocks(total), kBlockThreads, 0,
             input, rois, output, f.argmax.mutable_data_ptr<int32_t>(), p);
    }
  });
}

// Atomic backward: one thread per grad element adds into a zeroed accumulator
// (float32 for float16/bfloat16 gradients, converted once at the end).
template <typename Launch>
void launch_backward_atomic(const Backward& b, const Launch& launch) {
  const int64_t total = b.grad.numel();
  dispatch_types(b.grad.scalar_type(), launch,
                 {total, b.grad_input.numel(), extent(b.grad), extent(b.rois)},
                 [&](auto type, auto index_tag) {
    using scalar_t = typename decltype(type)::type;
    using index_t = decltype(index_tag);
    const AtomicAccumulator<scalar_t> accum(b.grad_input);
    if (total > 0) {
      const auto p = make_params<index_t>(total, b.grad, b.rois, b.batch_size, b.channels,
                                          b.height, b.width, b.args);
      const scalar_t* grad = b.grad.const_data_ptr<scalar_t>();
      const scalar_t* rois = b.rois.const_data_ptr<scalar_t>();
      if (b.op == RoiOp::Align) {
        launch(roi_align_backward_atomic_kernel<scalar_t, index_t>, grid_blocks(total),
               kBlockThreads, 0, grad, rois, accum.data(), p);
      } else {
        launch(roi_pool_backward_atomic_kernel<scalar_t, index_t>, grid_blocks(total),
               kBlockThreads, 0, grad, rois, b.argmax.const_data_ptr<int32_t>(), accum.data(), p);
      }
    }
    accum.finish();
  });
}

// Deterministic backward (a gather, see roi_kernel.cuh): a per-roi kernel for
// the bounds (and roi_align's weights), then one thread per grad_input element.
template <typename Launch>
void launch_backward_deterministic(const Backward& b, const Launch& launch) {
  const int64_t total = b.grad_input.numel();
  const int64_t k = b.rois.size(0);
  if (k == 0) {
    b.grad_input.zero_();
    return;
  }
  const at::Tensor bounds = at::empty({k, 5}, b.grad.options().dtype(at::kInt));
  static_assert(sizeof(RoiBounds) == 5 * sizeof(int32_t));
  auto* bounds_ptr = reinterpret_cast<RoiBounds*>(bounds.mutable_data_ptr<int32_t>());
  const bool align = b.op == RoiOp::Align;
  // roi_align's separable weights per roi: wy (K, PH, H), wx (K, PW, W), zeroed.
  const int64_t wy_size = align ? k * b.args.pooled_h * b.height : 0;
  const int64_t wx_size = align ? k * b.args.pooled_w * b.width : 0;
  dispatch_types(b.grad.scalar_type(), launch,
                 {total, wy_size, wx_size, b.argmax.defined() ? b.argmax.numel() : 0,
                  extent(b.grad), extent(b.rois)},
                 [&](auto type, auto index_tag) {
    using scalar_t = typename decltype(type)::type;
    using acc_t = acc_type_t<scalar_t>;
    using index_t = decltype(index_tag);
    const auto per_roi = make_params<index_t>(k, b.grad, b.rois, b.batch_size, b.channels,
                                              b.height, b.width, b.args);
    const auto per_pixel = make_params<index_t>(total, b.grad, b.rois, b.batch_size, b.channels,
                                                b.height, b.width, b.args);
    const scalar_t* grad = b.grad.const_data_ptr<scalar_t>();
    const scalar_t* rois = b.rois.const_data_ptr<scalar_t>();
    scalar_t* grad_input = b.grad_input.mutable_data_ptr<scalar_t>();
    if (align) {
      const auto acc_options = b.grad.options().dtype(c10::CppTypeToScalarType<acc_t>::value);
      const at::Tensor wy = at::zeros({k, b.args.pooled_h, b.height}, acc_options);
      const at::Tensor wx = at::zeros({k, b.args.pooled_w, b.width}, acc_options);
      const at::Tensor count = at::empty({k}, acc_options);
      launch(roi_align_backward_weights_kernel<scalar_t, index_t>, grid_blocks(k), kBlockThreads,
             0, rois, wy.mutable_data_ptr<acc_t>(), wx.mutable_data_ptr<acc_t>(),
             count.mutable_data_ptr<acc_t>(), bounds_ptr, per_roi);
      launch(roi_align_backward_gather_kernel<scalar_t, index_t>, grid_blocks(total),
             kBlockThreads, 0, grad, wy.const_data_ptr<acc_t>(), wx.const_data_ptr<acc_t>(),
             count.const_data_ptr<acc_t>(), static_cast<const RoiBounds*>(bounds_ptr),
             grad_input, per_pixel);
    } else {
      launch(roi_pool_backward_bounds_kernel<scalar_t, index_t>, grid_blocks(k), kBlockThreads, 0,
             rois, bounds_ptr, per_roi);
      launch(roi_pool_backward_gather_kernel<scalar_t, index_t>, grid_blocks(total),
             kBlockThreads, 0, grad, rois, b.argmax.const_data_ptr<int32_t>(),
             static_cast<const RoiBounds*>(bounds_ptr), grad_input, per_pixel);
    }
  });
}

// Fills b.grad_input, the way `path` says (common/backward.h: the CUDA launcher
// passes backward_path(); the tests run both).
template <typename Launch>
void launch_backward(const Backward& b, const Launch& launch, BackwardPath path) {
  if (b.grad_input.numel() == 0) return;
  if (path == BackwardPath::Atomic) {
    launch_backward_atomic(b, launch);
  } else {
    launch_backward_deterministic(b, launch);
  }
}

}  // namespace roi_detail
}  // namespace kernelzoo
