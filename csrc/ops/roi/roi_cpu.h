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
// in the accumulation type. One bilinear tap or one window pixel is then a
// kCB-wide vector operation (kernels marked KZ_CPU_CLONES are compiled for
// AVX2 and AVX-512 too), and the tile of a 64x64 map (256 KiB) stays in L2
// while all rois of the image are pooled. A channels_last input of the
// accumulation type is read in place; other layouts are copied into the tile.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace kernelzoo {
namespace roi_detail {

constexpr int64_t kCB = 16;  // channels per block: one cache line of float32

struct Strides4 {
  int64_t n, c, h, w;
};

inline Strides4 strides_of(const at::Tensor& t) {
  return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
}

// Whether the (N, C, H, W) tensor can serve as its own tiles: elements of the
// accumulation type (nothing to convert), channels innermost (stride 1, as in
// channels_last) and whole channel blocks (C % kCB == 0); the pixel strides
// may be anything.
inline bool reads_in_place(const at::Tensor& input, at::ScalarType acc_type) {
  return input.scalar_type() == acc_type && input.size(1) % kCB == 0 && input.stride(1) == 1 &&
         input.size(1) > 0;
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
    for (int64_t j = 0; j < cbn; ++j) {
      const scalar_t* src = base + j * s.c + (row0 + y) * s.h + col0 * s.w;
      for (int64_t x = 0; x < cols; ++x) row[x * kCB + j] = static_cast<acc_t>(src[x * s.w]);
    }
    for (int64_t j = cbn; j < kCB; ++j) {
      for (int64_t x = 0; x < cols; ++x) row[x * kCB + j] = acc_t(0);
    }
  }
  return {tile, cols * kCB, kCB, row0, col0};
}

// The tile of a unit: the input itself when it reads_in_place, else a copy of
// the whole plane block.
template <typename scalar_t, typename acc_t>
Tile<acc_t> unit_tile(const scalar_t* input, const Strides4& s, bool in_place, int64_t n,
                      int64_t c0, int64_t cbn, int64_t height, int64_t width,
                      std::vector<acc_t>& buf) {
  if (in_place) {
    return {reinterpret_cast<const acc_t*>(input) + n * s.n + c0, s.h, s.w, 0, 0};
  }
  return build_tile(input, s, n, c0, cbn, 0, height, 0, width, buf);
}

// Runs f(n, c0, cbn, scratch) for every unit, in parallel; `scratch` is a
// Scratch object shared by the units one thread runs (buffers to reuse). Units
// are ordered channel block first, so that a static split over threads gives
// each thread blocks of every image (images may have very different numbers
// of rois).
template <typename Scratch, typename F>
void for_each_unit(int64_t batch_size, int64_t channels, const F& f) {
  const int64_t blocks = (channels + kCB - 1) / kCB;
  at::parallel_for(0, batch_size * blocks, 1, [&](int64_t begin, int64_t end) {
    Scratch scratch;
    for (int64_t u = begin; u < end; ++u) {
      const int64_t cb = u / batch_size, n = u % batch_size;
      const int64_t c0 = cb * kCB;
      f(n, c0, std::min(kCB, channels - c0), scratch);
    }
  });
}

}  // namespace roi_detail
}  // namespace kernelzoo
