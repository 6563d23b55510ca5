// Host-side dtype dispatch: the two ways an op picks its kernels' element type.
#pragma once

#include <ATen/Dispatch.h>
#include <c10/util/Exception.h>

#include "elements.h"

// The floating-point dtypes every arithmetic kernel supports (DESIGN.md:
// float64, float32, float16, bfloat16): runs __VA_ARGS__ (a lambda) with
// `scalar_t` bound; accumulate in kernelzoo::acc_type_t<scalar_t> (acc_type.h).
#define KZ_DISPATCH_FLOATING_TYPES(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

// For operators that only move data (pixel_shuffle): runs __VA_ARGS__ with
// `elem_t` bound to an opaque type of the given element size in bytes (1, 2, 4,
// 8 or 16): every dtype torch has maps onto one of them.
#define KZ_DISPATCH_BY_ELEMENT_SIZE(ELEM_SIZE, NAME, ...)                        \
  [&] {                                                                          \
    switch (ELEM_SIZE) {                                                         \
      case 1: { using elem_t = ::kernelzoo::bytes_t<1>; return __VA_ARGS__(); }  \
      case 2: { using elem_t = ::kernelzoo::bytes_t<2>; return __VA_ARGS__(); }  \
      case 4: { using elem_t = ::kernelzoo::bytes_t<4>; return __VA_ARGS__(); }  \
      case 8: { using elem_t = ::kernelzoo::bytes_t<8>; return __VA_ARGS__(); }  \
      case 16: { using elem_t = ::kernelzoo::bytes_t<16>; return __VA_ARGS__(); } \
      default:                                                                   \
        TORCH_CHECK(false, NAME, ": unsupported element size ", ELEM_SIZE,       \
                    " bytes");                                                   \
    }                                                                            \
  }()

namespace kernelzoo {

// A value that carries a type, for generic lambdas: f(type_tag<scalar_t>{}).
template <typename T>
struct type_tag {
  using type = T;
};

}  // namespace kernelzoo
