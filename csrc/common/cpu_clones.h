// CPU function multiversioning for hot loops. The extension is compiled for the
// baseline x86-64 ISA (SSE2); a function marked KZ_CPU_CLONES is compiled once
// more for AVX2+FMA (x86-64-v3) and for AVX-512 (x86-64-v4), and the loader
// picks the best version the CPU supports (GCC/Clang target_clones, an ifunc).
// The loops of such a function (and of the KZ_ALWAYS_INLINE helpers it calls)
// are vectorized for each target. Elsewhere (other compilers, other
// architectures, sanitized builds) the macro is empty and the baseline code runs.
// Host code only.
#pragma once

#if defined(__x86_64__) && defined(__ELF__) && !defined(__CUDACC__) && \
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
