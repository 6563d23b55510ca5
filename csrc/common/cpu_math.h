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

}  // namespace kernelzoo
