// roi_align / roi_pool through the C++ API (kernelzoo::roi_align, ...), against
// plain loops written from the definitions (torchvision's semantics), one
// sample and one pixel at a time, summed in double. Box geometry is computed in
// G, the precision the kernels use for it (double for float64 inputs, float
// otherwise), so that discrete choices (sampling grid, rounded corners, bin
// edges) are the same on both sides.
// Per-op ATen headers rather than ATen/ATen.h: half the compile time.
#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/abs.h>
#include <ATen/ops/allclose.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/full.h>
#include <ATen/ops/max.h>
#include <ATen/ops/rand.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/sub.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "ops/roi/roi.h"

namespace {

at::Tensor make_boxes(int64_t n_img, int64_t k, int64_t height, int64_t width, double scale,
                      uint64_t seed) {
  at::manual_seed(seed);
  const at::Tensor u = at::rand({k, 4}, at::kDouble);
  const double W = width / scale, H = height / scale;
  std::vector<double> v;
  for (int64_t i = 0; i < k; ++i) {
    const double a = u[i][0].item<double>(), b = u[i][1].item<double>();
    const double c = u[i][2].item<double>(), d = u[i][3].item<double>();
    double x1, y1, x2, y2;
    switch (i % 5) {
      case 1:  // partly outside
        x1 = -W * 0.3 + a * W * 0.4, y1 = H * 0.5 + b * H * 0.4;
        x2 = x1 + W * (0.2 + c * 0.6), y2 = y1 + H * (0.2 + d * 0.6);
        break;
      case 2:  // wholly outside
        x1 = a * W, y1 = -H - 2 / scale - b * H, x2 = x1 + 2 / scale, y2 = y1 + 3 / scale;
        break;
      case 3:  // degenerate
        x1 = a * W, y1 = b * H, x2 = x1, y2 = d < 0.5 ? y1 : y1 + 0.5;
        break;
      default:
        x1 = a * W * 0.8, y1 = b * H * 0.8;
        x2 = x1 + 1 + c * (W - x1 - 1), y2 = y1 + 1 + d * (H - y1 - 1);
    }
    const double q[4] = {x1, y1, x2, y2};
    v.push_back(static_cast<double>((i * 7) % n_img));
    for (double x : q) v.push_back(std::round(x * 4) / 4);
  }
  return at::tensor(v, at::kDouble).reshape({k, 5});
}

// --- loop references --------------------------------------------------------------

template <typename G>
struct Sample {
  bool valid;
  int lo, hi;
  double wlo, whi;
};

template <typename G>
Sample<G> interp(G v, int64_t size) {
  if (v < G(-1) || v > G(size) || size <= 0) return {false, 0, 0, 0, 0};
  if (v <= 0) v = 0;
  int lo = static_cast<int>(v), hi;
  if (lo >= size - 1) {
    hi = lo = static_cast<int>(size - 1);
    v = static_cast<G>(lo);
  } else {
    hi = lo + 1;
  }
  const G l = v - static_cast<G>(lo);
  return {true, lo, hi, static_cast<double>(G(1) - l), static_cast<double>(l)};
}

template <typename G>
int grid(G roi, int64_t pooled, int64_t sampling_ratio) {
  if (sampling_ratio > 0) return static_cast<int>(sampling_ratio);
  const G g = std::ceil(roi / static_cast<G>(pooled));
  return g > 0 ? static_cast<int>(g) : 0;
}

// roi_align forward (backward when grad is defined: returns grad_input).
template <typename G>
at::Tensor loop_roi_align(const at::Tensor& input, const at::Tensor& rois, double scale,
                          int64_t ph, int64_t pw, int64_t sr, bool aligned,
                          const at::Tensor& grad = {}) {
  const at::Tensor x = input.to(at::kDouble).contiguous();
  const at::Tensor r = rois.to(at::kDouble);
  const int64_t K = r.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  at::Tensor out = at::zeros({K, C, ph, pw}, at::kDouble);
  at::Tensor gin = at::zeros_like(x);
  at::Tensor g = grad.defined() ? grad.to(at::kDouble) : at::zeros({K, C, ph, pw}, at::kDouble);
  auto X = x.accessor<double, 4>();
  auto O = out.accessor<double, 4>();
  auto GI = gin.accessor<double, 4>();
  auto GO = g.accessor<double, 4>();
  for (int64_t k = 0; k < K; ++k) {
    const int64_t b = static_cast<int64_t>(r[k][0].item<double>());
    const G off = aligned ? G(0.5) : G(0), s = static_cast<G>(scale);
    const G sw = static_cast<G>(r[k][1].item<double>()) * s - off;
    const G sh = static_cast<G>(r[k][2].item<double>()) * s - off;
    G rw = static_cast<G>(r[k][3].item<double>()) * s - off - sw;
    G rh = static_cast<G>(r[k][4].item<double>()) * s - off - sh;
    if (!aligned) {
      rw = rw < G(1) ? G(1) : rw;
      rh = rh < G(1) ? G(1) : rh;
    }
    const G bh = rh / static_cast<G>(ph), bw = rw / static_cast<G>(pw);
    const int gh = grid(rh, ph, sr), gw = grid(rw, pw, sr);
    const double count = std::max(gh * gw, 1);
    for (int64_t c = 0; c < C; ++c) {
      for (int64_t p = 0; p < ph; ++p) {
        for (int64_t q = 0; q < pw; ++q) {
          double sum = 0;
          for (int iy = 0; iy < gh; ++iy) {
            const G y = sh + static_cast<G>(p) * bh + static_cast<G>(iy + .5f) * bh / static_cast<G>(gh);
            for (int ix = 0; ix < gw; ++ix) {
              const G xx = sw + static_cast<G>(q) * bw + static_cast<G>(ix + .5f) * bw / static_cast<G>(gw);
              const Sample<G> sy = interp(y, H), sx = interp(xx, W);
              if (!sy.valid || !sx.valid) continue;
              const double w[4] = {sy.wlo * sx.wlo, sy.wlo * sx.whi, sy.whi * sx.wlo, sy.whi * sx.whi};
              const int ys[4] = {sy.lo, sy.lo, sy.hi, sy.hi}, xs[4] = {sx.lo, sx.hi, sx.lo, sx.hi};
              for (int t = 0; t < 4; ++t) {
                sum += w[t] * X[b][c][ys[t]][xs[t]];
                GI[b][c][ys[t]][xs[t]] += GO[k][c][p][q] * w[t] / count;
              }
            }
          }
          O[k][c][p][q] = sum / count;
        }
      }
    }
  }
  return grad.defined() ? gin : out;
}

// roi_pool: (output, argmax), or grad_input when grad is defined.
template <typename G>
std::vector<at::Tensor> loop_roi_pool(const at::Tensor& input, const at::Tensor& rois, double scale,
                                      int64_t ph, int64_t pw, const at::Tensor& grad = {}) {
  const at::Tensor x = input.to(at::kDouble).contiguous();
  const at::Tensor r = rois.to(at::kDouble);
  const int64_t K = r.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  at::Tensor out = at::zeros({K, C, ph, pw}, at::kDouble);
  at::Tensor arg = at::full({K, C, ph, pw}, -1, at::kInt);
  at::Tensor gin = at::zeros_like(x);
  auto X = x.accessor<double, 4>();
  auto O = out.accessor<double, 4>();
  auto A = arg.accessor<int32_t, 4>();
  auto GI = gin.accessor<double, 4>();
  const at::Tensor g = grad.defined() ? grad.to(at::kDouble) : out;
  auto GO = g.accessor<double, 4>();
  const G s = static_cast<G>(scale);
  for (int64_t k = 0; k < K; ++k) {
    const int64_t b = static_cast<int64_t>(r[k][0].item<double>());
    const int x1 = static_cast<int>(std::round(static_cast<G>(r[k][1].item<double>()) * s));
    const int y1 = static_cast<int>(std::round(static_cast<G>(r[k][2].item<double>()) * s));
    const int x2 = static_cast<int>(std::round(static_cast<G>(r[k][3].item<double>()) * s));
    const int y2 = static_cast<int>(std::round(static_cast<G>(r[k][4].item<double>()) * s));
    const G bh = static_cast<G>(std::max(y2 - y1 + 1, 1)) / static_cast<G>(ph);
    const G bw = static_cast<G>(std::max(x2 - x1 + 1, 1)) / static_cast<G>(pw);
    for (int64_t p = 0; p < ph; ++p) {
      for (int64_t q = 0; q < pw; ++q) {
        auto clip = [](int64_t v, int64_t size) { return std::min(std::max<int64_t>(v, 0), size); };
        const int64_t h0 = clip(static_cast<int64_t>(std::floor(static_cast<G>(p) * bh)) + y1, H);
        const int64_t h1 = clip(static_cast<int64_t>(std::ceil(static_cast<G>(p + 1) * bh)) + y1, H);
        const int64_t w0 = clip(static_cast<int64_t>(std::floor(static_cast<G>(q) * bw)) + x1, W);
        const int64_t w1 = clip(static_cast<int64_t>(std::ceil(static_cast<G>(q + 1) * bw)) + x1, W);
        const bool empty = h1 <= h0 || w1 <= w0;
        for (int64_t c = 0; c < C; ++c) {
          double best = empty ? 0.0 : -static_cast<double>(FLT_MAX);
          int32_t best_idx = -1;
          for (int64_t yy = h0; yy < h1; ++yy) {
            for (int64_t xx = w0; xx < w1; ++xx) {
              if (X[b][c][yy][xx] > best) {
                best = X[b][c][yy][xx];
                best_idx = static_cast<int32_t>(yy * W + xx);
              }
            }
          }
          O[k][c][p][q] = best;
          A[k][c][p][q] = best_idx;
          if (best_idx >= 0) GI[b][c][best_idx / W][best_idx % W] += GO[k][c][p][q];
        }
      }
    }
  }
  if (grad.defined()) return {gin};
  return {out, arg};
}

double tolerance(at::ScalarType t) {
  switch (t) {
    case at::kDouble: return 1e-12;
    case at::kFloat: return 2e-6;
    case at::kHalf: return 1e-3;   // one rounding of the output
    default: return 8e-3;          // bfloat16
  }
}

void expect_close(const at::Tensor& got, const at::Tensor& want, const std::string& what) {
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  const double tol = tolerance(got.scalar_type());
  EXPECT_TRUE(at::allclose(got.to(at::kDouble), want, tol, tol))
      << what << ": max abs diff " << at::sub(got.to(at::kDouble), want).abs().max().item<double>();
}

struct AlignCase {
  double scale;
  int64_t ph, pw, sr;
  bool aligned;
};
const std::vector<AlignCase> kAlign = {
    {0.5, 7, 7, 2, false}, {0.5, 3, 4, 2, true}, {1.0, 2, 3, -1, false},
    {1.0, 5, 2, 0, true},  {0.25, 1, 1, 1, false}, {0.7, 2, 5, 3, true},
};

class RoiApi : public ::testing::TestWithParam<at::ScalarType> {};

TEST_P(RoiApi, RoiAlignMatchesLoops) {
  const auto dtype = GetParam();
  at::manual_seed(1);
  // 37 channels: two whole 16-channel blocks and a partial one.
  const at::Tensor x = at::randn({3, 37, 11, 13}, at::kDouble).to(dtype);
  for (size_t i = 0; i < kAlign.size(); ++i) {
    const AlignCase& a = kAlign[i];
    const at::Tensor rois = make_boxes(3, 21, 11, 13, a.scale, 10 + i).to(dtype);
    const at::Tensor out = kernelzoo::roi_align(x, rois, a.scale, a.ph, a.pw, a.sr, a.aligned);
    EXPECT_EQ(out.scalar_type(), dtype);
    EXPECT_TRUE(out.is_contiguous());
    const bool dbl = dtype == at::kDouble;
    const at::Tensor want = dbl ? loop_roi_align<double>(x, rois, a.scale, a.ph, a.pw, a.sr, a.aligned)
                                : loop_roi_align<float>(x, rois, a.scale, a.ph, a.pw, a.sr, a.aligned);
    expect_close(out, want, "roi_align case " + std::to_string(i));
    // channels_last gives the same values
    EXPECT_TRUE(at::equal(kernelzoo::roi_align(x.contiguous(at::MemoryFormat::ChannelsLast), rois,
                                               a.scale, a.ph, a.pw, a.sr, a.aligned),
                          out));
    const at::Tensor grad = at::randn({21, 37, a.ph, a.pw}, at::kDouble).to(dtype);
    const at::Tensor gin = kernelzoo::roi_align_backward(grad, rois, a.scale, a.ph, a.pw, 3, 37, 11,
                                                         13, a.sr, a.aligned);
    const at::Tensor want_gin =
        dbl ? loop_roi_align<double>(x, rois, a.scale, a.ph, a.pw, a.sr, a.aligned, grad)
            : loop_roi_align<float>(x, rois, a.scale, a.ph, a.pw, a.sr, a.aligned, grad);
    expect_close(gin, want_gin, "roi_align_backward case " + std::to_string(i));
  }
}

TEST_P(RoiApi, RoiPoolMatchesLoops) {
  const auto dtype = GetParam();
  at::manual_seed(2);
  const at::Tensor x = at::randn({3, 37, 11, 13}, at::kDouble).to(dtype);
  for (size_t i = 0; i < kAlign.size(); ++i) {
    const AlignCase& a = kAlign[i];
    const at::Tensor rois = make_boxes(3, 21, 11, 13, a.scale, 20 + i).to(dtype);
    const auto [out, argmax] = kernelzoo::roi_pool(x, rois, a.scale, a.ph, a.pw);
    const auto want = dtype == at::kDouble ? loop_roi_pool<double>(x, rois, a.scale, a.ph, a.pw)
                                           : loop_roi_pool<float>(x, rois, a.scale, a.ph, a.pw);
    EXPECT_TRUE(at::equal(out.to(at::kDouble), want[0])) << "roi_pool case " << i;
    EXPECT_TRUE(at::equal(argmax, want[1])) << "roi_pool argmax case " << i;
    const at::Tensor grad = at::randn({21, 37, a.ph, a.pw}, at::kDouble).to(dtype);
    const at::Tensor gin = kernelzoo::roi_pool_backward(grad, rois, argmax, a.scale, a.ph, a.pw, 3,
                                                        37, 11, 13);
    const auto want_gin = dtype == at::kDouble
                              ? loop_roi_pool<double>(x, rois, a.scale, a.ph, a.pw, grad)
                              : loop_roi_pool<float>(x, rois, a.scale, a.ph, a.pw, grad);
    expect_close(gin, want_gin[0], "roi_pool_backward case " + std::to_string(i));
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, RoiApi,
                         ::testing::Values(at::kDouble, at::kFloat, at::kHalf, at::kBFloat16),
                         [](const auto& info) { return std::string(c10::toString(info.param)); });

// The backward is the same, bit for bit, whatever the number of threads.
TEST(RoiApiDeterminism, BackwardIndependentOfThreads) {
  at::manual_seed(3);
  const at::Tensor x = at::randn({2, 48, 16, 20});
  const at::Tensor rois = make_boxes(2, 200, 16, 20, 1.0, 30).to(at::kFloat);
  const at::Tensor grad = at::randn({200, 48, 7, 7});
  const auto argmax = std::get<1>(kernelzoo::roi_pool(x, rois, 1.0, 7, 7));
  const int threads = at::get_num_threads();
  std::vector<at::Tensor> align, pool;
  for (int n : {threads, 1, 3}) {
    at::set_num_threads(n);
    align.push_back(kernelzoo::roi_align_backward(grad, rois, 1.0, 7, 7, 2, 48, 16, 20, -1, true));
    pool.push_back(kernelzoo::roi_pool_backward(grad, rois, argmax, 1.0, 7, 7, 2, 48, 16, 20));
  }
  at::set_num_threads(threads);
  for (size_t i = 1; i < align.size(); ++i) {
    EXPECT_TRUE(at::equal(align[i], align[0]));
    EXPECT_TRUE(at::equal(pool[i], pool[0]));
  }
}

// A box's output does not depend on the other boxes (whole-plane or per-box tiles).
TEST(RoiApiDeterminism, OutputIndependentOfOtherBoxes) {
  at::manual_seed(4);
  const at::Tensor x = at::randn({1, 20, 30, 40});
  const at::Tensor rois = make_boxes(1, 80, 30, 40, 1.0, 40).to(at::kFloat);
  const at::Tensor all = kernelzoo::roi_align(x, rois, 1.0, 5, 5, 2, true);
  const auto pool_all = std::get<0>(kernelzoo::roi_pool(x, rois, 1.0, 5, 5));
  for (int64_t k : {0, 3, 6}) {
    EXPECT_TRUE(at::equal(kernelzoo::roi_align(x, rois.slice(0, k, k + 1), 1.0, 5, 5, 2, true),
                          all.slice(0, k, k + 1)));
    EXPECT_TRUE(at::equal(std::get<0>(kernelzoo::roi_pool(x, rois.slice(0, k, k + 1), 1.0, 5, 5)),
                          pool_all.slice(0, k, k + 1)));
  }
}

void expect_error(const std::function<void()>& f, const std::string& message) {
  try {
    f();
    ADD_FAILURE() << "no error; expected: " << message;
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find(message), std::string::npos) << e.what();
  }
}

TEST(RoiApiErrors, Messages) {
  const at::Tensor x = at::zeros({2, 3, 5, 6});
  const at::Tensor r = at::tensor({0.0, 0.0, 0.0, 2.0, 2.0}).reshape({1, 5}).to(at::kFloat);
  expect_error([&] { kernelzoo::roi_align(x, r.slice(1, 0, 4), 1.0, 2, 2); },
               "roi_align: expected boxes as a Tensor[K, 5] of rows (batch_index, x1, y1, x2, y2), "
               "but got a tensor of shape [1, 4]");
  expect_error([&] { kernelzoo::roi_pool(x, r.to(at::kDouble), 1.0, 2, 2); },
               "roi_pool: input and boxes must have the same dtype, but got input float32 and boxes "
               "float64; convert the boxes with boxes.to(input.dtype)");
  expect_error([&] { kernelzoo::roi_align(x[0], r, 1.0, 2, 2); },
               "roi_align: expected input of shape (N, C, H, W), but got a tensor with 3 "
               "dimension(s), of shape [3, 5, 6]");
  expect_error([&] { kernelzoo::roi_align(x, r, 1.0, -1, 2); },
               "roi_align: output_size must be non-negative, but got (-1, 2)");
  const at::Tensor bad = at::tensor({5.0, 0.0, 0.0, 2.0, 2.0}).reshape({1, 5}).to(at::kFloat);
  expect_error([&] { kernelzoo::roi_pool(x, bad, 1.0, 2, 2); },
               "roi_pool: boxes[0, 0] = 5 is not a valid batch index for an input with batch size 2 "
               "(expected 0 <= index < 2)");
  expect_error([&] { kernelzoo::roi_align_backward(at::zeros({1, 3, 2, 2}), bad, 1.0, 2, 2, 2, 3, 5, 6, 2,
                                                   false); },
               "_roi_align_backward: boxes[0, 0] = 5 is not a valid batch index");
  expect_error([&] { kernelzoo::roi_pool_backward(at::zeros({1, 3, 2, 2}), r, at::zeros({1, 3, 2, 2}),
                                                  1.0, 2, 2, 2, 3, 5, 6); },
               "_roi_pool_backward: expected argmax of dtype int32 (the second output of roi_pool), "
               "but got float32");
}

}  // namespace
