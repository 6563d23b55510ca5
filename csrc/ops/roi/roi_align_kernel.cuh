// CUDA kernel bodies of roi_align. Kernel-safe: no tensor or runtime host
// headers, so the C++ tests run them through the CPU harness.
//
// The geometry (roi corners, bin sizes, sampling grid, sample coordinates,
// bilinear weights) is roi_common.h's, shared with the CPU kernels. Inputs and
// gradients are read through their strides (contiguous, channels_last or any
// other layout, without a copy); outputs are contiguous NCHW. index_t is int32
// when every offset fits, int64 otherwise. The launches (grid, block, element
// and index types, scratch buffers) are in roi_align_launch.cuh.
//
// Backward, two ways:
//  - atomic: one thread per grad element scatters its bilinear weights into an
//    accumulation-type (float32 for float16/bfloat16) copy of grad_input with
//    atomicAdd; the summation order varies between runs.
//  - deterministic (torch.are_deterministic_algorithms_enabled()): a gather.
//    First one thread per roi writes the roi's separable weights, per output
//    row ph the summed y weights over the feature map's rows (wy[k][ph][H]) and
//    likewise wx[k][pw][W], and the pixel bounds its samples touch. Then one
//    thread per grad_input element walks the rois in order and, for those
//    whose bounds contain its pixel, adds sum_ph wy * sum_pw wx * grad / count:
//    every element is a fixed-order sum computed by one thread, so the result
//    is the same in every run, and no float32 buffer is needed.
#pragma once

#include <cstdint>

#include "../../common/macros.h"
#include "roi_align_common.h"

namespace kernelzoo {
namespace roi_align_detail {

using roi_detail::AlignRoi;
using roi_detail::Interp;
using roi_detail::RoiBounds;

template <typename scalar_t, typename acc_t, typename index_t>
KZ_DEVICE KZ_INLINE AlignRoi<acc_t> roi_geometry(const scalar_t* rois, index_t k,
                                                 const AlignParams<index_t>& p, int64_t& batch) {
  const scalar_t* r = rois + k * p.roi_row;
  batch = roi_detail::batch_index(static_cast<acc_t>(r[0]), p.batch_size);
  return roi_detail::align_roi(static_cast<acc_t>(r[p.roi_col]), static_cast<acc_t>(r[2 * p.roi_col]),
                               static_cast<acc_t>(r[3 * p.roi_col]), static_cast<acc_t>(r[4 * p.roi_col]),
                               static_cast<acc_t>(p.spatial_scale), p.pooled_h, p.pooled_w,
                               p.sampling_ratio, p.aligned);
}

// output[k, c, ph, pw] (contiguous) = average of the bin's bilinear samples of
// input (strides s0..s3). A roi with an invalid batch index gives zeros.
template <typename scalar_t, typename acc_t, typename index_t>
__global__ void __launch_bounds__(kBlockThreads)
    roi_align_forward_kernel(const scalar_t* KZ_RESTRICT input, const scalar_t* KZ_RESTRICT rois,
                             scalar_t* KZ_RESTRICT output, AlignParams<index_t> p) {
  const index_t step = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t e = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < p.total;
       e += step) {
    const auto [k, c, ph, pw] = roi_detail::unravel_nchw(e, p.channels, p.pooled_h, p.pooled_w);
    int64_t batch;
    const AlignRoi<acc_t> g = roi_geometry<scalar_t, acc_t>(rois, k, p, batch);
    acc_t sum = acc_t(0);
    if (batch >= 0) {
      const scalar_t* plane = input + static_cast<index_t>(batch) * p.s0 + c * p.s1;
      for (int iy = 0; iy < g.grid_h; ++iy) {
        Interp<acc_t> y;
        if (!roi_detail::interp1d(roi_detail::sample_coord(g.start_h, g.bin_h, ph, iy, g.grid_h),
                                  p.height, y))
          continue;
        for (int ix = 0; ix < g.grid_w; ++ix) {
          Interp<acc_t> x;
          if (!roi_detail::interp1d(roi_detail::sample_coord(g.start_w, g.bin_w, pw, ix, g.grid_w),
                                    p.width, x))
            continue;
          sum += roi_detail::bilinear<acc_t>(plane, p.s2, p.s3, y, x);
        }
      }
    }
    output[e] = static_cast<scalar_t>(sum / g.count);
  }
}

// Atomic backward: grad (strides s0..s3, shape K, C, PH, PW) scattered into
// grad_input (contiguous N, C, H, W, accumulation type).
template <typename scalar_t, typename acc_t, typename index_t>
__global__ void __launch_bounds__(kBlockThreads)
    roi_align_backward_atomic_kernel(const scalar_t* KZ_RESTRICT grad,
                                     const scalar_t* KZ_RESTRICT rois, acc_t* grad_input,
                                     AlignParams<index_t> p) {
  const index_t step = static_cast<index_t>(gridDim.x) * blockDim.x;
  const index_t plane_size = static_cast<index_t>(p.height) * p.width;
  for (index_t e = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < p.total;
       e += step) {
    const auto [k, c, ph, pw] = roi_detail::unravel_nchw(e, p.channels, p.pooled_h, p.pooled_w);
    int64_t batch;
    const AlignRoi<acc_t> g = roi_geometry<scalar_t, acc_t>(rois, k, p, batch);
    if (batch < 0) continue;
    const acc_t gv = static_cast<acc_t>(grad[k * p.s0 + c * p.s1 + ph * p.s2 + pw * p.s3]);
    acc_t* plane = grad_input + (static_cast<index_t>(batch) * p.channels + c) * plane_size;
    for (int iy = 0; iy < g.grid_h; ++iy) {
      Interp<acc_t> y;
      if (!roi_detail::interp1d(roi_detail::sample_coord(g.start_h, g.bin_h, ph, iy, g.grid_h),
                                p.height, y))
        continue;
      for (int ix = 0; ix < g.grid_w; ++ix) {
        Interp<acc_t> x;
        if (!roi_detail::interp1d(roi_detail::sample_coord(g.start_w, g.bin_w, pw, ix, g.grid_w),
                                  p.width, x))
          continue;
        // As torchvision: grad * w / count per tap.
        const index_t r0 = static_cast<index_t>(y.lo) * p.width, r1 = static_cast<index_t>(y.hi) * p.width;
        atomicAdd(plane + r0 + x.lo, gv * (y.wlo * x.wlo) / g.count);
        atomicAdd(plane + r0 + x.hi, gv * (y.wlo * x.whi) / g.count);
        atomicAdd(plane + r1 + x.lo, gv * (y.whi * x.wlo) / g.count);
        atomicAdd(plane + r1 + x.hi, gv * (y.whi * x.whi) / g.count);
      }
    }
  }
}

// Deterministic backward, step 1: one thread per roi. wy (K, PH, H) and wx
// (K, PW, W) must be zero on entry; count (K) and bounds (K) are written.
template <typename scalar_t, typename acc_t, typename index_t>
__global__ void __launch_bounds__(kBlockThreads)
    roi_align_backward_weights_kernel(const scalar_t* KZ_RESTRICT rois, acc_t* KZ_RESTRICT wy,
                                      acc_t* KZ_RESTRICT wx, acc_t* KZ_RESTRICT count,
                                      RoiBounds* KZ_RESTRICT bounds, AlignParams<index_t> p) {
  const index_t step = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t k = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < p.num_rois;
       k += step) {
    int64_t batch;
    const AlignRoi<acc_t> g = roi_geometry<scalar_t, acc_t>(rois, k, p, batch);
    RoiBounds b{batch >= 0 ? static_cast<int>(batch) : -1, p.height, -1, p.width, -1};
    count[k] = g.count;
    if (batch >= 0) {
      acc_t* ky = wy + k * p.pooled_h * p.height;
      for (int ph = 0; ph < p.pooled_h; ++ph) {
        for (int iy = 0; iy < g.grid_h; ++iy) {
          Interp<acc_t> y;
          if (!roi_detail::interp1d(roi_detail::sample_coord(g.start_h, g.bin_h, ph, iy, g.grid_h),
                                    p.height, y))
            continue;
          ky[static_cast<index_t>(ph) * p.height + y.lo] += y.wlo;
          ky[static_cast<index_t>(ph) * p.height + y.hi] += y.whi;
          b.row_lo = y.lo < b.row_lo ? y.lo : b.row_lo;
          b.row_hi = y.hi > b.row_hi ? y.hi : b.row_hi;
        }
      }
      acc_t* kx = wx + k * p.pooled_w * p.width;
      for (int pw = 0; pw < p.pooled_w; ++pw) {
        for (int ix = 0; ix < g.grid_w; ++ix) {
          Interp<acc_t> x;
          if (!roi_detail::interp1d(roi_detail::sample_coord(g.start_w, g.bin_w, pw, ix, g.grid_w),
                                    p.width, x))
            continue;
          kx[static_cast<index_t>(pw) * p.width + x.lo] += x.wlo;
          kx[static_cast<index_t>(pw) * p.width + x.hi] += x.whi;
          b.col_lo = x.lo < b.col_lo ? x.lo : b.col_lo;
          b.col_hi = x.hi > b.col_hi ? x.hi : b.col_hi;
        }
      }
    }
    bounds[k] = b;
  }
}

// Deterministic backward, step 2: one thread per grad_input element (contiguous
// N, C, H, W); grad has strides s0..s3.
template <typename scalar_t, typename acc_t, typename index_t>
__global__ void __launch_bounds__(kBlockThreads)
    roi_align_backward_gather_kernel(const scalar_t* KZ_RESTRICT grad, const acc_t* KZ_RESTRICT wy,
                                     const acc_t* KZ_RESTRICT wx, const acc_t* KZ_RESTRICT count,
                                     const RoiBounds* KZ_RESTRICT bounds,
                                     scalar_t* KZ_RESTRICT grad_input, AlignParams<index_t> p) {
  const index_t step = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t e = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < p.total;
       e += step) {
    const auto [n, c, y, x] = roi_detail::unravel_nchw(e, p.channels, p.height, p.width);
    acc_t sum = acc_t(0);
    for (index_t k = 0; k < p.num_rois; ++k) {
      const RoiBounds b = bounds[k];
      if (b.batch != n || y < b.row_lo || y > b.row_hi || x < b.col_lo || x > b.col_hi) continue;
      const acc_t* ky = wy + k * p.pooled_h * p.height + y;
      const acc_t* kx = wx + k * p.pooled_w * p.width + x;
      const scalar_t* g = grad + k * p.s0 + c * p.s1;
      acc_t s = acc_t(0);
      for (int ph = 0; ph < p.pooled_h; ++ph) {
        const acc_t a = ky[static_cast<index_t>(ph) * p.height];
        if (a == acc_t(0)) continue;
        acc_t r = acc_t(0);
        for (int pw = 0; pw < p.pooled_w; ++pw) {
          const acc_t w = kx[static_cast<index_t>(pw) * p.width];
          if (w != acc_t(0)) r += w * static_cast<acc_t>(g[ph * p.s2 + pw * p.s3]);
        }
        s += a * r;
      }
      sum += s / count[k];
    }
    grad_input[e] = static_cast<scalar_t>(sum);
  }
}

}  // namespace roi_align_detail
}  // namespace kernelzoo
