// selective scan through the C++ API (kernelzoo::selective_scan_forward,
// kernelzoo::selective_state_update) against the recurrence written as plain
// loops in double: the LibTorch path of the op, independent of the Python side.
// Per-op ATen headers rather than ATen/ATen.h: half the compile time.
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/allclose.h>
#include <ATen/ops/rand.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/zeros.h>
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "ops/selective_scan/selective_scan.h"

namespace {

double softplus(double x) { return x > 20 ? x : std::log1p(std::exp(x)); }

// The recurrence of one (batch b, channel d): B and C grouped (batch, groups,
// dstate, seqlen); returns out over the sequence, and the last state in `h`.
std::vector<double> scan_loop(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                              const at::Tensor& B, const at::Tensor& C, const at::Tensor& D,
                              const at::Tensor& z, const at::Tensor& bias, int64_t b, int64_t d,
                              std::vector<double>& h) {
  const auto U = u.accessor<double, 3>(), DT = delta.accessor<double, 3>(),
             Z = z.accessor<double, 3>();
  const auto AA = A.accessor<double, 2>();
  const auto BB = B.accessor<double, 4>(), CC = C.accessor<double, 4>();
  const int64_t L = u.size(2), N = A.size(1), g = d / (u.size(1) / B.size(1));
  std::vector<double> out(L);
  h.assign(N, 0.0);
  for (int64_t l = 0; l < L; ++l) {
    const double dt = softplus(DT[b][d][l] + bias[d].item<double>());
    double y = 0;
    for (int64_t n = 0; n < N; ++n) {
      h[n] = std::exp(dt * AA[d][n]) * h[n] + dt * BB[b][g][n][l] * U[b][d][l];
      y += h[n] * CC[b][g][n][l];
    }
    const double zz = Z[b][d][l];
    out[l] = (y + D[d].item<double>() * U[b][d][l]) * zz / (1 + std::exp(-zz));
  }
  return out;
}

TEST(SelectiveScanApi, ForwardMatchesLoops) {
  const int64_t batch = 2, dim = 21, N = 5, L = 150, groups = 3;  // 3 chunks, partial lane blocks
  const at::Tensor u = at::randn({batch, dim, L}, at::kDouble);
  const at::Tensor delta = at::rand({batch, dim, L}, at::kDouble) * 0.5;
  const at::Tensor A = -at::rand({dim, N}, at::kDouble);
  const at::Tensor B = at::randn({batch, groups, N, L}, at::kDouble);
  const at::Tensor C = at::randn({batch, groups, N, L}, at::kDouble);
  const at::Tensor D = at::randn({dim}, at::kDouble), bias = at::randn({dim}, at::kDouble) * 0.1;
  const at::Tensor z = at::randn({batch, dim, L}, at::kDouble);
  auto [out, last, ckpt] = kernelzoo::selective_scan_forward(u, delta, A, B, C, D, z, bias, true,
                                                             std::nullopt, std::nullopt);
  ASSERT_EQ(out.sizes(), u.sizes());
  ASSERT_EQ(last.sizes(), at::IntArrayRef({batch, dim, N}));
  EXPECT_EQ(ckpt.sizes(), at::IntArrayRef({batch, dim, 3, N}));
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t d = 0; d < dim; ++d) {
      std::vector<double> h;
      const std::vector<double> want = scan_loop(u, delta, A, B, C, D, z, bias, b, d, h);
      for (int64_t l = 0; l < L; ++l) ASSERT_NEAR(out[b][d][l].item<double>(), want[l], 1e-10);
      for (int64_t n = 0; n < N; ++n) ASSERT_NEAR(last[b][d][n].item<double>(), h[n], 1e-10);
    }
  }
}

TEST(SelectiveScanApi, StateUpdateStepsEqualTheScan) {
  const int64_t batch = 2, dim = 6, N = 3, L = 7;
  const at::Tensor u = at::randn({batch, dim, L}), delta = at::rand({batch, dim, L});
  const at::Tensor A = -at::rand({dim, N}), B = at::randn({batch, N, L}),
                   C = at::randn({batch, N, L});
  auto [out, last, ckpt] =
      kernelzoo::selective_scan_forward(u, delta, A, B, C, std::nullopt, std::nullopt, std::nullopt,
                                        true, std::nullopt, std::nullopt);
  at::Tensor state = at::zeros({batch, dim, N});
  for (int64_t l = 0; l < L; ++l) {
    const at::Tensor y = kernelzoo::selective_state_update(
        state, u.select(2, l), delta.select(2, l), A, B.select(2, l), C.select(2, l), std::nullopt,
        std::nullopt, std::nullopt, true);
    EXPECT_TRUE(y.allclose(out.select(2, l), 1e-5, 1e-6)) << "step " << l;
  }
  EXPECT_TRUE(state.allclose(last, 1e-5, 1e-6));
}

TEST(SelectiveScanApi, ErrorMessages) {
  const at::Tensor u = at::zeros({1, 4, 6}), A = at::zeros({4, 2}), B = at::zeros({1, 2, 6});
  try {
    kernelzoo::selective_scan_forward(u, u, A, B, B, std::nullopt, std::nullopt, std::nullopt,
                                      false, std::nullopt, at::tensor({0, 2, 5}, at::kInt));
    ADD_FAILURE() << "no error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("cu_seqlens must end at seqlen (6), but ends at 5"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
