// CPU kernels of roi_align and its backward.
//
// Bilinear sampling is separable: a sample's four taps are the products of a
// y interpolation (two rows, weights) and an x interpolation (two columns),
// and a bin's sample grid is the product of its y samples and its x samples.
// So a bin's average is
//     sum over rows y, columns x of  Wy[ph](y) * Wx[pw](x) * input[y, x]
// with Wy[ph](y) the summed y weights of bin row ph's samples on row y (divided
// by the sample count) and Wx likewise. Per roi the taps (row, Wy) of every ph
// and (column, Wx) of every pw are computed once, from roi_math.h's geometry
// (the CUDA kernels' geometry), and reused for every channel; samples that
// share a row or column are merged, which saves work for small bins and much
// more for adaptive sampling (a 10x10-sample bin over 10x10 pixels has ~121
// taps instead of 400).
//
// Parallelization and determinism: see roi_cpu.h (units = image x channel
// block, each element owned by one unit, dynamic scheduling). Forward: each
// roi of the image is pooled from the unit's tile (whole-plane or per-roi,
// see roi_cpu.h's forward_units), kCB channels per vector operation. Backward: the unit
// accumulates into a zeroed whole-plane tile, every roi of the image in
// increasing order, and writes the tile to its channels of grad_input; a unit
// with little work (fewer than 8 taps per plane pixel) adds into its grad_input
// planes directly, one channel at a time, in the same order. Deterministic,
// whatever the number of threads.
#include <ATen/ops/quantize_per_tensor.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "../../common/cpu_vec.h"
#include "../../common/dispatch.h"
#include "roi_args.h"
#include "roi_cpu.h"
#include "roi_math.h"

namespace kernelzoo {
namespace roi_detail {

// The separable taps of one roi.
template <typename acc_t>
struct RoiTaps {
  std::vector<int32_t> ybeg, xbeg;  // PH + 1 / PW + 1 offsets into the lists below
  std::vector<int32_t> yidx, xidx;  // rows / columns
  std::vector<acc_t> yw, xw;        // their weights; yw includes 1 / count
  int64_t work = 0;                 // (row, column) pairs over all bins: taps per channel
  int64_t row0 = 0, row1 = 0, col0 = 0, col1 = 0;  // pixels the taps touch: [row0, row1) x [col0, col1)
};

namespace {

// The merged taps of every bin p < pooled along one axis: each pixel row (or
// column) the bin's samples touch, with the sum of their weights divided by
// `divisor`. A row whose summed weight is zero (touched only by samples lying
// exactly on its neighbour) is no tap: it contributes nothing, inf or NaN
// included (roi_math.h). Only the samples on the map are visited (sample_range).
template <typename acc_t>
void axis_taps(acc_t start, acc_t bin, int grid, int pooled, int size, acc_t divisor,
               std::vector<int32_t>& beg, std::vector<int32_t>& idx, std::vector<acc_t>& w,
               std::vector<acc_t>& dense) {
  beg.assign(1, 0);
  idx.clear();
  w.clear();
  for (int p = 0; p < pooled; ++p) {
    int first, last;
    sample_range(start, bin, p, grid, size, first, last);
    Span span{size, -1};
    for (int i = first; i < last; ++i) {
      Interp<acc_t> it;
      if (align_sample(start, bin, p, i, grid, size, it)) span.include(it.lo, it.hi);
    }
    if (span.hi >= span.lo) {
      const int lo = span.lo, n = span.hi - span.lo + 1;
      dense.assign(n, acc_t(0));
      for (int i = first; i < last; ++i) {
        Interp<acc_t> it;
        if (!align_sample(start, bin, p, i, grid, size, it)) continue;
        dense[it.lo - lo] += it.wlo;
        dense[it.hi - lo] += it.whi;
      }
      for (int r = 0; r < n; ++r) {
        if (dense[r] == acc_t(0)) continue;
        idx.push_back(lo + r);
        w.push_back(dense[r] / divisor);
      }
    }
    beg.push_back(static_cast<int32_t>(idx.size()));
  }
}

template <typename acc_t>
std::vector<RoiTaps<acc_t>> build_taps(const std::vector<RoiBox<acc_t>>& boxes, const Args& a,
                                       int height, int width) {
  const int64_t k = static_cast<int64_t>(boxes.size());
  std::vector<RoiTaps<acc_t>> taps(k);
  const int ph = static_cast<int>(a.pooled_h), pw = static_cast<int>(a.pooled_w);
  at::parallel_for(0, k, 128, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> dense;
    for (int64_t i = begin; i < end; ++i) {
      const auto g = align_roi<acc_t>(boxes[i], static_cast<acc_t>(a.spatial_scale), ph, pw,
                                      static_cast<int>(a.sampling_ratio), a.aligned);
      RoiTaps<acc_t>& t = taps[i];
      // Without x samples there is nothing to take (and vice versa).
      const bool any = g.grid_h > 0 && g.grid_w > 0;
      axis_taps(g.start_h, g.bin_h, any ? g.grid_h : 0, ph, height, g.count, t.ybeg, t.yidx, t.yw,
                dense);
      axis_taps(g.start_w, g.bin_w, any ? g.grid_w : 0, pw, width, acc_t(1), t.xbeg, t.xidx, t.xw,
                dense);
      int64_t n = 0;
      for (int y = 0; y < ph; ++y) {
        for (int x = 0; x < pw; ++x) {
          n += int64_t{t.ybeg[y + 1] - t.ybeg[y]} * (t.xbeg[x + 1] - t.xbeg[x]);
        }
      }
      t.work = n;
      if (n > 0) {
        t.row0 = *std::min_element(t.yidx.begin(), t.yidx.end());
        t.row1 = *std::max_element(t.yidx.begin(), t.yidx.end()) + 1;
        t.col0 = *std::min_element(t.xidx.begin(), t.xidx.end());
        t.col1 = *std::max_element(t.xidx.begin(), t.xidx.end()) + 1;
      }
    }
  });
  return taps;
}

}  // namespace

// --- vectorized inner loops (one channel block, one roi) -----------------------
// Multiversioned (KZ_CPU_CLONES), hence outside the anonymous namespace.

template <typename acc_t, typename Pixels>
KZ_ALWAYS_INLINE void forward_block_impl(const Pixels& px, const RoiTaps<acc_t>& t, int pooled_h,
                                         int pooled_w, acc_t* KZ_RESTRICT out) {
  const int32_t *yb = t.ybeg.data(), *yi = t.yidx.data(), *xb = t.xbeg.data(), *xi = t.xidx.data();
  const acc_t *yw = t.yw.data(), *xw = t.xw.data();
  for (int ph = 0; ph < pooled_h; ++ph) {
    for (int pw = 0; pw < pooled_w; ++pw) {
      const int32_t y0 = yb[ph], y1 = yb[ph + 1], x0 = xb[pw], x1 = xb[pw + 1];
      acc_t* o = out + (ph * pooled_w + pw) * kCB;
      alignas(64) acc_t lanes[kCB];
#if defined(KZ_VECTOR_EXTENSIONS)
      using V = typename ChannelLanes<acc_t>::type;
      V acc = V{};
      for (int32_t a = y0; a < y1; ++a) {
        for (int32_t b = x0; b < x1; ++b) {
          px.load(yi[a], xi[b], lanes);
          V v;
          std::memcpy(&v, lanes, sizeof(V));
          acc += (yw[a] * xw[b]) * v;
        }
      }
      std::memcpy(o, &acc, sizeof(V));
#else
      acc_t acc[kCB] = {};
      for (int32_t a = y0; a < y1; ++a) {
        for (int32_t b = x0; b < x1; ++b) {
          const acc_t w = yw[a] * xw[b];
          px.load(yi[a], xi[b], lanes);
          for (int j = 0; j < kCB; ++j) acc[j] += w * lanes[j];
        }
      }
      for (int j = 0; j < kCB; ++j) o[j] = acc[j];
#endif
    }
  }
}

// One clone set per pixel source and accumulation type.
#define KZ_ROI_ALIGN_FORWARD_BLOCK(PIXELS, ACC)                                           \
  KZ_CPU_CLONES void forward_block(const PIXELS& px, const RoiTaps<ACC>& t, int pooled_h, \
                                   int pooled_w, ACC* out) {                              \
    forward_block_impl(px, t, pooled_h, pooled_w, out);                                   \
  }
KZ_ROI_ALIGN_FORWARD_BLOCK(TilePixels<float>, float)
KZ_ROI_ALIGN_FORWARD_BLOCK(TilePixels<double>, double)
KZ_ROI_ALIGN_FORWARD_BLOCK(InputPixels<float>, float)
KZ_ROI_ALIGN_FORWARD_BLOCK(InputPixels<double>, double)
KZ_ROI_ALIGN_FORWARD_BLOCK(InputPixels<c10::Half>, float)
KZ_ROI_ALIGN_FORWARD_BLOCK(InputPixels<c10::BFloat16>, float)
#undef KZ_ROI_ALIGN_FORWARD_BLOCK

// tile[y, x, :] += Wy * Wx * grad[k, :, ph, pw] over the roi's taps; g is the
// roi's gradient in (bin, channel) order.
template <typename acc_t>
KZ_ALWAYS_INLINE void backward_block_impl(acc_t* KZ_RESTRICT tile, int64_t sy, int64_t sx,
                                          const RoiTaps<acc_t>& t, int pooled_h, int pooled_w,
                                          const acc_t* KZ_RESTRICT g) {
  const int32_t *yb = t.ybeg.data(), *yi = t.yidx.data(), *xb = t.xbeg.data(), *xi = t.xidx.data();
  const acc_t *yw = t.yw.data(), *xw = t.xw.data();
  for (int ph = 0; ph < pooled_h; ++ph) {
    for (int pw = 0; pw < pooled_w; ++pw) {
      const int32_t y0 = yb[ph], y1 = yb[ph + 1], x0 = xb[pw], x1 = xb[pw + 1];
      const acc_t* gb = g + (ph * pooled_w + pw) * kCB;
#if defined(KZ_VECTOR_EXTENSIONS)
      using V = typename ChannelLanes<acc_t>::type;
      V gv;
      std::memcpy(&gv, gb, sizeof(V));
      for (int32_t a = y0; a < y1; ++a) {
        acc_t* row = tile + yi[a] * sy;
        for (int32_t b = x0; b < x1; ++b) {
          acc_t* px = row + xi[b] * sx;
          V v;
          std::memcpy(&v, px, sizeof(V));
          v += (yw[a] * xw[b]) * gv;
          std::memcpy(px, &v, sizeof(V));
        }
      }
#else
      acc_t gv[kCB];
      for (int j = 0; j < kCB; ++j) gv[j] = gb[j];
      for (int32_t a = y0; a < y1; ++a) {
        acc_t* row = tile + yi[a] * sy;
        for (int32_t b = x0; b < x1; ++b) {
          const acc_t w = yw[a] * xw[b];
          acc_t* px = row + xi[b] * sx;
          for (int j = 0; j < kCB; ++j) px[j] += w * gv[j];
        }
      }
#endif
    }
  }
}

KZ_CPU_CLONES void backward_block(float* tile, int64_t sy, int64_t sx, const RoiTaps<float>& t,
                                  int pooled_h, int pooled_w, const float* g) {
  backward_block_impl(tile, sy, sx, t, pooled_h, pooled_w, g);
}
KZ_CPU_CLONES void backward_block(double* tile, int64_t sy, int64_t sx, const RoiTaps<double>& t,
                                  int pooled_h, int pooled_w, const double* g) {
  backward_block_impl(tile, sy, sx, t, pooled_h, pooled_w, g);
}

namespace {

template <typename scalar_t>
void forward_cpu(const Forward& f) {
  using acc_t = acc_type_t<scalar_t>;
  const at::Tensor& input = f.input;
  const BatchGroups groups = group_by_batch("roi_align", f.rois, input.size(0));
  if (f.output.numel() == 0) return;
  const auto taps = build_taps<acc_t>(load_boxes<acc_t>(f.rois, input.size(0)), f.args,
                                      static_cast<int>(input.size(2)),
                                      static_cast<int>(input.size(3)));
  const int ph = static_cast<int>(f.args.pooled_h), pw = static_cast<int>(f.args.pooled_w);
  forward_units<scalar_t>(f, groups, taps,
                          [&](const auto& pixels, const RoiTaps<acc_t>& t, acc_t* out, int32_t*) {
                            forward_block(pixels, t, ph, pw, out);
                          });
}

template <typename scalar_t>
void backward_cpu(const Backward& bw) {
  using acc_t = acc_type_t<scalar_t>;
  const int64_t n_img = bw.batch_size, channels = bw.channels;
  const int64_t height = bw.height, width = bw.width, plane = height * width;
  const int ph = static_cast<int>(bw.args.pooled_h), pw = static_cast<int>(bw.args.pooled_w);
  const int64_t bins = int64_t{ph} * pw;
  const BatchGroups groups = group_by_batch("_roi_align_backward", bw.rois, n_img);
  if (bw.grad_input.numel() == 0) return;
  const auto taps = build_taps<acc_t>(load_boxes<acc_t>(bw.rois, n_img), bw.args,
                                      static_cast<int>(height), static_cast<int>(width));
  const Strides4 gs = strides_of(bw.grad);
  const scalar_t* grad = bw.grad.const_data_ptr<scalar_t>();
  scalar_t* out = bw.grad_input.mutable_data_ptr<scalar_t>();
  int64_t work = bw.grad_input.numel();
  for (const RoiTaps<acc_t>& t : taps) work += (t.work + bins) * channels;
  // Taps per channel of each image: a unit whose rois have fewer than 8 taps
  // per plane pixel (or whose plane's tile would exceed kTileBytes) scatters
  // straight into its grad_input planes, one channel at a time, with scalar
  // adds (float16/bfloat16: into one float32 plane): zeroing, transposing and
  // writing out a whole-plane tile costs more than that (measured: 256 boxes on two
  // 200x272 maps, 1.9 taps per pixel: 38 ms with tiles, 22 ms without; the
  // benchmark's 512 boxes on 64x64 maps, 49 taps per pixel: 8 ms with tiles,
  // 33 ms without).
  std::vector<int64_t> image_taps(n_img, 0);
  for (int64_t n = 0; n < n_img; ++n) {
    for (int64_t i = groups.begin[n]; i < groups.begin[n + 1]; ++i) image_taps[n] += taps[groups.order[i]].work;
  }

  for_each_unit(n_img, channels, work, [&](int64_t n, int64_t c0, int64_t cbn, Scratch& scratch) {
    scalar_t* o = out + (n * channels + c0) * plane;
    const int64_t first = groups.begin[n], last = groups.begin[n + 1];
    if (first == last) {
      std::fill(o, o + cbn * plane, scalar_t(0));
      return;
    }
    if (image_taps[n] < 8 * plane || !tile_fits<acc_t>(plane)) {
      for (int64_t j = 0; j < cbn; ++j) {
        acc_t* p = zeroed_sums(o + j * plane, plane, scratch);
        for (int64_t i = first; i < last; ++i) {
          const int64_t k = groups.order[i];
          const RoiTaps<acc_t>& t = taps[k];
          const scalar_t* src = grad + k * gs.n + (c0 + j) * gs.c;
          for (int y = 0; y < ph; ++y) {
            for (int x = 0; x < pw; ++x) {
              const acc_t gv = static_cast<acc_t>(src[y * gs.h + x * gs.w]);
              for (int32_t a = t.ybeg[y]; a < t.ybeg[y + 1]; ++a) {
                acc_t* row = p + int64_t{t.yidx[a]} * width;
                for (int32_t b = t.xbeg[x]; b < t.xbeg[x + 1]; ++b) {
                  row[t.xidx[b]] += (t.yw[a] * t.xw[b]) * gv;
                }
              }
            }
          }
        }
        store_sums(o + j * plane, p, plane);
      }
      return;
    }
    auto& tile = scratch.tile(acc_t{});
    tile.assign(plane * kCB, acc_t(0));
    auto& g = scratch.buf(acc_t{});
    g.assign(bins * kCB, acc_t(0));
    for (int64_t i = first; i < last; ++i) {
      const int64_t k = groups.order[i];
      // g[bin][j] = grad[k, c0 + j, bin]: kCB channel rows read side by side.
      const scalar_t* rows[kCB];
      for (int64_t j = 0; j < cbn; ++j) rows[j] = grad + k * gs.n + (c0 + j) * gs.c;
      for (int y = 0; y < ph; ++y) {
        for (int x = 0; x < pw; ++x) {
          const int64_t off = y * gs.h + x * gs.w;
          acc_t* gb = g.data() + (y * pw + x) * kCB;
          for (int64_t j = 0; j < cbn; ++j) gb[j] = static_cast<acc_t>(rows[j][off]);
        }
      }
      backward_block(tile.data(), width * kCB, kCB, taps[k], ph, pw, g.data());
    }
    for (int64_t j = 0; j < cbn; ++j) {
      for (int64_t p = 0; p < plane; ++p) o[j * plane + p] = static_cast<scalar_t>(tile[p * kCB + j]);
    }
  });
}

at::Tensor roi_align_cpu(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                         int64_t pooled_h, int64_t pooled_w, int64_t sampling_ratio,
                         bool aligned) {
  const Forward f = prepare_forward(RoiOp::Align, input, rois,
                                    Args{spatial_scale, pooled_h, pooled_w, sampling_ratio, aligned});
  KZ_DISPATCH_FLOATING_TYPES(input.scalar_type(), "roi_align", [&] { forward_cpu<scalar_t>(f); });
  return f.output;
}

at::Tensor roi_align_backward_cpu(const at::Tensor& grad, const at::Tensor& rois,
                                  double spatial_scale, int64_t pooled_h, int64_t pooled_w,
                                  int64_t batch_size, int64_t channels, int64_t height,
                                  int64_t width, int64_t sampling_ratio, bool aligned) {
  const Backward b = prepare_backward(RoiOp::Align, grad, rois, at::Tensor(),
                                      Args{spatial_scale, pooled_h, pooled_w, sampling_ratio, aligned},
                                      batch_size, channels, height, width);
  KZ_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "_roi_align_backward",
                             [&] { backward_cpu<scalar_t>(b); });
  return b.grad_input;
}

// Quantized input and boxes (per-tensor affine), as torchvision takes them:
// both are dequantized to float32, pooled by the float kernel, and the output
// is quantized with the input's scale and zero point (ATen's rounding, as
// torchvision's quantized kernel). torchvision allows a batch of one image
// only; any batch works here.
at::Tensor roi_align_quantized_cpu(const at::Tensor& input, const at::Tensor& rois,
                                   double spatial_scale, int64_t pooled_h, int64_t pooled_w,
                                   int64_t sampling_ratio, bool aligned) {
  TORCH_CHECK_VALUE(input.is_quantized() && rois.is_quantized(),
                    "roi_align: if input is quantized, boxes must also be quantized (and the "
                    "other way round), but got input ", input.scalar_type(), " and boxes ",
                    rois.scalar_type());
  for (const at::Tensor* t : {&input, &rois}) {
    TORCH_CHECK(t->qscheme() == at::kPerTensorAffine,
                "roi_align: quantized input and boxes must be per-tensor affine, but got ",
                c10::toString(t->qscheme()));
  }
  const at::Tensor x = input.dequantize(), r = rois.dequantize();
  const Forward f = prepare_forward(RoiOp::Align, x, r,
                                    Args{spatial_scale, pooled_h, pooled_w, sampling_ratio, aligned});
  forward_cpu<float>(f);
  return at::quantize_per_tensor(f.output, input.q_scale(), input.q_zero_point(),
                                 input.scalar_type());
}

}  // namespace
}  // namespace roi_detail
}  // namespace kernelzoo

TORCH_LIBRARY_IMPL(kernelzoo, CPU, m) {
  m.impl("roi_align", &kernelzoo::roi_detail::roi_align_cpu);
  m.impl("_roi_align_backward", &kernelzoo::roi_detail::roi_align_backward_cpu);
}

TORCH_LIBRARY_IMPL(kernelzoo, QuantizedCPU, m) {
  m.impl("roi_align", &kernelzoo::roi_detail::roi_align_quantized_cpu);
}
