// The accumulation type of every kernel, CPU and CUDA alike: float for
// float16, bfloat16 and float32, double for float64 (what ATen's opmath_type
// gives, defined once here so that kernel bodies, which may not include ATen,
// and host code agree). Kernel-safe: c10's header-only Half/BFloat16 only.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

namespace kernelzoo {

template <typename scalar_t>
struct AccType {
  using type = scalar_t;
};
template <>
struct AccType<c10::Half> {
  using type = float;
};
template <>
struct AccType<c10::BFloat16> {
  using type = float;
};

template <typename scalar_t>
using acc_type_t = typename AccType<scalar_t>::type;

}  // namespace kernelzoo
