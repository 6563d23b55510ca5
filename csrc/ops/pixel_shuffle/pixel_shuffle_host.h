// Host-side pieces shared by the CPU and CUDA implementations: argument checks,
// output allocation, and the flattened 4-d views the kernels work on.
#pragma once

#include <ATen/core/Tensor.h>

#include "../../common/dispatch.h"
#include "../../common/index_width.h"
#include "pixel_shuffle_common.h"

namespace kernelzoo {
namespace pixel_shuffle_detail {

enum class Direction { Shuffle, Unshuffle };

struct Problem {
  at::Tensor output;      // what the op returns, shaped like the peer's output
  at::Tensor src, dst;    // 4-d (N, C, H, W) views of input and output
  Shape shape;            // in terms of hi; see pixel_shuffle_common.h
  Strides4 lo, hi;        // element strides of the lo and hi 4-d views
  bool channels_last;     // the output (destination) is channels_last
  Direction direction;
  int64_t elem_size;
};

// Validates the arguments (raising the documented errors), allocates the output
// in the input's memory format and describes the copy. When the output is
// empty, `src`/`dst` are undefined and the caller returns `output` as it is.
Problem prepare(const at::Tensor& input, int64_t factor, Direction direction);

// --- what the CUDA launcher launches ------------------------------------------
// Shared by pixel_shuffle_cuda.cu and the CPU-harness tests
// (tests/cpp/test_pixel_shuffle_emulation.cpp), so that the tests run exactly the
// launch the launcher makes.

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

// For a non-empty problem: picks the element type (by size) and the index type
// (int32 when every offset fits, unless `index` forces int64), builds the
// parameters and the grid, and calls
//   launcher.template launch<T, index_t>(params, grid_blocks, kBlockThreads)
// once. The launcher runs pixel_shuffle_kernel<T, index_t> with them on
// (T*)p.dst / (const T*)p.src.
template <typename Launcher>
void dispatch_kernel(const Problem& p, const Launcher& launcher, Index index = Index::Auto) {
  // Offsets are formed into the dense destination and the strided source.
  const bool small = use_int32(index, {p.dst.numel(), extent(p.src)});
  const unsigned grid = grid_blocks(p.dst.numel());
  KERNELZOO_DISPATCH_BY_ELEMENT_SIZE(p.elem_size, "pixel_shuffle", [&] {
    if (small) {
      launcher.template launch<elem_t, int32_t>(kernel_params<int32_t>(p), grid, kBlockThreads);
    } else {
      launcher.template launch<elem_t, int64_t>(kernel_params<int64_t>(p), grid, kBlockThreads);
    }
  });
}

}  // namespace pixel_shuffle_detail
}  // namespace kernelzoo
