// The CPU execution harness: fibers, barriers, warp collectives, the PTX
// wrappers of csrc/common/mma.cuh. See cuda_harness.h for the model.
// System headers first: cuda_harness.h defines CUDA keywords as macros.
#include <cxxabi.h>
#include <dlfcn.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <sstream>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define KZ_HARNESS_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KZ_HARNESS_ASAN 1
#endif
#endif

#if defined(KZ_HARNESS_ASAN)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#include "cuda_harness.h"

#if defined(KZ_HARNESS_ASAN)

// Defaults for the sanitized test executables (ASAN_OPTIONS still overrides;
// a function, unlike ctest's ENVIRONMENT, also covers test discovery and runs by
// hand). No leak check: after a reported failure the harness abandons the
// block's suspended fibers, whose frames never unwind, so whatever they own is
// "leaked" by design; leaks are not what these tests look for.
extern "C" const char* __asan_default_options() { return "detect_leaks=0"; }
#endif

namespace kernelzoo {
namespace harness {
namespace detail {
namespace {

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------
void poison(const void* p, std::size_t n) {
#if defined(KZ_HARNESS_ASAN)
  ASAN_POISON_MEMORY_REGION(p, n);
#else
  (void)p, (void)n;
#endif
}
void unpoison(const void* p, std::size_t n) {
#if defined(KZ_HARNESS_ASAN)
  ASAN_UNPOISON_MEMORY_REGION(p, n);
#else
  (void)p, (void)n;
#endif
}
bool is_poisoned(const void* p, std::size_t n) {
#if defined(KZ_HARNESS_ASAN)
  return __asan_region_is_poisoned(const_cast<void*>(p), n) != nullptr;
#else
  (void)p, (void)n;
  return false;
#endif
}

std::string site(const std::source_location& loc) {
  std::string file = loc.file_name();
  const auto slash = file.find_last_of('/');
  if (slash != std::string::npos) file = file.substr(slash + 1);
  return file + ":" + std::to_string(loc.line());
}

std::string hex(unsigned v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

std::string dims(dim3 d) {
  return "(" + std::to_string(d.x) + "," + std::to_string(d.y) + "," + std::to_string(d.z) + ")";
}

// "0-15, 17, 20-31"
std::string ranges(const std::vector<unsigned>& ids) {
  std::string s;
  for (std::size_t i = 0; i < ids.size();) {
    std::size_t j = i;
    while (j + 1 < ids.size() && ids[j + 1] == ids[j] + 1) ++j;
    if (!s.empty()) s += ", ";
    s += std::to_string(ids[i]);
    if (j > i) s += "-" + std::to_string(ids[j]);
    i = j + 1;
  }
  return s;
}

std::string lanes_of(unsigned mask) {
  std::vector<unsigned> ids;
  for (unsigned l = 0; l < 32; ++l)
    if (mask & (1u << l)) ids.push_back(l);
  return ranges(ids);
}

std::string symbol_name(const void* fn) {
  Dl_info info{};
  if (dladdr(fn, &info) && info.dli_sname) {
    int status = 0;
    char* demangled = abi::__cxa_demangle(info.dli_sname, nullptr, nullptr, &status);
    std::string name = status == 0 && demangled ? demangled : info.dli_sname;
    std::free(demangled);
    return name;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "kernel@%p", fn);
  return buf;
}

const char* op_name(WarpOp op) {
  switch (op) {
    case WarpOp::ShflIdx: return "__shfl_sync";
    case WarpOp::ShflUp: return "__shfl_up_sync";
    case WarpOp::ShflDown: return "__shfl_down_sync";
    case WarpOp::ShflXor: return "__shfl_xor_sync";
    case WarpOp::Ballot: return "__ballot_sync";
    case WarpOp::Any: return "__any_sync";
    case WarpOp::All: return "__all_sync";
    case WarpOp::SyncWarp: return "__syncwarp";
    case WarpOp::MmaF16: return "mma_m16n8k16<f16>";
    case WarpOp::MmaBF16: return "mma_m16n8k16<bf16>";
    case WarpOp::Ldmatrix: return "ldmatrix";
    case WarpOp::LdmatrixTrans: return "ldmatrix_trans";
  }
  return "?";
}

const char* barrier_name(BarrierKind k) {
  switch (k) {
    case BarrierKind::Sync: return "__syncthreads()";
    case BarrierKind::Count: return "__syncthreads_count()";
    case BarrierKind::And: return "__syncthreads_and()";
    case BarrierKind::Or: return "__syncthreads_or()";
  }
  return "?";
}

// An error raised inside a kernel thread; the scheduler turns it into a
// LaunchError with the launch's context.
struct KernelFailure {
  std::string what;
};

// ---------------------------------------------------------------------------
// Fiber stacks: mmap'd, with a guard page below, kept for reuse by this thread.
// ---------------------------------------------------------------------------
struct Stack {
  unsigned char* base = nullptr;  // start of the mapping (guard page)
  std::size_t mapped = 0;
  unsigned char* bottom = nullptr;  // usable region
  std::size_t size = 0;
  bool dirty = false;  // left by an abandoned fiber: shadow memory to clear
};

struct StackPool {
  std::vector<Stack> stacks;
  std::size_t size = 0;
  ~StackPool() { release(); }
  void release() {
    for (auto& s : stacks) {
      unpoison(s.bottom, s.size);
      munmap(s.base, s.mapped);
    }
    stacks.clear();
  }
  void ensure(std::size_t count, std::size_t bytes) {
    const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    bytes = (bytes + page - 1) / page * page;
    if (bytes != size) {
      release();
      size = bytes;
    }
    while (stacks.size() < count) {
      Stack s;
      s.mapped = bytes + page;
      void* p = mmap(nullptr, s.mapped, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (p == MAP_FAILED) throw LaunchError("CUDA harness: cannot map fiber stacks");
      s.base = static_cast<unsigned char*>(p);
      mprotect(s.base, page, PROT_NONE);  // overflow faults instead of corrupting
      s.bottom = s.base + page;
      s.size = bytes;
      stacks.push_back(s);
    }
  }
};
thread_local StackPool t_stacks;

// ---------------------------------------------------------------------------
// Launch and block state
// ---------------------------------------------------------------------------
enum class State { Ready, AtBarrier, AtWarp, Done };

struct PendingCopy {
  unsigned char* dst;
  int size;
  bool poisoned;
  unsigned char data[16];
};

struct Fiber {
  ucontext_t ctx;
  Stack* stack = nullptr;
  uint3 tid{};
  unsigned linear = 0;
  State state = State::Ready;
  std::source_location where;  // the barrier / collective it waits at
  BarrierKind barrier_kind = BarrierKind::Sync;
  int barrier_value = 0;
  int barrier_result = 0;
  WarpOp warp_op = WarpOp::SyncWarp;
  unsigned warp_mask = 0;
  void* fake_stack = nullptr;
  std::vector<PendingCopy> open_copies;            // issued, not yet committed
  std::vector<std::vector<PendingCopy>> groups;    // committed, oldest first
};

struct PendingWarpOp {
  WarpOp op;
  unsigned mask;
  unsigned arrived = 0;
  const void* in[32];
  void* out[32];
  std::source_location where[32];
};

struct DynamicShared {
  void* (*address)();
  std::size_t bytes;
  const char* name;
};
std::vector<DynamicShared>& dynamic_shared_registry() {
  static std::vector<DynamicShared> r;
  return r;
}

struct Run {
  // launch
  std::string kernel;
  dim3 grid, block;
  std::size_t shared_bytes = 0;
  Invoke invoke = nullptr;
  void* closure = nullptr;
  // block
  uint3 block_idx{};
  std::vector<Fiber> fibers;
  unsigned nthreads = 0;
  std::vector<std::vector<PendingWarpOp>> warps;
  unsigned barrier_arrived = 0;
  unsigned done = 0;
  Fiber* current = nullptr;
  ucontext_t sched;
  bool failed = false;
  std::string error;
  // sanitizer bookkeeping
  void* sched_fake_stack = nullptr;
  const void* main_bottom = nullptr;
  std::size_t main_size = 0;

  std::string thread_name(const Fiber& f) const {
    std::string s = "thread " + std::to_string(f.linear);
    if (block.y > 1 || block.z > 1) s += " " + dims(dim3(f.tid));
    s += " (warp " + std::to_string(f.linear / 32) + ", lane " + std::to_string(f.linear % 32) + ")";
    return s;
  }
  std::string header() const {
    return "CUDA harness: kernel `" + kernel + "` <<<" + dims(grid) + ", " + dims(block) + ", " +
           std::to_string(shared_bytes) + ">>>, block " + dims(dim3(block_idx)) + ": ";
  }
  void fail(const std::string& what) {
    if (!failed) {
      failed = true;
      error = header() + what;
    }
  }
};
thread_local Run* t_run = nullptr;
thread_local Counters t_counters;

Run& run() {
  if (!t_run || !t_run->current)
    throw LaunchError("CUDA harness: a device intrinsic was called outside a kernel launch");
  return *t_run;
}

// ---------------------------------------------------------------------------
// Context switches
// ---------------------------------------------------------------------------
// Fiber -> scheduler. `final` when the fiber will never be resumed.
void to_scheduler(Run& r, Fiber& f, bool final) {
#if defined(KZ_HARNESS_ASAN)
  __sanitizer_start_switch_fiber(final ? nullptr : &f.fake_stack, r.main_bottom, r.main_size);
#endif
  swapcontext(&f.ctx, &r.sched);
#if defined(KZ_HARNESS_ASAN)
  __sanitizer_finish_switch_fiber(f.fake_stack, &r.main_bottom, &r.main_size);
#endif
  (void)final;
}

// Scheduler -> fiber.
void resume(Run& r, Fiber& f) {
  r.current = &f;
  threadIdx = f.tid;
#if defined(KZ_HARNESS_ASAN)
  __sanitizer_start_switch_fiber(&r.sched_fake_stack, f.stack->bottom, f.stack->size);
#endif
  swapcontext(&r.sched, &f.ctx);
#if defined(KZ_HARNESS_ASAN)
  __sanitizer_finish_switch_fiber(r.sched_fake_stack, nullptr, nullptr);
#endif
  r.current = nullptr;
}

// The current fiber waits until another one makes it Ready again.
void block_current(Run& r, Fiber& f) {
  to_scheduler(r, f, false);
  threadIdx = f.tid;
}

// ---------------------------------------------------------------------------
// cp.async bookkeeping
// ---------------------------------------------------------------------------
void complete_copies(std::vector<PendingCopy>& copies) {
  for (auto& c : copies) {
    if (c.poisoned) unpoison(c.dst, static_cast<std::size_t>(c.size));
    std::memcpy(c.dst, c.data, static_cast<std::size_t>(c.size));
  }
  copies.clear();
}
void complete_all_copies(Fiber& f) {
  for (auto& g : f.groups) complete_copies(g);
  f.groups.clear();
  complete_copies(f.open_copies);
}
void drop_all_copies(Fiber& f) {  // abandoned block: undo the poisoning only
  auto undo = [](std::vector<PendingCopy>& cs) {
    for (auto& c : cs)
      if (c.poisoned) unpoison(c.dst, static_cast<std::size_t>(c.size));
    cs.clear();
  };
  for (auto& g : f.groups) undo(g);
  f.groups.clear();
  undo(f.open_copies);
}

// ---------------------------------------------------------------------------
// Reports
// ---------------------------------------------------------------------------
// Threads grouped by what they wait for.
std::string waiting_summary(const Run& r) {
  std::vector<std::pair<std::string, std::vector<unsigned>>> groups;
  auto add = [&](const std::string& key, unsigned id) {
    for (auto& g : groups)
      if (g.first == key) {
        g.second.push_back(id);
        return;
      }
    groups.push_back({key, {id}});
  };
  for (const auto& f : r.fibers) {
    switch (f.state) {
      case State::AtBarrier:
        add(std::string("wait at ") + barrier_name(f.barrier_kind) + " at " + site(f.where), f.linear);
        break;
      case State::AtWarp:
        add(std::string("wait at ") + op_name(f.warp_op) + "(mask " + hex(f.warp_mask) + ") at " +
                site(f.where),
            f.linear);
        break;
      case State::Done:
        add("have exited", f.linear);
        break;
      case State::Ready:
        add("are runnable", f.linear);
        break;
    }
  }
  std::string s;
  for (auto& g : groups) s += "\n  threads " + ranges(g.second) + " " + g.first;
  return s;
}

[[noreturn]] void divergent_barrier(Run& r, const std::string& why) {
  throw KernelFailure{"divergent barrier: " + why + ". A barrier must be reached by every thread of "
                      "the block." + waiting_summary(r)};
}

// Why the block cannot make progress (called when no thread is runnable).
std::string diagnose(const Run& r) {
  bool at_barrier = false;
  for (const auto& f : r.fibers) at_barrier |= f.state == State::AtBarrier;
  if (at_barrier && r.done > 0) {
    return "divergent barrier: threads exited while others wait at a barrier that every thread "
           "of the block must reach." + waiting_summary(r);
  }
  for (std::size_t w = 0; w < r.warps.size(); ++w) {
    for (const auto& p : r.warps[w]) {
      unsigned exited = 0;
      for (unsigned l = 0; l < 32; ++l)
        if ((p.mask & (1u << l)) && r.fibers[w * 32 + l].state == State::Done) exited |= 1u << l;
      if (exited) {
        unsigned first = 0;
        while (!(p.arrived & (1u << first))) ++first;
        return "divergent warp collective: lanes " + lanes_of(p.arrived) + " of warp " +
               std::to_string(w) + " wait at " + op_name(p.op) + "(mask " + hex(p.mask) + ") at " +
               site(p.where[first]) + " for lanes " + lanes_of(exited) + ", which have exited." +
               waiting_summary(r);
      }
    }
  }
  return "deadlock: no thread can make progress." + waiting_summary(r);
}

// ---------------------------------------------------------------------------
// The fiber body
// ---------------------------------------------------------------------------
void fiber_entry() {
  Run& r = *t_run;
  Fiber& f = *r.current;
#if defined(KZ_HARNESS_ASAN)
  __sanitizer_finish_switch_fiber(nullptr, &r.main_bottom, &r.main_size);
#endif
  threadIdx = f.tid;
  try {
    r.invoke(r.closure);
    complete_all_copies(f);
  } catch (const KernelFailure& e) {
    r.fail(r.thread_name(f) + ": " + e.what);
  } catch (const std::exception& e) {
    r.fail(r.thread_name(f) + ": exception in kernel: " + e.what());
  } catch (...) {
    r.fail(r.thread_name(f) + ": unknown exception in kernel");
  }
  f.state = State::Done;
  ++r.done;
  to_scheduler(r, f, true);
  std::abort();  // never resumed
}

std::vector<unsigned> order_of(unsigned n, const LaunchOptions& opt, unsigned salt) {
  std::vector<unsigned> order(n);
  for (unsigned i = 0; i < n; ++i) order[i] = i;
  if (opt.schedule == Schedule::Reverse) std::reverse(order.begin(), order.end());
  if (opt.schedule == Schedule::Shuffled) {
    std::mt19937 rng(opt.seed * 7919u + salt);
    std::shuffle(order.begin(), order.end(), rng);
  }
  return order;
}

void run_block(Run& r, const LaunchOptions& opt, unsigned block_linear) {
  const unsigned n = r.nthreads;
  t_stacks.ensure(n, opt.stack_bytes);
  r.fibers.clear();
  r.fibers.resize(n);
  r.warps.assign((n + 31) / 32, {});
  r.barrier_arrived = 0;
  r.done = 0;
  r.failed = false;
  r.error.clear();
  for (unsigned i = 0; i < n; ++i) {
    Fiber& f = r.fibers[i];
    f.linear = i;
    f.tid = uint3{i % r.block.x, (i / r.block.x) % r.block.y, i / (r.block.x * r.block.y)};
    f.stack = &t_stacks.stacks[i];
    if (f.stack->dirty) {
      unpoison(f.stack->bottom, f.stack->size);
      f.stack->dirty = false;
    }
    std::memset(&f.ctx, 0, sizeof f.ctx);
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = f.stack->bottom;
    f.ctx.uc_stack.ss_size = f.stack->size;
    f.ctx.uc_link = nullptr;
    makecontext(&f.ctx, fiber_entry, 0);
    // makecontext has set the stack pointer; hiding the stack from the
    // sanitizer's swapcontext interceptor keeps it from clearing the shadow
    // of the whole stack at every switch (the fiber annotations tell ASan
    // about the stack instead).
    f.ctx.uc_stack.ss_sp = nullptr;
    f.ctx.uc_stack.ss_size = 0;
  }
  const auto order = order_of(n, opt, block_linear);
  while (!r.failed) {
    bool progressed = false;
    if (opt.schedule == Schedule::WarpByWarp) {
      // Each warp until none of its lanes can run (all at a barrier, or done).
      for (unsigned w0 = 0; w0 < n && !r.failed; w0 += 32) {
        for (bool again = true; again && !r.failed;) {
          again = false;
          for (unsigned idx = w0; idx < std::min(n, w0 + 32) && !r.failed; ++idx) {
            Fiber& f = r.fibers[idx];
            if (f.state != State::Ready) continue;
            resume(r, f);
            progressed = again = true;
          }
        }
      }
    } else {
      for (unsigned idx : order) {
        Fiber& f = r.fibers[idx];
        if (f.state != State::Ready) continue;
        resume(r, f);
        progressed = true;
        if (r.failed) break;
      }
    }
    if (r.failed || r.done == n) break;
    if (!progressed) {
      r.fail(diagnose(r));
    }
  }
  if (r.failed) {
    for (auto& f : r.fibers) {
      drop_all_copies(f);
      if (f.state != State::Done) f.stack->dirty = true;
    }
  }
  t_counters.threads += n;
  t_counters.blocks += 1;
}

}  // namespace

// ---------------------------------------------------------------------------
// Entry points used by cuda_harness.h and mma.cuh
// ---------------------------------------------------------------------------
[[noreturn]] void kernel_fail(const std::string& what, const std::source_location& loc) {
  if (!t_run || !t_run->current) throw LaunchError("CUDA harness: " + what + " at " + site(loc));
  throw KernelFailure{what + " at " + site(loc)};
}

bool register_dynamic_shared(void* (*address)(), std::size_t bytes, const char* name) {
  dynamic_shared_registry().push_back({address, bytes, name});
  return true;
}

void run_grid(const LaunchOptions& opt, const void* kernel, dim3 grid, dim3 block,
              std::size_t shared_bytes, Invoke invoke, void* closure) {
  if (t_run) throw LaunchError("CUDA harness: launch() from inside a kernel is not supported");
  Run r;
  r.kernel = opt.name ? opt.name : symbol_name(kernel);
  r.grid = grid;
  r.block = block;
  r.shared_bytes = shared_bytes;
  r.invoke = invoke;
  r.closure = closure;
  const unsigned long long threads =
      static_cast<unsigned long long>(block.x) * block.y * block.z;
  auto bad = [&](const std::string& why) {
    throw LaunchError(r.header().substr(0, r.header().find(", block (")) +
                      ": invalid launch configuration: " + why);
  };
  if (threads == 0 || threads > 1024 || block.z > 64)
    bad("a block has 1 to 1024 threads (z at most 64)");
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 0x7fffffffu || grid.y > 65535 ||
      grid.z > 65535)
    bad("grid dimensions out of range");
  if (shared_bytes > kMaxDynamicSharedBytes)
    bad("dynamic shared memory above " + std::to_string(kMaxDynamicSharedBytes) + " bytes");
  r.nthreads = static_cast<unsigned>(threads);

  // Dynamic shared memory: the first shared_bytes are usable, the rest poisoned.
  std::vector<std::pair<unsigned char*, std::size_t>> dyn;
  for (const auto& d : dynamic_shared_registry()) {
    dyn.push_back({static_cast<unsigned char*>(d.address()), d.bytes});
  }
  for (auto& [p, bytes] : dyn) {
    unpoison(p, bytes);
    if (shared_bytes < bytes) poison(p + shared_bytes, bytes - shared_bytes);
  }

  gridDim = grid;
  blockDim = block;
  t_run = &r;
  ++t_counters.launches;
  const unsigned nblocks = grid.x * grid.y * grid.z;
  const auto border = order_of(nblocks, opt, 0x9e3779b9u);
  try {
    for (unsigned b : border) {
      r.block_idx = uint3{b % grid.x, (b / grid.x) % grid.y, b / (grid.x * grid.y)};
      blockIdx = r.block_idx;
      for (auto& [p, bytes] : dyn) std::memset(p, 0xFF, std::min(shared_bytes, bytes));
      run_block(r, opt, b);
      if (r.failed) break;
    }
  } catch (...) {
    t_run = nullptr;
    for (auto& [p, bytes] : dyn) unpoison(p, bytes);
    throw;
  }
  t_run = nullptr;
  for (auto& [p, bytes] : dyn) unpoison(p, bytes);
  threadIdx = blockIdx = uint3{0, 0, 0};
  if (r.failed) throw LaunchError(r.error);
}

int block_barrier(BarrierKind kind, int predicate, const std::source_location& loc) {
  Run& r = run();
  Fiber& f = *r.current;
  f.where = loc;
  f.barrier_kind = kind;
  f.barrier_value = predicate;
  f.state = State::AtBarrier;
  if (++r.barrier_arrived < r.nthreads) {
    block_current(r, f);
    return f.barrier_result;
  }
  // Last arrival: every thread must wait at the same barrier.
  const Fiber& first = r.fibers.front();
  for (const auto& g : r.fibers) {
    if (g.barrier_kind != first.barrier_kind || g.where.line() != first.where.line() ||
        std::strcmp(g.where.file_name(), first.where.file_name()) != 0) {
      divergent_barrier(r, "threads reached different barriers");
    }
  }
  int result = 0;
  switch (kind) {
    case BarrierKind::Sync: break;
    case BarrierKind::Count:
      for (const auto& g : r.fibers) result += g.barrier_value != 0;
      break;
    case BarrierKind::And:
      result = 1;
      for (const auto& g : r.fibers) result &= g.barrier_value != 0;
      break;
    case BarrierKind::Or:
      for (const auto& g : r.fibers) result |= g.barrier_value != 0;
      break;
  }
  for (auto& g : r.fibers) {
    g.barrier_result = result;
    g.state = State::Ready;
  }
  r.barrier_arrived = 0;
  return result;
}

unsigned active_mask() {
  Run& r = run();
  const unsigned warp = r.current->linear / 32;
  unsigned m = 0;
  for (unsigned l = 0; l < 32; ++l) {
    const unsigned t = warp * 32 + l;
    if (t < r.nthreads && r.fibers[t].state != State::Done) m |= 1u << l;
  }
  return m;
}

namespace {

// --- the collectives' semantics ------------------------------------------------
void complete_shfl(const PendingWarpOp& p) {
  // PTX ISA, shfl.sync: with c = ((32 - width) << 8) | clamp, segmask = c[12:8].
  const ShflIn* in0 = nullptr;
  for (unsigned l = 0; l < 32; ++l)
    if (p.mask & (1u << l)) {
      in0 = static_cast<const ShflIn*>(p.in[l]);
      break;
    }
  for (unsigned l = 0; l < 32; ++l) {
    if (!(p.mask & (1u << l))) continue;
    const ShflIn& in = *static_cast<const ShflIn*>(p.in[l]);
    if (in.width != in0->width)
      throw KernelFailure{std::string(op_name(p.op)) + ": lanes pass different widths"};
    const int width = in.width;
    if (width < 1 || width > 32 || (width & (width - 1)) != 0)
      throw KernelFailure{std::string(op_name(p.op)) + ": width " + std::to_string(width) +
                          " is not a power of 2 in [1, 32]"};
    const int segmask = (32 - width) & 0x1f;
    const int lane = static_cast<int>(l);
    const int bval = in.b & 0x1f;
    const int clamp = p.op == WarpOp::ShflUp ? 0 : 0x1f;
    const int max_lane = (lane & segmask) | (clamp & ~segmask);
    const int min_lane = lane & segmask;
    int j = lane;
    bool ok = true;
    switch (p.op) {
      case WarpOp::ShflUp: j = lane - bval; ok = j >= max_lane; break;
      case WarpOp::ShflDown: j = lane + bval; ok = j <= max_lane; break;
      case WarpOp::ShflXor: j = lane ^ bval; ok = j <= max_lane; break;
      default: j = min_lane | (bval & ~segmask); ok = j <= max_lane; break;
    }
    if (!ok) j = lane;
    uint64_t v;
    if (p.mask & (1u << j)) {
      v = static_cast<const ShflIn*>(p.in[j])->value;
    } else {
      // Reading a lane outside the mask: undefined on the GPU. Poison the value
      // (NaN for floats, -1 for integers) so a kernel that uses it fails.
      v = ~uint64_t{0};
    }
    *static_cast<uint64_t*>(p.out[l]) = v;
  }
}

void complete_vote(const PendingWarpOp& p) {
  unsigned ballot = 0;
  for (unsigned l = 0; l < 32; ++l)
    if ((p.mask & (1u << l)) && static_cast<const VoteIn*>(p.in[l])->predicate) ballot |= 1u << l;
  unsigned result = ballot;
  if (p.op == WarpOp::Any) result = ballot != 0;
  if (p.op == WarpOp::All) result = ballot == p.mask;
  for (unsigned l = 0; l < 32; ++l)
    if (p.mask & (1u << l)) *static_cast<unsigned*>(p.out[l]) = result;
}

float half_bits_to_float(uint16_t bits, bool bf16) {
  return bf16 ? static_cast<float>(c10::BFloat16(bits, c10::BFloat16::from_bits()))
              : static_cast<float>(c10::Half(bits, c10::Half::from_bits()));
}

// mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32, fragment
// layouts from the PTX ISA ("Matrix Fragments for mma.m16n8k16 with floating
// point type"): groupID = lane >> 2, tig = lane % 4;
//   A (16x16): a_i, i = 0..7 (register i/2, low half first):
//              row = groupID + 8 * ((i / 2) % 2), col = 2 * tig + (i % 2) + 8 * (i / 4)
//   B (16x8):  b_i, i = 0..3: row = 2 * tig + (i % 2) + 8 * (i / 2), col = groupID
//   C/D (16x8): c_i, i = 0..3: row = groupID + 8 * (i / 2), col = 2 * tig + (i % 2)
void complete_mma(const PendingWarpOp& p) {
  const bool bf16 = p.op == WarpOp::MmaBF16;
  float A[16][16], B[16][8], C[16][8];
  for (unsigned lane = 0; lane < 32; ++lane) {
    const MmaIn& in = *static_cast<const MmaIn*>(p.in[lane]);
    const unsigned g = lane >> 2, t = lane % 4;
    for (unsigned i = 0; i < 8; ++i) {
      const uint16_t bits = static_cast<uint16_t>(in.a[i / 2] >> (16 * (i % 2)));
      A[g + 8 * ((i / 2) % 2)][2 * t + (i % 2) + 8 * (i / 4)] = half_bits_to_float(bits, bf16);
    }
    for (unsigned i = 0; i < 4; ++i) {
      const uint16_t bits = static_cast<uint16_t>(in.b[i / 2] >> (16 * (i % 2)));
      B[2 * t + (i % 2) + 8 * (i / 2)][g] = half_bits_to_float(bits, bf16);
    }
    for (unsigned i = 0; i < 4; ++i) C[g + 8 * (i / 2)][2 * t + (i % 2)] = in.c[i];
  }
  float D[16][8];
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 8; ++n) {
      // Products of 16-bit floats are exact in double; the tensor core's own
      // summation order and rounding may differ in the last bits.
      double acc = C[m][n];
      for (int k = 0; k < 16; ++k) acc += static_cast<double>(A[m][k]) * B[k][n];
      D[m][n] = static_cast<float>(acc);
    }
  for (unsigned lane = 0; lane < 32; ++lane) {
    float* d = static_cast<float*>(p.out[lane]);
    const unsigned g = lane >> 2, t = lane % 4;
    for (unsigned i = 0; i < 4; ++i) d[i] = D[g + 8 * (i / 2)][2 * t + (i % 2)];
  }
}

// ldmatrix.sync.aligned.m8n8.{x1,x2,x4}{.trans}.shared.b16: lanes 8*i .. 8*i+7
// give the addresses of the 8 rows (16 bytes each) of matrix i; lane l receives
// in register i the elements (row l/4, cols 2*(l%4), 2*(l%4)+1) of matrix i, or
// with .trans (rows 2*(l%4), 2*(l%4)+1; col l/4): the transpose.
void complete_ldmatrix(const PendingWarpOp& p) {
  const LdmatrixIn& in0 = *static_cast<const LdmatrixIn*>(p.in[0]);
  const int num = in0.num;
  uint16_t rows[4][8][8];
  for (int m = 0; m < num; ++m)
    for (int row = 0; row < 8; ++row) {
      const unsigned lane = static_cast<unsigned>(8 * m + row);
      const LdmatrixIn& in = *static_cast<const LdmatrixIn*>(p.in[lane]);
      if (in.num != num) throw KernelFailure{"ldmatrix: lanes ask for different matrix counts"};
      const auto addr = reinterpret_cast<std::uintptr_t>(in.address);
      if (addr % 16 != 0)
        throw KernelFailure{"ldmatrix: lane " + std::to_string(lane) +
                            " gives a row address that is not 16-byte aligned"};
      std::memcpy(rows[m][row], in.address, 16);
    }
  const bool trans = p.op == WarpOp::LdmatrixTrans;
  for (unsigned lane = 0; lane < 32; ++lane) {
    uint32_t* r = static_cast<uint32_t*>(p.out[lane]);
    const unsigned q = lane / 4, c = 2 * (lane % 4);
    for (int m = 0; m < num; ++m) {
      const uint16_t lo = trans ? rows[m][c][q] : rows[m][q][c];
      const uint16_t hi = trans ? rows[m][c + 1][q] : rows[m][q][c + 1];
      r[m] = static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
    }
  }
}

void complete(const PendingWarpOp& p) {
  switch (p.op) {
    case WarpOp::ShflIdx:
    case WarpOp::ShflUp:
    case WarpOp::ShflDown:
    case WarpOp::ShflXor: complete_shfl(p); break;
    case WarpOp::Ballot:
    case WarpOp::Any:
    case WarpOp::All: complete_vote(p); break;
    case WarpOp::SyncWarp: break;
    case WarpOp::MmaF16:
    case WarpOp::MmaBF16: complete_mma(p); break;
    case WarpOp::Ldmatrix:
    case WarpOp::LdmatrixTrans: complete_ldmatrix(p); break;
  }
}

bool whole_warp_op(WarpOp op) {
  return op == WarpOp::MmaF16 || op == WarpOp::MmaBF16 || op == WarpOp::Ldmatrix ||
         op == WarpOp::LdmatrixTrans;
}

}  // namespace

void warp_collective(WarpOp op, unsigned mask, const void* in, void* out,
                     const std::source_location& loc) {
  Run& r = run();
  Fiber& f = *r.current;
  const unsigned warp = f.linear / 32, lane = f.linear % 32, bit = 1u << lane;
  // Described only when reporting: this path runs for every shuffle.
  auto what = [&] { return std::string(op_name(op)) + "(mask " + hex(mask) + ") at " + site(loc); };
  unsigned exists = 0;
  for (unsigned l = 0; l < 32; ++l)
    if (warp * 32 + l < r.nthreads) exists |= 1u << l;
  if (whole_warp_op(op) && (mask != 0xffffffffu || exists != 0xffffffffu))
    throw KernelFailure{what() + ": the whole warp (32 threads) must execute it"};
  if (!(mask & bit))
    throw KernelFailure{what() + ": the calling lane " + std::to_string(lane) +
                        " is not in the mask"};
  if (mask & ~exists)
    throw KernelFailure{what() + ": the mask names lanes " + lanes_of(mask & ~exists) +
                        " that do not exist (the block has " + std::to_string(r.nthreads) +
                        " threads)"};
  auto& pending = r.warps[warp];
  PendingWarpOp* p = nullptr;
  for (auto& q : pending) {
    if ((q.mask & bit) && q.mask != mask) {
      throw KernelFailure{"divergent warp collective: " + what() + ", but lanes " +
                          lanes_of(q.arrived) + " wait at " + op_name(q.op) + "(mask " +
                          hex(q.mask) + "): the lanes of a mask must pass the same mask"};
    }
    if (q.mask == mask && !(q.arrived & bit)) p = &q;
  }
  if (p && p->op != op) {
    unsigned first = 0;
    while (!(p->arrived & (1u << first))) ++first;
    throw KernelFailure{"divergent warp collective: lane " + std::to_string(lane) + " calls " +
                        what() + ", but lanes " + lanes_of(p->arrived) + " wait at " +
                        op_name(p->op) + " at " + site(p->where[first])};
  }
  if (!p) {
    pending.push_back(PendingWarpOp{op, mask});
    p = &pending.back();
  }
  p->arrived |= bit;
  p->in[lane] = in;
  p->out[lane] = out;
  p->where[lane] = loc;
  if (p->arrived == mask) {
    const PendingWarpOp done = *p;
    pending.erase(pending.begin() + (p - pending.data()));
    complete(done);
    for (unsigned l = 0; l < 32; ++l)
      if ((mask & (1u << l)) && l != lane) r.fibers[warp * 32 + l].state = State::Ready;
    return;
  }
  f.state = State::AtWarp;
  f.where = loc;
  f.warp_op = op;
  f.warp_mask = mask;
  block_current(r, f);
}

// --- cp.async: the source is read when the copy is issued, the destination is
// written when a wait covers it. In between the destination is poisoned (when
// it is whole 8-byte granules), so reading it before the wait is an ASan error.
void cp_async(void* smem_dst, const void* gmem_src, int cp_size, int src_size,
              const std::source_location& loc) {
  Run& r = run();
  Fiber& f = *r.current;
  if (cp_size != 4 && cp_size != 8 && cp_size != 16)
    kernel_fail("cp.async: copy size must be 4, 8 or 16 bytes", loc);
  if (src_size < 0 || src_size > cp_size)
    kernel_fail("cp.async: source size " + std::to_string(src_size) + " outside [0, " +
                    std::to_string(cp_size) + "]",
                loc);
  const auto d = reinterpret_cast<std::uintptr_t>(smem_dst);
  const auto s = reinterpret_cast<std::uintptr_t>(gmem_src);
  if (d % static_cast<unsigned>(cp_size) != 0 ||
      (src_size > 0 && s % static_cast<unsigned>(cp_size) != 0))
    kernel_fail("cp.async: addresses must be aligned to the copy size " +
                    std::to_string(cp_size),
                loc);
  if (is_poisoned(smem_dst, static_cast<std::size_t>(cp_size)))
    kernel_fail("cp.async: destination is not addressable (outside shared memory, or a copy "
                "to it is still in flight)",
                loc);
  PendingCopy c{};
  c.dst = static_cast<unsigned char*>(smem_dst);
  c.size = cp_size;
  if (src_size > 0) std::memcpy(c.data, gmem_src, static_cast<std::size_t>(src_size));
  std::memset(c.data + src_size, 0, static_cast<std::size_t>(cp_size - src_size));
  c.poisoned = d % 8 == 0 && cp_size % 8 == 0;
  if (c.poisoned) poison(smem_dst, static_cast<std::size_t>(cp_size));
  f.open_copies.push_back(c);
}

void cp_async_commit() {
  Fiber& f = *run().current;
  f.groups.push_back(std::move(f.open_copies));
  f.open_copies.clear();
}

void cp_async_wait_group(int n) {
  Fiber& f = *run().current;
  while (f.groups.size() > static_cast<std::size_t>(n < 0 ? 0 : n)) {
    complete_copies(f.groups.front());
    f.groups.erase(f.groups.begin());
  }
}

}  // namespace detail

Counters counters() { return detail::t_counters; }

}  // namespace harness
}  // namespace kernelzoo
