// The grid-stride loop of the element-wise kernels: each thread takes element
// blockIdx.x * blockDim.x + threadIdx.x, then every gridDim.x * blockDim.x-th:
//
//     for (const index_t e : grid_stride(p.total)) { ... }
//
// Device code (nvcc or the CPU harness of the C++ tests); kernel-safe. With
// int32 indices the launch plans keep `total` below 2^30 (common/index_width.h),
// so that the last increment cannot overflow.
#pragma once

#include "macros.h"

#if !defined(__CUDACC__) && !defined(KERNELZOO_CUDA_HARNESS)
#error "grid_stride.cuh is device code: include it from a *_kernel.cuh"
#endif

namespace kernelzoo {

template <typename index_t>
struct GridStride {
  struct Iterator {
    index_t i, step;
    KZ_DEVICE KZ_INLINE index_t operator*() const { return i; }
    KZ_DEVICE KZ_INLINE Iterator& operator++() {
      i += step;
      return *this;
    }
    // Compares against the end only: "not yet past it".
    KZ_DEVICE KZ_INLINE bool operator!=(const Iterator& end) const { return i < end.i; }
  };
  index_t first, step, total;
  KZ_DEVICE KZ_INLINE Iterator begin() const { return {first, step}; }
  KZ_DEVICE KZ_INLINE Iterator end() const { return {total, step}; }
};

template <typename index_t>
KZ_DEVICE KZ_INLINE GridStride<index_t> grid_stride(index_t total) {
  return {static_cast<index_t>(blockIdx.x) * static_cast<index_t>(blockDim.x) +
              static_cast<index_t>(threadIdx.x),
          static_cast<index_t>(gridDim.x) * static_cast<index_t>(blockDim.x), total};
}

}  // namespace kernelzoo
