// Index width of the CUDA kernels: int32 when every offset the kernels form
// fits, int64 otherwise. Host code, used by the launch plans (<op>_plan.h).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <initializer_list>
#include <limits>

namespace kernelzoo {

// Auto picks int32 when every extent fits (production launches); Int64 forces
// the 64-bit path. The launch functor carries it (CudaLaunch: Auto; the CPU
// harness adapter of the tests can force Int64 to reach that path on small
// shapes), so production signatures have no test-only argument.
enum class Index { Auto, Int64 };

// One past the largest element offset reachable in t (non-negative strides);
// 0 for an empty tensor.
inline int64_t extent(const at::Tensor& t) {
  int64_t off = 0;
  for (int64_t d = 0; d < t.dim(); ++d) {
    if (t.size(d) == 0) return 0;
    off += (t.size(d) - 1) * t.stride(d);
  }
  return off + 1;
}

// Whether 32-bit indices cover every extent (element counts, extent() of the
// tensors read through strides), with room for the kernels' grid-stride
// increments (at most 2^28: grid_blocks() * kBlockThreads).
inline bool use_int32(Index index, std::initializer_list<int64_t> extents) {
  if (index == Index::Int64) return false;
  const int64_t limit = std::numeric_limits<int32_t>::max() / 2;
  for (int64_t e : extents) {
    if (e >= limit) return false;
  }
  return true;
}

// Calls f(int32_t{}) or f(int64_t{}): f's argument type is the kernels' index_t.
template <typename F>
void dispatch_index_width(Index index, std::initializer_list<int64_t> extents, F&& f) {
  if (use_int32(index, extents)) {
    f(int32_t{});
  } else {
    f(int64_t{});
  }
}

}  // namespace kernelzoo
