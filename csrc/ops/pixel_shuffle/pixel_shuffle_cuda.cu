// CUDA launchers of pixel_shuffle / pixel_unshuffle: argument handling is shared
// with the CPU path (pixel_shuffle.cpp); this file picks the index width,
// computes the grid and launches the kernel on the current stream.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../../common/dispatch.h"
#include "pixel_shuffle_host.h"
#include "pixel_shuffle_kernel.cuh"

namespace kernelzoo {
namespace pixel_shuffle_detail {
namespace {

// Largest element offset reachable in a tensor (non-negative strides).
int64_t max_offset(const at::Tensor& t) {
  int64_t off = 0;
  for (int64_t d = 0; d < t.dim(); ++d) off += (t.size(d) - 1) * t.stride(d);
  return off;
}

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

template <typename T, typename index_t>
void launch(const Problem& p) {
  const auto params = kernel_params<index_t>(p);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  pixel_shuffle_kernel<T, index_t><<<grid_blocks(p.dst.numel()), kBlockThreads, 0, stream>>>(
      static_cast<T*>(p.dst.mutable_data_ptr()), static_cast<const T*>(p.src.const_data_ptr()),
      params);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor forward(const at::Tensor& input, int64_t factor, Direction direction) {
  c10::cuda::CUDAGuard guard(input.device());
  Problem p = prepare(input, factor, direction);
  if (p.output.numel() == 0) return p.output;
  // The 32-bit path also needs the grid-stride increment to stay in range.
  const int64_t limit = std::numeric_limits<int32_t>::max() / 2;
  const bool small = p.dst.numel() < limit && max_offset(p.src) < limit;
  KERNELZOO_DISPATCH_BY_ELEMENT_SIZE(p.elem_size, "pixel_shuffle", [&] {
    if (small) {
      launch<elem_t, int32_t>(p);
    } else {
      launch<elem_t, int64_t>(p);
    }
  });
  return p.output;
}

at::Tensor pixel_shuffle_cuda(const at::Tensor& input, int64_t upscale_factor) {
  return forward(input, upscale_factor, Direction::Shuffle);
}

at::Tensor pixel_unshuffle_cuda(const at::Tensor& input, int64_t downscale_factor) {
  return forward(input, downscale_factor, Direction::Unshuffle);
}

}  // namespace
}  // namespace pixel_shuffle_detail
}  // namespace kernelzoo

TORCH_LIBRARY_IMPL(kernelzoo, CUDA, m) {
  m.impl("pixel_shuffle", &kernelzoo::pixel_shuffle_detail::pixel_shuffle_cuda);
  m.impl("pixel_unshuffle", &kernelzoo::pixel_shuffle_detail::pixel_unshuffle_cuda);
}
