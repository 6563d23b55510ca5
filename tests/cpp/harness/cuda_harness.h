// CPU execution harness for kernelzoo's CUDA kernel bodies (*_kernel.cuh).
//
// Include this header (after any torch / gtest headers) and then the kernel
// header; the host compiler then compiles the kernel source unchanged and
//
//     kernelzoo::harness::launch(kernel, grid, block, shared_bytes, args...);
//
// runs it on the CPU: the blocks one after another, every thread of a block as a
// fiber (ucontext) on one OS thread. A fiber runs until it reaches a barrier or
// a warp collective (shuffle, vote, __syncwarp, mma, ldmatrix) and yields, so
// barriers and shuffles have their GPU meaning. A barrier or collective that
// not every thread of the block / lane of the mask reaches is reported as a
// kernelzoo::harness::LaunchError naming the kernel, the block, the threads
// and the source lines: never a hang.
//
// What the CUDA keywords become here:
//   __global__ __device__ __host__ __launch_bounds__(...)   nothing
//   __forceinline__                                          inline
//   __shared__                                               thread_local (one copy per OS
//       thread; blocks run one after another on the launching thread, so every block
//       sees its own shared memory. It is not cleared between blocks: as on the GPU,
//       a kernel must not rely on its contents at start)
//   extern __shared__ T name[]   dynamic shared memory: the test defines the array once
//       with KZ_HARNESS_DYNAMIC_SHARED(namespace, T, name); each launch fills its first
//       `shared_bytes` with 0xFF (NaN / -1: uninitialised data shows) and poisons the
//       rest for AddressSanitizer, so an access past `shared_bytes` is caught.
//   threadIdx blockIdx blockDim gridDim   per-fiber values (uint3 / dim3)
//
// Tensor-core and async-copy instructions are reached only through
// csrc/common/mma.cuh, whose harness side is implemented here with the per-lane
// fragment layouts of the PTX ISA. Limits (what is not modelled): see
// docs/gpu-verification.md.
#pragma once

// Everything this header includes comes first, before the CUDA keywords are
// defined as macros below.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <math.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <source_location>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#ifndef KERNELZOO_CUDA_HARNESS
#define KERNELZOO_CUDA_HARNESS 1
#endif

// ---------------------------------------------------------------------------
// CUDA keywords
// ---------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ thread_local
#define __constant__
#define __grid_constant__
#define __align__(n) __attribute__((aligned(n)))
// __restrict__ is already a keyword of GCC and Clang.

// ---------------------------------------------------------------------------
// Built-in types and variables
// ---------------------------------------------------------------------------
struct uint3 {
  unsigned x, y, z;
};
struct int3 {
  int x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
  constexpr operator uint3() const { return uint3{x, y, z}; }
};

// Vector types with CUDA's sizes and alignments.
struct alignas(8) float2 { float x, y; };
struct float3 { float x, y, z; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(16) double2 { double x, y; };
struct alignas(8) int2 { int x, y; };
struct alignas(16) int4 { int x, y, z, w; };
struct alignas(8) uint2 { unsigned x, y; };
struct alignas(16) uint4 { unsigned x, y, z, w; };
struct alignas(16) longlong2 { long long x, y; };
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float3 make_float3(float x, float y, float z) { return {x, y, z}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline double2 make_double2(double x, double y) { return {x, y}; }
inline int2 make_int2(int x, int y) { return {x, y}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
inline uint2 make_uint2(unsigned x, unsigned y) { return {x, y}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }

// The harness sets these before it resumes a fiber.
inline thread_local uint3 threadIdx{0, 0, 0};
inline thread_local uint3 blockIdx{0, 0, 0};
inline thread_local dim3 blockDim{1, 1, 1};
inline thread_local dim3 gridDim{1, 1, 1};
constexpr int warpSize = 32;

// Half types: c10's, which the kernels use as scalar_t anyway.
using __half = c10::Half;
using __nv_bfloat16 = c10::BFloat16;
struct alignas(4) __half2 { __half x, y; };
struct alignas(4) __nv_bfloat162 { __nv_bfloat16 x, y; };

namespace kernelzoo {
namespace harness {

// A launch that failed: a divergent barrier or collective, a misuse of an
// intrinsic, an exception or __trap() in a kernel thread, bad launch arguments.
class LaunchError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Order in which the threads of a block (and the blocks of the grid) are run
// between synchronisation points. A kernel that misses a barrier usually gives
// a different result under Forward and Reverse. Under Forward, Reverse and
// Shuffled every thread runs to its next barrier or warp collective before any
// thread runs further, so warps advance in step through their collectives.
// WarpByWarp runs each warp alone (its lanes in forward order, through its
// shuffles, mma and ldmatrix) until every lane waits at a block barrier or has
// exited, then the next warp: a warp then runs ahead of the others by whole
// phases between __syncthreads, which exposes a missing barrier between
// warps separated only by warp collectives (a warp reading shared memory that
// another warp has not written yet, or overwriting what another has not read).
enum class Schedule { Forward, Reverse, Shuffled, WarpByWarp };

struct LaunchOptions {
  Schedule schedule = Schedule::Forward;
  unsigned seed = 0;                      // for Schedule::Shuffled
  const char* name = nullptr;             // kernel name in reports (default: its symbol)
  std::size_t stack_bytes = 256 * 1024;   // per emulated thread
};

// Largest dynamic shared memory a launch may ask for (an H100's 227 KiB).
constexpr std::size_t kMaxDynamicSharedBytes = 227 * 1024;

// Number of launches and emulated threads run so far by this OS thread (for
// tests that check that a launch happened or did not).
struct Counters {
  std::size_t launches = 0;
  std::size_t blocks = 0;
  std::size_t threads = 0;
};
Counters counters();

namespace detail {

[[noreturn]] void kernel_fail(const std::string& what, const std::source_location& loc);

// --- launching ---------------------------------------------------------------
using Invoke = void (*)(void* closure);
void run_grid(const LaunchOptions& opt, const void* kernel, dim3 grid, dim3 block,
              std::size_t shared_bytes, Invoke invoke, void* closure);

// --- dynamic shared memory ----------------------------------------------------
bool register_dynamic_shared(void* (*address)(), std::size_t bytes, const char* name);

// --- block barrier --------------------------------------------------------------
enum class BarrierKind { Sync, Count, And, Or };
int block_barrier(BarrierKind kind, int predicate, const std::source_location& loc);

// --- warp collectives ---------------------------------------------------------
enum class WarpOp {
  ShflIdx, ShflUp, ShflDown, ShflXor, Ballot, Any, All, SyncWarp,
  MmaF16, MmaBF16, Ldmatrix, LdmatrixTrans,
};
struct ShflIn {
  uint64_t value;
  int b;      // source lane / delta / lane mask
  int width;
};
struct VoteIn {
  int predicate;
};
// Each participating lane passes its own input and output; when the last lane
// of `mask` arrives, the collective is computed for all of them.
void warp_collective(WarpOp op, unsigned mask, const void* in, void* out,
                     const std::source_location& loc);
unsigned active_mask();

// --- tensor core / async copy (the harness side of csrc/common/mma.cuh) --------
struct MmaIn {
  uint32_t a[4];
  uint32_t b[2];
  float c[4];
};
struct LdmatrixIn {
  const void* address;
  int num;  // 1, 2 or 4 matrices
};
void cp_async(void* smem_dst, const void* gmem_src, int cp_size, int src_size,
              const std::source_location& loc);
void cp_async_commit();
void cp_async_wait_group(int n);

template <typename T>
T shfl(WarpOp op, unsigned mask, T var, int b, int width, const std::source_location& loc) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8,
                "__shfl_*_sync takes a trivially copyable value of at most 8 bytes");
  ShflIn in{};
  std::memcpy(&in.value, &var, sizeof(T));
  in.b = b;
  in.width = width;
  uint64_t out = 0;
  warp_collective(op, mask, &in, &out, loc);
  T r;
  std::memcpy(&r, &out, sizeof(T));
  return r;
}

template <typename T, typename F>
T atomic_rmw(T* address, F f) {
  // Fibers of one OS thread never interleave inside this function: a plain
  // read-modify-write is atomic here.
  T old = *address;
  *address = f(old);
  return old;
}

}  // namespace detail

// Runs `kernel` over `grid` x `block` threads. Arguments are converted to the
// kernel's parameter types once, as a CUDA launch does; every thread gets its
// own copy. Throws LaunchError when the launch fails.
template <typename... Params, typename... Args>
void launch(const LaunchOptions& opt, void (*kernel)(Params...), dim3 grid, dim3 block,
            std::size_t shared_bytes, Args&&... args) {
  static_assert(sizeof...(Params) == sizeof...(Args), "wrong number of kernel arguments");
  static_assert((!std::is_reference_v<Params> && ...), "kernel parameters are passed by value");
  using Tuple = std::tuple<Params...>;
  struct Closure {
    void (*kernel)(Params...);
    const Tuple* params;
  };
  const Tuple params(static_cast<Params>(std::forward<Args>(args))...);
  Closure closure{kernel, &params};
  detail::run_grid(
      opt, reinterpret_cast<const void*>(kernel), grid, block, shared_bytes,
      [](void* p) {
        const Closure* c = static_cast<const Closure*>(p);
        Tuple copy = *c->params;  // this thread's own copy of the arguments
        std::apply(c->kernel, copy);
      },
      &closure);
}

template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t shared_bytes,
            Args&&... args) {
  launch(LaunchOptions{}, kernel, grid, block, shared_bytes, std::forward<Args>(args)...);
}

}  // namespace harness
}  // namespace kernelzoo

// Defines the storage behind `extern __shared__ TYPE NAME[];` declared by kernels
// in namespace NS (write NS without leading ::). One line per (namespace, name)
// in the test executable. Kernels that declare several extern __shared__ arrays
// get separate storage for each (on the GPU they alias): use one per kernel.
#define KZ_HARNESS_DYNAMIC_SHARED(NS, TYPE, NAME)                                              \
  namespace NS {                                                                              \
  thread_local __attribute__((aligned(16)))                                                  \
  TYPE NAME[::kernelzoo::harness::kMaxDynamicSharedBytes / sizeof(TYPE)];                    \
  }                                                                                           \
  [[maybe_unused]] static const bool KZ_HARNESS_CAT_(kz_harness_dynamic_shared_, __LINE__) = \
      ::kernelzoo::harness::detail::register_dynamic_shared(                                  \
          +[]() -> void* { return static_cast<void*>(::NS::NAME); }, sizeof(::NS::NAME),       \
          #NS "::" #NAME)
#define KZ_HARNESS_CAT2_(a, b) a##b
#define KZ_HARNESS_CAT_(a, b) KZ_HARNESS_CAT2_(a, b)

// ---------------------------------------------------------------------------
// Synchronisation
// ---------------------------------------------------------------------------
inline void __syncthreads(std::source_location loc = std::source_location::current()) {
  using namespace kernelzoo::harness::detail;
  block_barrier(BarrierKind::Sync, 0, loc);
}
inline int __syncthreads_count(int pred,
                               std::source_location loc = std::source_location::current()) {
  using namespace kernelzoo::harness::detail;
  return block_barrier(BarrierKind::Count, pred, loc);
}
inline int __syncthreads_and(int pred,
                             std::source_location loc = std::source_location::current()) {
  using namespace kernelzoo::harness::detail;
  return block_barrier(BarrierKind::And, pred, loc);
}
inline int __syncthreads_or(int pred,
                            std::source_location loc = std::source_location::current()) {
  using namespace kernelzoo::harness::detail;
  return block_barrier(BarrierKind::Or, pred, loc);
}
inline void __syncwarp(unsigned mask = 0xffffffffu,
                       std::source_location loc = std::source_location::current()) {
  using namespace kernelzoo::harness::detail;
  warp_collective(WarpOp::SyncWarp, mask, nullptr, nullptr, loc);
}
// Lanes of the warp that exist and have not exited (the harness does not model
// the narrower mask of a diverged warp).
inline unsigned __activemask() { return kernelzoo::harness::detail::active_mask(); }
// Memory fences: a no-op here, where fibers of a block run one at a time.
inline void __threadfence() {}
inline void __threadfence_block() {}
inline void __threadfence_system() {}
inline void __nanosleep(unsigned) {}
[[noreturn]] inline void __trap(std::source_location loc = std::source_location::current()) {
  kernelzoo::harness::detail::kernel_fail("__trap() called", loc);
}

// ---------------------------------------------------------------------------
// Warp shuffles and votes
// ---------------------------------------------------------------------------
template <typename T>
T __shfl_sync(unsigned mask, T var, int srcLane, int width = warpSize,
              std::source_location loc = std::source_location::current()) {
  using namespace kernelzoo::harness::detail;
  return shfl(WarpOp::ShflIdx, mask, var, srcLane, width, loc);
}
template <typename T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                 std::source_location loc = std::source_location::current()) {
  using namespace kernelzoo::harness::detail;
  return shfl(WarpOp::ShflUp, mask, var, static_cast<int>(delta), width, loc);
}
template <typename T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                   std::source_location loc = std::source_location::current()) {
  using namespace kernelzoo::harness::detail;
  return shfl(WarpOp::ShflDown, mask, var, static_cast<int>(delta), width, loc);
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T var, int laneMask, int width = warpSize,
                  std::source_location loc = std::source_location::current()) {
  using namespace kernelzoo::harness::detail;
  return shfl(WarpOp::ShflXor, mask, var, laneMask, width, loc);
}
inline unsigned __ballot_sync(unsigned mask, int pred,
                              std::source_location loc = std::source_location::current()) {
  using namespace kernelzoo::harness::detail;
  VoteIn in{pred};
  unsigned out = 0;
  warp_collective(WarpOp::Ballot, mask, &in, &out, loc);
  return out;
}
inline int __any_sync(unsigned mask, int pred,
                      std::source_location loc = std::source_location::current()) {
  using namespace kernelzoo::harness::detail;
  VoteIn in{pred};
  unsigned out = 0;
  warp_collective(WarpOp::Any, mask, &in, &out, loc);
  return static_cast<int>(out);
}
inline int __all_sync(unsigned mask, int pred,
                      std::source_location loc = std::source_location::current()) {
  using namespace kernelzoo::harness::detail;
  VoteIn in{pred};
  unsigned out = 0;
  warp_collective(WarpOp::All, mask, &in, &out, loc);
  return static_cast<int>(out);
}

// ---------------------------------------------------------------------------
// Atomics (address must point to memory the kernel may write)
// ---------------------------------------------------------------------------
#define KZ_HARNESS_ATOMIC_(NAME, TYPE, EXPR)                         \
  inline TYPE NAME(TYPE* address, TYPE val) {                        \
    return kernelzoo::harness::detail::atomic_rmw(address, [&](TYPE old) -> TYPE { return EXPR; }); \
  }
KZ_HARNESS_ATOMIC_(atomicAdd, int, old + val)
KZ_HARNESS_ATOMIC_(atomicAdd, unsigned int, old + val)
KZ_HARNESS_ATOMIC_(atomicAdd, unsigned long long, old + val)
KZ_HARNESS_ATOMIC_(atomicAdd, float, old + val)
KZ_HARNESS_ATOMIC_(atomicAdd, double, old + val)
KZ_HARNESS_ATOMIC_(atomicAdd, __half, static_cast<__half>(static_cast<float>(old) + static_cast<float>(val)))
KZ_HARNESS_ATOMIC_(atomicAdd, __nv_bfloat16, static_cast<__nv_bfloat16>(static_cast<float>(old) + static_cast<float>(val)))
KZ_HARNESS_ATOMIC_(atomicSub, int, old - val)
KZ_HARNESS_ATOMIC_(atomicSub, unsigned int, old - val)
KZ_HARNESS_ATOMIC_(atomicExch, int, val)
KZ_HARNESS_ATOMIC_(atomicExch, unsigned int, val)
KZ_HARNESS_ATOMIC_(atomicExch, unsigned long long, val)
KZ_HARNESS_ATOMIC_(atomicExch, float, val)
KZ_HARNESS_ATOMIC_(atomicMax, int, old > val ? old : val)
KZ_HARNESS_ATOMIC_(atomicMax, unsigned int, old > val ? old : val)
KZ_HARNESS_ATOMIC_(atomicMax, long long, old > val ? old : val)
KZ_HARNESS_ATOMIC_(atomicMax, unsigned long long, old > val ? old : val)
KZ_HARNESS_ATOMIC_(atomicMin, int, old < val ? old : val)
KZ_HARNESS_ATOMIC_(atomicMin, unsigned int, old < val ? old : val)
KZ_HARNESS_ATOMIC_(atomicMin, long long, old < val ? old : val)
KZ_HARNESS_ATOMIC_(atomicMin, unsigned long long, old < val ? old : val)
KZ_HARNESS_ATOMIC_(atomicAnd, int, old & val)
KZ_HARNESS_ATOMIC_(atomicAnd, unsigned int, old & val)
KZ_HARNESS_ATOMIC_(atomicAnd, unsigned long long, old & val)
KZ_HARNESS_ATOMIC_(atomicOr, int, old | val)
KZ_HARNESS_ATOMIC_(atomicOr, unsigned int, old | val)
KZ_HARNESS_ATOMIC_(atomicOr, unsigned long long, old | val)
KZ_HARNESS_ATOMIC_(atomicXor, int, old ^ val)
KZ_HARNESS_ATOMIC_(atomicXor, unsigned int, old ^ val)
KZ_HARNESS_ATOMIC_(atomicXor, unsigned long long, old ^ val)
KZ_HARNESS_ATOMIC_(atomicInc, unsigned int, old >= val ? 0u : old + 1u)
KZ_HARNESS_ATOMIC_(atomicDec, unsigned int, (old == 0u || old > val) ? val : old - 1u)
#undef KZ_HARNESS_ATOMIC_
template <typename T>
inline T kz_harness_cas_(T* address, T compare, T val) {
  return kernelzoo::harness::detail::atomic_rmw(
      address, [&](T old) -> T { return old == compare ? val : old; });
}
inline int atomicCAS(int* a, int c, int v) { return kz_harness_cas_(a, c, v); }
inline unsigned int atomicCAS(unsigned int* a, unsigned int c, unsigned int v) {
  return kz_harness_cas_(a, c, v);
}
inline unsigned long long atomicCAS(unsigned long long* a, unsigned long long c,
                                    unsigned long long v) {
  return kz_harness_cas_(a, c, v);
}
inline unsigned short atomicCAS(unsigned short* a, unsigned short c, unsigned short v) {
  return kz_harness_cas_(a, c, v);
}

// ---------------------------------------------------------------------------
// Math functions and intrinsics. The fast-math intrinsics (__expf, __fdividef...)
// are computed exactly here; on the GPU they carry a few ulp of error, so tests
// compare with tolerances suited to the GPU, not to this harness.
// ---------------------------------------------------------------------------
inline float __expf(float x) { return std::exp(x); }
inline float __exp10f(float x) { return std::pow(10.0f, x); }
inline float __logf(float x) { return std::log(x); }
inline float __log2f(float x) { return std::log2(x); }
inline float __log10f(float x) { return std::log10(x); }
inline float __powf(float x, float y) { return std::pow(x, y); }
inline float __sinf(float x) { return std::sin(x); }
inline float __cosf(float x) { return std::cos(x); }
inline float __tanf(float x) { return std::tan(x); }
inline float __tanhf(float x) { return std::tanh(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return std::sqrt(x); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : (x == x ? x : 0.0f)); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float rcbrtf(float x) { return 1.0f / std::cbrt(x); }
inline float exp10f(float x) { return std::pow(10.0f, x); }
inline float __int_as_float(int v) { float f; std::memcpy(&f, &v, 4); return f; }
inline int __float_as_int(float v) { int i; std::memcpy(&i, &v, 4); return i; }
inline float __uint_as_float(unsigned v) { float f; std::memcpy(&f, &v, 4); return f; }
inline unsigned __float_as_uint(float v) { unsigned i; std::memcpy(&i, &v, 4); return i; }
inline double __longlong_as_double(long long v) { double d; std::memcpy(&d, &v, 8); return d; }
inline long long __double_as_longlong(double v) { long long i; std::memcpy(&i, &v, 8); return i; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll(static_cast<unsigned long long>(x)); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned __brev(unsigned x) {
  unsigned r = 0;
  for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
  return r;
}
inline unsigned __umulhi(unsigned a, unsigned b) {
  return static_cast<unsigned>((static_cast<unsigned long long>(a) * b) >> 32);
}
inline int __mulhi(int a, int b) { return static_cast<int>((static_cast<long long>(a) * b) >> 32); }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
  return static_cast<unsigned long long>((static_cast<unsigned __int128>(a) * b) >> 64);
}
inline int __mul24(int a, int b) { return a * b; }
inline unsigned __umul24(unsigned a, unsigned b) { return a * b; }
// CUDA's overloaded min/max.
#define KZ_HARNESS_MINMAX_(T)                                  \
  inline T min(T a, T b) { return b < a ? b : a; }             \
  inline T max(T a, T b) { return a < b ? b : a; }
KZ_HARNESS_MINMAX_(int)
KZ_HARNESS_MINMAX_(unsigned int)
KZ_HARNESS_MINMAX_(long)
KZ_HARNESS_MINMAX_(unsigned long)
KZ_HARNESS_MINMAX_(long long)
KZ_HARNESS_MINMAX_(unsigned long long)
#undef KZ_HARNESS_MINMAX_
inline float min(float a, float b) { return std::fmin(a, b); }
inline float max(float a, float b) { return std::fmax(a, b); }
inline double min(double a, double b) { return std::fmin(a, b); }
inline double max(double a, double b) { return std::fmax(a, b); }

// Cached / streaming loads and stores: plain accesses here.
template <typename T> inline T __ldg(const T* p) { return *p; }
template <typename T> inline T __ldcg(const T* p) { return *p; }
template <typename T> inline T __ldca(const T* p) { return *p; }
template <typename T> inline T __ldcs(const T* p) { return *p; }
template <typename T> inline T __ldlu(const T* p) { return *p; }
template <typename T> inline void __stcg(T* p, T v) { *p = v; }
template <typename T> inline void __stcs(T* p, T v) { *p = v; }
template <typename T> inline void __stwb(T* p, T v) { *p = v; }

// Half and bfloat16 conversions (round to nearest even, as the _rn intrinsics).
inline __half __float2half(float x) { return __half(x); }
inline __half __float2half_rn(float x) { return __half(x); }
inline float __half2float(__half x) { return static_cast<float>(x); }
inline __nv_bfloat16 __float2bfloat16(float x) { return __nv_bfloat16(x); }
inline __nv_bfloat16 __float2bfloat16_rn(float x) { return __nv_bfloat16(x); }
inline float __bfloat162float(__nv_bfloat16 x) { return static_cast<float>(x); }
inline __half __hadd(__half a, __half b) { return __half(float(a) + float(b)); }
inline __half __hsub(__half a, __half b) { return __half(float(a) - float(b)); }
inline __half __hmul(__half a, __half b) { return __half(float(a) * float(b)); }
inline __half __hneg(__half a) { return __half(-float(a)); }
inline __nv_bfloat16 __hadd(__nv_bfloat16 a, __nv_bfloat16 b) { return __nv_bfloat16(float(a) + float(b)); }
inline __nv_bfloat16 __hsub(__nv_bfloat16 a, __nv_bfloat16 b) { return __nv_bfloat16(float(a) - float(b)); }
inline __nv_bfloat16 __hmul(__nv_bfloat16 a, __nv_bfloat16 b) { return __nv_bfloat16(float(a) * float(b)); }
inline __nv_bfloat16 __hneg(__nv_bfloat16 a) { return __nv_bfloat16(-float(a)); }
inline __half2 __floats2half2_rn(float a, float b) { return {__half(a), __half(b)}; }
inline __half2 __float2half2_rn(float a) { return {__half(a), __half(a)}; }
inline __half2 __halves2half2(__half a, __half b) { return {a, b}; }
inline float2 __half22float2(__half2 h) { return {float(h.x), float(h.y)}; }
inline __half2 __float22half2_rn(float2 f) { return {__half(f.x), __half(f.y)}; }
inline float __low2float(__half2 h) { return float(h.x); }
inline float __high2float(__half2 h) { return float(h.y); }
inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) {
  return {__nv_bfloat16(a), __nv_bfloat16(b)};
}
inline __nv_bfloat162 __halves2bfloat162(__nv_bfloat16 a, __nv_bfloat16 b) { return {a, b}; }
inline float2 __bfloat1622float2(__nv_bfloat162 h) { return {float(h.x), float(h.y)}; }
inline __nv_bfloat162 __float22bfloat162_rn(float2 f) {
  return {__nv_bfloat16(f.x), __nv_bfloat16(f.y)};
}
inline float __low2float(__nv_bfloat162 h) { return float(h.x); }
inline float __high2float(__nv_bfloat162 h) { return float(h.y); }
