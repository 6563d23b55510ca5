// Elementwise math for the CPU kernels, written as plain arithmetic so that
// a fixed-width loop of it vectorizes in each KZ_CPU_CLONES target (cpu_vec.h).
// Host code only.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "cpu_vec.h"

namespace kernelzoo {

// e^x for float lanes: x = n ln2 + r, |r| <= ln2 / 2, e^r by a degree-6
// polynomial (relative error below 2e-7), 2^n through the exponent bits; exactly
// 0 for x < -87.3 (masked scores are -inf). Plain arithmetic, so the compiler
// vectorizes a loop of it in each KZ_CPU_CLONES target.
KZ_ALWAYS_INLINE float exp_lane(float x) {
  const float xc = x < -87.3f ? -87.3f : (x > 88.3f ? 88.3f : x);
  // round to nearest through the float's own rounding (1.5 * 2^23): plain arithmetic
  const float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const float r = (xc - n * 0.693145751953125f) - n * 1.42860682030941723e-6f;
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return x < -87.3f ? 0.0f : p * scale;
}

KZ_ALWAYS_INLINE double exp_lane(double x) { return std::exp(x); }

// log x for float lanes, x > 0 and finite: x = m 2^e with m in [sqrt(1/2),
// sqrt(2)), log m = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.172, by its
// series to s^9 (relative error below 1e-7).
KZ_ALWAYS_INLINE float log_lane(float x) {
  int32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  int32_t e = ((bits >> 23) & 0xff) - 127;
  int32_t mbits = (bits & 0x007fffff) | 0x3f800000;  // m in [1, 2)
  float m;
  std::memcpy(&m, &mbits, sizeof(m));
  const bool big = m > 1.41421356f;
  m = big ? m * 0.5f : m;
  e = big ? e + 1 : e;
  const float s = (m - 1.0f) / (m + 1.0f), s2 = s * s;
  float p = 1.0f / 9.0f;
  p = p * s2 + 1.0f / 7.0f;
  p = p * s2 + 1.0f / 5.0f;
  p = p * s2 + 1.0f / 3.0f;
  p = p * s2 + 1.0f;
  return static_cast<float>(e) * 0.693147180559945f + 2.0f * s * p;
}

// log(1 + t) for t >= 0, accurate for tiny t too: log u for u = 1 + t
// rounded, plus the first-order correction for the rounding, (t - (u - 1)) / u.
KZ_ALWAYS_INLINE float log1p_lane(float t) {
  const float u = 1.0f + t;
  return log_lane(u) + (t - (u - 1.0f)) / u;
}

// softplus with torch's threshold 20 (x itself above it), as mamba_ssm. The
// threshold is applied arithmetically, not by a select, which GCC would turn
// into a branch here and then not vectorize the loop.
KZ_ALWAYS_INLINE float softplus_lane(float x) {
  const float s = log1p_lane(exp_lane(x));
  return s + static_cast<float>(x > 20.0f) * (x - s);
}
KZ_ALWAYS_INLINE double softplus_lane(double x) { return x > 20.0 ? x : std::log1p(std::exp(x)); }

KZ_ALWAYS_INLINE float sigmoid_lane(float x) { return 1.0f / (1.0f + exp_lane(-x)); }
KZ_ALWAYS_INLINE double sigmoid_lane(double x) { return 1.0 / (1.0 + std::exp(-x)); }

}  // namespace kernelzoo
