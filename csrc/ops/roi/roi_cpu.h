// CPU building blocks shared by the roi_align and roi_pool kernels
// (roi_align_cpu.cpp, roi_pool_cpu.cpp). Host code.
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
// (common/cpu_vec.h), and the tile of a 64x64 map (256 KiB) stays in L2 while
// every roi of the image is pooled from it. Any input layout is copied into
// tiles, channels_last included: reading a channels_last input in place, 64
// bytes out of every C * 4, costs more in cache and TLB misses than the copy
// (measured: 11 ms against 8 ms for the benchmark's forward).
//
// The forward (forward_units) builds one tile of the whole plane block when the
// unit's rois together cover at least as many pixels; with fewer (a few boxes
// on a large map) each roi gets a tile of just the pixels it touches, and a roi
// whose tile would be too large or too sparse reads the input in place. All
// run the same vectorized loop on the same values, so a box's output never
// depends on the other boxes, and scratch memory is bounded (kTileBytes).
#pragma once

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "../../common/acc_type.h"
#include "../../common/cpu_vec.h"
#include "../../common/parallel.h"
#include "../../common/tensor_data.h"
#include "roi_args.h"
#include "roi_math.h"

namespace kernelzoo {
namespace roi_detail {

constexpr int64_t kCB = 16;  // channels per block: one cache line of float32

#if defined(KZ_VECTOR_EXTENSIONS)
template <typename acc_t>
using ChannelLanes = Lanes<acc_t, kCB>;
#endif

struct Strides4 {
  int64_t n, c, h, w;
};

inline Strides4 strides_of(const at::Tensor& t) {
  return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
}

// The rois grouped by batch index: rois order[begin[n]], ...,
// order[begin[n+1] - 1] belong to image n, in increasing roi order. Raises the
// documented error for a batch index outside [0, batch_size).
struct BatchGroups {
  std::vector<int64_t> order;  // K roi indices
  std::vector<int64_t> begin;  // batch_size + 1 offsets into order
};

inline BatchGroups group_by_batch(const char* op, const at::Tensor& rois, int64_t batch_size) {
  const int64_t k = rois.size(0);
  BatchGroups g;
  g.order.resize(k);
  g.begin.assign(batch_size + 1, 0);
  if (k == 0) return g;
  // Column 0 in float64 (exact for every supported dtype).
  const at::Tensor col = rois.select(1, 0).to(at::kDouble).contiguous();
  const double* v = col.const_data_ptr<double>();
  std::vector<int64_t> batch(k);
  for (int64_t i = 0; i < k; ++i) {
    const int64_t b = batch_index<double>(v[i], batch_size);
    TORCH_CHECK(b >= 0, op, ": boxes[", i, ", 0] = ", v[i],
                " is not a valid batch index for an input with batch size ", batch_size,
                " (expected 0 <= index < ", batch_size, ")");
    batch[i] = b;
    ++g.begin[b + 1];
  }
  for (int64_t n = 0; n < batch_size; ++n) g.begin[n + 1] += g.begin[n];
  std::vector<int64_t> next(g.begin.begin(), g.begin.end() - 1);
  for (int64_t i = 0; i < k; ++i) g.order[next[batch[i]]++] = i;
  return g;
}

// The boxes of a rois tensor in acc_t, one RoiBox per row.
template <typename acc_t>
std::vector<RoiBox<acc_t>> load_boxes(const at::Tensor& rois, int64_t batch_size) {
  const at::Tensor r = rois.to(c10::CppTypeToScalarType<acc_t>::value).contiguous();
  const acc_t* p = r.const_data_ptr<acc_t>();
  std::vector<RoiBox<acc_t>> boxes(rois.size(0));
  for (int64_t k = 0; k < rois.size(0); ++k) {
    boxes[k] = load_roi<acc_t>(p, k, int64_t{5}, int64_t{1}, batch_size);
  }
  return boxes;
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

// Largest tile a thread builds. A unit whose whole-plane tile, or a roi whose
// own tile, would be larger is pooled straight from the input (InputPixels),
// so that scratch memory stays bounded whatever the map size and channel count.
constexpr int64_t kTileBytes = int64_t{8} << 20;

template <typename acc_t>
bool tile_fits(int64_t pixels) {
  return pixels <= kTileBytes / (kCB * static_cast<int64_t>(sizeof(acc_t)));
}

// Where the vectorized loops read pixel (y, x)'s kCB channels from: a tile
// (TilePixels), or the input itself (InputPixels: the channels gathered through
// their stride and converted, zero past cbn, exactly the values a tile holds).
// Both give the loops the same lanes, so a roi's result does not depend on
// which one serves it.
template <typename acc_t>
struct TilePixels {
  Tile<acc_t> tile;
  KZ_ALWAYS_INLINE void load(int64_t y, int64_t x, acc_t* lanes) const {
    std::memcpy(lanes, tile.ptr + (y - tile.row0) * tile.sy + (x - tile.col0) * tile.sx,
                kCB * sizeof(acc_t));
  }
};

template <typename scalar_t>
struct InputPixels {
  const scalar_t* base;  // input + n * s.n + c0 * s.c
  Strides4 s;
  int64_t cbn;
  template <typename acc_t>
  KZ_ALWAYS_INLINE void load(int64_t y, int64_t x, acc_t* lanes) const {
    const scalar_t* px = base + y * s.h + x * s.w;
    for (int64_t j = 0; j < kCB; ++j) lanes[j] = j < cbn ? static_cast<acc_t>(px[j * s.c]) : acc_t(0);
  }
};

// Buffers a thread reuses from unit to unit (for_each_unit's scratch): a tile,
// a second buffer (the bins of one roi, ...) in the accumulation type, and
// roi_pool's argmax of one roi's bins.
struct Scratch {
  std::vector<float> tile_f, buf_f;
  std::vector<double> tile_d, buf_d;
  std::vector<int32_t> arg;
  std::vector<float>& tile(float) { return tile_f; }
  std::vector<double>& tile(double) { return tile_d; }
  std::vector<float>& buf(float) { return buf_f; }
  std::vector<double>& buf(double) { return buf_d; }
};

// Runs f(n, c0, cbn, scratch) for every unit (common/parallel.h's dynamic
// scheduling; `scratch` is the Scratch of the thread running the unit).
template <typename F>
void for_each_unit(int64_t batch_size, int64_t channels, int64_t work, const F& f) {
  const int64_t blocks = (channels + kCB - 1) / kCB;
  for_each_task<Scratch>(batch_size * blocks, work, [&](int64_t u, Scratch& scratch) {
    const int64_t cb = u / batch_size, n = u % batch_size;
    const int64_t c0 = cb * kCB;
    f(n, c0, std::min(kCB, channels - c0), scratch);
  });
}

// The forward of both ops. geo[k] is roi k's precomputed geometry, with
// row0, row1, col0, col1 (the pixels it touches: [row0, row1) x [col0, col1))
// and work (its taps or pixels per channel); block(pixels, geo[k], out, arg)
// pools one roi for kCB channels, reading them through `pixels`
// (TilePixels<acc_t> or InputPixels<scalar_t>), into buffers in (bin, channel)
// order (arg: roi_pool's argmax; roi_align ignores it). Writes f.output and,
// when defined, f.argmax.
//
// Where the pixels come from: a tile of the whole plane block when the unit's
// rois together cover at least a plane's pixels and the tile fits kTileBytes;
// otherwise, per roi, a tile of the pixels it touches when that fits and the
// roi reads them densely (at most 4 tile pixels per unit of work); otherwise
// the input itself. Scratch memory is thus at most kTileBytes plus one roi's
// bins per thread.
template <typename scalar_t, typename Geo, typename Block>
void forward_units(const Forward& f, const BatchGroups& groups, const std::vector<Geo>& geo,
                   const Block& block) {
  using acc_t = acc_type_t<scalar_t>;
  const at::Tensor& input = f.input;
  const int64_t n_img = input.size(0), channels = input.size(1);
  const int64_t height = input.size(2), width = input.size(3);
  const int64_t bins = f.args.pooled_h * f.args.pooled_w;
  std::vector<int64_t> area(n_img, 0);
  int64_t work = 0;
  for (int64_t n = 0; n < n_img; ++n) {
    for (int64_t i = groups.begin[n]; i < groups.begin[n + 1]; ++i) {
      const Geo& g = geo[groups.order[i]];
      area[n] += (g.row1 - g.row0) * (g.col1 - g.col0);
      work += g.work + bins;
    }
  }
  work *= channels;
  const Strides4 s = strides_of(input);
  const scalar_t* in = input.const_data_ptr<scalar_t>();
  scalar_t* out = f.output.mutable_data_ptr<scalar_t>();
  int32_t* arg = mutable_data_or_null<int32_t>(f.argmax);

  for_each_unit(n_img, channels, work, [&](int64_t n, int64_t c0, int64_t cbn, Scratch& scratch) {
    const int64_t first = groups.begin[n], last = groups.begin[n + 1];
    if (first == last) return;
    auto& tile_buf = scratch.tile(acc_t{});
    const bool whole = area[n] >= height * width && tile_fits<acc_t>(height * width);
    Tile<acc_t> tile{};
    if (whole) tile = build_tile(in, s, n, c0, cbn, 0, height, 0, width, tile_buf);
    const InputPixels<scalar_t> direct{in + n * s.n + c0 * s.c, s, cbn};
    auto& buf = scratch.buf(acc_t{});
    buf.resize(bins * kCB);
    scratch.arg.resize(arg ? bins * kCB : 0);
    for (int64_t i = first; i < last; ++i) {
      const int64_t k = groups.order[i];
      const Geo& g = geo[k];
      const int64_t pixels = (g.row1 - g.row0) * (g.col1 - g.col0);
      if (whole) {
        block(TilePixels<acc_t>{tile}, g, buf.data(), scratch.arg.data());
      } else if (tile_fits<acc_t>(pixels) && pixels <= 4 * g.work) {
        tile = build_tile(in, s, n, c0, cbn, g.row0, g.row1, g.col0, g.col1, tile_buf);
        block(TilePixels<acc_t>{tile}, g, buf.data(), scratch.arg.data());
      } else {
        block(direct, g, buf.data(), scratch.arg.data());
      }
      const int64_t row = (k * channels + c0) * bins;
      for (int64_t j = 0; j < cbn; ++j) {
        for (int64_t b = 0; b < bins; ++b) out[row + j * bins + b] = static_cast<scalar_t>(buf[b * kCB + j]);
      }
      if (!arg) continue;
      for (int64_t j = 0; j < cbn; ++j) {
        for (int64_t b = 0; b < bins; ++b) arg[row + j * bins + b] = scratch.arg[b * kCB + j];
      }
    }
  });
}

// Where a unit sums `count` elements of its gradient: in place in grad_input
// (`out`) when scalar_t is the accumulation type, else in a float32 scratch
// buffer that store_sums() converts into `out` once. Zeroed.
template <typename scalar_t>
acc_type_t<scalar_t>* zeroed_sums(scalar_t* out, int64_t count, Scratch& scratch) {
  using acc_t = acc_type_t<scalar_t>;
  acc_t* sums;
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    sums = out;
  } else {
    auto& buf = scratch.tile(acc_t{});
    buf.resize(count);
    sums = buf.data();
  }
  std::fill(sums, sums + count, acc_t(0));
  return sums;
}

template <typename scalar_t>
void store_sums(scalar_t* out, const acc_type_t<scalar_t>* sums, int64_t count) {
  if constexpr (!std::is_same_v<scalar_t, acc_type_t<scalar_t>>) {
    for (int64_t e = 0; e < count; ++e) out[e] = static_cast<scalar_t>(sums[e]);
  }
}

}  // namespace roi_detail
}  // namespace kernelzoo
