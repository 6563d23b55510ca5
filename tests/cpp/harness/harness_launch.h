// The CPU-harness counterpart of kernelzoo::CudaLaunch (csrc/common/cuda_launch.h):
// a launch functor with the same call,
//
//     HarnessLaunch{...}(kernel, grid, block, shared_bytes, args...);
//
// that runs the kernel on the CPU through cuda_harness.h. Every emulation suite
// passes it to an op's launch plan (csrc/ops/<op>/<op>_plan.h), so the tests run
// exactly the kernels, grids, blocks, scratch buffers and launch order that the
// CUDA launcher does. Its fields are the tests' knobs, which production code
// never sees: the harness schedule, a cap on the grid (to reach grid-stride
// loops with few blocks), a forced index width, and a record of the launches.
//
// Include order in a test: torch / gtest headers, then this header, then the
// op's plan header. This header includes the host headers that launch plans use
// (below) before the harness's CUDA keywords are defined; a plan that needs
// another ATen header adds it here.
#pragma once

// Host headers of the launch plans, before the harness defines the CUDA keywords.
#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros.h>

#include <cstddef>
#include <utility>
#include <vector>

#include "common/backward.h"
#include "common/dispatch.h"
#include "common/index_width.h"
#include "common/launch.h"
#include "cuda_harness.h"

namespace kernelzoo {
namespace harness {

// One launch as the plan asked for it (before any grid cap).
struct LaunchRecord {
  const void* kernel;
  dim3 grid, block;
  std::size_t shared_bytes;
};

struct HarnessLaunch {
  LaunchOptions options{};
  unsigned grid_cap = 0;          // > 0: run at most this many blocks along x
  Index index = Index::Auto;      // Int64 reaches the 64-bit path on small shapes
  std::vector<LaunchRecord>* record = nullptr;  // appended to when set

  template <typename... Params, typename... Args>
  void operator()(void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t shared_bytes,
                  Args&&... args) const {
    if (record) record->push_back({reinterpret_cast<const void*>(kernel), grid, block, shared_bytes});
    if (grid_cap > 0 && grid.x > grid_cap) grid.x = grid_cap;
    launch(options, kernel, grid, block, shared_bytes, std::forward<Args>(args)...);
  }
};

// The address of a kernel template instance, to compare with LaunchRecord::kernel.
template <typename... Params>
const void* kernel_id(void (*kernel)(Params...)) {
  return reinterpret_cast<const void*>(kernel);
}

}  // namespace harness
}  // namespace kernelzoo
