// Dynamic scheduling of independent tasks on the CPU. Host code.
//
// for_each_task<Scratch>(count, work, f) runs f(task, scratch) for every task in
// [0, count), in parallel when `work` (a rough count of the call's element
// operations) makes it worth waking the other threads. Tasks are handed out one
// at a time from a shared counter: tasks of very different sizes (the rois of
// one image, the query blocks of a causal mask) balance, and a thread that loses
// its core to another process takes fewer tasks instead of holding the others up
// at the end. `scratch` is a Scratch object each thread reuses from task to
// task (buffers). Which thread runs a task must not change its result.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

namespace kernelzoo {

constexpr int64_t kParallelWork = int64_t{1} << 16;

template <typename Scratch, typename F>
void for_each_task(int64_t count, int64_t work, const F& f) {
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), count);
  if (threads <= 1 || work < kParallelWork || at::in_parallel_region()) {
    Scratch scratch;
    for (int64_t t = 0; t < count; ++t) f(t, scratch);
    return;
  }
  std::atomic<int64_t> next{0};
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    Scratch scratch;
    for (int64_t t = next.fetch_add(1, std::memory_order_relaxed); t < count;
         t = next.fetch_add(1, std::memory_order_relaxed)) {
      f(t, scratch);
    }
  });
}

}  // namespace kernelzoo
