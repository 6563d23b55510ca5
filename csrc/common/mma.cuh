// The one header that wraps inline PTX: warp-level tensor-core MMA, ldmatrix and
// cp.async. Kernels reach these instructions only through the functions below,
// so that the CPU execution harness of the C++ tests (tests/cpp/harness) can run
// them with the per-lane semantics of NVIDIA's PTX ISA. Kernel-safe: no tensor
// or runtime host headers. Device code: include it from a *_kernel.cuh.
//
// All functions are warp- or thread-level device functions in namespace
// kernelzoo::mma. Requirements: sm_80+ for mma and cp.async (a synchronous copy
// stands in for cp.async below sm_80), sm_75+ for ldmatrix.
//
// ---------------------------------------------------------------------------
// mma_m16n8k16<T>(d, a, b, c)        T = c10::Half or c10::BFloat16
//   D (16x8, f32) = A (16x16, T, row-major) * B (16x8, T, "col": k fastest) + C (16x8, f32)
//   mma.sync.aligned.m16n8k16.row.col.f32.{f16|bf16}.{f16|bf16}.f32. All 32 lanes of
//   the warp execute it together (convergent, full warp). d and c may alias.
//   Each 32-bit register holds two 16-bit elements, the lower-indexed one in the low
//   half (see pack2). With g = lane / 4 and t = lane % 4 (PTX ISA, "Matrix Fragments
//   for mma.m16n8k16 with floating point type"):
//     a[0] = A[g    ][2t, 2t+1]      a[1] = A[g + 8][2t, 2t+1]
//     a[2] = A[g    ][2t+8, 2t+9]    a[3] = A[g + 8][2t+8, 2t+9]
//     b[0] = B[2t, 2t+1][g]          b[1] = B[2t+8, 2t+9][g]
//     c[0], c[1] = C[g][2t, 2t+1]    c[2], c[3] = C[g + 8][2t, 2t+1]   (same for d)
//   a_coord / b_coord / c_coord below give these coordinates.
//
// ldmatrix(r, row_ptr) / ldmatrix_trans(r, row_ptr)     r: uint32_t[1], [2] or [4]
//   ldmatrix.sync.aligned.m8n8.{x1|x2|x4}{.trans}.shared.b16: loads N 8x8 matrices of
//   16-bit elements from shared memory. Lane 8*i + j passes the address of row j of
//   matrix i (16 bytes, 16-byte aligned); lanes >= 8*N pass anything. Lane l receives
//   in r[i] the elements (row l/4, cols 2*(l%4), 2*(l%4)+1) of matrix i: exactly an
//   mma fragment (x4 of a 16x16 row-major tile: A; x2 of B stored as [n][k]: B).
//   .trans gives (rows 2*(l%4), 2*(l%4)+1; col l/4): the transposed matrix, for B
//   stored as [k][n]. Whole warp, convergent.
//
// cp_async<Bytes>(smem_dst, gmem_src)                   Bytes = 4, 8 or 16
// cp_async_zfill<Bytes>(smem_dst, gmem_src, src_bytes)  copies src_bytes (0..Bytes),
//                                                       zero-fills the rest
// cp_async_commit(); cp_async_wait<N>(); cp_async_wait_all();
//   Per-thread asynchronous global -> shared copies (cp.async.ca, or .cg for 16 bytes),
//   grouped by commit; wait<N> waits until at most N of this thread's committed
//   groups are in flight (wait_all: none, uncommitted copies included). Addresses
//   aligned to Bytes. Another thread may read the data only after this thread's wait
//   and a __syncthreads(). In the harness the destination is written at the wait and
//   is poisoned for AddressSanitizer until then.
// ---------------------------------------------------------------------------
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <type_traits>

#include "macros.h"

#if !defined(__CUDACC__) && !defined(KERNELZOO_CUDA_HARNESS)
#error "mma.cuh is device code: include it from a *_kernel.cuh (nvcc, or the CPU harness of the C++ tests)"
#endif

#if defined(KERNELZOO_CUDA_HARNESS)
// The harness reports misuse with the caller's source line.
#define KZ_PTX_LOC_PARAM , std::source_location kz_loc = std::source_location::current()
#else
#define KZ_PTX_LOC_PARAM
#endif

namespace kernelzoo {
namespace mma {

template <typename T>
inline constexpr bool is_mma_input_v =
    std::is_same_v<T, c10::Half> || std::is_same_v<T, c10::BFloat16>;

// Two values of T (c10::Half or c10::BFloat16) in one register, `lo` in the low half.
template <typename T>
KZ_HOST_DEVICE KZ_INLINE uint32_t pack2(float lo, float hi) {
  static_assert(is_mma_input_v<T>, "pack2: T is c10::Half or c10::BFloat16");
  return static_cast<uint32_t>(T(lo).x) | (static_cast<uint32_t>(T(hi).x) << 16);
}
template <typename T>
KZ_HOST_DEVICE KZ_INLINE uint32_t pack2(T lo, T hi) {
  static_assert(is_mma_input_v<T>, "pack2: T is c10::Half or c10::BFloat16");
  return static_cast<uint32_t>(lo.x) | (static_cast<uint32_t>(hi.x) << 16);
}
template <typename T>
KZ_HOST_DEVICE KZ_INLINE float unpack_lo(uint32_t r) {
  return static_cast<float>(T(static_cast<unsigned short>(r & 0xffffu), T::from_bits()));
}
template <typename T>
KZ_HOST_DEVICE KZ_INLINE float unpack_hi(uint32_t r) {
  return static_cast<float>(T(static_cast<unsigned short>(r >> 16), T::from_bits()));
}

// Matrix coordinates of element i of a lane's fragment (see the table above).
struct Coord {
  int row, col;
};
// A (16x16): i = 0..7, element i lives in a[i / 2], half i % 2.
KZ_HOST_DEVICE KZ_INLINE Coord a_coord(int lane, int i) {
  return {lane / 4 + 8 * ((i / 2) % 2), 2 * (lane % 4) + (i % 2) + 8 * (i / 4)};
}
// B (16x8, as k x n): i = 0..3, element i lives in b[i / 2], half i % 2.
KZ_HOST_DEVICE KZ_INLINE Coord b_coord(int lane, int i) {
  return {2 * (lane % 4) + (i % 2) + 8 * (i / 2), lane / 4};
}
// C and D (16x8): i = 0..3.
KZ_HOST_DEVICE KZ_INLINE Coord c_coord(int lane, int i) {
  return {lane / 4 + 8 * (i / 2), 2 * (lane % 4) + (i % 2)};
}

template <typename T>
KZ_DEVICE KZ_INLINE void mma_m16n8k16(float (&d)[4], const uint32_t (&a)[4],
                                      const uint32_t (&b)[2], const float (&c)[4] KZ_PTX_LOC_PARAM) {
  static_assert(is_mma_input_v<T>, "mma_m16n8k16: T is c10::Half or c10::BFloat16");
#if defined(KERNELZOO_CUDA_HARNESS)
  using namespace ::kernelzoo::harness::detail;
  MmaIn in;
  for (int i = 0; i < 4; ++i) in.a[i] = a[i], in.c[i] = c[i];
  in.b[0] = b[0], in.b[1] = b[1];
  float out[4];
  warp_collective(std::is_same_v<T, c10::Half> ? WarpOp::MmaF16 : WarpOp::MmaBF16, 0xffffffffu,
                  &in, out, kz_loc);
  for (int i = 0; i < 4; ++i) d[i] = out[i];
#elif defined(__CUDA_ARCH__)
#if __CUDA_ARCH__ >= 800
  if constexpr (std::is_same_v<T, c10::Half>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]),
          "f"(c[1]), "f"(c[2]), "f"(c[3]));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]),
          "f"(c[1]), "f"(c[2]), "f"(c[3]));
  }
#else
  __trap();  // the launcher must not run tensor-core kernels below sm_80
#endif
#endif
}

namespace detail {
template <int N, bool Trans>
KZ_DEVICE KZ_INLINE void ldmatrix_impl(uint32_t (&r)[N], const void* row_ptr KZ_PTX_LOC_PARAM) {
  static_assert(N == 1 || N == 2 || N == 4, "ldmatrix loads 1, 2 or 4 matrices");
#if defined(KERNELZOO_CUDA_HARNESS)
  using namespace ::kernelzoo::harness::detail;
  LdmatrixIn in{row_ptr, N};
  uint32_t out[4];
  warp_collective(Trans ? WarpOp::LdmatrixTrans : WarpOp::Ldmatrix, 0xffffffffu, &in, out, kz_loc);
  for (int i = 0; i < N; ++i) r[i] = out[i];
#elif defined(__CUDA_ARCH__)
#if __CUDA_ARCH__ >= 750
  const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(row_ptr));
  if constexpr (N == 1 && !Trans) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(addr));
  } else if constexpr (N == 2 && !Trans) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1]) : "r"(addr));
  } else if constexpr (N == 4 && !Trans) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
  } else if constexpr (N == 1) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n"
                 : "=r"(r[0]) : "r"(addr));
  } else if constexpr (N == 2) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1]) : "r"(addr));
  } else {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
  }
#else
  __trap();
#endif
#endif
}

template <int Bytes>
KZ_DEVICE KZ_INLINE void cp_async_impl(void* smem_dst, const void* gmem_src,
                                       int src_bytes KZ_PTX_LOC_PARAM) {
  static_assert(Bytes == 4 || Bytes == 8 || Bytes == 16, "cp.async copies 4, 8 or 16 bytes");
#if defined(KERNELZOO_CUDA_HARNESS)
  ::kernelzoo::harness::detail::cp_async(smem_dst, gmem_src, Bytes, src_bytes, kz_loc);
#elif defined(__CUDA_ARCH__)
#if __CUDA_ARCH__ >= 800
  const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(smem_dst));
  const auto src = __cvta_generic_to_global(gmem_src);
  if constexpr (Bytes == 16) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
                 "r"(src_bytes));
  } else {
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(dst), "l"(src),
                 "n"(Bytes), "r"(src_bytes));
  }
#else
  auto* d = static_cast<unsigned char*>(smem_dst);
  const auto* s = static_cast<const unsigned char*>(gmem_src);
  for (int i = 0; i < Bytes; ++i) d[i] = i < src_bytes ? s[i] : 0;
#endif
#endif
}
}  // namespace detail

template <int N>
KZ_DEVICE KZ_INLINE void ldmatrix(uint32_t (&r)[N], const void* row_ptr KZ_PTX_LOC_PARAM) {
#if defined(KERNELZOO_CUDA_HARNESS)
  detail::ldmatrix_impl<N, false>(r, row_ptr, kz_loc);
#else
  detail::ldmatrix_impl<N, false>(r, row_ptr);
#endif
}

template <int N>
KZ_DEVICE KZ_INLINE void ldmatrix_trans(uint32_t (&r)[N], const void* row_ptr KZ_PTX_LOC_PARAM) {
#if defined(KERNELZOO_CUDA_HARNESS)
  detail::ldmatrix_impl<N, true>(r, row_ptr, kz_loc);
#else
  detail::ldmatrix_impl<N, true>(r, row_ptr);
#endif
}

template <int Bytes>
KZ_DEVICE KZ_INLINE void cp_async(void* smem_dst, const void* gmem_src KZ_PTX_LOC_PARAM) {
#if defined(KERNELZOO_CUDA_HARNESS)
  detail::cp_async_impl<Bytes>(smem_dst, gmem_src, Bytes, kz_loc);
#else
  detail::cp_async_impl<Bytes>(smem_dst, gmem_src, Bytes);
#endif
}

// src_bytes == 0 reads nothing (gmem_src may then be any address).
template <int Bytes>
KZ_DEVICE KZ_INLINE void cp_async_zfill(void* smem_dst, const void* gmem_src,
                                        int src_bytes KZ_PTX_LOC_PARAM) {
#if defined(KERNELZOO_CUDA_HARNESS)
  detail::cp_async_impl<Bytes>(smem_dst, gmem_src, src_bytes, kz_loc);
#else
  detail::cp_async_impl<Bytes>(smem_dst, gmem_src, src_bytes);
#endif
}

KZ_DEVICE KZ_INLINE void cp_async_commit() {
#if defined(KERNELZOO_CUDA_HARNESS)
  ::kernelzoo::harness::detail::cp_async_commit();
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

template <int N>
KZ_DEVICE KZ_INLINE void cp_async_wait() {
  static_assert(N >= 0 && N < 8, "cp_async_wait<N>: N is a small non-negative constant");
#if defined(KERNELZOO_CUDA_HARNESS)
  ::kernelzoo::harness::detail::cp_async_wait_group(N);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

KZ_DEVICE KZ_INLINE void cp_async_wait_all() {
#if defined(KERNELZOO_CUDA_HARNESS)
  ::kernelzoo::harness::detail::cp_async_commit();
  ::kernelzoo::harness::detail::cp_async_wait_group(0);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_all;\n" ::: "memory");
#endif
}

}  // namespace mma
}  // namespace kernelzoo

#undef KZ_PTX_LOC_PARAM
