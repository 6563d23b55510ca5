// The one CPU vectorisation style of kernelzoo (docs/adding-an-op.md):
//
//  - Hot loops are plain C++ over a fixed number of lanes (a compile-time trip
//    count), written so that the compiler vectorizes them; where it will not
//    (a select of a maximum and its index), they use the Lanes<T, N> vector
//    types below (GCC/Clang vector extensions: +, *, <, ?: on N lanes at once).
//  - The function holding such a loop is marked KZ_CPU_CLONES: it is compiled
//    for the baseline x86-64 ISA (SSE2), for AVX2+FMA (x86-64-v3) and for
//    AVX-512 (x86-64-v4), and the loader picks the best version the CPU
//    supports (GCC/Clang target_clones, an ifunc). The helpers it calls are
//    KZ_ALWAYS_INLINE so that they are compiled into each clone.
//  - No intrinsics and no at::vec::Vectorized: an extension is compiled once
//    for the baseline, and at::vec picks its width from compile-time flags,
//    so it would stay at SSE2 width here; the clones reach AVX-512.
// Elsewhere (other compilers, architectures or C libraries, sanitized builds)
// KZ_CPU_CLONES is empty and the baseline code runs; without vector extensions
// KZ_VECTOR_EXTENSIONS is undefined and kernels take their scalar loops.
// Host code only.
#pragma once

#include <cstdint>  // defines __GLIBC__ (through features.h) where it applies

// ifuncs need glibc's loader (musl has none).
#if defined(__x86_64__) && defined(__ELF__) && defined(__GLIBC__) && !defined(__CUDACC__) && \
    !defined(__SANITIZE_ADDRESS__) && (defined(__GNUC__) || defined(__clang__))
#define KZ_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define KZ_CPU_CLONES
#endif

#if defined(__GNUC__) || defined(__clang__)
#define KZ_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define KZ_ALWAYS_INLINE inline
#endif

#if defined(__GNUC__) || defined(__clang__)
#define KZ_VECTOR_EXTENSIONS 1

namespace kernelzoo {

// N lanes of T (float or double) and the matching lane mask, the result type
// of a lane-wise comparison.
template <typename T, int N>
struct Lanes;
template <int N>
struct Lanes<float, N> {
  typedef float type __attribute__((vector_size(N * sizeof(float))));
  typedef int32_t mask __attribute__((vector_size(N * sizeof(int32_t))));
};
template <int N>
struct Lanes<double, N> {
  typedef double type __attribute__((vector_size(N * sizeof(double))));
  typedef int64_t mask __attribute__((vector_size(N * sizeof(int64_t))));
};

}  // namespace kernelzoo
#endif
