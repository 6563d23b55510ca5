// Opaque element types by size, for operators that only move data (pixel_shuffle
// and friends): a kernel instantiated for Bytes<4> serves float, int32 and
// complex32 alike, so a permutation needs 5 instantiations instead of one per
// dtype. Kernel-safe: no tensor or runtime headers.
#pragma once

#include <cstdint>

namespace kernelzoo {

template <int N> struct Bytes;
template <> struct Bytes<1> { using type = uint8_t; };
template <> struct Bytes<2> { using type = uint16_t; };
template <> struct Bytes<4> { using type = uint32_t; };
template <> struct Bytes<8> { using type = uint64_t; };

struct alignas(16) Bytes16 {
  uint64_t lo, hi;
};
template <> struct Bytes<16> { using type = Bytes16; };

template <int N> using bytes_t = typename Bytes<N>::type;

}  // namespace kernelzoo
