// CUDA kernel bodies of roi_align and roi_pool. Kernel-safe: no tensor or
// runtime host headers, so the C++ tests run them through the CPU harness.
//
// The geometry (roi corners, bins, sampling grid, bilinear weights) is
// roi_math.h's, shared with the CPU kernels. Inputs and gradients are read
// through their strides (contiguous, channels_last or any other layout, without
// a copy); outputs, argmax and grad_input are contiguous NCHW. index_t is int32
// when every offset fits, int64 otherwise; acc_t is common/acc_type.h's. The
// launches (grid, block, element and index types, scratch) are in roi_plan.h.
//
// Forward: one thread per output element (k, c, ph, pw). A roi with an invalid
// batch index gives zeros (argmax -1).
//
// Backward, two ways (common/backward.h):
//  - atomic: one thread per grad element scatters it into an accumulation-type
//    (float32 for float16/bfloat16) copy of grad_input with atomicAdd: at the
//    four taps of each sample (roi_align), at the argmax (roi_pool);
//  - deterministic: a gather. First one thread per roi writes the pixel bounds
//    its samples or bins touch (and, for roi_align, its separable weights: per
//    output row ph the summed y weights over the feature map's rows,
//    wy[k][ph][H], likewise wx[k][pw][W]). Then one thread per grad_input
//    element walks the rois in order and, for those whose bounds hold its
//    pixel, adds their contributions: every element is a fixed-order sum by one
//    thread, the same in every run, with no float32 buffer.
// An argmax outside [0, H*W) (not one roi_pool returned) is skipped; the CPU
// kernel raises an error for it.
#pragma once

#include <cstdint>

#include "../../common/acc_type.h"
#include "../../common/bilinear.h"
#include "../../common/grid_stride.cuh"
#include "../../common/launch.h"
#include "../../common/macros.h"
#include "roi_math.h"
#include "roi_params.h"

namespace kernelzoo {
namespace roi_detail {

template <typename acc_t, typename scalar_t, typename index_t>
KZ_DEVICE KZ_INLINE RoiBox<acc_t> roi_box(const scalar_t* rois, index_t k,
                                          const RoiParams<index_t>& p) {
  return load_roi<acc_t>(rois, k, p.roi_row, p.roi_col, p.batch_size);
}

template <typename acc_t, typename index_t>
KZ_DEVICE KZ_INLINE AlignRoi<acc_t> align_geometry(const RoiBox<acc_t>& b,
                                                   const RoiParams<index_t>& p) {
  return align_roi(b, static_cast<acc_t>(p.spatial_scale), p.pooled_h, p.pooled_w,
                   p.sampling_ratio, p.aligned);
}

template <typename acc_t, typename index_t>
KZ_DEVICE KZ_INLINE PoolRoi<acc_t> pool_geometry(const RoiBox<acc_t>& b,
                                                 const RoiParams<index_t>& p) {
  return pool_roi(b, static_cast<acc_t>(p.spatial_scale), p.pooled_h, p.pooled_w);
}

// Offset of grad[k, c, ph, pw] (strides s0..s3).
template <typename index_t>
KZ_DEVICE KZ_INLINE index_t grad_offset(const RoiParams<index_t>& p, index_t k, index_t c, int ph,
                                        int pw) {
  return k * p.s0 + c * p.s1 + ph * p.s2 + pw * p.s3;
}

// Deterministic gathers: calls f(k) for every roi k, in order, whose bounds
// hold pixel (y, x) of image n.
template <typename index_t, typename F>
KZ_DEVICE KZ_INLINE void for_each_roi_over(const RoiBounds* bounds, index_t num_rois, index_t n,
                                           int y, int x, F&& f) {
  for (index_t k = 0; k < num_rois; ++k) {
    const RoiBounds b = bounds[k];
    if (b.batch != n || y < b.row_lo || y > b.row_hi || x < b.col_lo || x > b.col_hi) continue;
    f(k);
  }
}

// ---------------------------------------------------------------------------
// roi_align
// ---------------------------------------------------------------------------

// output[k, c, ph, pw] = average of the bin's bilinear samples of input (strides s0..s3).
template <typename scalar_t, typename index_t>
__global__ void __launch_bounds__(kBlockThreads)
    roi_align_forward_kernel(const scalar_t* KZ_RESTRICT input, const scalar_t* KZ_RESTRICT rois,
                             scalar_t* KZ_RESTRICT output, RoiParams<index_t> p) {
  using acc_t = acc_type_t<scalar_t>;
  for (const index_t e : grid_stride(p.total)) {
    const auto [k, c, ph, pw] = unravel_nchw(e, p.channels, p.pooled_h, p.pooled_w);
    const RoiBox<acc_t> box = roi_box<acc_t>(rois, k, p);
    const AlignRoi<acc_t> g = align_geometry(box, p);
    acc_t sum = acc_t(0);
    if (box.batch >= 0) {
      const scalar_t* plane = input + static_cast<index_t>(box.batch) * p.s0 + c * p.s1;
      for_each_sample(g, ph, pw, p.height, p.width,
                      [&](const Interp<acc_t>& y, const Interp<acc_t>& x) {
                        sum += bilinear<acc_t>(plane, p.s2, p.s3, y, x);
                      });
    }
    output[e] = static_cast<scalar_t>(sum / g.count);
  }
}

// Atomic backward: grad (strides s0..s3, shape K, C, PH, PW) scattered into
// grad_input (contiguous N, C, H, W, accumulation type).
template <typename scalar_t, typename index_t>
__global__ void __launch_bounds__(kBlockThreads)
    roi_align_backward_atomic_kernel(const scalar_t* KZ_RESTRICT grad,
                                     const scalar_t* KZ_RESTRICT rois,
                                     acc_type_t<scalar_t>* grad_input, RoiParams<index_t> p) {
  using acc_t = acc_type_t<scalar_t>;
  const index_t plane_size = static_cast<index_t>(p.height) * p.width;
  for (const index_t e : grid_stride(p.total)) {
    const auto [k, c, ph, pw] = unravel_nchw(e, p.channels, p.pooled_h, p.pooled_w);
    const RoiBox<acc_t> box = roi_box<acc_t>(rois, k, p);
    if (box.batch < 0) continue;
    const AlignRoi<acc_t> g = align_geometry(box, p);
    const acc_t gv = static_cast<acc_t>(grad[grad_offset(p, k, c, ph, pw)]);
    acc_t* plane = grad_input + (static_cast<index_t>(box.batch) * p.channels + c) * plane_size;
    for_each_sample(g, ph, pw, p.height, p.width,
                    [&](const Interp<acc_t>& y, const Interp<acc_t>& x) {
                      // As torchvision: grad * w / count per tap.
                      bilinear_taps(static_cast<index_t>(p.width), index_t{1}, y, x,
                                    [&](index_t off, acc_t w) {
                                      atomicAdd(plane + off, gv * w / g.count);
                                    });
                    });
  }
}

// The summed interpolation weights of every bin p < pooled along one axis
// (w[p * size + pixel] += weight, w zero on entry), and the span of pixels
// they touch.
template <typename acc_t>
KZ_DEVICE KZ_INLINE void align_axis_weights(acc_t start, acc_t bin, int grid, int pooled,
                                            int size, acc_t* w, Span& span) {
  for (int pb = 0; pb < pooled; ++pb) {
    for (int i = 0; i < grid; ++i) {
      Interp<acc_t> t;
      if (!align_sample(start, bin, pb, i, grid, size, t)) continue;
      w[static_cast<int64_t>(pb) * size + t.lo] += t.wlo;
      w[static_cast<int64_t>(pb) * size + t.hi] += t.whi;
      span.include(t.lo, t.hi);
    }
  }
}

// Deterministic backward, step 1: one thread per roi. wy (K, PH, H) and wx
// (K, PW, W) must be zero on entry; count (K) and bounds (K) are written.
template <typename scalar_t, typename index_t>
__global__ void __launch_bounds__(kBlockThreads)
    roi_align_backward_weights_kernel(const scalar_t* KZ_RESTRICT rois,
                                      acc_type_t<scalar_t>* KZ_RESTRICT wy,
                                      acc_type_t<scalar_t>* KZ_RESTRICT wx,
                                      acc_type_t<scalar_t>* KZ_RESTRICT count,
                                      RoiBounds* KZ_RESTRICT bounds, RoiParams<index_t> p) {
  using acc_t = acc_type_t<scalar_t>;
  for (const index_t k : grid_stride(p.num_rois)) {
    const RoiBox<acc_t> box = roi_box<acc_t>(rois, k, p);
    const AlignRoi<acc_t> g = align_geometry(box, p);
    Span rows{p.height, -1}, cols{p.width, -1};
    count[k] = g.count;
    if (box.batch >= 0) {
      align_axis_weights(g.start_h, g.bin_h, g.grid_h, p.pooled_h, p.height,
                         wy + k * p.pooled_h * p.height, rows);
      align_axis_weights(g.start_w, g.bin_w, g.grid_w, p.pooled_w, p.width,
                         wx + k * p.pooled_w * p.width, cols);
    }
    bounds[k] = {box.batch >= 0 ? static_cast<int>(box.batch) : -1, rows.lo, rows.hi, cols.lo,
                 cols.hi};
  }
}

// Deterministic backward, step 2: one thread per grad_input element (contiguous
// N, C, H, W); grad has strides s0..s3.
template <typename scalar_t, typename index_t>
__global__ void __launch_bounds__(kBlockThreads)
    roi_align_backward_gather_kernel(const scalar_t* KZ_RESTRICT grad,
                                     const acc_type_t<scalar_t>* KZ_RESTRICT wy,
                                     const acc_type_t<scalar_t>* KZ_RESTRICT wx,
                                     const acc_type_t<scalar_t>* KZ_RESTRICT count,
                                     const RoiBounds* KZ_RESTRICT bounds,
                                     scalar_t* KZ_RESTRICT grad_input, RoiParams<index_t> p) {
  using acc_t = acc_type_t<scalar_t>;
  for (const index_t e : grid_stride(p.total)) {
    const Nchw<index_t> px = unravel_nchw(e, p.channels, p.height, p.width);
    const index_t c = px.c;
    const int y = px.h, x = px.w;
    acc_t sum = acc_t(0);
    for_each_roi_over(bounds, p.num_rois, px.n, y, x, [&](index_t k) {
      const acc_t* ky = wy + k * p.pooled_h * p.height + y;
      const acc_t* kx = wx + k * p.pooled_w * p.width + x;
      acc_t s = acc_t(0);
      for (int ph = 0; ph < p.pooled_h; ++ph) {
        const acc_t a = ky[static_cast<index_t>(ph) * p.height];
        if (a == acc_t(0)) continue;
        acc_t r = acc_t(0);
        for (int pw = 0; pw < p.pooled_w; ++pw) {
          const acc_t w = kx[static_cast<index_t>(pw) * p.width];
          if (w != acc_t(0)) r += w * static_cast<acc_t>(grad[grad_offset(p, k, c, ph, pw)]);
        }
        s += a * r;
      }
      sum += s / count[k];
    });
    grad_input[e] = static_cast<scalar_t>(sum);
  }
}

// ---------------------------------------------------------------------------
// roi_pool
// ---------------------------------------------------------------------------

// output[k, c, ph, pw] = max of input[b, c] (strides s0..s3) over the bin,
// argmax its plane index (y * W + x), -1 when none; 0 / -1 for an empty bin
// or an invalid batch index.
template <typename scalar_t, typename index_t>
__global__ void __launch_bounds__(kBlockThreads)
    roi_pool_forward_kernel(const scalar_t* KZ_RESTRICT input, const scalar_t* KZ_RESTRICT rois,
                            scalar_t* KZ_RESTRICT output, int32_t* KZ_RESTRICT argmax,
                            RoiParams<index_t> p) {
  using acc_t = acc_type_t<scalar_t>;
  for (const index_t e : grid_stride(p.total)) {
    const auto [k, c, ph, pw] = unravel_nchw(e, p.channels, p.pooled_h, p.pooled_w);
    const RoiBox<acc_t> box = roi_box<acc_t>(rois, k, p);
    const PoolRoi<acc_t> g = pool_geometry(box, p);
    int h0, h1, w0, w1;
    pool_bin(g.start_h, g.bin_h, ph, p.height, h0, h1);
    pool_bin(g.start_w, g.bin_w, pw, p.width, w0, w1);
    acc_t best = acc_t(0);
    int32_t best_idx = -1;
    if (box.batch >= 0 && h1 > h0 && w1 > w0) {
      best = acc_t(kPoolLowest);
      const scalar_t* plane = input + static_cast<index_t>(box.batch) * p.s0 + c * p.s1;
      for (int y = h0; y < h1; ++y) {
        for (int x = w0; x < w1; ++x) {
          const acc_t v = static_cast<acc_t>(
              plane[static_cast<index_t>(y) * p.s2 + static_cast<index_t>(x) * p.s3]);
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
template <typename scalar_t, typename index_t>
__global__ void __launch_bounds__(kBlockThreads)
    roi_pool_backward_atomic_kernel(const scalar_t* KZ_RESTRICT grad,
                                    const scalar_t* KZ_RESTRICT rois,
                                    const int32_t* KZ_RESTRICT argmax,
                                    acc_type_t<scalar_t>* grad_input, RoiParams<index_t> p) {
  using acc_t = acc_type_t<scalar_t>;
  const index_t plane_size = static_cast<index_t>(p.height) * p.width;
  for (const index_t e : grid_stride(p.total)) {
    const int32_t a = argmax[e];
    if (a < 0 || a >= plane_size) continue;
    const auto [k, c, ph, pw] = unravel_nchw(e, p.channels, p.pooled_h, p.pooled_w);
    const int64_t batch = roi_box<acc_t>(rois, k, p).batch;
    if (batch < 0) continue;
    const acc_t g = static_cast<acc_t>(grad[grad_offset(p, k, c, ph, pw)]);
    atomicAdd(grad_input + (static_cast<index_t>(batch) * p.channels + c) * plane_size + a, g);
  }
}

// Deterministic backward, step 1: one thread per roi writes its batch index
// and the inclusive bounds of the union of its non-empty bins.
template <typename scalar_t, typename index_t>
__global__ void __launch_bounds__(kBlockThreads)
    roi_pool_backward_bounds_kernel(const scalar_t* KZ_RESTRICT rois,
                                    RoiBounds* KZ_RESTRICT bounds, RoiParams<index_t> p) {
  using acc_t = acc_type_t<scalar_t>;
  for (const index_t k : grid_stride(p.num_rois)) {
    const RoiBox<acc_t> box = roi_box<acc_t>(rois, k, p);
    const PoolRoi<acc_t> g = pool_geometry(box, p);
    Span rows{p.height, -1}, cols{p.width, -1};
    for (int ph = 0; ph < p.pooled_h; ++ph) {
      int lo, hi;
      pool_bin(g.start_h, g.bin_h, ph, p.height, lo, hi);
      if (hi > lo) rows.include(lo, hi - 1);
    }
    for (int pw = 0; pw < p.pooled_w; ++pw) {
      int lo, hi;
      pool_bin(g.start_w, g.bin_w, pw, p.width, lo, hi);
      if (hi > lo) cols.include(lo, hi - 1);
    }
    bounds[k] = {box.batch >= 0 ? static_cast<int>(box.batch) : -1, rows.lo, rows.hi, cols.lo,
                 cols.hi};
  }
}

// Deterministic backward, step 2: one thread per grad_input element
// (contiguous N, C, H, W) adds grad of the bins whose window holds its pixel and
// whose argmax is the pixel; grad has strides s0..s3, argmax is contiguous.
template <typename scalar_t, typename index_t>
__global__ void __launch_bounds__(kBlockThreads)
    roi_pool_backward_gather_kernel(const scalar_t* KZ_RESTRICT grad,
                                    const scalar_t* KZ_RESTRICT rois,
                                    const int32_t* KZ_RESTRICT argmax,
                                    const RoiBounds* KZ_RESTRICT bounds,
                                    scalar_t* KZ_RESTRICT grad_input, RoiParams<index_t> p) {
  using acc_t = acc_type_t<scalar_t>;
  const index_t bins = static_cast<index_t>(p.pooled_h) * p.pooled_w;
  for (const index_t e : grid_stride(p.total)) {
    const Nchw<index_t> px = unravel_nchw(e, p.channels, p.height, p.width);
    const index_t c = px.c;
    const int y = px.h, x = px.w;
    const int32_t pixel = y * p.width + x;
    acc_t sum = acc_t(0);
    for_each_roi_over(bounds, p.num_rois, px.n, y, x, [&](index_t k) {
      const PoolRoi<acc_t> g = pool_geometry(roi_box<acc_t>(rois, k, p), p);
      const int32_t* a = argmax + (k * p.channels + c) * bins;
      for (int ph = 0; ph < p.pooled_h; ++ph) {
        int h0, h1;
        pool_bin(g.start_h, g.bin_h, ph, p.height, h0, h1);
        if (y < h0 || y >= h1) continue;
        for (int pw = 0; pw < p.pooled_w; ++pw) {
          int w0, w1;
          pool_bin(g.start_w, g.bin_w, pw, p.width, w0, w1);
          if (x < w0 || x >= w1 || a[ph * p.pooled_w + pw] != pixel) continue;
          sum += static_cast<acc_t>(grad[grad_offset(p, k, c, ph, pw)]);
        }
      }
    });
    grad_input[e] = static_cast<scalar_t>(sum);
  }
}

}  // namespace roi_detail
}  // namespace kernelzoo
