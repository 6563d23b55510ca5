// Macros shared by host code and kernel bodies. Safe to include from a
// *_kernel.cuh: no tensor, runtime or CUDA host headers.
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define KZ_HOST_DEVICE __host__ __device__
#define KZ_DEVICE __device__
#define KZ_INLINE __forceinline__
#elif defined(KERNELZOO_CUDA_HARNESS)
// The CPU execution harness of the C++ tests supplies __host__/__device__.
#define KZ_HOST_DEVICE __host__ __device__
#define KZ_DEVICE __device__
#define KZ_INLINE inline
#else
#define KZ_HOST_DEVICE
#define KZ_DEVICE
#define KZ_INLINE inline
#endif

#define KZ_RESTRICT __restrict__
