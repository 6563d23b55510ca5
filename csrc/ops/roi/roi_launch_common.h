// Host helpers shared by roi_align_launch.cuh and roi_pool_launch.cuh.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <initializer_list>
#include <limits>

namespace kernelzoo {
namespace roi_detail {

// Index width of a launch: Auto picks int32 when every offset fits (the
// launchers), Int64 forces the 64-bit path (tests reach it on small shapes).
enum class Index { Auto, Int64 };

// One past the largest element offset reachable in t (non-negative strides).
inline int64_t extent(const at::Tensor& t) {
  int64_t off = 0;
  for (int64_t d = 0; d < t.dim(); ++d) {
    if (t.size(d) == 0) return 0;
    off += (t.size(d) - 1) * t.stride(d);
  }
  return off + 1;
}

// Whether 32-bit indices cover every extent, with room for the kernels'
// grid-stride increments.
inline bool use_int32(Index index, std::initializer_list<int64_t> extents) {
  if (index == Index::Int64) return false;
  const int64_t limit = std::numeric_limits<int32_t>::max() / 2;
  for (int64_t e : extents) {
    if (e >= limit) return false;
  }
  return true;
}

}  // namespace roi_detail
}  // namespace kernelzoo
