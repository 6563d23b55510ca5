// deform_conv2d through the C++ API (kernelzoo::deform_conv2d,
// kernelzoo::deform_conv2d_backward): with zero offsets and no mask it is a
// convolution, so the forward equals at::conv2d and the backward equals
// at::convolution_backward, on groups, stride, padding and dilation; bad
// arguments raise c10::Error with the op's message.
#include <ATen/core/Tensor.h>
#include <ATen/ops/allclose.h>
#include <ATen/ops/conv2d.h>
#include <ATen/ops/convolution_backward.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/zeros.h>
#include <gtest/gtest.h>

#include <string>

#include "ops/deform_conv2d/deform_conv2d.h"

namespace {

TEST(DeformConv2dApi, ZeroOffsetsAreAConvolution) {
  const int64_t groups = 2;
  const at::Tensor x = at::randn({2, 4, 7, 6}, at::kDouble);
  const at::Tensor w = at::randn({6, 2, 3, 3}, at::kDouble);
  const at::Tensor b = at::randn({6}, at::kDouble);
  // stride (2, 1), padding (1, 2), dilation (1, 2): output 4 x 6
  const at::Tensor off = at::zeros({2, 2 * 2 * 9, 4, 6}, at::kDouble);
  const at::Tensor out =
      kernelzoo::deform_conv2d(x, w, off, std::nullopt, b, 2, 1, 1, 2, 1, 2, groups, 2);
  const at::Tensor ref = at::conv2d(x, w, b, {2, 1}, {1, 2}, {1, 2}, groups);
  ASSERT_EQ(out.sizes(), ref.sizes());
  EXPECT_TRUE(at::allclose(out, ref, 1e-12, 1e-12));

  const at::Tensor grad = at::randn(out.sizes(), at::kDouble);
  const auto [gi, gw, goff, gmask, gb] = kernelzoo::deform_conv2d_backward(
      grad, x, w, off, std::nullopt, b, 2, 1, 1, 2, 1, 2, groups, 2);
  const auto [ri, rw, rb] =
      at::convolution_backward(grad, x, w, at::IntArrayRef{6}, {2, 1}, {1, 2}, {1, 2}, false,
                               {0, 0}, groups, {true, true, true});
  EXPECT_TRUE(at::allclose(gi, ri, 1e-12, 1e-12));
  EXPECT_TRUE(at::allclose(gw, rw, 1e-12, 1e-12));
  EXPECT_TRUE(at::allclose(gb, rb, 1e-12, 1e-12));
  EXPECT_EQ(goff.sizes(), off.sizes());
  EXPECT_EQ(gmask.numel(), 0);  // no mask, no gradient
}

TEST(DeformConv2dApi, BadArgumentsSayWhatIsWrong) {
  const at::Tensor x = at::randn({1, 4, 5, 5});
  const at::Tensor w = at::randn({4, 4, 3, 3});
  const at::Tensor off = at::zeros({1, 18, 5, 5});
  auto message = [&](const at::Tensor& o, int64_t groups, int64_t og) {
    try {
      kernelzoo::deform_conv2d(x, w, o, std::nullopt, std::nullopt, 1, 1, 1, 1, 1, 1, groups, og);
    } catch (const c10::Error& e) {
      return std::string(e.what_without_backtrace());
    }
    return std::string("no error");
  };
  EXPECT_NE(message(off, 1, 2).find("offset_groups = 2 needs 36"), std::string::npos);
  EXPECT_NE(message(off.narrow(3, 0, 4), 1, 1).find("offset must have shape"), std::string::npos);
  EXPECT_NE(message(off, 3, 1).find("groups (3) must divide"), std::string::npos);
  EXPECT_EQ(message(off, 1, 1), "no error");
}

}  // namespace
