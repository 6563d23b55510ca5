// pixel_shuffle / pixel_unshuffle CUDA kernel (pixel_shuffle_kernel.cuh) run on
// the CPU through the execution harness, with the launcher's own launch plan
// (pixel_shuffle_plan.h: element type, index type, grid and block), compared
// with the CPU kernel through the C++ API.
// Per-op ATen headers rather than ATen/ATen.h: half the compile time.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/randint.h>
#include <ATen/ops/view_as_complex.h>
#include <c10/util/StringUtil.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "ops/pixel_shuffle/pixel_shuffle.h"
#include "ops/pixel_shuffle/pixel_shuffle_args.h"
// The harness adapter, then the plan and its kernel body: device code.
#include "harness_launch.h"
#include "ops/pixel_shuffle/pixel_shuffle_plan.h"

namespace {

namespace ps = kernelzoo::pixel_shuffle_detail;
using ps::Direction;
using kernelzoo::Index;
using kernelzoo::harness::HarnessLaunch;
using kernelzoo::harness::kernel_id;
using kernelzoo::harness::LaunchRecord;

struct Emulated {
  at::Tensor output;
  bool channels_last = false;
  int index_bytes = 0;  // of the launch made; 0 when none was
};

// The launcher's forward(), with the kernel run by the harness.
Emulated emulate(const at::Tensor& input, int64_t r, Direction dir, Index index = Index::Auto,
                 unsigned grid_cap = 0) {
  Emulated run;
  const ps::Problem p = ps::prepare(input, r, dir);
  run.output = p.output;
  run.channels_last = p.channels_last;
  std::vector<LaunchRecord> launches;
  // Index::Int64 reaches the int64 path, which the launcher takes only past
  // 2^30 elements, on small shapes.
  ps::launch_forward(p, HarnessLaunch{{}, grid_cap, index, &launches});
  if (launches.empty()) return run;
  EXPECT_EQ(launches.size(), 1u);
  // Which instance ran tells the index width.
  const void* k = launches[0].kernel;
  KZ_DISPATCH_BY_ELEMENT_SIZE(p.elem_size, "test", [&] {
    if (k == kernel_id(ps::pixel_shuffle_kernel<elem_t, int32_t>)) run.index_bytes = 4;
    if (k == kernel_id(ps::pixel_shuffle_kernel<elem_t, int64_t>)) run.index_bytes = 8;
  });
  return run;
}

at::Tensor cpu_reference(const at::Tensor& input, int64_t r, Direction dir) {
  return dir == Direction::Shuffle ? kernelzoo::pixel_shuffle(input, r)
                                   : kernelzoo::pixel_unshuffle(input, r);
}

at::Tensor random_of(at::IntArrayRef sizes, at::ScalarType dtype) {
  if (at::isComplexType(dtype)) {
    std::vector<int64_t> s(sizes.begin(), sizes.end());
    s.push_back(2);
    return at::view_as_complex(at::randint(-1000, 1000, s, at::kDouble)).to(dtype);
  }
  return at::randint(-100, 100, sizes, at::kLong).to(dtype);
}

void expect_same(const at::Tensor& got, const at::Tensor& want, const std::string& what) {
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  EXPECT_EQ(got.strides(), want.strides()) << what;
  EXPECT_TRUE(at::equal(got, want)) << what;
}

struct Case {
  std::vector<int64_t> lo;  // (..., C*r*r, H, W): the shuffle input, the unshuffle output
  int64_t r;
};

// Not multiples of the 256-thread block (1 to 6 blocks), 3-d to 5-d, r = 1..5,
// one-element inputs.
const std::vector<Case> kCases = {
    {{1, 1, 1, 1}, 1}, {{1, 1, 1}, 1},     {{1, 4, 1, 1}, 2},       {{2, 12, 5, 3}, 2},
    {{3, 18, 4, 7}, 3}, {{1, 50, 2, 3}, 5}, {{3, 5, 4}, 1},          {{2, 3, 8, 3, 5}, 2},
    {{1, 16, 3, 17}, 2},
};

std::vector<int64_t> hi_shape(const Case& c) {
  std::vector<int64_t> s = c.lo;
  const size_t d = s.size();
  s[d - 3] /= c.r * c.r;
  s[d - 2] *= c.r;
  s[d - 1] *= c.r;
  return s;
}

enum class Layout { Contiguous, ChannelsLast, Strided };
const char* name(Layout l) {
  return l == Layout::Contiguous ? "contiguous" : l == Layout::ChannelsLast ? "channels_last"
                                                                             : "strided";
}

// An input of `sizes` in the given layout, with the same values in every layout.
at::Tensor make_input(const std::vector<int64_t>& sizes, at::ScalarType dtype, Layout layout) {
  at::Tensor base = random_of(sizes, dtype);
  switch (layout) {
    case Layout::Contiguous: return base;
    case Layout::ChannelsLast: return base.contiguous(at::MemoryFormat::ChannelsLast);
    case Layout::Strided: {
      // Every other column of a wider tensor, with H and W swapped in memory.
      std::vector<int64_t> wide = sizes;
      std::swap(wide[wide.size() - 1], wide[wide.size() - 2]);
      wide[wide.size() - 2] *= 2;
      at::Tensor w = random_of(wide, dtype);
      at::Tensor view = w.slice(-2, 0, w.size(-2), 2).transpose(-1, -2);
      view.copy_(base);
      return view;
    }
  }
  return base;
}

class PixelShuffleEmulation : public ::testing::TestWithParam<at::ScalarType> {};

// Every case, both directions, three layouts, both index types.
TEST_P(PixelShuffleEmulation, MatchesCpuKernel) {
  const auto dtype = GetParam();
  int channels_last_runs = 0, strided_runs = 0, launches = 0;
  for (const auto& c : kCases) {
    for (Direction dir : {Direction::Shuffle, Direction::Unshuffle}) {
      const auto sizes = dir == Direction::Shuffle ? c.lo : hi_shape(c);
      for (Layout layout : {Layout::Contiguous, Layout::ChannelsLast, Layout::Strided}) {
        if (layout == Layout::ChannelsLast && sizes.size() != 4) continue;
        const at::Tensor input = make_input(sizes, dtype, layout);
        const at::Tensor want = cpu_reference(input, c.r, dir);
        for (Index index : {Index::Auto, Index::Int64}) {
          const std::string what = std::string(dir == Direction::Shuffle ? "pixel_shuffle" : "pixel_unshuffle") +
                                   " of " + c10::str(input.sizes()) + " r=" + std::to_string(c.r) +
                                   " " + name(layout) + (index == Index::Int64 ? " int64" : " launcher index");
          const Emulated run = emulate(input, c.r, dir, index);
          expect_same(run.output, want, what);
          EXPECT_EQ(run.index_bytes, index == Index::Int64 ? 8 : 4) << what;
          channels_last_runs += run.channels_last;
          strided_runs += layout == Layout::Strided && !input.is_contiguous();
          ++launches;
        }
      }
    }
  }
  // The kernel's two destination orders and strided sources were all exercised.
  EXPECT_GE(channels_last_runs, 10);
  EXPECT_GE(strided_runs, 20);
  EXPECT_EQ(launches, 2 * 2 * (6 * 3 + 3 * 2));  // 6 four-d cases get channels_last
}

INSTANTIATE_TEST_SUITE_P(ElementSizes, PixelShuffleEmulation,
                         ::testing::Values(at::kByte, at::kHalf, at::kFloat, at::kLong,
                                           at::kComplexDouble),
                         [](const auto& info) { return std::string(c10::toString(info.param)); });

// Fewer blocks than elements / 256: the grid-stride loop covers the rest.
TEST(PixelShuffleEmulationGrid, GridStrideLoop) {
  const Case c{{3, 18, 4, 7}, 3};  // 1512 elements: 6 blocks at full grid
  for (Direction dir : {Direction::Shuffle, Direction::Unshuffle}) {
    const auto sizes = dir == Direction::Shuffle ? c.lo : hi_shape(c);
    for (Layout layout : {Layout::Contiguous, Layout::ChannelsLast}) {
      const at::Tensor input = make_input(sizes, at::kFloat, layout);
      const at::Tensor want = cpu_reference(input, c.r, dir);
      for (unsigned cap : {1u, 2u, 4u}) {
        for (Index index : {Index::Auto, Index::Int64}) {
          const Emulated run = emulate(input, c.r, dir, index, cap);
          expect_same(run.output, want,
                      std::string(name(layout)) + " grid " + std::to_string(cap) +
                          (dir == Direction::Shuffle ? " shuffle" : " unshuffle"));
        }
      }
    }
  }
}

// Empty inputs: the launcher returns before launching; the output's shape and
// format are those of the CPU kernel.
TEST(PixelShuffleEmulationGrid, EmptyInputsLaunchNothing) {
  const std::vector<std::pair<std::vector<int64_t>, Direction>> cases = {
      {{0, 4, 3, 3}, Direction::Shuffle},   {{2, 0, 3, 3}, Direction::Shuffle},
      {{1, 4, 0, 5}, Direction::Shuffle},   {{0, 2, 4, 4}, Direction::Unshuffle},
      {{1, 2, 0, 4}, Direction::Unshuffle}, {{3, 0, 2, 2}, Direction::Unshuffle},
  };
  for (const auto& [sizes, dir] : cases) {
    const at::Tensor input = at::empty(sizes, at::kFloat);
    const auto before = kernelzoo::harness::counters().launches;
    const Emulated run = emulate(input, 2, dir);
    EXPECT_EQ(kernelzoo::harness::counters().launches, before);
    EXPECT_EQ(run.index_bytes, 0);
    expect_same(run.output, cpu_reference(input, 2, dir), c10::str(input.sizes()));
  }
}

// The launch really runs the launcher's grid: one emulated thread per element,
// rounded up to whole 256-thread blocks.
TEST(PixelShuffleEmulationGrid, LaunchesTheLaunchersGrid) {
  const at::Tensor input = make_input({2, 12, 5, 3}, at::kFloat, Layout::Contiguous);  // 360
  const auto before = kernelzoo::harness::counters();
  emulate(input, 2, Direction::Shuffle);
  const auto after = kernelzoo::harness::counters();
  EXPECT_EQ(after.launches - before.launches, 1u);
  EXPECT_EQ(after.blocks - before.blocks, 2u);
  EXPECT_EQ(after.threads - before.threads, 512u);
}

}  // namespace
