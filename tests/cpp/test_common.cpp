// The shared pieces of csrc/common that are plain functions: the bilinear
// sampler under both border rules (against the definitions written out here),
// its taps, the launch configuration and the index-width choice.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <type_traits>
#include <vector>

#include "common/acc_type.h"
#include "common/bilinear.h"
#include "common/launch.h"

namespace {

using kernelzoo::ClampBorder;
using kernelzoo::Interp;
using kernelzoo::ZeroBorder;

// A sample of an h x w plane at (y, x), written from the two definitions.
// ZeroBorder, torchvision's deform_conv2d: zero outside (-1, size) on either
// axis; taps floor(v), floor(v) + 1 with linear weights, a tap off the map reads 0.
double zero_border_sample(const std::vector<double>& plane, int h, int w, double y, double x) {
  if (y <= -1 || y >= h || x <= -1 || x >= w) return 0;
  const int y0 = static_cast<int>(std::floor(y)), x0 = static_cast<int>(std::floor(x));
  const double ly = y - y0, lx = x - x0;
  auto at = [&](int r, int c) { return r >= 0 && r < h && c >= 0 && c < w ? plane[r * w + c] : 0.0; };
  return (1 - ly) * (1 - lx) * at(y0, x0) + (1 - ly) * lx * at(y0, x0 + 1) +
         ly * (1 - lx) * at(y0 + 1, x0) + ly * lx * at(y0 + 1, x0 + 1);
}

// ClampBorder, torchvision's roi_align: zero outside [-1, size]; clamped to the
// map otherwise, the last pixel repeated past the border.
double clamp_border_sample(const std::vector<double>& plane, int h, int w, double y, double x) {
  if (y < -1 || y > h || x < -1 || x > w) return 0;
  y = std::min(std::max(y, 0.0), double(h - 1));
  x = std::min(std::max(x, 0.0), double(w - 1));
  const int y0 = static_cast<int>(y), x0 = static_cast<int>(x);
  const int y1 = std::min(y0 + 1, h - 1), x1 = std::min(x0 + 1, w - 1);
  const double ly = y - y0, lx = x - x0;
  return (1 - ly) * (1 - lx) * plane[y0 * w + x0] + (1 - ly) * lx * plane[y0 * w + x1] +
         ly * (1 - lx) * plane[y1 * w + x0] + ly * lx * plane[y1 * w + x1];
}

template <typename Border>
double sample(const std::vector<double>& plane, int h, int w, double y, double x) {
  Interp<double> iy, ix;
  if (!kernelzoo::interp1d<Border>(y, h, iy) || !kernelzoo::interp1d<Border>(x, w, ix)) return 0;
  EXPECT_TRUE(iy.lo >= 0 && iy.lo < h && iy.hi >= 0 && iy.hi < h) << y;  // reads stay in bounds
  EXPECT_TRUE(ix.lo >= 0 && ix.lo < w && ix.hi >= 0 && ix.hi < w) << x;
  return kernelzoo::bilinear<double>(plane.data(), int64_t{w}, int64_t{1}, iy, ix);
}

// Coordinates around and on every border, integers included.
std::vector<double> coords(int size, std::mt19937& rng) {
  std::vector<double> v = {-2.0, -1.0, -0.999, -0.5, -1e-9, 0.0, 0.25, 1.0};
  for (double d : {-1.5, -1.0, -0.5, -1e-9, 0.0, 0.5, 1.0 - 1e-9, 1.0, 1.5}) v.push_back(size - 1 + d);
  v.push_back(size);
  std::uniform_real_distribution<double> u(-2.0, size + 1.0);
  for (int i = 0; i < 20; ++i) v.push_back(u(rng));
  return v;
}

TEST(Bilinear, BorderRulesMatchTheirDefinitions) {
  std::mt19937 rng(1);
  std::normal_distribution<double> n01;
  for (auto [h, w] : {std::pair<int, int>{1, 1}, {1, 5}, {4, 1}, {3, 7}, {6, 6}}) {
    std::vector<double> plane(h * w);
    for (double& p : plane) p = n01(rng);
    for (double y : coords(h, rng)) {
      for (double x : coords(w, rng)) {
        EXPECT_NEAR(sample<ZeroBorder>(plane, h, w, y, x), zero_border_sample(plane, h, w, y, x),
                    1e-12) << "zero border " << h << "x" << w << " at " << y << ", " << x;
        EXPECT_NEAR(sample<ClampBorder>(plane, h, w, y, x), clamp_border_sample(plane, h, w, y, x),
                    1e-12) << "clamp border " << h << "x" << w << " at " << y << ", " << x;
      }
    }
  }
}

TEST(Bilinear, NanCoordinatesAndEmptyAxesSampleNothing) {
  Interp<float> it;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_FALSE(kernelzoo::interp1d<ClampBorder>(nan, 4, it));
  EXPECT_FALSE(kernelzoo::interp1d<ZeroBorder>(nan, 4, it));
  EXPECT_FALSE(kernelzoo::interp1d<ClampBorder>(0.0f, 0, it));
  EXPECT_FALSE(kernelzoo::interp1d<ZeroBorder>(0.0f, 0, it));
}

// The taps of a sample carry weights that sum to one on the map (ClampBorder)
// or to the part of the sample on the map (ZeroBorder), and a tap of weight zero
// is no tap: an inf pixel beside a sample that does not touch it stays out.
TEST(Bilinear, TapsOfWeightZeroContributeNothing) {
  std::mt19937 rng(2);
  const int h = 5, w = 4;
  for (double y : coords(h, rng)) {
    for (double x : coords(w, rng)) {
      Interp<double> iy, ix;
      if (!kernelzoo::interp1d<ClampBorder>(y, h, iy) || !kernelzoo::interp1d<ClampBorder>(x, w, ix)) continue;
      double total = 0;
      int taps = 0;
      kernelzoo::bilinear_taps(int64_t{w}, int64_t{1}, iy, ix, [&](int64_t, double wt) {
        EXPECT_GT(wt, 0.0);
        total += wt;
        ++taps;
      });
      EXPECT_NEAR(total, 1.0, 1e-12) << y << ", " << x;
      EXPECT_GE(taps, 1);
    }
  }
  // A sample exactly on pixel (1, 2) of a plane with inf everywhere else.
  std::vector<float> plane(h * w, std::numeric_limits<float>::infinity());
  plane[1 * w + 2] = 3.5f;
  for (bool zero_border : {false, true}) {
    Interp<float> iy, ix;
    ASSERT_TRUE(zero_border ? kernelzoo::interp1d<ZeroBorder>(1.0f, h, iy)
                            : kernelzoo::interp1d<ClampBorder>(1.0f, h, iy));
    ASSERT_TRUE(zero_border ? kernelzoo::interp1d<ZeroBorder>(2.0f, w, ix)
                            : kernelzoo::interp1d<ClampBorder>(2.0f, w, ix));
    EXPECT_EQ(kernelzoo::bilinear<float>(plane.data(), int64_t{w}, int64_t{1}, iy, ix), 3.5f);
  }
}

TEST(Launch, GridBlocks) {
  EXPECT_EQ(kernelzoo::grid_blocks(0), 1u);
  EXPECT_EQ(kernelzoo::grid_blocks(1), 1u);
  EXPECT_EQ(kernelzoo::grid_blocks(kernelzoo::kBlockThreads), 1u);
  EXPECT_EQ(kernelzoo::grid_blocks(kernelzoo::kBlockThreads + 1), 2u);
  EXPECT_EQ(kernelzoo::grid_blocks(int64_t{1} << 40), 1u << 20);  // capped: grid-stride loops do the rest
}

TEST(AccType, OneDefinition) {
  static_assert(std::is_same_v<kernelzoo::acc_type_t<c10::Half>, float>);
  static_assert(std::is_same_v<kernelzoo::acc_type_t<c10::BFloat16>, float>);
  static_assert(std::is_same_v<kernelzoo::acc_type_t<float>, float>);
  static_assert(std::is_same_v<kernelzoo::acc_type_t<double>, double>);
  SUCCEED();
}

}  // namespace
