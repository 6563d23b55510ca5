// The deform_conv2d CUDA kernels (deform_conv2d_kernel.cuh) run on the CPU
// through the execution harness, with the launcher's own chunks, tables,
// buffers, kernels and products (deform_conv2d_plan.h), compared with the CPU
// kernels through the dispatcher: forward and both backward paths, every
// gradient.
#include <ATen/Context.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/abs.h>
#include <ATen/ops/allclose.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/max.h>
#include <ATen/ops/rand.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/round.h>
#include <ATen/ops/sub.h>
#include <ATen/ops/zeros.h>
#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "ops/deform_conv2d/deform_conv2d.h"
#include "ops/deform_conv2d/deform_conv2d_args.h"
// The harness adapter, then the plan and its kernel bodies: device code.
#include "harness_launch.h"
#include "ops/deform_conv2d/deform_conv2d_plan.h"

namespace {

namespace dd = kernelzoo::deform_detail;
using kernelzoo::harness::HarnessLaunch;
using kernelzoo::harness::Schedule;
using Path = kernelzoo::BackwardPath;
using Opt = std::optional<at::Tensor>;
using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

HarnessLaunch harness(unsigned grid_cap = 0, Schedule schedule = Schedule::Forward,
                      std::vector<kernelzoo::harness::LaunchRecord>* record = nullptr) {
  HarnessLaunch launch;
  launch.options.schedule = schedule;
  launch.grid_cap = grid_cap;
  launch.record = record;
  return launch;
}

struct Case {
  int64_t n, c, c_out, h, w, kh, kw;
  int64_t sh = 1, sw = 1, ph = 1, pw = 1, dh = 1, dw = 1, groups = 1, og = 1;
  bool mask = true, bias = true;
  double scale = 2.0;  // offsets' standard deviation, in pixels
  bool grid = false;   // offsets on a 0.5 grid: integer and half-integer coordinates
};

std::string describe(const Case& c) {
  return "n" + std::to_string(c.n) + " c" + std::to_string(c.c) + "->" + std::to_string(c.c_out) +
         " " + std::to_string(c.h) + "x" + std::to_string(c.w) + " k" + std::to_string(c.kh) + "x" +
         std::to_string(c.kw) + " groups " + std::to_string(c.groups) + " og " +
         std::to_string(c.og) + (c.mask ? " mask" : "") + (c.bias ? " bias" : "");
}

struct Problem {
  at::Tensor input, weight, offset;
  Opt mask, bias;
  Case c;
};

Problem make(const Case& c, at::ScalarType dtype, uint64_t seed = 0) {
  at::manual_seed(seed);
  const int64_t ho = (c.h + 2 * c.ph - c.dh * (c.kh - 1) - 1) / c.sh + 1;
  const int64_t wo = (c.w + 2 * c.pw - c.dw * (c.kw - 1) - 1) / c.sw + 1;
  Problem p;
  p.c = c;
  p.input = at::randn({c.n, c.c, c.h, c.w}, at::kDouble).to(dtype);
  p.weight = (at::randn({c.c_out, c.c / c.groups, c.kh, c.kw}, at::kDouble) * 0.3).to(dtype);
  at::Tensor off = at::randn({c.n, 2 * c.og * c.kh * c.kw, ho, wo}, at::kDouble) * c.scale;
  if (c.grid) off = at::round(off * 2) / 2;
  p.offset = off.to(dtype);
  if (c.mask) p.mask = at::rand({c.n, c.og * c.kh * c.kw, ho, wo}, at::kDouble).to(dtype);
  if (c.bias) p.bias = at::randn({c.c_out}, at::kDouble).to(dtype);
  return p;
}

double tolerance(at::ScalarType dtype) {
  switch (dtype) {
    case at::kDouble: return 1e-11;
    case at::kFloat: return 2e-5;
    default: return 2e-2;  // one rounding of a float16 / bfloat16 result
  }
}

void expect_close(const at::Tensor& got, const at::Tensor& want, const std::string& what) {
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  ASSERT_EQ(got.scalar_type(), want.scalar_type()) << what;
  if (want.numel() == 0) return;
  const at::Tensor g = got.to(at::kDouble), e = want.to(at::kDouble);
  const double tol = tolerance(want.scalar_type());
  const double scale = std::max(1.0, e.abs().max().item<double>());
  EXPECT_TRUE(at::allclose(g, e, tol, tol * scale))
      << what << ": max abs diff " << at::sub(g, e).abs().max().item<double>() << " (scale "
      << scale << ")";
}

at::Tensor emulate_forward(const Problem& p, const HarnessLaunch& launch) {
  const Case& c = p.c;
  const dd::Problem q = dd::prepare("deform_conv2d", p.input, p.weight, p.offset, p.mask, p.bias,
                                    c.sh, c.sw, c.ph, c.pw, c.dh, c.dw, c.groups, c.og);
  at::Tensor out = dd::allocate_output(q);
  dd::launch_forward(q, out, launch);
  return out;
}

at::Tensor cpu_forward(const Problem& p) {
  const Case& c = p.c;
  return kernelzoo::deform_conv2d(p.input, p.weight, p.offset, p.mask, p.bias, c.sh, c.sw, c.ph,
                                  c.pw, c.dh, c.dw, c.groups, c.og);
}

Grads emulate_backward(const Problem& p, const at::Tensor& grad, Path path,
                       const HarnessLaunch& launch) {
  const Case& c = p.c;
  const dd::BackwardProblem b =
      dd::prepare_backward(grad, p.input, p.weight, p.offset, p.mask, p.bias, c.sh, c.sw, c.ph,
                           c.pw, c.dh, c.dw, c.groups, c.og);
  return dd::launch_backward(b, launch, path);
}

Grads cpu_backward(const Problem& p, const at::Tensor& grad) {
  const Case& c = p.c;
  return kernelzoo::deform_conv2d_backward(grad, p.input, p.weight, p.offset, p.mask, p.bias, c.sh,
                                           c.sw, c.ph, c.pw, c.dh, c.dw, c.groups, c.og);
}

void expect_grads(const Grads& got, const Grads& want, const std::string& what) {
  expect_close(std::get<0>(got), std::get<0>(want), what + ": grad_input");
  expect_close(std::get<1>(got), std::get<1>(want), what + ": grad_weight");
  expect_close(std::get<2>(got), std::get<2>(want), what + ": grad_offset");
  expect_close(std::get<3>(got), std::get<3>(want), what + ": grad_mask");
  expect_close(std::get<4>(got), std::get<4>(want), what + ": grad_bias");
}

void check(const Case& c, at::ScalarType dtype, unsigned grid_cap = 0) {
  const std::string what = describe(c) + " " + c10::toString(dtype);
  const Problem p = make(c, dtype);
  const at::Tensor want = cpu_forward(p);
  expect_close(emulate_forward(p, harness(grid_cap)), want, what + ": output");
  at::manual_seed(9);
  const at::Tensor grad = at::randn(want.sizes(), at::kDouble).to(dtype);
  const Grads expected = cpu_backward(p, grad);
  for (Path path : {Path::Atomic, Path::Deterministic}) {
    SCOPED_TRACE(path == Path::Atomic ? "atomic" : "deterministic");
    expect_grads(emulate_backward(p, grad, path, harness(grid_cap)), expected, what);
  }
}

// Groups, offset groups, stride, padding, dilation, kernels 3x3 / 1x1 / 3x2,
// with and without mask and bias, offsets of two pixels (many samples off the
// map), odd sizes (no launch is a multiple of the 256-thread block).
TEST(DeformConv2dEmulation, MatchesCpuKernelsFloat64) {
  std::vector<Case> cases = {
      {2, 4, 6, 7, 9, 3, 3},
      {1, 4, 6, 5, 6, 3, 2, 2, 1, 0, 2, 2, 1, 2, 2},
      {2, 8, 4, 6, 5, 1, 1, 1, 1, 0, 0, 1, 1, 2, 4},
      {1, 3, 2, 1, 1, 1, 1, 1, 1, 0, 0},
  };
  cases[2].mask = false;
  cases[3].bias = false;
  for (const Case& c : cases) check(c, at::kDouble);
}

// Offsets on a 0.5 grid: integer coordinates (a neighbour of weight zero still
// carries the offset's derivative) and samples on the map's edges.
TEST(DeformConv2dEmulation, IntegerCoordinates) {
  Case c{2, 4, 4, 6, 7, 3, 3};
  c.scale = 1.5;
  c.grid = true;
  check(c, at::kDouble);
}

TEST(DeformConv2dEmulation, LowPrecision) {
  const Case c{1, 4, 4, 6, 5, 3, 3, 1, 1, 1, 1, 1, 1, 2, 2};
  for (at::ScalarType dtype : {at::kFloat, at::kHalf, at::kBFloat16}) check(c, dtype);
}

// A grid cap of one block: the kernels' grid-stride loops.
TEST(DeformConv2dEmulation, GridStrideLoops) { check(Case{1, 4, 4, 9, 8, 3, 3}, at::kFloat, 1); }

// Chunks of images: images_per_chunk bounds the columns to about 64 MiB; a
// problem of more images than one chunk holds runs several.
TEST(DeformConv2dEmulation, SeveralChunks) {
  Case c{3, 4, 2, 5, 4, 3, 3};
  dd::Geometry g;
  g.N = 3, g.C = 4, g.H_out = 5, g.W_out = 4, g.kh = g.kw = 3;
  EXPECT_EQ(dd::images_per_chunk<float>(g), 3);
  std::vector<kernelzoo::harness::LaunchRecord> record;
  const Problem p = make(c, at::kFloat);
  emulate_forward(p, harness(0, Schedule::Forward, &record));
  EXPECT_EQ(record.size(), 2u);  // one chunk: the table and im2col
  g.C = int64_t{1} << 20;        // a million channels: one image per chunk
  EXPECT_EQ(dd::images_per_chunk<float>(g), 1);
}

TEST(DeformConv2dEmulation, EmptyBatch) {
  Case c{0, 4, 6, 7, 9, 3, 3};
  const Problem p = make(c, at::kDouble);
  std::vector<kernelzoo::harness::LaunchRecord> record;
  const at::Tensor out = emulate_forward(p, harness(0, Schedule::Forward, &record));
  EXPECT_EQ(out.sizes(), at::IntArrayRef({0, 6, 7, 9}));
  EXPECT_TRUE(record.empty());
  const at::Tensor grad = at::zeros(out.sizes(), at::kDouble);
  expect_grads(emulate_backward(p, grad, Path::Atomic, harness()), cpu_backward(p, grad), "n0");
}

// The deterministic backward gives the same bits under every schedule.
TEST(DeformConv2dEmulation, DeterministicPathIsReproducible) {
  const Problem p = make(Case{2, 4, 4, 6, 5, 3, 3}, at::kFloat);
  const at::Tensor grad = at::randn({2, 4, 6, 5}, at::kFloat);
  const Grads a = emulate_backward(p, grad, Path::Deterministic, harness(0, Schedule::Forward));
  const Grads b = emulate_backward(p, grad, Path::Deterministic, harness(0, Schedule::Shuffled));
  EXPECT_TRUE(at::equal(std::get<0>(a), std::get<0>(b)));
  EXPECT_TRUE(at::equal(std::get<2>(a), std::get<2>(b)));
}

}  // namespace
