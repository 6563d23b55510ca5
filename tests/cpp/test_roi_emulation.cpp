// roi_align / roi_pool CUDA kernels (roi_kernel.cuh) run on the CPU through
// the execution harness, with the launcher's own choices of element and index
// type, parameters, grid, scratch buffers and kernel order (roi_plan.h),
// compared with the CPU kernels through the C++ API: forward, the atomic
// backward and the deterministic backward.
#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/allclose.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/full.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/sub.h>
#include <ATen/ops/abs.h>
#include <ATen/ops/max.h>
#include <ATen/ops/nan_to_num.h>
#include <ATen/ops/rand.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <c10/util/StringUtil.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "common/index_width.h"
#include "ops/roi/roi.h"
#include "ops/roi/roi_args.h"
// The harness adapter, then the plan and its kernel bodies: device code.
#include "harness_launch.h"
#include "ops/roi/roi_plan.h"

namespace {

namespace rd = kernelzoo::roi_detail;
using kernelzoo::Index;
using kernelzoo::harness::HarnessLaunch;
using rd::RoiOp;

using Path = kernelzoo::BackwardPath;

HarnessLaunch harness(Index index, unsigned grid_cap,
                      kernelzoo::harness::Schedule schedule = kernelzoo::harness::Schedule::Forward) {
  HarnessLaunch launch;
  launch.options.schedule = schedule;
  launch.grid_cap = grid_cap;
  launch.index = index;
  return launch;
}

// --- inputs ---------------------------------------------------------------------

// Boxes mixing the cases that matter (as tests/test_roi.py): inside, partly
// and wholly outside the map, tiny, degenerate, reversed. Multiples of 1/4.
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
    switch (i % 7) {
      case 3:  // partly outside
        x1 = -W * 0.3 + a * W * 0.4, y1 = H * 0.5 + b * H * 0.4;
        x2 = x1 + W * (0.2 + c * 0.6), y2 = y1 + H * (0.2 + d * 0.6);
        break;
      case 4:  // wholly outside
        x1 = W + 2 / scale + a * W, y1 = b * H, x2 = x1 + 2 / scale, y2 = y1 + 3 / scale;
        break;
      case 5:  // tiny or degenerate
        x1 = a * W, y1 = b * H, x2 = c < 0.5 ? x1 : x1 + 0.25, y2 = d < 0.7 ? y1 : y1 + 0.5;
        break;
      case 6:  // reversed
        x1 = a * W, y1 = b * H, x2 = x1 - c * W * 0.3, y2 = y1 + d * H * 0.3;
        break;
      default:  // inside
        x1 = a * W * 0.8, y1 = b * H * 0.8;
        x2 = x1 + 1 + c * (W - x1 - 1), y2 = y1 + 1 + d * (H - y1 - 1);
    }
    const double q[4] = {x1, y1, x2, y2};
    v.push_back(static_cast<double>(i % n_img));
    for (double x : q) v.push_back(std::round(x * 4) / 4);
  }
  return at::tensor(v, at::kDouble).reshape({k, 5});
}

enum class Layout { Contiguous, ChannelsLast, Strided };

at::Tensor make_input(std::vector<int64_t> shape, at::ScalarType dtype, Layout layout,
                      uint64_t seed) {
  at::manual_seed(seed);
  at::Tensor x = at::randn(shape, at::kDouble).to(dtype);
  if (layout == Layout::ChannelsLast) return x.contiguous(at::MemoryFormat::ChannelsLast);
  if (layout == Layout::Strided) {
    // every other column of a wider tensor, H and W swapped in memory
    at::Tensor wide = at::zeros({shape[0], shape[1], 2 * shape[3], shape[2]}, dtype).transpose(2, 3);
    at::Tensor view = wide.slice(3, 0, 2 * shape[3], 2);
    view.copy_(x);
    return view;
  }
  return x;
}

double tolerance(at::ScalarType dtype) {
  switch (dtype) {
    case at::kDouble: return 1e-12;
    case at::kFloat: return 2e-6;
    case at::kHalf: return 1e-3;      // one rounding of the output (float32 sums on both sides)
    default: return 8e-3;             // bfloat16: likewise
  }
}

void expect_close(const at::Tensor& got, const at::Tensor& want, const std::string& what) {
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  ASSERT_EQ(got.scalar_type(), want.scalar_type()) << what;
  EXPECT_TRUE(got.is_contiguous()) << what;
  const double tol = tolerance(want.scalar_type());
  EXPECT_TRUE(at::allclose(got.to(at::kDouble), want.to(at::kDouble), tol, tol))
      << what << ": max abs diff "
      << at::sub(got.to(at::kDouble), want.to(at::kDouble)).abs().max().item<double>();
}

// --- emulated ops ------------------------------------------------------------------

at::Tensor emulate_align(const at::Tensor& input, const at::Tensor& rois, const rd::Args& a,
                         Index index = Index::Auto, unsigned grid_cap = 0) {
  const rd::Forward f = rd::prepare_forward(RoiOp::Align, input, rois, a);
  rd::launch_forward(f, harness(index, grid_cap));
  return f.output;
}

at::Tensor emulate_align_backward(const at::Tensor& grad, const at::Tensor& rois, const rd::Args& a,
                                  const at::Tensor& input, Path path, Index index = Index::Auto,
                                  unsigned grid_cap = 0) {
  const rd::Backward b = rd::prepare_backward(RoiOp::Align, grad, rois, at::Tensor(), a,
                                              input.size(0), input.size(1), input.size(2),
                                              input.size(3));
  rd::launch_backward(b, harness(index, grid_cap), path);
  return b.grad_input;
}

std::pair<at::Tensor, at::Tensor> emulate_pool(const at::Tensor& input, const at::Tensor& rois,
                                               const rd::Args& a, Index index = Index::Auto,
                                               unsigned grid_cap = 0) {
  const rd::Forward f = rd::prepare_forward(RoiOp::Pool, input, rois, a);
  rd::launch_forward(f, harness(index, grid_cap));
  return {f.output, f.argmax};
}

at::Tensor emulate_pool_backward(const at::Tensor& grad, const at::Tensor& rois,
                                 const at::Tensor& argmax, const rd::Args& a,
                                 const at::Tensor& input, Path path, Index index = Index::Auto,
                                 unsigned grid_cap = 0) {
  const rd::Backward b = rd::prepare_backward(RoiOp::Pool, grad, rois, argmax, a, input.size(0),
                                              input.size(1), input.size(2), input.size(3));
  rd::launch_backward(b, harness(index, grid_cap), path);
  return b.grad_input;
}

at::Tensor cpu_align_backward(const at::Tensor& grad, const at::Tensor& rois, const rd::Args& a,
                              const at::Tensor& input) {
  return kernelzoo::roi_align_backward(grad, rois, a.spatial_scale, a.pooled_h, a.pooled_w,
                                       input.size(0), input.size(1), input.size(2), input.size(3),
                                       a.sampling_ratio, a.aligned);
}

at::Tensor cpu_pool_backward(const at::Tensor& grad, const at::Tensor& rois,
                             const at::Tensor& argmax, const rd::Args& a, const at::Tensor& input) {
  return kernelzoo::roi_pool_backward(grad, rois, argmax, a.spatial_scale, a.pooled_h, a.pooled_w,
                                      input.size(0), input.size(1), input.size(2), input.size(3));
}

// --- cases -----------------------------------------------------------------------

// (output size, spatial scale, sampling ratio, aligned); with the shapes below
// no launch is a multiple of the 256-thread block.
const std::vector<rd::Args> kAlignArgs = {
    {0.5, 3, 4, 2, false}, {0.5, 3, 4, 2, true},  {1.0, 2, 3, -1, false}, {1.0, 2, 3, 0, true},
    {0.25, 1, 1, 1, false}, {0.7, 2, 5, 3, true}, {1.0, 5, 2, -1, true},
};
const std::vector<rd::Args> kPoolArgs = {{0.5, 3, 4}, {1.0, 2, 3}, {0.25, 1, 1}, {0.7, 2, 5}};

class RoiEmulation : public ::testing::TestWithParam<at::ScalarType> {};

// Forward: every argument set, three layouts, both index types; a box set with
// every kind of box, and one box alone.
TEST_P(RoiEmulation, ForwardMatchesCpuKernels) {
  const auto dtype = GetParam();
  const std::vector<int64_t> shape{2, 5, 9, 11};
  int launches = 0;
  for (Layout layout : {Layout::Contiguous, Layout::ChannelsLast, Layout::Strided}) {
    const at::Tensor x = make_input(shape, dtype, layout, 1);
    for (size_t i = 0; i < kAlignArgs.size(); ++i) {
      const rd::Args& a = kAlignArgs[i];
      const at::Tensor all = make_boxes(2, 13, 9, 11, a.spatial_scale, 10 + i).to(dtype);
      for (const at::Tensor& rois : {all, all.slice(0, 0, 1)}) {
        const at::Tensor want = kernelzoo::roi_align(x, rois, a.spatial_scale, a.pooled_h,
                                                     a.pooled_w, a.sampling_ratio, a.aligned);
        for (Index index : {Index::Auto, Index::Int64}) {
          const std::string what = "roi_align " + std::string(c10::toString(dtype)) + " args " +
                                   std::to_string(i) + " K=" + std::to_string(rois.size(0)) +
                                   " layout " + std::to_string(static_cast<int>(layout)) +
                                   (index == Index::Int64 ? " int64" : "");
          expect_close(emulate_align(x, rois, a, index), want, what);
          ++launches;
        }
      }
    }
    for (size_t i = 0; i < kPoolArgs.size(); ++i) {
      const rd::Args& a = kPoolArgs[i];
      const at::Tensor all = make_boxes(2, 13, 9, 11, a.spatial_scale, 20 + i).to(dtype);
      for (const at::Tensor& rois : {all, all.slice(0, 0, 1)}) {
        const auto [out, arg] = kernelzoo::roi_pool(x, rois, a.spatial_scale, a.pooled_h, a.pooled_w);
        for (Index index : {Index::Auto, Index::Int64}) {
          const auto [got, got_arg] = emulate_pool(x, rois, a, index);
          EXPECT_TRUE(at::equal(got, out)) << "roi_pool " << c10::toString(dtype) << " args " << i;
          EXPECT_TRUE(at::equal(got_arg, arg)) << "roi_pool argmax " << c10::toString(dtype) << " args " << i;
          ++launches;
        }
      }
    }
  }
  EXPECT_EQ(launches, 3 * 2 * 2 * static_cast<int>(kAlignArgs.size() + kPoolArgs.size()));
}

// Backward, both paths, against the CPU backward; grads contiguous and strided.
TEST_P(RoiEmulation, BackwardMatchesCpuKernels) {
  const auto dtype = GetParam();
  const std::vector<int64_t> shape{2, 5, 9, 11};
  const at::Tensor x = make_input(shape, dtype, Layout::Contiguous, 2);
  for (size_t i = 0; i < kAlignArgs.size(); ++i) {
    const rd::Args& a = kAlignArgs[i];
    const at::Tensor rois = make_boxes(2, 13, 9, 11, a.spatial_scale, 30 + i).to(dtype);
    const at::Tensor grad = make_input({13, 5, a.pooled_h, a.pooled_w}, dtype,
                                       i % 2 ? Layout::Strided : Layout::Contiguous, 40 + i);
    const at::Tensor want = cpu_align_backward(grad, rois, a, x);
    for (Path path : {Path::Atomic, Path::Deterministic}) {
      for (Index index : {Index::Auto, Index::Int64}) {
        const std::string what = "_roi_align_backward " + std::string(c10::toString(dtype)) +
                                 " args " + std::to_string(i) +
                                 (path == Path::Atomic ? " atomic" : " deterministic") +
                                 (index == Index::Int64 ? " int64" : "");
        expect_close(emulate_align_backward(grad, rois, a, x, path, index), want, what);
      }
    }
  }
  for (size_t i = 0; i < kPoolArgs.size(); ++i) {
    const rd::Args& a = kPoolArgs[i];
    const at::Tensor rois = make_boxes(2, 13, 9, 11, a.spatial_scale, 50 + i).to(dtype);
    const auto [out, argmax] = kernelzoo::roi_pool(x, rois, a.spatial_scale, a.pooled_h, a.pooled_w);
    const at::Tensor grad = make_input({13, 5, a.pooled_h, a.pooled_w}, dtype,
                                       i % 2 ? Layout::Strided : Layout::Contiguous, 60 + i);
    const at::Tensor want = cpu_pool_backward(grad, rois, argmax, a, x);
    for (Path path : {Path::Atomic, Path::Deterministic}) {
      for (Index index : {Index::Auto, Index::Int64}) {
        const std::string what = "_roi_pool_backward " + std::string(c10::toString(dtype)) +
                                 " args " + std::to_string(i) +
                                 (path == Path::Atomic ? " atomic" : " deterministic");
        expect_close(emulate_pool_backward(grad, rois, argmax, a, x, path, index), want, what);
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, RoiEmulation,
                         ::testing::Values(at::kDouble, at::kFloat, at::kHalf, at::kBFloat16),
                         [](const auto& info) { return std::string(c10::toString(info.param)); });

// The deterministic path gives the same bits in every run and under every
// thread schedule; the atomic path agrees with it.
TEST(RoiEmulationPaths, DeterministicBackwardIsReproducible) {
  const at::Tensor x = make_input({2, 3, 8, 10}, at::kFloat, Layout::Contiguous, 3);
  const rd::Args a{1.0, 3, 3, -1, true};
  const at::Tensor rois = make_boxes(2, 9, 8, 10, 1.0, 70).to(at::kFloat);
  const at::Tensor grad = make_input({9, 3, 3, 3}, at::kFloat, Layout::Contiguous, 71);
  const at::Tensor first = emulate_align_backward(grad, rois, a, x, Path::Deterministic);
  for (auto schedule : {kernelzoo::harness::Schedule::Reverse, kernelzoo::harness::Schedule::Shuffled}) {
    const rd::Backward b = rd::prepare_backward(RoiOp::Align, grad, rois, at::Tensor(), a, 2, 3, 8, 10);
    rd::launch_backward(b, harness(Index::Auto, 0, schedule), Path::Deterministic);
    EXPECT_TRUE(at::equal(b.grad_input, first));
  }
}

// Fewer blocks than the launch asks for: the grid-stride loops cover the rest.
TEST(RoiEmulationPaths, GridStrideLoops) {
  const at::Tensor x = make_input({2, 5, 9, 11}, at::kFloat, Layout::Contiguous, 4);
  const rd::Args a{0.5, 3, 4, 2, true};
  const rd::Args pa{0.5, 3, 4};
  const at::Tensor rois = make_boxes(2, 13, 9, 11, 0.5, 80).to(at::kFloat);
  const at::Tensor grad = make_input({13, 5, 3, 4}, at::kFloat, Layout::Contiguous, 81);
  const at::Tensor want = kernelzoo::roi_align(x, rois, 0.5, 3, 4, 2, true);
  const at::Tensor want_grad = cpu_align_backward(grad, rois, a, x);
  const auto [pout, parg] = kernelzoo::roi_pool(x, rois, 0.5, 3, 4);
  const at::Tensor want_pgrad = cpu_pool_backward(grad, rois, parg, pa, x);
  for (unsigned cap : {1u, 2u}) {
    for (Index index : {Index::Auto, Index::Int64}) {
      const std::string what = "grid " + std::to_string(cap);
      expect_close(emulate_align(x, rois, a, index, cap), want, what);
      for (Path path : {Path::Atomic, Path::Deterministic}) {
        expect_close(emulate_align_backward(grad, rois, a, x, path, index, cap), want_grad, what);
        expect_close(emulate_pool_backward(grad, rois, parg, pa, x, path, index, cap), want_pgrad,
                     what);
      }
      const auto [got, got_arg] = emulate_pool(x, rois, pa, index, cap);
      EXPECT_TRUE(at::equal(got, pout) && at::equal(got_arg, parg)) << what;
    }
  }
}

// Zero boxes, no channels, an empty feature map: the launchers launch nothing
// for empty outputs, and the backward paths give zeros.
TEST(RoiEmulationPaths, EmptyProblems) {
  const rd::Args a{1.0, 2, 2, 2, false};
  const rd::Args pa{1.0, 2, 2};
  // zero boxes
  {
    const at::Tensor x = make_input({2, 3, 5, 6}, at::kFloat, Layout::Contiguous, 5);
    const at::Tensor rois = at::zeros({0, 5}, at::kFloat);
    const auto before = kernelzoo::harness::counters().launches;
    EXPECT_EQ(emulate_align(x, rois, a).sizes(), (std::vector<int64_t>{0, 3, 2, 2}));
    EXPECT_EQ(emulate_pool(x, rois, pa).first.sizes(), (std::vector<int64_t>{0, 3, 2, 2}));
    const at::Tensor grad = at::zeros({0, 3, 2, 2}, at::kFloat);
    const at::Tensor argmax = at::zeros({0, 3, 2, 2}, at::kInt);
    for (Path path : {Path::Atomic, Path::Deterministic}) {
      EXPECT_TRUE(at::equal(emulate_align_backward(grad, rois, a, x, path), at::zeros_like(x)));
      EXPECT_TRUE(at::equal(emulate_pool_backward(grad, rois, argmax, pa, x, path), at::zeros_like(x)));
    }
    EXPECT_EQ(kernelzoo::harness::counters().launches, before);
  }
  // no channels: nothing to launch at all
  {
    const at::Tensor x = at::zeros({2, 0, 5, 6}, at::kFloat);
    const at::Tensor rois = make_boxes(2, 3, 5, 6, 1.0, 90).to(at::kFloat);
    const auto before = kernelzoo::harness::counters().launches;
    EXPECT_EQ(emulate_align(x, rois, a).numel(), 0);
    EXPECT_EQ(emulate_pool(x, rois, pa).first.numel(), 0);
    const at::Tensor grad = at::zeros({3, 0, 2, 2}, at::kFloat);
    EXPECT_EQ(emulate_align_backward(grad, rois, a, x, Path::Deterministic).numel(), 0);
    EXPECT_EQ(kernelzoo::harness::counters().launches, before);
  }
  // an empty feature map: every sample outside, every bin empty
  for (auto hw : {std::pair<int64_t, int64_t>{0, 6}, {5, 0}}) {
    const at::Tensor x = at::zeros({2, 3, hw.first, hw.second}, at::kFloat);
    const at::Tensor rois = make_boxes(2, 3, 5, 6, 1.0, 91).to(at::kFloat);
    for (bool aligned : {false, true}) {
      const rd::Args aa{1.0, 2, 2, -1, aligned};
      EXPECT_TRUE(at::equal(emulate_align(x, rois, aa), at::zeros({3, 3, 2, 2})));
    }
    const auto [out, arg] = emulate_pool(x, rois, pa);
    EXPECT_TRUE(at::equal(out, at::zeros({3, 3, 2, 2})));
    EXPECT_TRUE(at::equal(arg, at::full({3, 3, 2, 2}, -1, at::kInt)));
  }
}

// The launchers do not check batch indices (that needs a host sync): a box
// with an invalid one gives zeros and no gradient, the others are unaffected.
TEST(RoiEmulationPaths, InvalidBatchIndexGivesZeros) {
  const at::Tensor x = make_input({2, 3, 7, 8}, at::kFloat, Layout::Contiguous, 6);
  at::Tensor rois = make_boxes(2, 4, 7, 8, 1.0, 92).to(at::kFloat);
  const at::Tensor valid = rois.slice(0, 0, 2).clone();
  rois[2][0] = 2.0f;   // == N
  rois[3][0] = -1.0f;
  const rd::Args a{1.0, 2, 3, 2, true};
  const rd::Args pa{1.0, 2, 3};
  const at::Tensor out = emulate_align(x, rois, a);
  expect_close(out.slice(0, 0, 2).contiguous(), kernelzoo::roi_align(x, valid, 1.0, 2, 3, 2, true),
               "valid boxes next to invalid ones");
  EXPECT_TRUE(at::equal(out.slice(0, 2, 4), at::zeros({2, 3, 2, 3})));
  const auto [pout, parg] = emulate_pool(x, rois, pa);
  EXPECT_TRUE(at::equal(pout.slice(0, 2, 4), at::zeros({2, 3, 2, 3})));
  EXPECT_TRUE(at::equal(parg.slice(0, 2, 4), at::full({2, 3, 2, 3}, -1, at::kInt)));
  // gradients of the invalid boxes go nowhere
  at::Tensor grad = make_input({4, 3, 2, 3}, at::kFloat, Layout::Contiguous, 93);
  at::Tensor grad_valid = grad.clone();
  grad_valid.slice(0, 2, 4).zero_();
  const at::Tensor want = cpu_align_backward(grad_valid.slice(0, 0, 2), valid, a, x);
  // argmax of a valid forward for the invalid boxes too: the kernels must still skip them
  const at::Tensor valid_argmax = std::get<1>(kernelzoo::roi_pool(x, valid, 1.0, 2, 3));
  const at::Tensor argmax = at::cat({valid_argmax, valid_argmax});
  const at::Tensor want_pool = cpu_pool_backward(grad_valid.slice(0, 0, 2), valid,
                                                 argmax.slice(0, 0, 2), pa, x);
  for (Path path : {Path::Atomic, Path::Deterministic}) {
    expect_close(emulate_align_backward(grad, rois, a, x, path), want, "align invalid batch");
    expect_close(emulate_pool_backward(grad, rois, argmax, pa, x, path), want_pool,
                 "pool invalid batch");
  }
}

// An argmax outside [0, H*W) is not one roi_pool returned: both CUDA backward
// paths skip it (the CPU kernel raises an error for it), the others still count.
TEST(RoiEmulationPaths, PoolBackwardSkipsArgmaxOutsideThePlane) {
  const at::Tensor x = make_input({1, 2, 5, 6}, at::kFloat, Layout::Contiguous, 8);
  const at::Tensor rois = make_boxes(1, 3, 5, 6, 1.0, 95).to(at::kFloat);
  const rd::Args pa{1.0, 2, 2};
  const at::Tensor argmax = std::get<1>(kernelzoo::roi_pool(x, rois, 1.0, 2, 2));
  const at::Tensor grad = make_input({3, 2, 2, 2}, at::kFloat, Layout::Contiguous, 96);
  at::Tensor bad = argmax.clone();
  bad[0][0][0][0] = 30;  // == H * W
  bad[1][1][1][1] = 1000;
  at::Tensor grad_kept = grad.clone();
  grad_kept[0][0][0][0] = 0.0f;
  grad_kept[1][1][1][1] = 0.0f;
  const at::Tensor want = cpu_pool_backward(grad_kept, rois, argmax, pa, x);
  for (Path path : {Path::Atomic, Path::Deterministic}) {
    expect_close(emulate_pool_backward(grad, rois, bad, pa, x, path), want, "argmax outside the plane");
  }
}

// roi_pool's maximum is strict, as torchvision's: ties go to the first pixel in
// row-major order, NaN is never selected, and a bin of -inf keeps argmax -1.
TEST(RoiEmulationPaths, PoolTiesNanAndInfinities) {
  for (auto dtype : {at::kFloat, at::kDouble, at::kHalf, at::kBFloat16}) {
    at::Tensor x = at::ones({1, 4, 6, 7}, at::kFloat);
    x[0][1].fill_(std::nanf(""));
    x[0][1][2][3] = -5.0f;
    x[0][2].fill_(-std::numeric_limits<float>::infinity());
    x[0][3].fill_(2.0f);
    x[0][3][4].fill_(std::nanf(""));
    x = x.to(dtype);
    const at::Tensor rois = at::tensor({0.0, 0.0, 0.0, 6.0, 5.0, 0.0, 1.0, 1.0, 4.0, 4.0}, at::kDouble)
                                .reshape({2, 5}).to(dtype);
    const auto [out, arg] = kernelzoo::roi_pool(x, rois, 1.0, 3, 2);
    const auto [got, got_arg] = emulate_pool(x, rois, rd::Args{1.0, 3, 2});
    EXPECT_TRUE(at::equal(got_arg, arg)) << c10::toString(dtype);
    EXPECT_TRUE(at::equal(at::nan_to_num(got.to(at::kDouble)), at::nan_to_num(out.to(at::kDouble))))
        << c10::toString(dtype);
    EXPECT_EQ(arg[0][0][0][0].item<int32_t>(), 0);   // ties: the first pixel
    EXPECT_EQ(arg[0][2][0][0].item<int32_t>(), -1);  // nothing above -FLT_MAX
  }
}

// The launch really runs the launcher's grid: one emulated thread per output
// element, rounded up to whole 256-thread blocks; the deterministic backward
// launches a per-roi kernel, then one thread per grad_input element.
TEST(RoiEmulationPaths, LaunchesTheLaunchersGrids) {
  const at::Tensor x = make_input({2, 5, 9, 11}, at::kFloat, Layout::Contiguous, 7);  // 990
  const at::Tensor rois = make_boxes(2, 13, 9, 11, 1.0, 94).to(at::kFloat);
  const rd::Args a{1.0, 3, 4, 2, false};  // 13 * 5 * 12 = 780 outputs: 4 blocks
  auto before = kernelzoo::harness::counters();
  emulate_align(x, rois, a);
  auto after = kernelzoo::harness::counters();
  EXPECT_EQ(after.launches - before.launches, 1u);
  EXPECT_EQ(after.threads - before.threads, 4u * 256u);
  const at::Tensor grad = at::ones({13, 5, 3, 4});
  before = kernelzoo::harness::counters();
  emulate_align_backward(grad, rois, a, x, Path::Deterministic);
  after = kernelzoo::harness::counters();
  EXPECT_EQ(after.launches - before.launches, 2u);
  EXPECT_EQ(after.threads - before.threads, 256u + 4u * 256u);  // 13 rois; 990 elements
}

}  // namespace
