// Launch plan of the pixel_shuffle / pixel_unshuffle CUDA kernel: element and
// index types, parameters and grid, for a launch functor called as
// launch(kernel, grid, block, shared_bytes, args...) (common/cuda_launch.h).
// pixel_shuffle_cuda.cu passes CudaLaunch; the CPU-harness tests pass
// HarnessLaunch (tests/cpp/harness/harness_launch.h), so that they run exactly
// the launch the launcher makes. Host code.
#pragma once

#include <ATen/core/Tensor.h>

#include "../../common/dispatch.h"
#include "../../common/index_width.h"
#include "../../common/launch.h"
#include "pixel_shuffle_args.h"
#include "pixel_shuffle_kernel.cuh"

namespace kernelzoo {
namespace pixel_shuffle_detail {

template <typename index_t>
KernelParams<index_t> kernel_params(const Problem& p) {
  KernelParams<index_t> k;
  const Shape& s = p.shape;
  k.shape = {static_cast<index_t>(s.n), static_cast<index_t>(s.c), static_cast<index_t>(s.h),
             static_cast<index_t>(s.w), static_cast<index_t>(s.r)};
  k.lo = {static_cast<index_t>(p.lo.n), static_cast<index_t>(p.lo.c),
          static_cast<index_t>(p.lo.h), static_cast<index_t>(p.lo.w)};
  k.hi = {static_cast<index_t>(p.hi.n), static_cast<index_t>(p.hi.c),
          static_cast<index_t>(p.hi.h), static_cast<index_t>(p.hi.w)};
  k.dst_c = static_cast<index_t>(p.dst.size(1));
  k.dst_h = static_cast<index_t>(p.dst.size(2));
  k.dst_w = static_cast<index_t>(p.dst.size(3));
  k.total = static_cast<index_t>(p.dst.numel());
  k.shuffle = p.direction == Direction::Shuffle;
  k.channels_last = p.channels_last;
  return k;
}

// For a prepared problem: one launch of pixel_shuffle_kernel<elem_t, index_t>
// (elem_t by element size; index_t int32 when every offset fits), one thread
// per destination element; nothing for an empty output.
template <typename Launch>
void launch_forward(const Problem& p, const Launch& launch) {
  if (p.output.numel() == 0) return;
  // Offsets are formed into the dense destination and the strided source.
  dispatch_index_width(launch.index, {p.dst.numel(), extent(p.src)}, [&](auto index_tag) {
    using index_t = decltype(index_tag);
    KZ_DISPATCH_BY_ELEMENT_SIZE(p.elem_size, "pixel_shuffle", [&] {
      launch(pixel_shuffle_kernel<elem_t, index_t>, grid_blocks(p.dst.numel()), kBlockThreads, 0,
             static_cast<elem_t*>(p.dst.mutable_data_ptr()),
             static_cast<const elem_t*>(p.src.const_data_ptr()), kernel_params<index_t>(p));
    });
  });
}

}  // namespace pixel_shuffle_detail
}  // namespace kernelzoo
