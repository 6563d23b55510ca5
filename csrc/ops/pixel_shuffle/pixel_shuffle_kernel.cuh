// CUDA kernel body of pixel_shuffle / pixel_unshuffle. Kernel-safe: no tensor or
// runtime host headers, so the C++ tests run it through the CPU harness.
//
// One thread per destination element, walking the destination in memory order
// (W fastest for a contiguous output, C fastest for channels_last), so stores
// are coalesced; each thread gathers its source element through the shared
// index map (pixel_shuffle_math.h). index_t is int32 when every offset fits,
// int64 otherwise; the launch is planned in pixel_shuffle_plan.h.
#pragma once

#include "../../common/grid_stride.cuh"
#include "../../common/launch.h"
#include "../../common/macros.h"
#include "pixel_shuffle_math.h"

namespace kernelzoo {
namespace pixel_shuffle_detail {

template <typename T, typename index_t>
__global__ void __launch_bounds__(kBlockThreads)
    pixel_shuffle_kernel(T* KZ_RESTRICT dst, const T* KZ_RESTRICT src, KernelParams<index_t> p) {
  for (const index_t e : grid_stride(p.total)) {
    // Unravel e over the destination's dims in memory order, innermost first:
    // (x, y, c) for NCHW, (c, x, y) for channels_last.
    const bool cl = p.channels_last;
    const index_t d0 = cl ? p.dst_c : p.dst_w, d1 = cl ? p.dst_w : p.dst_h,
                  d2 = cl ? p.dst_h : p.dst_c;
    const index_t i0 = e % d0, i1 = (e / d0) % d1, i2 = (e / d0 / d1) % d2;
    const index_t n = e / d0 / d1 / d2;
    const index_t c = cl ? i0 : i2, y = cl ? i2 : i1, x = cl ? i1 : i0;
    const index_t off = p.shuffle ? lo_offset_of_hi(p.shape, p.lo, n, c, y, x)
                                  : hi_offset_of_lo(p.shape, p.hi, n, c, y, x);
    dst[e] = src[off];
  }
}

}  // namespace pixel_shuffle_detail
}  // namespace kernelzoo
