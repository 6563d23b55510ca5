// Launch configuration of the CUDA kernels that give each thread one element
// and walk the rest with a grid-stride loop. Shared by the launchers and the
// CPU-harness tests; kernel-safe: no tensor or runtime headers.
#pragma once

#include <cstdint>

namespace kernelzoo {

constexpr int kBlockThreads = 256;

// Blocks for `total` elements: one thread each, at least one block, capped at
// 2^20 blocks so that very large problems use the kernels' grid-stride loops.
inline unsigned grid_blocks(int64_t total) {
  const int64_t blocks = (total + kBlockThreads - 1) / kBlockThreads;
  const int64_t cap = int64_t{1} << 20;
  return static_cast<unsigned>(blocks < cap ? (blocks > 0 ? blocks : 1) : cap);
}

}  // namespace kernelzoo
