// CUDA kernel bodies of roi_pool. Kernel-safe: no tensor or runtime host
// headers, so the C++ tests run them through the CPU harness.
//
// Geometry (rounded roi corners, bin edges) is roi_common.h's, shared with the
// CPU kernels. The input and grad are read through their strides; outputs,
// argmax and grad_input are contiguous. index_t is int32 when every offset
// fits, int64 otherwise; launches are in roi_pool_launch.cuh.
//
// Backward, two ways:
//  - atomic: one thread per grad element adds it at its argmax in an
//    accumulation-type (float32 for float16/bfloat16) copy of grad_input;
//  - deterministic (torch.are_deterministic_algorithms_enabled()): one thread
//    per roi first writes the roi's batch index and the pixel bounds of its
//    bins; then one thread per grad_input element walks the rois in order and,
//    for each roi whose bounds hold its pixel, adds grad of the bins whose
//    window holds the pixel and whose argmax is the pixel: a fixed-order sum
//    per element.
// An argmax outside [0, H*W) (not one roi_pool returned) is skipped; the CPU
// kernel raises an error for it.
#pragma once

#include <cstdint>

#include "../../common/macros.h"
#include "roi_pool_common.h"

namespace kernelzoo {
namespace roi_pool_detail {

using roi_detail::PoolRoi;
using roi_detail::RoiBounds;

template <typename scalar_t, typename acc_t, typename index_t>
KZ_DEVICE KZ_INLINE PoolRoi<acc_t> roi_geometry(const scalar_t* rois, index_t k,
                                                const PoolParams<index_t>& p, int64_t& batch) {
  const scalar_t* r = rois + k * p.roi_row;
  batch = roi_detail::batch_index(static_cast<acc_t>(r[0]), p.batch_size);
  return roi_detail::pool_roi(static_cast<acc_t>(r[p.roi_col]), static_cast<acc_t>(r[2 * p.roi_col]),
                              static_cast<acc_t>(r[3 * p.roi_col]), static_cast<acc_t>(r[4 * p.roi_col]),
                              static_cast<acc_t>(p.spatial_scale), p.pooled_h, p.pooled_w);
}

// output[k, c, ph, pw] = max of input[b, c] (strides s0..s3) over the bin,
// argmax its plane index (y * W + x), -1 when none; 0 / -1 for an empty bin
// or an invalid batch index.
template <typename scalar_t, typename acc_t, typename index_t>
__global__ void __launch_bounds__(kBlockThreads)
    roi_pool_forward_kernel(const scalar_t* KZ_RESTRICT input, const scalar_t* KZ_RESTRICT rois,
                            scalar_t* KZ_RESTRICT output, int32_t* KZ_RESTRICT argmax,
                            PoolParams<index_t> p) {
  const index_t step = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t e = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < p.total;
       e += step) {
    const auto [k, c, ph, pw] = roi_detail::unravel_nchw(e, p.channels, p.pooled_h, p.pooled_w);
    int64_t batch;
    const PoolRoi<acc_t> g = roi_geometry<scalar_t, acc_t>(rois, k, p, batch);
    int h0, h1, w0, w1;
    roi_detail::pool_bin(g.start_h, g.bin_h, ph, p.height, h0, h1);
    roi_detail::pool_bin(g.start_w, g.bin_w, pw, p.width, w0, w1);
    acc_t best = acc_t(0);
    int32_t best_idx = -1;
    if (batch >= 0 && h1 > h0 && w1 > w0) {
      best = acc_t(roi_detail::kPoolLowest);
      const scalar_t* plane = input + static_cast<index_t>(batch) * p.s0 + c * p.s1;
      for (int y = h0; y < h1; ++y) {
        for (int x = w0; x < w1; ++x) {
          const acc_t v = static_cast<acc_t>(plane[static_cast<index_t>(y) * p.s2 + static_cast<index_t>(x) * p.s3]);
          if (v > best) {
            best = v;
            best_idx = y * p.width + x;
          }
        }
      }
    }
    output[e] = static_cast<scalar_t>(best);
    argmax[e] = best_idx;
  }
}

// Atomic backward: grad (strides s0..s3) added at argmax into grad_input
// (contiguous N, C, H, W, accumulation type).
template <typename scalar_t, typename acc_t, typename index_t>
__global__ void __launch_bounds__(kBlockThreads)
    roi_pool_backward_atomic_kernel(const scalar_t* KZ_RESTRICT grad,
                                    const scalar_t* KZ_RESTRICT rois,
                                    const int32_t* KZ_RESTRICT argmax, acc_t* grad_input,
                                    PoolParams<index_t> p) {
  const index_t step = static_cast<index_t>(gridDim.x) * blockDim.x;
  const index_t plane_size = static_cast<index_t>(p.height) * p.width;
  for (index_t e = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < p.total;
       e += step) {
    const int32_t a = argmax[e];
    if (a < 0 || a >= plane_size) continue;
    const auto [k, c, ph, pw] = roi_detail::unravel_nchw(e, p.channels, p.pooled_h, p.pooled_w);
    const int64_t batch =
        roi_detail::batch_index(static_cast<acc_t>(rois[k * p.roi_row]), p.batch_size);
    if (batch < 0) continue;
    const acc_t g = static_cast<acc_t>(grad[k * p.s0 + c * p.s1 + ph * p.s2 + pw * p.s3]);
    atomicAdd(grad_input + (static_cast<index_t>(batch) * p.channels + c) * plane_size + a, g);
  }
}

// Deterministic backward, step 1: one thread per roi writes its batch index
// and the inclusive bounds of the union of its non-empty bins.
template <typename scalar_t, typename acc_t, typename index_t>
__global__ void __launch_bounds__(kBlockThreads)
    roi_pool_backward_bounds_kernel(const scalar_t* KZ_RESTRICT rois,
                                    RoiBounds* KZ_RESTRICT bounds, PoolParams<index_t> p) {
  const index_t step = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t k = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < p.num_rois;
       k += step) {
    int64_t batch;
    const PoolRoi<acc_t> g = roi_geometry<scalar_t, acc_t>(rois, k, p, batch);
    RoiBounds b{batch >= 0 ? static_cast<int>(batch) : -1, p.height, -1, p.width, -1};
    for (int ph = 0; ph < p.pooled_h; ++ph) {
      int lo, hi;
      roi_detail::pool_bin(g.start_h, g.bin_h, ph, p.height, lo, hi);
      if (hi <= lo) continue;
      b.row_lo = lo < b.row_lo ? lo : b.row_lo;
      b.row_hi = hi - 1 > b.row_hi ? hi - 1 : b.row_hi;
    }
    for (int pw = 0; pw < p.pooled_w; ++pw) {
      int lo, hi;
      roi_detail::pool_bin(g.start_w, g.bin_w, pw, p.width, lo, hi);
      if (hi <= lo) continue;
      b.col_lo = lo < b.col_lo ? lo : b.col_lo;
      b.col_hi = hi - 1 > b.col_hi ? hi - 1 : b.col_hi;
    }
    bounds[k] = b;
  }
}

// Deterministic backward, step 2: one thread per grad_input element
// (contiguous N, C, H, W); grad has strides s0..s3, argmax is contiguous.
template <typename scalar_t, typename acc_t, typename index_t>
__global__ void __launch_bounds__(kBlockThreads)
    roi_pool_backward_gather_kernel(const scalar_t* KZ_RESTRICT grad,
                                    const scalar_t* KZ_RESTRICT rois,
                                    const int32_t* KZ_RESTRICT argmax,
                                    const RoiBounds* KZ_RESTRICT bounds,
                                    scalar_t* KZ_RESTRICT grad_input, PoolParams<index_t> p) {
  const index_t step = static_cast<index_t>(gridDim.x) * blockDim.x;
  const index_t bins = static_cast<index_t>(p.pooled_h) * p.pooled_w;
  for (index_t e = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < p.total;
       e += step) {
    const auto [n, c, y, x] = roi_detail::unravel_nchw(e, p.channels, p.height, p.width);
    const int32_t pixel = y * p.width + x;
    acc_t sum = acc_t(0);
    for (index_t k = 0; k < p.num_rois; ++k) {
      const RoiBounds b = bounds[k];
      if (b.batch != n || y < b.row_lo || y > b.row_hi || x < b.col_lo || x > b.col_hi) continue;
      int64_t batch;
      const PoolRoi<acc_t> g = roi_geometry<scalar_t, acc_t>(rois, k, p, batch);
      const int32_t* a = argmax + (k * p.channels + c) * bins;
      for (int ph = 0; ph < p.pooled_h; ++ph) {
        int h0, h1;
        roi_detail::pool_bin(g.start_h, g.bin_h, ph, p.height, h0, h1);
        if (y < h0 || y >= h1) continue;
        for (int pw = 0; pw < p.pooled_w; ++pw) {
          int w0, w1;
          roi_detail::pool_bin(g.start_w, g.bin_w, pw, p.width, w0, w1);
          if (x < w0 || x >= w1 || a[ph * p.pooled_w + pw] != pixel) continue;
          sum += static_cast<acc_t>(grad[k * p.s0 + c * p.s1 + ph * p.s2 + pw * p.s3]);
        }
      }
    }
    grad_input[e] = static_cast<scalar_t>(sum);
  }
}

}  // namespace roi_pool_detail
}  // namespace kernelzoo
