// CUDA kernel body of pixel_shuffle / pixel_unshuffle. Kernel-safe: no tensor or
// runtime host headers, so the C++ tests can run it through the CPU harness.
//
// One thread per destination element, walking the destination in memory order
// (W fastest for a contiguous output, C fastest for channels_last), so stores
// are coalesced; each thread gathers its source element through the shared
// index map. index_t is int32 when every offset fits, int64 otherwise. The
// parameters are in pixel_shuffle_common.h, block size and grid in
// common/launch.h; the launcher (pixel_shuffle_cuda.cu) and the CPU-harness
// tests pick them through dispatch_kernel() in pixel_shuffle_host.h.
#pragma once

#include <cstdint>

#include "../../common/macros.h"
#include "pixel_shuffle_common.h"

namespace kernelzoo {
namespace pixel_shuffle_detail {

template <typename T, typename index_t>
__global__ void __launch_bounds__(kBlockThreads)
    pixel_shuffle_kernel(T* KZ_RESTRICT dst, const T* KZ_RESTRICT src, KernelParams<index_t> p) {
  const index_t step = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t e = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < p.total;
       e += step) {
    index_t n, c, y, x, t;
    if (p.channels_last) {
      c = e % p.dst_c;
      t = e / p.dst_c;
      x = t % p.dst_w;
      t = t / p.dst_w;
      y = t % p.dst_h;
      n = t / p.dst_h;
    } else {
      x = e % p.dst_w;
      t = e / p.dst_w;
      y = t % p.dst_h;
      t = t / p.dst_h;
      c = t % p.dst_c;
      n = t / p.dst_c;
    }
    const index_t off = p.shuffle ? lo_offset_of_hi(p.shape, p.lo, n, c, y, x)
                                  : hi_offset_of_lo(p.shape, p.hi, n, c, y, x);
    dst[e] = src[off];
  }
}

}  // namespace pixel_shuffle_detail
}  // namespace kernelzoo
