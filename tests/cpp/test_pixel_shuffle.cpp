// pixel_shuffle / pixel_unshuffle through the C++ API, against a plain-loop
// reference written from the definition out[c, h*r+i, w*r+j] = in[c*r*r+i*r+j, h, w].
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <gtest/gtest.h>

#include "ops/pixel_shuffle/pixel_shuffle.h"

namespace {

// Reference on a contiguous copy, element by element, in int64 "values" so that
// any dtype can be compared exactly after a round trip through the reference.
at::Tensor loop_shuffle(const at::Tensor& input, int64_t r) {
  auto x = input.contiguous().reshape({-1, input.size(-3), input.size(-2), input.size(-1)});
  const int64_t n = x.size(0), c = x.size(1) / (r * r), h = x.size(2), w = x.size(3);
  auto out = at::empty({n, c, h * r, w * r}, x.options());
  for (int64_t b = 0; b < n; ++b)
    for (int64_t k = 0; k < c; ++k)
      for (int64_t i = 0; i < r; ++i)
        for (int64_t j = 0; j < r; ++j)
          for (int64_t y = 0; y < h; ++y)
            for (int64_t z = 0; z < w; ++z)
              out[b][k][y * r + i][z * r + j] = x[b][k * r * r + i * r + j][y][z];
  auto sizes = input.sizes().vec();
  sizes[sizes.size() - 3] = c;
  sizes[sizes.size() - 2] = h * r;
  sizes[sizes.size() - 1] = w * r;
  return out.reshape(sizes);
}

at::Tensor loop_unshuffle(const at::Tensor& input, int64_t r) {
  auto x = input.contiguous().reshape({-1, input.size(-3), input.size(-2), input.size(-1)});
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2) / r, w = x.size(3) / r;
  auto out = at::empty({n, c * r * r, h, w}, x.options());
  for (int64_t b = 0; b < n; ++b)
    for (int64_t k = 0; k < c; ++k)
      for (int64_t i = 0; i < r; ++i)
        for (int64_t j = 0; j < r; ++j)
          for (int64_t y = 0; y < h; ++y)
            for (int64_t z = 0; z < w; ++z)
              out[b][k * r * r + i * r + j][y][z] = x[b][k][y * r + i][z * r + j];
  auto sizes = input.sizes().vec();
  sizes[sizes.size() - 3] = c * r * r;
  sizes[sizes.size() - 2] = h;
  sizes[sizes.size() - 1] = w;
  return out.reshape(sizes);
}

at::Tensor random_of(at::IntArrayRef sizes, at::ScalarType dtype) {
  auto t = at::randint(-1000, 1000, sizes, at::kLong);
  if (dtype == at::kBool) return t.remainder(2).to(at::kBool);
  return t.to(dtype);
}

struct Case {
  std::vector<int64_t> lo;  // (..., C*r*r, H, W)
  int64_t r;
};

const std::vector<Case> kCases = {
    {{1, 4, 1, 1}, 2},   {{2, 12, 5, 3}, 2},  {{3, 18, 4, 7}, 3}, {{2, 32, 3, 5}, 4},
    {{1, 50, 2, 3}, 5},  {{3, 5, 4}, 1},      {{2, 3, 8, 3, 5}, 2}, {{1, 64, 9, 17}, 2},
};

class PixelShuffleTest : public ::testing::TestWithParam<at::ScalarType> {};

TEST_P(PixelShuffleTest, MatchesLoopReference) {
  const auto dtype = GetParam();
  for (const auto& cs : kCases) {
    auto lo = random_of(cs.lo, dtype);
    auto hi = kernelzoo::pixel_shuffle(lo, cs.r);
    EXPECT_TRUE(at::equal(hi, loop_shuffle(lo, cs.r))) << "shuffle " << lo.sizes();
    auto back = kernelzoo::pixel_unshuffle(hi, cs.r);
    EXPECT_TRUE(at::equal(back, loop_unshuffle(hi, cs.r))) << "unshuffle " << hi.sizes();
    EXPECT_TRUE(at::equal(back, lo));
  }
}

TEST_P(PixelShuffleTest, ChannelsLastKeepsFormat) {
  const auto dtype = GetParam();
  for (int64_t r : {2, 3}) {
    auto lo = random_of({2, 2 * r * r, 5, 3}, dtype).contiguous(at::MemoryFormat::ChannelsLast);
    auto hi = kernelzoo::pixel_shuffle(lo, r);
    EXPECT_TRUE(hi.is_contiguous(at::MemoryFormat::ChannelsLast));
    EXPECT_TRUE(at::equal(hi, loop_shuffle(lo, r)));
    auto back = kernelzoo::pixel_unshuffle(hi, r);
    EXPECT_TRUE(back.is_contiguous(at::MemoryFormat::ChannelsLast));
    EXPECT_TRUE(at::equal(back, lo));
  }
}

TEST_P(PixelShuffleTest, StridedViews) {
  const auto dtype = GetParam();
  auto base = random_of({3, 8, 6, 10}, dtype);
  auto lo = base.slice(3, 0, 10, 2).transpose(2, 3);  // (3, 8, 5, 6), non-unit inner stride
  EXPECT_TRUE(at::equal(kernelzoo::pixel_shuffle(lo, 2), loop_shuffle(lo, 2)));
  auto hi = base.permute({1, 0, 2, 3});  // (8, 3, 6, 10)
  EXPECT_TRUE(at::equal(kernelzoo::pixel_unshuffle(hi, 2), loop_unshuffle(hi, 2)));
}

INSTANTIATE_TEST_SUITE_P(Dtypes, PixelShuffleTest,
                         ::testing::Values(at::kFloat, at::kDouble, at::kHalf, at::kBFloat16,
                                           at::kLong, at::kInt, at::kShort, at::kChar,
                                           at::kBool, at::kComplexDouble),
                         [](const auto& info) { return std::string(c10::toString(info.param)); });

TEST(PixelShuffle, EmptyTensors) {
  auto hi = kernelzoo::pixel_shuffle(at::empty({0, 8, 3, 5}), 2);
  EXPECT_EQ(hi.sizes(), (std::vector<int64_t>{0, 2, 6, 10}));
  auto lo = kernelzoo::pixel_unshuffle(at::empty({2, 0, 4, 6}), 2);
  EXPECT_EQ(lo.sizes(), (std::vector<int64_t>{2, 0, 2, 3}));
}

void expect_error(const std::function<void()>& f, const std::string& fragment) {
  try {
    f();
    ADD_FAILURE() << "expected an error containing: " << fragment;
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

TEST(PixelShuffle, Errors) {
  expect_error([] { kernelzoo::pixel_shuffle(at::zeros({4, 4}), 2); },
               "pixel_shuffle expects input to have at least 3 dimensions");
  expect_error([] { kernelzoo::pixel_shuffle(at::zeros({1, 4, 2, 2}), 0); },
               "pixel_shuffle expects a positive upscale_factor, but got 0");
  expect_error([] { kernelzoo::pixel_shuffle(at::zeros({1, 6, 2, 2}), 2); },
               "input.size(-3)=6 is not divisible by 4");
  expect_error([] { kernelzoo::pixel_unshuffle(at::zeros({1, 1, 3, 2}), 2); },
               "input.size(-2)=3 is not divisible by 2");
  expect_error([] { kernelzoo::pixel_unshuffle(at::zeros({1, 1, 2, 3}), 2); },
               "input.size(-1)=3 is not divisible by 2");
  expect_error([] { kernelzoo::pixel_unshuffle(at::zeros({1, 1, 2, 2}), -3); },
               "pixel_unshuffle expects a positive downscale_factor, but got -3");
}

// This library is built without CUDA kernels: the CUDA dispatch key holds the
// stub that tells users how to rebuild. Reach it by dispatching to CUDA directly.
TEST(PixelShuffle, CudaStubExplainsRebuild) {
  auto op = c10::Dispatcher::singleton()
                .findSchemaOrThrow("kernelzoo::pixel_shuffle", "")
                .typed<at::Tensor(const at::Tensor&, int64_t)>();
  expect_error([&] { op.redispatch(c10::DispatchKeySet(c10::DispatchKey::CUDA), at::zeros({1, 4, 2, 2}), 2); },
               "has no CUDA kernels");
  // --no-deps: --force-reinstall alone would reinstall torch as well
  expect_error([&] { op.redispatch(c10::DispatchKeySet(c10::DispatchKey::CUDA), at::zeros({1, 4, 2, 2}), 2); },
               "FORCE_CUDA=1 pip install --no-build-isolation --force-reinstall --no-deps .");
}

}  // namespace
