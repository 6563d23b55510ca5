// CPU building blocks shared by the roi_align and roi_pool kernels.
//
// Work is split into units (n, channel block): image n of the batch and kCB
// consecutive channels. A unit handles every roi of image n for its channels,
// so every output element and every element of grad_input belongs to exactly
// one unit: no atomics, no races, and each element's sum runs in a fixed order
// (the rois of its image in increasing order) whatever the number of threads.
//
// The heavy loops work on a channel-block "tile": the unit's kCB channels of
// image n in pixel-major order, tile[(y * W + x) * kCB + j] = input[n, c0 + j, y, x],
// in the accumulation type (float16/bfloat16 are converted once, here). One
// bilinear tap or one window pixel is then a kCB-wide vector operation
// (kernels marked KZ_CPU_CLONES are compiled for AVX2 and AVX-512 too), and
// the tile of a 64x64 map (256 KiB) stays in L2 while every roi of the image
// is pooled from it. Any input layout is copied into tiles, channels_last
// included: reading a channels_last input in place, 64 bytes out of every
// C * 4, costs more in cache and TLB misses than the copy (measured: 11 ms
// against 8 ms for the benchmark's forward).
//
// The forward builds one tile of the whole plane block when the unit's rois
// together cover at least as many pixels; with fewer (a few boxes on a large
// map) each roi gets a tile of just the pixels it touches. Both run the same
// vectorized loop, so a box's output never depends on the other boxes.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <vector>

namespace kernelzoo {
namespace roi_detail {

constexpr int64_t kCB = 16;  // channels per block: one cache line of float32

// kCB lanes of the accumulation type and a matching lane mask, as GCC/Clang
// vector extensions: loops the auto-vectorizer leaves scalar (a select of a
// maximum and its index across a window) are written with them explicitly.
// Without the extensions, the kernels fall back to scalar loops.
#if defined(__GNUC__) || defined(__clang__)
#define KZ_VECTOR_EXTENSIONS 1
template <typename T>
struct Lanes;
template <>
struct Lanes<float> {
  typedef float type __attribute__((vector_size(kCB * sizeof(float))));
  typedef int32_t mask __attribute__((vector_size(kCB * sizeof(int32_t))));
};
template <>
struct Lanes<double> {
  typedef double type __attribute__((vector_size(kCB * sizeof(double))));
  typedef int64_t mask __attribute__((vector_size(kCB * sizeof(int64_t))));
};
#endif

struct Strides4 {
  int64_t n, c, h, w;
};

inline Strides4 strides_of(const at::Tensor& t) {
  return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
}

// A pixel-major block of the unit's channels covering rows [row0, row0 + rows)
// and columns [col0, col0 + cols) of the feature map: pixel (y, x) at
// ptr + (y - row0) * sy + (x - col0) * sx, kCB channels from there.
template <typename acc_t>
struct Tile {
  const acc_t* ptr;
  int64_t sy, sx;
  int64_t row0, col0;
};

// Fills buf with input[n, c0 + j, y, x] for y in [row0, row1), x in [col0, col1),
// j < cbn (zeros for cbn <= j < kCB) and returns the tile over it.
template <typename scalar_t, typename acc_t>
Tile<acc_t> build_tile(const scalar_t* input, const Strides4& s, int64_t n, int64_t c0, int64_t cbn,
                       int64_t row0, int64_t row1, int64_t col0, int64_t col1,
                       std::vector<acc_t>& buf) {
  const int64_t rows = std::max<int64_t>(row1 - row0, 0), cols = std::max<int64_t>(col1 - col0, 0);
  buf.resize(std::max<int64_t>(rows * cols * kCB, 1));
  acc_t* tile = buf.data();
  const scalar_t* base = input + n * s.n + c0 * s.c;
  for (int64_t y = 0; y < rows; ++y) {
    acc_t* row = tile + y * cols * kCB;
    const scalar_t* src = base + (row0 + y) * s.h + col0 * s.w;
    if (s.c == 1) {  // channels innermost (channels_last): pixel by pixel
      for (int64_t x = 0; x < cols; ++x) {
        for (int64_t j = 0; j < cbn; ++j) row[x * kCB + j] = static_cast<acc_t>(src[x * s.w + j]);
        for (int64_t j = cbn; j < kCB; ++j) row[x * kCB + j] = acc_t(0);
      }
      continue;
    }
    for (int64_t j = 0; j < cbn; ++j) {  // channel rows side by side
      for (int64_t x = 0; x < cols; ++x) row[x * kCB + j] = static_cast<acc_t>(src[j * s.c + x * s.w]);
    }
    for (int64_t j = cbn; j < kCB; ++j) {
      for (int64_t x = 0; x < cols; ++x) row[x * kCB + j] = acc_t(0);
    }
  }
  return {tile, cols * kCB, kCB, row0, col0};
}

// Buffers a thread reuses from unit to unit (for_each_unit's Scratch): a tile
// and a second buffer (the bins of one roi, ...), in the accumulation type.
struct Scratch {
  std::vector<float> tile_f, buf_f;
  std::vector<double> tile_d, buf_d;
  std::vector<float>& tile(float) { return tile_f; }
  std::vector<double>& tile(double) { return tile_d; }
  std::vector<float>& buf(float) { return buf_f; }
  std::vector<double>& buf(double) { return buf_d; }
};

// Runs f(n, c0, cbn, scratch) for every unit, in parallel when `work` (a rough
// count of the call's element operations) makes it worth waking the other
// threads; `scratch` is a Scratch object shared by the units one thread runs
// (buffers to reuse). Units are handed out one at a time from a shared counter
// (dynamic scheduling): images may have very different numbers of rois, and a
// thread that loses its core to another process takes fewer units instead of
// holding the others up at the end. Which thread runs a unit does not change
// its result.
constexpr int64_t kParallelWork = int64_t{1} << 16;

template <typename Scratch, typename F>
void for_each_unit(int64_t batch_size, int64_t channels, int64_t work, const F& f) {
  const int64_t blocks = (channels + kCB - 1) / kCB;
  const int64_t units = batch_size * blocks;
  auto run = [&](int64_t u, Scratch& scratch) {
    const int64_t cb = u / batch_size, n = u % batch_size;
    const int64_t c0 = cb * kCB;
    f(n, c0, std::min(kCB, channels - c0), scratch);
  };
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), units);
  if (threads <= 1 || work < kParallelWork || at::in_parallel_region()) {
    Scratch scratch;
    for (int64_t u = 0; u < units; ++u) run(u, scratch);
    return;
  }
  std::atomic<int64_t> next{0};
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    Scratch scratch;
    for (int64_t u = next.fetch_add(1, std::memory_order_relaxed); u < units;
         u = next.fetch_add(1, std::memory_order_relaxed)) {
      run(u, scratch);
    }
  });
}

}  // namespace roi_detail
}  // namespace kernelzoo
