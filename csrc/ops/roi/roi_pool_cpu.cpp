// CPU kernels of roi_pool and its backward.
//
// A bin is a rectangle of pixels, rows [h0, h1) x columns [w0, w1), from
// roi_common.h's geometry (shared with the CUDA kernels), computed once per
// roi and used for every channel. Parallelization and determinism: see
// roi_cpu.h (units = image x channel block, each output and grad_input element
// owned by one unit). Forward: kCB channels per vector compare-and-select over
// the unit's tile (whole-plane or per-roi, see roi_cpu.h). The maximum is strict (">"): the first pixel in row-major order wins
// ties and NaN is never selected, as in torchvision. Backward: each unit adds
// grad at argmax into its own planes, the rois of its image in increasing order.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

#include "../../common/cpu_clones.h"
#include "roi_common.h"
#include "roi_cpu.h"
#include "roi_host.h"
#include "roi_pool.h"
#include "roi_pool_host.h"

namespace kernelzoo {
namespace roi_pool_detail {

using roi_detail::kCB;

// The bins of one roi: rows [h0[ph], h1[ph]) and columns [w0[pw], w1[pw]).
struct RoiBins {
  std::vector<int32_t> h0, h1, w0, w1;
  int64_t pixels = 0;  // pixels over all bins: work per channel
  int64_t row0 = 0, row1 = 0, col0 = 0, col1 = 0;  // pixels the bins cover: [row0, row1) x [col0, col1)
};

namespace {

template <typename acc_t>
std::vector<RoiBins> build_bins(const at::Tensor& rois_acc, const Args& a, int height, int width) {
  const int64_t k = rois_acc.size(0);
  std::vector<RoiBins> bins(k);
  const acc_t* r = rois_acc.const_data_ptr<acc_t>();
  const int ph = static_cast<int>(a.pooled_h), pw = static_cast<int>(a.pooled_w);
  at::parallel_for(0, k, 256, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const acc_t* b = r + i * 5;
      const auto g = roi_detail::pool_roi<acc_t>(b[1], b[2], b[3], b[4],
                                                 static_cast<acc_t>(a.spatial_scale), ph, pw);
      RoiBins& t = bins[i];
      t.h0.resize(ph);
      t.h1.resize(ph);
      t.w0.resize(pw);
      t.w1.resize(pw);
      int64_t rows = 0, cols = 0;
      for (int y = 0; y < ph; ++y) {
        int lo, hi;
        roi_detail::pool_bin(g.start_h, g.bin_h, y, height, lo, hi);
        t.h0[y] = lo;
        t.h1[y] = hi;
        rows += std::max(hi - lo, 0);
      }
      for (int x = 0; x < pw; ++x) {
        int lo, hi;
        roi_detail::pool_bin(g.start_w, g.bin_w, x, width, lo, hi);
        t.w0[x] = lo;
        t.w1[x] = hi;
        cols += std::max(hi - lo, 0);
      }
      t.pixels = rows * cols;
      if (t.pixels > 0) {  // the union of the non-empty bins
        t.row0 = height;
        t.col0 = width;
        for (int y = 0; y < ph; ++y) {
          if (t.h1[y] <= t.h0[y]) continue;
          t.row0 = std::min<int64_t>(t.row0, t.h0[y]);
          t.row1 = std::max<int64_t>(t.row1, t.h1[y]);
        }
        for (int x = 0; x < pw; ++x) {
          if (t.w1[x] <= t.w0[x]) continue;
          t.col0 = std::min<int64_t>(t.col0, t.w0[x]);
          t.col1 = std::max<int64_t>(t.col1, t.w1[x]);
        }
      }
    }
  });
  return bins;
}

}  // namespace

// --- vectorized inner loop (one channel block, one roi), multiversioned ----------

template <typename acc_t>
KZ_ALWAYS_INLINE void forward_block_impl(const roi_detail::Tile<acc_t>& tile, int width,
                                         const RoiBins& t, acc_t* KZ_RESTRICT out,
                                         int32_t* KZ_RESTRICT arg) {
  const acc_t* KZ_RESTRICT src = tile.ptr;
  const int64_t sy = tile.sy, sx = tile.sx, row0 = tile.row0, col0 = tile.col0;
  const int pooled_h = static_cast<int>(t.h0.size()), pooled_w = static_cast<int>(t.w0.size());
  for (int ph = 0; ph < pooled_h; ++ph) {
    const int h0 = t.h0[ph], h1 = t.h1[ph];
    for (int pw = 0; pw < pooled_w; ++pw) {
      const int w0 = t.w0[pw], w1 = t.w1[pw];
      const bool empty = h1 <= h0 || w1 <= w0;
      const int b = ph * pooled_w + pw;
#if defined(KZ_VECTOR_EXTENSIONS)
      using V = typename roi_detail::Lanes<acc_t>::type;
      using M = typename roi_detail::Lanes<acc_t>::mask;
      V m = V{} + (empty ? acc_t(0) : acc_t(roi_detail::kPoolLowest));
      M a = M{} - 1;
      for (int y = h0; y < h1; ++y) {
        for (int x = w0; x < w1; ++x) {
          V v;
          std::memcpy(&v, src + (y - row0) * sy + (x - col0) * sx, sizeof(V));
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
        m[j] = empty ? acc_t(0) : acc_t(roi_detail::kPoolLowest);
        a[j] = -1;
      }
      for (int y = h0; y < h1; ++y) {
        for (int x = w0; x < w1; ++x) {
          const acc_t* px = src + (y - row0) * sy + (x - col0) * sx;
          const int32_t idx = y * width + x;
          for (int j = 0; j < kCB; ++j) {
            const bool gt = px[j] > m[j];
            m[j] = gt ? px[j] : m[j];
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

KZ_CPU_CLONES void forward_block(const roi_detail::Tile<float>& tile, int width, const RoiBins& t,
                                 float* out, int32_t* arg) {
  forward_block_impl(tile, width, t, out, arg);
}
KZ_CPU_CLONES void forward_block(const roi_detail::Tile<double>& tile, int width,
                                 const RoiBins& t, double* out, int32_t* arg) {
  forward_block_impl(tile, width, t, out, arg);
}

namespace {

struct Scratch : roi_detail::Scratch {
  std::vector<int32_t> arg;  // the bins' argmax, as buf holds their maxima
};

template <typename scalar_t>
void forward_cpu(const Forward& f) {
  using acc_t = at::opmath_type<scalar_t>;
  const at::Tensor& input = f.input;
  const int64_t n_img = input.size(0), channels = input.size(1);
  const int64_t height = input.size(2), width = input.size(3);
  const int ph = static_cast<int>(f.args.pooled_h), pw = static_cast<int>(f.args.pooled_w);
  const int64_t nbins = int64_t{ph} * pw;
  const roi_detail::BatchGroups groups = roi_detail::group_by_batch("roi_pool", f.rois, n_img);
  if (f.output.numel() == 0) return;
  const at::Tensor rois_acc = f.rois.to(c10::CppTypeToScalarType<acc_t>::value).contiguous();
  const auto bins = build_bins<acc_t>(rois_acc, f.args, static_cast<int>(height),
                                      static_cast<int>(width));
  // Whole-plane tiles or per-roi tiles, as in roi_align_cpu.cpp.
  std::vector<int64_t> area(n_img, 0);
  int64_t work = 0;
  for (int64_t n = 0; n < n_img; ++n) {
    for (int64_t i = groups.begin[n]; i < groups.begin[n + 1]; ++i) {
      const RoiBins& t = bins[groups.order[i]];
      area[n] += (t.row1 - t.row0) * (t.col1 - t.col0);
      work += t.pixels + nbins;
    }
  }
  work *= channels;
  const roi_detail::Strides4 s = roi_detail::strides_of(input);
  const scalar_t* in = input.const_data_ptr<scalar_t>();
  scalar_t* out = f.output.mutable_data_ptr<scalar_t>();
  int32_t* arg = f.argmax.mutable_data_ptr<int32_t>();

  roi_detail::for_each_unit<Scratch>(n_img, channels, work, [&](int64_t n, int64_t c0, int64_t cbn,
                                                                Scratch& scratch) {
    const int64_t first = groups.begin[n], last = groups.begin[n + 1];
    if (first == last) return;
    auto& tile_buf = scratch.tile(acc_t{});
    const bool whole = area[n] >= height * width;
    roi_detail::Tile<acc_t> tile{};
    if (whole) tile = roi_detail::build_tile(in, s, n, c0, cbn, 0, height, 0, width, tile_buf);
    auto& buf = scratch.buf(acc_t{});
    buf.resize(nbins * kCB);
    scratch.arg.resize(nbins * kCB);
    for (int64_t i = first; i < last; ++i) {
      const int64_t k = groups.order[i];
      const RoiBins& t = bins[k];
      if (!whole) tile = roi_detail::build_tile(in, s, n, c0, cbn, t.row0, t.row1, t.col0, t.col1, tile_buf);
      forward_block(tile, static_cast<int>(width), t, buf.data(), scratch.arg.data());
      scalar_t* o = out + (k * channels + c0) * nbins;
      int32_t* a = arg + (k * channels + c0) * nbins;
      for (int64_t j = 0; j < cbn; ++j) {
        for (int64_t b = 0; b < nbins; ++b) {
          o[j * nbins + b] = static_cast<scalar_t>(buf[b * kCB + j]);
          a[j * nbins + b] = scratch.arg[b * kCB + j];
        }
      }
    }
  });
}

template <typename scalar_t>
void backward_cpu(const Backward& bw) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t n_img = bw.batch_size, channels = bw.channels;
  const int64_t plane = bw.height * bw.width;
  const int64_t nbins = bw.args.pooled_h * bw.args.pooled_w;
  const int ph = static_cast<int>(bw.args.pooled_h), pw = static_cast<int>(bw.args.pooled_w);
  const roi_detail::BatchGroups groups =
      roi_detail::group_by_batch("_roi_pool_backward", bw.rois, n_img);
  if (bw.grad_input.numel() == 0) return;
  const roi_detail::Strides4 gs = roi_detail::strides_of(bw.grad);
  const scalar_t* grad = bw.grad.const_data_ptr<scalar_t>();
  const int32_t* argmax = bw.argmax.const_data_ptr<int32_t>();
  scalar_t* out = bw.grad_input.mutable_data_ptr<scalar_t>();
  std::atomic<bool> bad_argmax{false};

  const int64_t work = bw.grad.numel() + bw.grad_input.numel();
  using TileScratch = roi_detail::Scratch;
  roi_detail::for_each_unit<TileScratch>(n_img, channels, work, [&](int64_t n, int64_t c0,
                                                                    int64_t cbn,
                                                                    TileScratch& scratch) {
    scalar_t* o = out + (n * channels + c0) * plane;
    const int64_t first = groups.begin[n], last = groups.begin[n + 1];
    // float32/float64 accumulate in place; float16/bfloat16 in float32 planes.
    acc_t* acc;
    if constexpr (std::is_same_v<scalar_t, acc_t>) {
      acc = o;
    } else {
      auto& buf = scratch.tile(acc_t{});
      buf.resize(cbn * plane);
      acc = buf.data();
    }
    std::fill(acc, acc + cbn * plane, acc_t(0));
    bool bad = false;
    const int64_t g_h = gs.h, g_w = gs.w;
    const uint32_t limit = static_cast<uint32_t>(plane);
    for (int64_t i = first; i < last; ++i) {
      const int64_t k = groups.order[i];
      for (int64_t j = 0; j < cbn; ++j) {
        const scalar_t* KZ_RESTRICT g = grad + k * gs.n + (c0 + j) * gs.c;
        const int32_t* KZ_RESTRICT a = argmax + (k * channels + c0 + j) * nbins;
        acc_t* KZ_RESTRICT p = acc + j * plane;
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
    }
    if (bad) bad_argmax = true;
    if constexpr (!std::is_same_v<scalar_t, acc_t>) {
      for (int64_t e = 0; e < cbn * plane; ++e) o[e] = static_cast<scalar_t>(acc[e]);
    }
  });
  TORCH_CHECK(!bad_argmax, "_roi_pool_backward: argmax holds an index outside the input plane "
              "[0, H * W) = [0, ", plane, "); pass the argmax returned by roi_pool for the same "
              "input size");
}

std::tuple<at::Tensor, at::Tensor> roi_pool_cpu(const at::Tensor& input, const at::Tensor& rois,
                                                double spatial_scale, int64_t pooled_h,
                                                int64_t pooled_w) {
  const Forward f = prepare_forward(input, rois, Args{spatial_scale, pooled_h, pooled_w});
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "roi_pool",
                                  [&] { forward_cpu<scalar_t>(f); });
  return {f.output, f.argmax};
}

at::Tensor roi_pool_backward_cpu(const at::Tensor& grad, const at::Tensor& rois,
                                 const at::Tensor& argmax, double spatial_scale, int64_t pooled_h,
                                 int64_t pooled_w, int64_t batch_size, int64_t channels,
                                 int64_t height, int64_t width) {
  const Backward b = prepare_backward(grad, rois, argmax, Args{spatial_scale, pooled_h, pooled_w},
                                      batch_size, channels, height, width);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(),
                                  "_roi_pool_backward", [&] { backward_cpu<scalar_t>(b); });
  return b.grad_input;
}

}  // namespace
}  // namespace roi_pool_detail
}  // namespace kernelzoo

TORCH_LIBRARY_IMPL(kernelzoo, CPU, m) {
  m.impl("roi_pool", &kernelzoo::roi_pool_detail::roi_pool_cpu);
  m.impl("_roi_pool_backward", &kernelzoo::roi_pool_detail::roi_pool_backward_cpu);
}
