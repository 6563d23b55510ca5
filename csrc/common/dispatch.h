// Host-side dispatch helpers.
#pragma once

#include <c10/util/Exception.h>

#include "elements.h"

// Runs __VA_ARGS__ with `elem_t` bound to an opaque type of the given element
// size in bytes (1, 2, 4, 8 or 16): every dtype torch has maps onto one of them.
#define KERNELZOO_DISPATCH_BY_ELEMENT_SIZE(ELEM_SIZE, NAME, ...)                 \
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
