// The CPU execution harness's own suite: small purpose-written kernels, one per
// feature, each checked against a plain loop; plus the failures the harness must
// report (divergent barriers and collectives) and the memory errors it must catch.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "cuda_harness.h"
// After the harness, as in every emulation test: device code.
#include "common/mma.cuh"

using kernelzoo::harness::launch;
using kernelzoo::harness::LaunchError;
using kernelzoo::harness::LaunchOptions;
using kernelzoo::harness::Schedule;

// ---------------------------------------------------------------------------
// Kernels (CUDA source: the same text would compile with nvcc)
// ---------------------------------------------------------------------------
namespace kz_test {

constexpr int kReduceThreads = 128;

// One partial sum per block, by a shared-memory tree.
__global__ void __launch_bounds__(kReduceThreads)
    block_sum_kernel(const float* __restrict__ in, float* __restrict__ out, int n) {
  __shared__ float partial[kReduceThreads];
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  partial[threadIdx.x] = i < n ? in[i] : 0.0f;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s /= 2) {
    if (threadIdx.x < s) partial[threadIdx.x] += partial[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = partial[0];
}

// Inclusive scan within each warp (Hillis-Steele with __shfl_up_sync), then the
// warp totals by a butterfly (__shfl_xor_sync) and by __shfl_down_sync.
__global__ void warp_scan_kernel(const int* in, int* scan, int* xor_total, int* down_total) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  const int lane = threadIdx.x % warpSize;
  int v = in[t];
  for (int d = 1; d < warpSize; d *= 2) {
    const int up = __shfl_up_sync(0xffffffffu, v, d);
    if (lane >= d) v += up;
  }
  scan[t] = v;
  int x = in[t];
  for (int m = warpSize / 2; m > 0; m /= 2) x += __shfl_xor_sync(0xffffffffu, x, m);
  xor_total[t] = x;
  int y = in[t];
  for (int d = warpSize / 2; d > 0; d /= 2) y += __shfl_down_sync(0xffffffffu, y, d);
  down_total[t] = __shfl_sync(0xffffffffu, y, 0);  // lane 0 holds the total
}

// Segmented shuffles (width 8) and votes.
__global__ void shuffle_width_vote_kernel(const int* in, int* bcast, int* rot, unsigned* ballot,
                                          int* any, int* all) {
  const int t = threadIdx.x;
  const int v = in[t];
  bcast[t] = __shfl_sync(0xffffffffu, v, 3, 8);              // lane 3 of each 8-lane group
  rot[t] = __shfl_sync(0xffffffffu, v, (t + 1) % 8 + 8, 8);  // srcLane wraps modulo width
  ballot[t] = __ballot_sync(0xffffffffu, v > 0);
  any[t] = __any_sync(0xffffffffu, v > 100);
  all[t] = __all_sync(0xffffffffu, v > -100);
}

// Histogram: a shared-memory histogram per block merged into global bins, and
// the maximum by atomicMax and by an atomicCAS loop.
constexpr int kBins = 16;
__global__ void histogram_kernel(const int* values, int n, int* bins, int* max_value,
                                 unsigned* cas_max) {
  __shared__ int local[kBins];
  for (int b = threadIdx.x; b < kBins; b += blockDim.x) local[b] = 0;
  __syncthreads();
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    atomicAdd(&local[values[i] % kBins], 1);
    atomicMax(max_value, values[i]);
    unsigned seen = *cas_max;
    while (seen < static_cast<unsigned>(values[i])) {
      const unsigned prev = atomicCAS(cas_max, seen, static_cast<unsigned>(values[i]));
      if (prev == seen) break;
      seen = prev;
    }
  }
  __syncthreads();
  for (int b = threadIdx.x; b < kBins; b += blockDim.x) atomicAdd(&bins[b], local[b]);
}

__global__ void float_atomics_kernel(float* fsum, double* dsum, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) {
    atomicAdd(fsum, 0.5f);
    atomicAdd(dsum, 0.25);
  }
}

// Dynamic shared memory: reverse each block's chunk.
__global__ void reverse_kernel(const float* in, float* out, int n) {
  extern __shared__ float dyn[];
  const int base = blockIdx.x * blockDim.x;
  const int i = base + threadIdx.x;
  dyn[threadIdx.x] = i < n ? in[i] : -1.0f;
  __syncthreads();
  const int j = base + (blockDim.x - 1 - threadIdx.x);
  if (j < n) out[j] = dyn[threadIdx.x];
}

// Reads its dynamic shared memory before writing it: sees the harness's fill.
__global__ void read_uninitialised_kernel(unsigned* out) {
  extern __shared__ float dyn[];
  unsigned bits;
  std::memcpy(&bits, &dyn[threadIdx.x], 4);
  out[threadIdx.x] = bits;
}

// Multi-dimensional grid and block.
__global__ void coords_kernel(int* out) {
  const int bx = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const int tx = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const int threads = blockDim.x * blockDim.y * blockDim.z;
  out[bx * threads + tx] = bx * 1000 + tx;
}

__global__ void barrier_votes_kernel(const int* in, int* count, int* all, int* any) {
  const int v = in[threadIdx.x];
  const int c = __syncthreads_count(v > 0);
  const int a = __syncthreads_and(v > 0);
  const int o = __syncthreads_or(v > 5);
  if (threadIdx.x == 0) *count = c, *all = a, *any = o;
}

// A neighbour exchange through shared memory; kWithBarrier false is a bug.
template <bool kWithBarrier>
__global__ void neighbour_kernel(const int* in, int* out) {
  __shared__ int s[64];
  s[threadIdx.x] = in[threadIdx.x];
  if (kWithBarrier) __syncthreads();
  out[threadIdx.x] = s[(threadIdx.x + 1) % blockDim.x];
}

// Reads the other warp's shared memory after a warp shuffle; kWithBarrier
// false is a bug that only Schedule::WarpByWarp shows (under the others every
// thread writes before any thread passes the shuffle).
template <bool kWithBarrier>
__global__ void cross_warp_kernel(const int* in, int* out) {
  __shared__ int s[64];
  const unsigned t = threadIdx.x;
  s[t] = in[t];
  // Two shuffles: the lane that completes a collective runs on to the next
  // one, so with one, lane 31 would read before warp 1 wrote under Forward.
  int mine = __shfl_sync(0xffffffffu, s[t], t % 32);
  mine = __shfl_sync(0xffffffffu, mine, t % 32);
  if (kWithBarrier) __syncthreads();
  out[t] = mine + s[(t + 32) % 64];
}

// Math intrinsics and half/bfloat16 conversions as kernels write them.
__global__ void math_kernel(const float* x, float* out) {
  const float v = x[threadIdx.x];
  float* o = out + 8 * threadIdx.x;
  o[0] = __expf(v);
  o[1] = exp2f(v);
  o[2] = __fdividef(v, 3.0f);
  o[3] = rsqrtf(fabsf(v) + 1.0f);
  o[4] = fmaxf(v, 0.25f);
  o[5] = __half2float(__float2half(v));
  o[6] = __bfloat162float(__float2bfloat16(v));
  o[7] = max(min(v, 0.5f), -0.5f);
}

// --- tensor cores -------------------------------------------------------------
// D (16x8) = A (16x16) * B (16x8) + C for one warp: A row-major in global memory,
// B given as Bt[n][k] (kBT) or as B[k][n]; staged in shared memory, loaded with
// ldmatrix (x4 for A; x2, or x2.trans for B[k][n]), multiplied with the wrapper.
template <typename T, bool kBT>
__global__ void mma_tile_kernel(const T* a, const T* b, const float* c, float* d) {
  __shared__ __align__(16) T sa[16][16];
  __shared__ __align__(16) T sb[16][16];  // [8][16] used for Bt, [16][8] for B
  const int lane = threadIdx.x;
  for (int i = lane; i < 256; i += 32) sa[i / 16][i % 16] = a[i];
  for (int i = lane; i < 128; i += 32) {
    if (kBT) sb[i / 16][i % 16] = b[i];  // Bt[n][k]
    else sb[i / 8][i % 8] = b[i];        // B[k][n], rows of 8 halves = 16 bytes
  }
  __syncwarp();
  uint32_t ra[4], rb[2];
  // x4 over A: matrices (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15),
  // (rows 8-15, k 8-15) = a[0..3]; lane l gives row l % 16 at column 8 * (l / 16).
  kernelzoo::mma::ldmatrix(ra, &sa[lane % 16][8 * (lane / 16)]);
  if (kBT) {
    // x2 over Bt: matrices (n 0-7, k 0-7), (n 0-7, k 8-15) = b[0], b[1].
    kernelzoo::mma::ldmatrix(rb, &sb[lane % 8][8 * ((lane / 8) % 2)]);
  } else {
    // x2.trans over B[k][n]: matrices (k 0-7), (k 8-15); lane l gives row l % 16.
    kernelzoo::mma::ldmatrix_trans(rb, &sb[lane % 16][0]);
  }
  float acc[4];
  for (int i = 0; i < 4; ++i) {
    const auto rc = kernelzoo::mma::c_coord(lane, i);
    acc[i] = c[rc.row * 8 + rc.col];
  }
  kernelzoo::mma::mma_m16n8k16<T>(acc, ra, rb, acc);
  for (int i = 0; i < 4; ++i) {
    const auto rc = kernelzoo::mma::c_coord(lane, i);
    d[rc.row * 8 + rc.col] = acc[i];
  }
}

// The same product with fragments built element by element from global memory
// through the coordinate helpers; kSwap mis-assigns two A registers (a bug).
template <typename T, bool kSwap>
__global__ void mma_manual_kernel(const T* a, const T* b, float* d) {
  const int lane = threadIdx.x;
  uint32_t ra[4], rb[2];
  for (int r = 0; r < 4; ++r) {
    const auto lo = kernelzoo::mma::a_coord(lane, 2 * r), hi = kernelzoo::mma::a_coord(lane, 2 * r + 1);
    ra[r] = kernelzoo::mma::pack2<T>(a[lo.row * 16 + lo.col], a[hi.row * 16 + hi.col]);
  }
  for (int r = 0; r < 2; ++r) {
    const auto lo = kernelzoo::mma::b_coord(lane, 2 * r), hi = kernelzoo::mma::b_coord(lane, 2 * r + 1);
    rb[r] = kernelzoo::mma::pack2<T>(b[lo.row * 8 + lo.col], b[hi.row * 8 + hi.col]);
  }
  if (kSwap) {
    const uint32_t tmp = ra[1];
    ra[1] = ra[2];
    ra[2] = tmp;
  }
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  kernelzoo::mma::mma_m16n8k16<T>(acc, ra, rb, acc);
  for (int i = 0; i < 4; ++i) {
    const auto rc = kernelzoo::mma::c_coord(lane, i);
    d[rc.row * 8 + rc.col] = acc[i];
  }
}

// --- cp.async -------------------------------------------------------------------
// Two groups of 16-byte copies (the second zero-filled past `valid` floats),
// waited for one after the other, then copied out by other threads.
__global__ void cp_async_kernel(const float* src, float* out, int valid) {
  __shared__ __align__(16) float stage[2][64];
  const int t = threadIdx.x;  // 16 threads, 4 floats each
  kernelzoo::mma::cp_async<16>(&stage[0][4 * t], src + 4 * t);
  kernelzoo::mma::cp_async_commit();
  const int left = valid - 4 * t;
  const int bytes = left >= 4 ? 16 : (left > 0 ? 4 * left : 0);
  kernelzoo::mma::cp_async_zfill<16>(&stage[1][4 * t], src + 64 + 4 * t, bytes);
  kernelzoo::mma::cp_async_commit();
  kernelzoo::mma::cp_async_wait<1>();  // the first group has landed
  __syncthreads();
  for (int i = 0; i < 4; ++i) out[4 * ((t + 1) % 16) + i] = stage[0][4 * ((t + 1) % 16) + i];
  kernelzoo::mma::cp_async_wait<0>();
  __syncthreads();
  for (int i = 0; i < 4; ++i) out[64 + 4 * ((t + 3) % 16) + i] = stage[1][4 * ((t + 3) % 16) + i];
}

// Every thread copies its 16 bytes without committing, then waits for all of
// them (wait_all covers uncommitted copies too); another thread reads them.
__global__ void cp_async_wait_all_kernel(const float* src, float* out) {
  __shared__ __align__(16) float stage[64];
  kernelzoo::mma::cp_async<16>(&stage[4 * threadIdx.x], src + 4 * threadIdx.x);
  kernelzoo::mma::cp_async_wait_all();
  __syncthreads();
  const int u = (threadIdx.x + 5) % 16;
  for (int i = 0; i < 4; ++i) out[4 * u + i] = stage[4 * u + i];
}

// pack2 of two floats and the unpack helpers, per element type.
template <typename T>
__global__ void pack_unpack_kernel(const float* in, float* out) {
  const int t = threadIdx.x;
  const uint32_t r = kernelzoo::mma::pack2<T>(in[2 * t], in[2 * t + 1]);
  out[2 * t] = kernelzoo::mma::unpack_lo<T>(r);
  out[2 * t + 1] = kernelzoo::mma::unpack_hi<T>(r);
}

// Reads a cp.async destination before waiting for it (a bug).
__global__ void cp_async_early_read_kernel(const float* src, float* out) {
  __shared__ __align__(16) float stage[64];
  kernelzoo::mma::cp_async<16>(&stage[4 * threadIdx.x], src + 4 * threadIdx.x);
  kernelzoo::mma::cp_async_commit();
  out[threadIdx.x] = stage[4 * threadIdx.x];
  kernelzoo::mma::cp_async_wait_all();
}

// --- failures the harness must report -------------------------------------------
__global__ void divergent_barrier_kernel(float* out) {
  if (threadIdx.x < 16) {
    __syncthreads();  // threads 16.. never get here
  }
  out[threadIdx.x] = 1.0f;
}

__global__ void two_barriers_kernel(float* out) {
  if (threadIdx.x % 2 == 0) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1.0f;
}

__global__ void divergent_shuffle_kernel(int* out) {
  int v = threadIdx.x;
  if (threadIdx.x % 32 < 16) v = __shfl_xor_sync(0xffffffffu, v, 1);  // half the warp
  out[threadIdx.x] = v;
}

__global__ void barrier_vs_shuffle_kernel(int* out) {
  int v = threadIdx.x;
  if (threadIdx.x == 5) {
    __syncthreads();
  } else {
    v = __shfl_sync(0xffffffffu, v, 0);
    __syncthreads();
  }
  out[threadIdx.x] = v;
}

__global__ void mismatched_masks_kernel(int* out) {
  const unsigned mask = threadIdx.x < 16 ? 0xffffffffu : 0xffff0000u;
  out[threadIdx.x] = __shfl_sync(mask, static_cast<int>(threadIdx.x), 0);
}

__global__ void partial_warp_mma_kernel(float* out) {
  uint32_t a[4] = {0, 0, 0, 0}, b[2] = {0, 0};
  float acc[4] = {0, 0, 0, 0};
  kernelzoo::mma::mma_m16n8k16<c10::Half>(acc, a, b, acc);
  out[threadIdx.x] = acc[0];
}

__global__ void throwing_kernel(int* out) {
  if (threadIdx.x == 7) __trap();
  out[threadIdx.x] = 1;
}

// --- memory errors the harness must catch ---------------------------------------
__global__ void off_by_one_kernel(float* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i <= n) out[i] = 1.0f;  // bug: i == n writes past the end
}

__global__ void static_shared_overflow_kernel(float* out) {
  __shared__ float s[64];
  s[threadIdx.x + 1] = 1.0f;  // bug: thread 63 writes s[64]
  __syncthreads();
  out[threadIdx.x] = s[threadIdx.x];
}

__global__ void dynamic_shared_overflow_kernel(float* out) {
  extern __shared__ float dyn[];
  dyn[threadIdx.x + 1] = 1.0f;  // bug: writes one float past the launch's shared_bytes
  __syncthreads();
  out[threadIdx.x] = dyn[threadIdx.x];
}

}  // namespace kz_test

KZ_HARNESS_DYNAMIC_SHARED(kz_test, float, dyn);

namespace {

using namespace kz_test;

std::vector<float> random_floats(std::size_t n, unsigned seed, float lo = -1.f, float hi = 1.f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

// ---------------------------------------------------------------------------
TEST(CudaHarness, BlockReductionThroughSharedMemory) {
  const int n = 1000;  // not a multiple of the block size
  const auto in = random_floats(n, 1);
  const int blocks = (n + kReduceThreads - 1) / kReduceThreads;
  for (auto schedule : {Schedule::Forward, Schedule::Reverse, Schedule::Shuffled}) {
    std::vector<float> out(blocks, 0.0f);
    LaunchOptions opt;
    opt.schedule = schedule;
    launch(opt, block_sum_kernel, blocks, kReduceThreads, 0, in.data(), out.data(), n);
    for (int b = 0; b < blocks; ++b) {
      double ref = 0;
      for (int i = b * kReduceThreads; i < std::min(n, (b + 1) * kReduceThreads); ++i) ref += in[i];
      // float tree sum vs double loop: 128 terms of magnitude <= 1.
      EXPECT_NEAR(out[b], ref, 1e-4) << "block " << b;
    }
  }
}

TEST(CudaHarness, WarpScanWithShuffles) {
  const int threads = 96, blocks = 2, n = threads * blocks;
  std::vector<int> in(n), scan(n), xt(n), dt(n);
  std::mt19937 rng(2);
  for (auto& v : in) v = static_cast<int>(rng() % 100) - 50;
  launch(warp_scan_kernel, blocks, threads, 0, in.data(), scan.data(), xt.data(), dt.data());
  for (int w = 0; w < n / 32; ++w) {
    int run = 0, total = 0;
    for (int l = 0; l < 32; ++l) total += in[w * 32 + l];
    for (int l = 0; l < 32; ++l) {
      run += in[w * 32 + l];
      EXPECT_EQ(scan[w * 32 + l], run) << "warp " << w << " lane " << l;
      EXPECT_EQ(xt[w * 32 + l], total);
      EXPECT_EQ(dt[w * 32 + l], total);
    }
  }
}

TEST(CudaHarness, ShuffleWidthAndVotes) {
  std::vector<int> in(32), bcast(32), rot(32), any(32), all(32);
  std::vector<unsigned> ballot(32);
  for (int l = 0; l < 32; ++l) in[l] = (l % 3 == 0) ? l + 1 : -l;
  launch(shuffle_width_vote_kernel, 1, 32, 0, in.data(), bcast.data(), rot.data(), ballot.data(),
         any.data(), all.data());
  unsigned expect_ballot = 0;
  for (int l = 0; l < 32; ++l)
    if (in[l] > 0) expect_ballot |= 1u << l;
  for (int l = 0; l < 32; ++l) {
    const int group = l / 8 * 8;
    EXPECT_EQ(bcast[l], in[group + 3]) << l;
    EXPECT_EQ(rot[l], in[group + (l + 1) % 8]) << l;  // srcLane 8..15 wraps within the group
    EXPECT_EQ(ballot[l], expect_ballot);
    EXPECT_EQ(any[l], 0);
    EXPECT_EQ(all[l], 1);
  }
}

TEST(CudaHarness, HistogramWithAtomics) {
  const int n = 5000;
  std::vector<int> values(n);
  std::mt19937 rng(3);
  for (auto& v : values) v = static_cast<int>(rng() % 10007);
  std::vector<int> bins(kBins, 0);
  int max_value = -1;
  unsigned cas_max = 0;
  // 7 blocks of 96: the grid-stride loop covers the rest.
  launch(histogram_kernel, 7, 96, 0, values.data(), n, bins.data(), &max_value, &cas_max);
  std::vector<int> ref(kBins, 0);
  for (int v : values) ++ref[v % kBins];
  EXPECT_EQ(bins, ref);
  const int ref_max = *std::max_element(values.begin(), values.end());
  EXPECT_EQ(max_value, ref_max);
  EXPECT_EQ(cas_max, static_cast<unsigned>(ref_max));

  float fsum = 0;
  double dsum = 0;
  launch(float_atomics_kernel, 3, 100, 0, &fsum, &dsum, 250);
  EXPECT_EQ(fsum, 125.0f);  // sums of 0.5 and 0.25 are exact
  EXPECT_EQ(dsum, 62.5);
}

TEST(CudaHarness, DynamicSharedMemory) {
  const int n = 300, threads = 64, blocks = (n + threads - 1) / threads;
  const auto in = random_floats(n, 4);
  std::vector<float> out(n, 0.0f);
  launch(reverse_kernel, blocks, threads, threads * sizeof(float), in.data(), out.data(), n);
  for (int b = 0; b < blocks; ++b)
    for (int t = 0; t < threads; ++t) {
      const int j = b * threads + (threads - 1 - t), i = b * threads + t;
      if (j < n) EXPECT_EQ(out[j], i < n ? in[i] : -1.0f) << j;
    }
}

TEST(CudaHarness, DynamicSharedMemoryStartsUninitialised) {
  std::vector<unsigned> out(32, 0);
  launch(read_uninitialised_kernel, 1, 32, 32 * sizeof(float), out.data());
  for (unsigned bits : out) EXPECT_EQ(bits, 0xffffffffu);  // NaN as a float
}

TEST(CudaHarness, MultiDimensionalGridAndBlock) {
  const dim3 grid(3, 2, 2), block(4, 3, 2);
  const int threads = 24, blocks = 12;
  std::vector<int> out(threads * blocks, -1);
  launch(coords_kernel, grid, block, 0, out.data());
  for (int b = 0; b < blocks; ++b)
    for (int t = 0; t < threads; ++t) EXPECT_EQ(out[b * threads + t], b * 1000 + t);
}

TEST(CudaHarness, BarrierVotes) {
  std::vector<int> in(40);
  for (int i = 0; i < 40; ++i) in[i] = i % 4 == 0 ? 0 : i;
  int count = -1, all = -1, any = -1;
  launch(barrier_votes_kernel, 1, 40, 0, in.data(), &count, &all, &any);
  EXPECT_EQ(count, 30);
  EXPECT_EQ(all, 0);
  EXPECT_EQ(any, 1);
}

TEST(CudaHarness, MissingBarrierShowsUnderSomeSchedule) {
  std::vector<int> in(64), out(64);
  std::iota(in.begin(), in.end(), 1000);
  auto correct = [&] {
    for (int t = 0; t < 64; ++t)
      if (out[t] != in[(t + 1) % 64]) return false;
    return true;
  };
  for (auto schedule : {Schedule::Forward, Schedule::Reverse, Schedule::Shuffled}) {
    LaunchOptions opt;
    opt.schedule = schedule;
    launch(opt, neighbour_kernel<true>, 1, 64, 0, in.data(), out.data());
    EXPECT_TRUE(correct());
  }
  // Without the barrier, thread t reads s[t + 1] before thread t + 1 wrote it
  // under the forward schedule. Change the input so stale data cannot match.
  std::iota(in.begin(), in.end(), 5000);
  launch(neighbour_kernel<false>, 1, 64, 0, in.data(), out.data());
  EXPECT_FALSE(correct());
}

TEST(CudaHarness, MissingBarrierBetweenWarpsShowsWarpByWarp) {
  std::vector<int> in(64), out(64);
  auto correct = [&] {
    for (int t = 0; t < 64; ++t)
      if (out[t] != in[t] + in[(t + 32) % 64]) return false;
    return true;
  };
  int base = 0;
  for (auto schedule : {Schedule::Forward, Schedule::Reverse, Schedule::Shuffled,
                        Schedule::WarpByWarp}) {
    std::iota(in.begin(), in.end(), base += 1000);
    LaunchOptions opt;
    opt.schedule = schedule;
    launch(opt, cross_warp_kernel<true>, 2, 64, 0, in.data(), out.data());
    EXPECT_TRUE(correct()) << static_cast<int>(schedule);
  }
  // Without the barrier the warps pass the shuffle in step under Forward, so
  // the bug stays hidden; warp 0 alone reads warp 1's stale values under
  // WarpByWarp. Fresh inputs, so that stale data cannot match.
  for (auto schedule : {Schedule::Forward, Schedule::WarpByWarp}) {
    std::iota(in.begin(), in.end(), base += 1000);
    LaunchOptions opt;
    opt.schedule = schedule;
    launch(opt, cross_warp_kernel<false>, 1, 64, 0, in.data(), out.data());
    EXPECT_EQ(correct(), schedule == Schedule::Forward) << static_cast<int>(schedule);
  }
}

TEST(CudaHarness, MathIntrinsics) {
  const auto x = random_floats(32, 5, -3.f, 3.f);
  std::vector<float> out(8 * 32);
  launch(math_kernel, 1, 32, 0, x.data(), out.data());
  for (int t = 0; t < 32; ++t) {
    const float v = x[t];
    const float* o = &out[8 * t];
    // The harness computes these exactly (in float); the GPU's fast versions
    // differ by a few ulp, which tests of real kernels must allow for.
    EXPECT_FLOAT_EQ(o[0], std::exp(v));
    EXPECT_FLOAT_EQ(o[1], std::exp2(v));
    EXPECT_FLOAT_EQ(o[2], v / 3.0f);
    EXPECT_FLOAT_EQ(o[3], 1.0f / std::sqrt(std::fabs(v) + 1.0f));
    EXPECT_EQ(o[4], std::max(v, 0.25f));
    EXPECT_EQ(o[5], static_cast<float>(c10::Half(v)));      // round to nearest even
    EXPECT_NEAR(o[5], v, std::ldexp(std::fabs(v), -11));     // f16: 11-bit significand
    EXPECT_EQ(o[6], static_cast<float>(c10::BFloat16(v)));
    EXPECT_NEAR(o[6], v, std::ldexp(std::fabs(v), -8));      // bf16: 8-bit significand
    EXPECT_EQ(o[7], std::clamp(v, -0.5f, 0.5f));
  }
}

// --- tensor cores ---------------------------------------------------------------
template <typename T>
struct MmaCase {
  std::vector<T> a, b, bt;
  std::vector<float> c, ref;
  explicit MmaCase(unsigned seed) : a(256), b(128), bt(128), c(128), ref(128) {
    const auto fa = random_floats(256, seed), fb = random_floats(128, seed + 1),
               fc = random_floats(128, seed + 2, -4.f, 4.f);
    for (int i = 0; i < 256; ++i) a[i] = T(fa[i]);
    for (int k = 0; k < 16; ++k)
      for (int n = 0; n < 8; ++n) b[k * 8 + n] = bt[n * 16 + k] = T(fb[k * 8 + n]);
    c = fc;
    for (int m = 0; m < 16; ++m)
      for (int n = 0; n < 8; ++n) {
        double acc = c[m * 8 + n];
        for (int k = 0; k < 16; ++k)
          acc += static_cast<double>(static_cast<float>(a[m * 16 + k])) *
                 static_cast<float>(b[k * 8 + n]);
        ref[m * 8 + n] = static_cast<float>(acc);
      }
  }
  float max_error(const std::vector<float>& d) const {
    float e = 0;
    for (int i = 0; i < 128; ++i) e = std::max(e, std::abs(d[i] - ref[i]));
    return e;
  }
};

// The reference sums the same exactly-representable products as the harness, in
// double; only the final rounding to float can differ: 1e-5 on values below ~20.
constexpr float kMmaTol = 1e-5f;

template <typename T>
void check_mma_tile() {
  MmaCase<T> cs(10);
  std::vector<float> d(128, 0.f);
  launch(mma_tile_kernel<T, true>, 1, 32, 0, cs.a.data(), cs.bt.data(), cs.c.data(), d.data());
  EXPECT_LE(cs.max_error(d), kMmaTol) << "ldmatrix x4 + x2 (B as [n][k])";
  std::fill(d.begin(), d.end(), 0.f);
  launch(mma_tile_kernel<T, false>, 1, 32, 0, cs.a.data(), cs.b.data(), cs.c.data(), d.data());
  EXPECT_LE(cs.max_error(d), kMmaTol) << "ldmatrix x4 + x2.trans (B as [k][n])";
}

TEST(CudaHarness, MmaWithLdmatrixF16) { check_mma_tile<c10::Half>(); }
TEST(CudaHarness, MmaWithLdmatrixBF16) { check_mma_tile<c10::BFloat16>(); }

TEST(CudaHarness, MmaFragmentsByCoordinates) {
  MmaCase<c10::Half> cs(20);
  std::fill(cs.c.begin(), cs.c.end(), 0.f);
  MmaCase<c10::Half> zero_c = cs;
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 8; ++n) {
      double acc = 0;
      for (int k = 0; k < 16; ++k)
        acc += static_cast<double>(static_cast<float>(cs.a[m * 16 + k])) *
               static_cast<float>(cs.b[k * 8 + n]);
      zero_c.ref[m * 8 + n] = static_cast<float>(acc);
    }
  std::vector<float> d(128, 0.f);
  launch(mma_manual_kernel<c10::Half, false>, 1, 32, 0, cs.a.data(), cs.b.data(), d.data());
  EXPECT_LE(zero_c.max_error(d), kMmaTol);
  // Mis-assigned fragments (a[1] <-> a[2]) give a wrong product, as on the GPU.
  launch(mma_manual_kernel<c10::Half, true>, 1, 32, 0, cs.a.data(), cs.b.data(), d.data());
  EXPECT_GT(zero_c.max_error(d), 0.05f);
}

TEST(CudaHarness, MmaNeedsTheWholeWarp) {
  std::vector<float> out(48);
  try {
    launch(partial_warp_mma_kernel, 1, 48, 0, out.data());
    FAIL() << "a partial warp's mma was not reported";
  } catch (const LaunchError& e) {
    EXPECT_NE(std::string(e.what()).find("the whole warp (32 threads) must execute it"),
              std::string::npos)
        << e.what();
  }
}

// --- cp.async -------------------------------------------------------------------
TEST(CudaHarness, CpAsyncGroupsAndZeroFill) {
  const auto src = random_floats(128, 30);
  for (int valid : {64, 37, 0}) {
    std::vector<float> out(128, -7.f);
    launch(cp_async_kernel, 1, 16, 0, src.data(), out.data(), valid);
    for (int i = 0; i < 64; ++i) EXPECT_EQ(out[i], src[i]) << i;
    for (int i = 0; i < 64; ++i) {
      // zfill copies whole 4-byte elements here: `valid` floats, then zeros.
      EXPECT_EQ(out[64 + i], i < valid ? src[64 + i] : 0.f) << "valid " << valid << " i " << i;
    }
  }
}

TEST(CudaHarness, CpAsyncWaitAllCoversUncommittedCopies) {
  const auto src = random_floats(64, 31);
  std::vector<float> out(64, -7.f);
  launch(cp_async_wait_all_kernel, 1, 16, 0, src.data(), out.data());
  for (int i = 0; i < 64; ++i) EXPECT_EQ(out[i], src[i]) << i;
}

// pack2(float, float) rounds each value to T, low half first; unpack_* read them back.
template <typename T>
void check_pack_unpack() {
  const auto in = random_floats(64, 32);
  std::vector<float> out(64, -7.f);
  launch(pack_unpack_kernel<T>, 1, 32, 0, in.data(), out.data());
  for (int i = 0; i < 64; ++i) EXPECT_EQ(out[i], static_cast<float>(T(in[i]))) << i;
}
TEST(CudaHarness, PackAndUnpackHalf) { check_pack_unpack<c10::Half>(); }
TEST(CudaHarness, PackAndUnpackBFloat16) { check_pack_unpack<c10::BFloat16>(); }

// --- reported failures ------------------------------------------------------------
std::string launch_error(void (*fn)()) {
  try {
    fn();
  } catch (const LaunchError& e) {
    return e.what();
  }
  return "";
}

void expect_contains(const std::string& text, const std::vector<std::string>& parts) {
  ASSERT_FALSE(text.empty()) << "the launch was expected to fail";
  for (const auto& p : parts) EXPECT_NE(text.find(p), std::string::npos) << "missing '" << p << "' in:\n" << text;
}

TEST(CudaHarness, DivergentBarrierIsReported) {
  const auto msg = launch_error([] {
    std::vector<float> out(64);
    launch(divergent_barrier_kernel, 2, 64, 0, out.data());
  });
  expect_contains(msg, {"kz_test::divergent_barrier_kernel", "divergent barrier",
                        "block (0,0,0)", "threads 0-15 wait at __syncthreads() at test_cuda_harness.cpp:",
                        "threads 16-63 have exited"});
}

TEST(CudaHarness, DifferentBarriersAreReported) {
  const auto msg = launch_error([] {
    std::vector<float> out(32);
    launch(two_barriers_kernel, 1, 32, 0, out.data());
  });
  expect_contains(msg, {"two_barriers_kernel", "threads reached different barriers"});
}

TEST(CudaHarness, DivergentShuffleIsReported) {
  const auto msg = launch_error([] {
    std::vector<int> out(64);
    launch(divergent_shuffle_kernel, 1, 64, 0, out.data());
  });
  expect_contains(msg, {"divergent_shuffle_kernel", "divergent warp collective",
                        "__shfl_xor_sync(mask 0xffffffff)", "exited"});
}

TEST(CudaHarness, DeadlockIsReportedNotHung) {
  const auto msg = launch_error([] {
    std::vector<int> out(32);
    launch(barrier_vs_shuffle_kernel, 1, 32, 0, out.data());
  });
  expect_contains(msg, {"barrier_vs_shuffle_kernel", "deadlock",
                        "threads 5 wait at __syncthreads()",
                        "wait at __shfl_sync(mask 0xffffffff)"});
}

TEST(CudaHarness, MismatchedMasksAreReported) {
  const auto msg = launch_error([] {
    std::vector<int> out(32);
    launch(mismatched_masks_kernel, 1, 32, 0, out.data());
  });
  expect_contains(msg, {"mismatched_masks_kernel", "must pass the same mask"});
}

TEST(CudaHarness, TrapIsReported) {
  const auto msg = launch_error([] {
    std::vector<int> out(32);
    launch(throwing_kernel, 1, 32, 0, out.data());
  });
  expect_contains(msg, {"throwing_kernel", "thread 7", "__trap() called"});
}

TEST(CudaHarness, InvalidLaunchConfigurationIsReported) {
  std::vector<float> out(4);
  EXPECT_THROW(launch(divergent_barrier_kernel, 1, 2048, 0, out.data()), LaunchError);
  EXPECT_THROW(launch(divergent_barrier_kernel, 0, 32, 0, out.data()), LaunchError);
  EXPECT_THROW(launch(reverse_kernel, 1, 32, 300 * 1024, nullptr, out.data(), 0), LaunchError);
}

TEST(CudaHarness, IntrinsicOutsideALaunchIsReported) {
  EXPECT_THROW(__syncthreads(), LaunchError);
}

// --- caught memory errors (AddressSanitizer / UBSan aborts the process) ----------
class CudaHarnessMemory : public ::testing::Test {
 protected:
  void SetUp() override {
#if !defined(KZ_HARNESS_SANITIZED)
    GTEST_SKIP() << "built without KERNELZOO_HARNESS_SANITIZE";
#endif
    GTEST_FLAG_SET(death_test_style, "threadsafe");
  }
};

TEST_F(CudaHarnessMemory, OutOfBoundsGlobalWriteIsCaught) {
  EXPECT_DEATH(
      {
        std::vector<float> out(100);
        launch(off_by_one_kernel, 1, 128, 0, out.data(), 100);
      },
      "heap-buffer-overflow.*WRITE of size 4.*off_by_one_kernel");
  // In bounds, the same kernel is fine (the death above is the bug's).
  std::vector<float> out(101);
  launch(off_by_one_kernel, 1, 128, 0, out.data(), 100);
  EXPECT_EQ(out[100], 1.0f);
}

TEST_F(CudaHarnessMemory, OutOfBoundsStaticSharedWriteIsCaught) {
  EXPECT_DEATH(
      {
        std::vector<float> out(64);
        launch(static_shared_overflow_kernel, 1, 64, 0, out.data());
      },
      "index 64 out of bounds for type 'float \\[64\\]'");
}

TEST_F(CudaHarnessMemory, OutOfBoundsDynamicSharedWriteIsCaught) {
  EXPECT_DEATH(
      {
        std::vector<float> out(32);
        launch(dynamic_shared_overflow_kernel, 1, 32, 32 * sizeof(float), out.data());
      },
      "AddressSanitizer: use-after-poison");
  std::vector<float> out(32);
  launch(dynamic_shared_overflow_kernel, 1, 32, 33 * sizeof(float), out.data());
  EXPECT_EQ(out[1], 1.0f);
}

TEST_F(CudaHarnessMemory, ReadingACpAsyncDestinationBeforeTheWaitIsCaught) {
  const auto src = random_floats(64, 40);
  EXPECT_DEATH(
      {
        std::vector<float> out(16);
        launch(cp_async_early_read_kernel, 1, 16, 0, src.data(), out.data());
      },
      "AddressSanitizer: use-after-poison");
}

}  // namespace
