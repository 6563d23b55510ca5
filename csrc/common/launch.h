// Launch configuration shared by the CUDA launch plans (csrc/ops/<op>/<op>_plan.h)
// and the CPU-harness tests. Kernel-safe: no tensor or runtime headers.
#pragma once

#include <cstdint>

namespace kernelzoo {

// Threads per block of the element-wise kernels (one thread per element, the
// rest walked by grid_stride() in common/grid_stride.cuh).
constexpr int kBlockThreads = 256;

// Blocks for `total` elements: one thread each, at least one block, capped at
// 2^20 blocks so that very large problems use the kernels' grid-stride loops.
inline unsigned grid_blocks(int64_t total) {
  const int64_t blocks = (total + kBlockThreads - 1) / kBlockThreads;
  const int64_t cap = int64_t{1} << 20;
  return static_cast<unsigned>(blocks < cap ? (blocks > 0 ? blocks : 1) : cap);
}

}  // namespace kernelzoo
