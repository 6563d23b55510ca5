// CPU kernels of roi_pool and its backward.
//
// A bin is a rectangle of pixels, rows [h0, h1) x columns [w0, w1), from
// roi_math.h's geometry (shared with the CUDA kernels), computed once per
// roi and used for every channel. Parallelization and determinism: see
// roi_cpu.h (units = image x channel block, each output and grad_input element
// owned by one unit). Forward: kCB channels per vector compare-and-select over
// the unit's tile (whole-plane or per-roi, see roi_cpu.h's forward_units). The
// maximum is strict (">"): the first pixel in row-major order wins ties and NaN
// is never selected, as in torchvision. Backward: each unit adds grad at argmax
// into its own planes, the rois of its image in increasing order.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

#include "../../common/cpu_vec.h"
#include "../../common/dispatch.h"
#include "roi_args.h"
#include "roi_cpu.h"
#include "roi_math.h"

namespace kernelzoo {
namespace roi_detail {

// The bins of one roi: rows [h0[ph], h1[ph]) and columns [w0[pw], w1[pw]).
struct RoiBins {
  std::vector<int32_t> h0, h1, w0, w1;
  int64_t work = 0;  // pixels over all bins: work per channel
  int64_t row0 = 0, row1 = 0, col0 = 0, col1 = 0;  // pixels the bins cover: [row0, row1) x [col0, col1)
};

namespace {

// The bins [lo[p], hi[p]) of one axis, the pixels they hold (summed) and the
// span of the non-empty ones.
template <typename acc_t>
int64_t axis_bins(int start, acc_t bin, int pooled, int size, std::vector<int32_t>& lo,
                  std::vector<int32_t>& hi, Span& span) {
  lo.resize(pooled);
  hi.resize(pooled);
  int64_t pixels = 0;
  for (int p = 0; p < pooled; ++p) {
    int l, h;
    pool_bin(start, bin, p, size, l, h);
    lo[p] = l;
    hi[p] = h;
    if (h > l) {
      pixels += h - l;
      span.include(l, h - 1);
    }
  }
  return pixels;
}

template <typename acc_t>
std::vector<RoiBins> build_bins(const std::vector<RoiBox<acc_t>>& boxes, const Args& a, int height,
                                int width) {
  const int64_t k = static_cast<int64_t>(boxes.size());
  std::vector<RoiBins> bins(k);
  const int ph = static_cast<int>(a.pooled_h), pw = static_cast<int>(a.pooled_w);
  at::parallel_for(0, k, 256, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const auto g = pool_roi<acc_t>(boxes[i], static_cast<acc_t>(a.spatial_scale), ph, pw);
      RoiBins& t = bins[i];
      Span rows{height, -1}, cols{width, -1};
      const int64_t r = axis_bins(g.start_h, g.bin_h, ph, height, t.h0, t.h1, rows);
      const int64_t c = axis_bins(g.start_w, g.bin_w, pw, width, t.w0, t.w1, cols);
      t.work = r * c;
      if (t.work > 0) {  // the union of the non-empty bins
        t.row0 = rows.lo;
        t.row1 = rows.hi + 1;
        t.col0 = cols.lo;
        t.col1 = cols.hi + 1;
      }
    }
  });
  return bins;
}

}  // namespace

// --- vectorized inner loop (one channel block, one roi), multiversioned ----------

template <typename acc_t, typename Pixels>
KZ_ALWAYS_INLINE void forward_block_impl(const Pixels& px, int width, const RoiBins& t,
                                         acc_t* KZ_RESTRICT out, int32_t* KZ_RESTRICT arg) {
  const int pooled_h = static_cast<int>(t.h0.size()), pooled_w = static_cast<int>(t.w0.size());
  for (int ph = 0; ph < pooled_h; ++ph) {
    const int h0 = t.h0[ph], h1 = t.h1[ph];
    for (int pw = 0; pw < pooled_w; ++pw) {
      const int w0 = t.w0[pw], w1 = t.w1[pw];
      const bool empty = h1 <= h0 || w1 <= w0;
      const int b = ph * pooled_w + pw;
      alignas(64) acc_t lanes[kCB];
#if defined(KZ_VECTOR_EXTENSIONS)
      using V = typename ChannelLanes<acc_t>::type;
      using M = typename ChannelLanes<acc_t>::mask;
      V m = V{} + (empty ? acc_t(0) : acc_t(kPoolLowest));
      M a = M{} - 1;
      for (int y = h0; y < h1; ++y) {
        for (int x = w0; x < w1; ++x) {
          px.load(y, x, lanes);
          V v;
          std::memcpy(&v, lanes, sizeof(V));
          const M gt = v > m;  // strict: NaN and ties keep the earlier value
          m = gt ? v : m;
          a = gt ? M{} + (y * width + x) : a;
        }
      }
      std::memcpy(out + b * kCB, &m, sizeof(V));
      for (int j = 0; j < kCB; ++j) arg[b * kCB + j] = static_cast<int32_t>(a[j]);
#else
      acc_t m[kCB];
      int32_t a[kCB];
      for (int j = 0; j < kCB; ++j) {
        m[j] = empty ? acc_t(0) : acc_t(kPoolLowest);
        a[j] = -1;
      }
      for (int y = h0; y < h1; ++y) {
        for (int x = w0; x < w1; ++x) {
          px.load(y, x, lanes);
          const int32_t idx = y * width + x;
          for (int j = 0; j < kCB; ++j) {
            const bool gt = lanes[j] > m[j];
            m[j] = gt ? lanes[j] : m[j];
            a[j] = gt ? idx : a[j];
          }
        }
      }
      for (int j = 0; j < kCB; ++j) {
        out[b * kCB + j] = m[j];
        arg[b * kCB + j] = a[j];
      }
#endif
    }
  }
}

// One clone set per pixel source and accumulation type.
#define KZ_ROI_POOL_FORWARD_BLOCK(PIXELS, ACC)                                               \
  KZ_CPU_CLONES void forward_block(const PIXELS& px, int width, const RoiBins& t, ACC* out, \
                                   int32_t* arg) {                                           \
    forward_block_impl<ACC>(px, width, t, out, arg);                                         \
  }
KZ_ROI_POOL_FORWARD_BLOCK(TilePixels<float>, float)
KZ_ROI_POOL_FORWARD_BLOCK(TilePixels<double>, double)
KZ_ROI_POOL_FORWARD_BLOCK(InputPixels<float>, float)
KZ_ROI_POOL_FORWARD_BLOCK(InputPixels<double>, double)
KZ_ROI_POOL_FORWARD_BLOCK(InputPixels<c10::Half>, float)
KZ_ROI_POOL_FORWARD_BLOCK(InputPixels<c10::BFloat16>, float)
#undef KZ_ROI_POOL_FORWARD_BLOCK

namespace {

template <typename scalar_t>
void forward_cpu(const Forward& f) {
  using acc_t = acc_type_t<scalar_t>;
  const at::Tensor& input = f.input;
  const BatchGroups groups = group_by_batch("roi_pool", f.rois, input.size(0));
  if (f.output.numel() == 0) return;
  const int width = static_cast<int>(input.size(3));
  const auto bins = build_bins<acc_t>(load_boxes<acc_t>(f.rois, input.size(0)), f.args,
                                      static_cast<int>(input.size(2)), width);
  forward_units<scalar_t>(f, groups, bins,
                          [&](const auto& pixels, const RoiBins& t, acc_t* out, int32_t* arg) {
                            forward_block(pixels, width, t, out, arg);
                          });
}

template <typename scalar_t>
void backward_cpu(const Backward& bw) {
  using acc_t = acc_type_t<scalar_t>;
  const int64_t n_img = bw.batch_size, channels = bw.channels;
  const int64_t plane = bw.height * bw.width;
  const int64_t nbins = bw.args.pooled_h * bw.args.pooled_w;
  const int ph = static_cast<int>(bw.args.pooled_h), pw = static_cast<int>(bw.args.pooled_w);
  const BatchGroups groups = group_by_batch("_roi_pool_backward", bw.rois, n_img);
  if (bw.grad_input.numel() == 0) return;
  const Strides4 gs = strides_of(bw.grad);
  const scalar_t* grad = bw.grad.const_data_ptr<scalar_t>();
  const int32_t* argmax = bw.argmax.const_data_ptr<int32_t>();
  scalar_t* out = bw.grad_input.mutable_data_ptr<scalar_t>();
  std::atomic<bool> bad_argmax{false};

  const int64_t work = bw.grad.numel() + bw.grad_input.numel();
  for_each_unit(n_img, channels, work, [&](int64_t n, int64_t c0, int64_t cbn, Scratch& scratch) {
    bool bad = false;
    const int64_t g_h = gs.h, g_w = gs.w;
    const uint32_t limit = static_cast<uint32_t>(plane);
    // One channel at a time: float16/bfloat16 sum in one float32 plane.
    for (int64_t j = 0; j < cbn; ++j) {
      scalar_t* o = out + (n * channels + c0 + j) * plane;
      acc_t* KZ_RESTRICT p = zeroed_sums(o, plane, scratch);
      for (int64_t i = groups.begin[n]; i < groups.begin[n + 1]; ++i) {
        const int64_t k = groups.order[i];
        const scalar_t* KZ_RESTRICT g = grad + k * gs.n + (c0 + j) * gs.c;
        const int32_t* KZ_RESTRICT a = argmax + (k * channels + c0 + j) * nbins;
        for (int y = 0; y < ph; ++y) {
          for (int x = 0; x < pw; ++x) {
            const int32_t idx = a[y * pw + x];
            // idx == -1: empty bin, no gradient; idx outside the plane: not an argmax of roi_pool
            if (static_cast<uint32_t>(idx) < limit) {
              p[idx] += static_cast<acc_t>(g[y * g_h + x * g_w]);
            } else if (idx != -1) {
              bad = true;
            }
          }
        }
      }
      store_sums(o, p, plane);
    }
    if (bad) bad_argmax = true;
  });
  TORCH_CHECK(!bad_argmax, "_roi_pool_backward: argmax holds an index outside the input plane "
              "[0, H * W) = [0, ", plane, "); pass the argmax returned by roi_pool for the same "
              "input size");
}

std::tuple<at::Tensor, at::Tensor> roi_pool_cpu(const at::Tensor& input, const at::Tensor& rois,
                                                double spatial_scale, int64_t pooled_h,
                                                int64_t pooled_w) {
  const Forward f =
      prepare_forward(RoiOp::Pool, input, rois, Args{spatial_scale, pooled_h, pooled_w});
  KZ_DISPATCH_FLOATING_TYPES(input.scalar_type(), "roi_pool", [&] { forward_cpu<scalar_t>(f); });
  return {f.output, f.argmax};
}

at::Tensor roi_pool_backward_cpu(const at::Tensor& grad, const at::Tensor& rois,
                                 const at::Tensor& argmax, double spatial_scale, int64_t pooled_h,
                                 int64_t pooled_w, int64_t batch_size, int64_t channels,
                                 int64_t height, int64_t width) {
  const Backward b = prepare_backward(RoiOp::Pool, grad, rois, argmax,
                                      Args{spatial_scale, pooled_h, pooled_w}, batch_size,
                                      channels, height, width);
  KZ_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "_roi_pool_backward",
                             [&] { backward_cpu<scalar_t>(b); });
  return b.grad_input;
}

}  // namespace
}  // namespace roi_detail
}  // namespace kernelzoo

TORCH_LIBRARY_IMPL(kernelzoo, CPU, m) {
  m.impl("roi_pool", &kernelzoo::roi_detail::roi_pool_cpu);
  m.impl("_roi_pool_backward", &kernelzoo::roi_detail::roi_pool_backward_cpu);
}
