// flash attention through the C++ API (kernelzoo::flash_attn_forward, ...),
// against plain loops written from flash-attn's definitions, in double: the
// LibTorch path of the op, independent of the Python wrappers.
// Per-op ATen headers rather than ATen/ATen.h: half the compile time.
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/allclose.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/zeros.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "ops/flash_attn/flash_attn.h"

namespace {

struct Problem {
  int64_t sq, sk, h, hk, d;
  int64_t left, right;  // window, -1 unbounded
  double softcap;
};

// out[i] = sum_j softmax_j(s_ij) v_j over the keys query i sees, s_ij =
// softcap(scale q_i.k_j); lse[i] = log sum_j exp(s_ij) (+inf without keys).
void reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const Problem& p,
               double scale, std::vector<double>& out, std::vector<double>& lse) {
  const auto Q = q.accessor<double, 4>(), K = k.accessor<double, 4>(), V = v.accessor<double, 4>();
  const int64_t batch = q.size(0), group = p.h / p.hk;
  out.assign(batch * p.sq * p.h * p.d, 0.0);
  lse.assign(batch * p.h * p.sq, 0.0);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t h = 0; h < p.h; ++h) {
      for (int64_t i = 0; i < p.sq; ++i) {
        const int64_t diag = i + p.sk - p.sq;
        std::vector<double> s;
        std::vector<int64_t> js;
        for (int64_t j = 0; j < p.sk; ++j) {
          if ((p.left >= 0 && j < diag - p.left) || (p.right >= 0 && j > diag + p.right)) continue;
          double dot = 0;
          for (int64_t c = 0; c < p.d; ++c) dot += Q[b][i][h][c] * K[b][j][h / group][c];
          dot *= scale;
          if (p.softcap > 0) dot = p.softcap * std::tanh(dot / p.softcap);
          s.push_back(dot);
          js.push_back(j);
        }
        const int64_t li = (b * p.h + h) * p.sq + i;
        if (s.empty()) {
          lse[li] = std::numeric_limits<double>::infinity();
          continue;
        }
        double mx = -std::numeric_limits<double>::infinity(), sum = 0;
        for (double x : s) mx = std::max(mx, x);
        for (double x : s) sum += std::exp(x - mx);
        lse[li] = mx + std::log(sum);
        for (size_t t = 0; t < s.size(); ++t) {
          const double w = std::exp(s[t] - lse[li]);
          for (int64_t c = 0; c < p.d; ++c) {
            out[((b * p.sq + i) * p.h + h) * p.d + c] += w * V[b][js[t]][h / group][c];
          }
        }
      }
    }
  }
}

class FlashApi : public ::testing::TestWithParam<Problem> {};

TEST_P(FlashApi, ForwardMatchesLoops) {
  const Problem p = GetParam();
  const at::Tensor q = at::randn({2, p.sq, p.h, p.d}, at::kDouble);
  const at::Tensor k = at::randn({2, p.sk, p.hk, p.d}, at::kDouble);
  const at::Tensor v = at::randn({2, p.sk, p.hk, p.d}, at::kDouble);
  const double scale = 1.0 / std::sqrt(static_cast<double>(p.d));
  auto [out, lse, dmask] = kernelzoo::flash_attn_forward(
      q, k, v, std::nullopt, std::nullopt, p.sq, p.sk, 0.0, scale, p.left, p.right, p.softcap,
      std::nullopt, false, std::nullopt, 0);
  std::vector<double> want_out, want_lse;
  reference(q, k, v, p, scale, want_out, want_lse);
  ASSERT_EQ(out.sizes(), q.sizes());
  ASSERT_EQ(lse.sizes(), at::IntArrayRef({2, p.h, p.sq}));
  const double* o = out.const_data_ptr<double>();
  const double* l = lse.const_data_ptr<double>();
  for (size_t e = 0; e < want_out.size(); ++e) ASSERT_NEAR(o[e], want_out[e], 1e-10) << e;
  for (size_t e = 0; e < want_lse.size(); ++e) {
    if (std::isinf(want_lse[e])) {
      EXPECT_TRUE(std::isinf(l[e]) && l[e] > 0) << e;
    } else {
      ASSERT_NEAR(l[e], want_lse[e], 1e-10) << e;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, FlashApi,
    ::testing::Values(Problem{17, 23, 4, 2, 7, -1, -1, 0.0},   // GQA, odd sizes
                      Problem{23, 17, 2, 2, 16, -1, 0, 0.0},   // causal, more queries than keys
                      Problem{9, 140, 3, 1, 5, 20, 3, 0.0},    // MQA, window
                      Problem{33, 33, 2, 1, 8, -1, 0, 2.5},    // causal + softcap
                      Problem{1, 600, 2, 2, 4, -1, -1, 0.0}),  // one query over two key blocks
    [](const ::testing::TestParamInfo<Problem>& info) {
      const Problem& p = info.param;
      auto w = [](int64_t x) { return x < 0 ? std::string("inf") : std::to_string(x); };
      return "sq" + std::to_string(p.sq) + "_sk" + std::to_string(p.sk) + "_h" +
             std::to_string(p.h) + "_hk" + std::to_string(p.hk) + "_d" + std::to_string(p.d) +
             "_window_" + w(p.left) + "_" + w(p.right) + (p.softcap > 0 ? "_softcap" : "");
    });

TEST(FlashApiVarlen, EqualsEachSequenceAlone) {
  const std::vector<int32_t> cu = {0, 5, 5, 18};
  const at::Tensor cu_t = at::tensor(cu, at::kInt);
  const at::Tensor q = at::randn({18, 2, 8}, at::kDouble), k = at::randn({18, 1, 8}, at::kDouble),
                   v = at::randn({18, 1, 8}, at::kDouble);
  auto [out, lse, dm] = kernelzoo::flash_attn_forward(q, k, v, cu_t, cu_t, 13, 13, 0.0, 0.3, -1, 0,
                                                      0.0, std::nullopt, false, std::nullopt, 0);
  for (size_t s = 0; s + 1 < cu.size(); ++s) {
    const int64_t a = cu[s], n = cu[s + 1] - cu[s];
    if (n == 0) continue;
    auto [o1, l1, d1] = kernelzoo::flash_attn_forward(
        q.slice(0, a, a + n).unsqueeze(0), k.slice(0, a, a + n).unsqueeze(0),
        v.slice(0, a, a + n).unsqueeze(0), std::nullopt, std::nullopt, n, n, 0.0, 0.3, -1, 0, 0.0,
        std::nullopt, false, std::nullopt, 0);
    EXPECT_TRUE(out.slice(0, a, a + n).allclose(o1[0], 1e-12, 1e-12)) << "sequence " << s;
  }
}

TEST(FlashApiBackward, MatchesFiniteDifferences) {
  const at::Tensor q = at::randn({1, 5, 2, 3}, at::kDouble),
                   k = at::randn({1, 7, 1, 3}, at::kDouble),
                   v = at::randn({1, 7, 1, 3}, at::kDouble);
  const at::Tensor dout = at::randn({1, 5, 2, 3}, at::kDouble);
  auto run = [&](const at::Tensor& qq) {
    return std::get<0>(kernelzoo::flash_attn_forward(qq, k, v, std::nullopt, std::nullopt, 5, 7,
                                                     0.0, 0.5, -1, 0, 0.0, std::nullopt, false,
                                                     std::nullopt, 0));
  };
  auto [out, lse, dm] =
      kernelzoo::flash_attn_forward(q, k, v, std::nullopt, std::nullopt, 5, 7, 0.0, 0.5, -1, 0, 0.0,
                                    std::nullopt, false, std::nullopt, 0);
  auto [dq, dk, dv] =
      kernelzoo::flash_attn_backward(dout, q, k, v, out, lse, std::nullopt, std::nullopt, 5, 7, 0.0,
                                     0.5, -1, 0, 0.0, std::nullopt, false, std::nullopt, 0);
  const double eps = 1e-6;
  for (int64_t e = 0; e < q.numel(); ++e) {
    at::Tensor qp = q.clone(), qm = q.clone();
    qp.view(-1)[e] += eps;
    qm.view(-1)[e] -= eps;
    const double fd = ((run(qp) - run(qm)) * dout).sum().item<double>() / (2 * eps);
    EXPECT_NEAR(dq.view(-1)[e].item<double>(), fd, 1e-6) << e;
  }
}

TEST(FlashApiErrors, Messages) {
  const at::Tensor q = at::zeros({2, 3, 4, 8}), k = at::zeros({2, 5, 3, 8});
  try {
    kernelzoo::flash_attn_forward(q, k, k, std::nullopt, std::nullopt, 3, 5, 0.0, 1.0, -1, -1, 0.0,
                                  std::nullopt, false, std::nullopt, 0);
    ADD_FAILURE() << "no error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("must be a multiple of the number of key/value heads"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
