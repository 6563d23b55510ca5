// CPU kernels of pixel_shuffle / pixel_unshuffle.
//
// Every case reduces to one of two row primitives over equally shaped "lanes":
//   interleave:   dst[k*R + l] = lane_l[k]      (R lanes merged into one run)
//   deinterleave: lane_l[k]    = src[k*R + l]   (one run split into R lanes)
// with the destination always dense (the op allocates it). For a contiguous
// (NCHW) output the lanes are the R = r input rows feeding one output row; for a
// channels_last output they are the R = r*r pixels fed by one input pixel's
// channels. Rows (or pixels) are independent and split across threads; the
// compile-time lane counts 2, 3, 4 (r) and 9, 16 (r*r) let the compiler unroll
// and vectorize the shuffles; other factors take a runtime-R loop.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "../../common/dispatch.h"
#include "../../common/macros.h"
#include "pixel_shuffle_args.h"

namespace kernelzoo {
namespace pixel_shuffle_detail {
namespace {

// The lane count R is either a compile-time constant or (R == 0) `r_dyn`.
// `stride` is the element stride of the side that is not dense (lanes for
// interleave, the run for deinterleave); stride 1 gets a separate, vectorizable
// instantiation.
template <typename T, int R, bool Unit>
void interleave(T* KZ_RESTRICT dst, const T* KZ_RESTRICT src, const int64_t* lane_off,
                int64_t stride, int64_t r_dyn, int64_t count) {
  const int64_t nl = R > 0 ? R : r_dyn;
  if constexpr (R > 0) {
    const T* lanes[R];
    for (int l = 0; l < R; ++l) lanes[l] = src + lane_off[l];
    for (int64_t k = 0; k < count; ++k) {
      for (int l = 0; l < R; ++l) dst[k * R + l] = lanes[l][Unit ? k : k * stride];
    }
  } else {
    for (int64_t l = 0; l < nl; ++l) {
      const T* lane = src + lane_off[l];
      T* out = dst + l;
      for (int64_t k = 0; k < count; ++k) out[k * nl] = lane[Unit ? k : k * stride];
    }
  }
}

template <typename T, int R, bool Unit>
void deinterleave(T* KZ_RESTRICT dst, const int64_t* lane_off, const T* KZ_RESTRICT src,
                  int64_t stride, int64_t r_dyn, int64_t count) {
  const int64_t nl = R > 0 ? R : r_dyn;
  if constexpr (R > 0) {
    T* lanes[R];
    for (int l = 0; l < R; ++l) lanes[l] = dst + lane_off[l];
    if (R > 4 && count >= 8) {
      // many long lanes: fill one lane at a time (contiguous stores; the
      // source run stays in L1 across lanes)
      for (int l = 0; l < R; ++l)
        for (int64_t k = 0; k < count; ++k) lanes[l][k] = src[Unit ? k * R + l : (k * R + l) * stride];
    } else {
      for (int64_t k = 0; k < count; ++k) {
        for (int l = 0; l < R; ++l) lanes[l][k] = src[Unit ? k * R + l : (k * R + l) * stride];
      }
    }
  } else {
    for (int64_t l = 0; l < nl; ++l) {
      T* lane = dst + lane_off[l];
      const T* in = src + (Unit ? l : l * stride);
      const int64_t step = Unit ? nl : nl * stride;
      for (int64_t k = 0; k < count; ++k) lane[k] = in[k * step];
    }
  }
}

// The work as independent units (rows or pixels). Each unit has one interleaved
// run and `lanes` lanes; run_base/lane_base map a unit index to the offset of its
// run and of its lane 0 in their tensors. Whichever side is the destination is
// dense (unit stride); `stride` is the inner stride of the source side.
struct Units {
  int64_t count;         // number of units
  int64_t per_unit;      // elements of one lane
  int64_t lanes;         // R
  std::vector<int64_t> lane_off;  // offset of lane l from lane 0
  bool interleave;       // dst is the dense run (else src is)
  int64_t stride;        // stride of the strided side's inner dimension
};

template <typename T, int R>
void run_units(const Problem& p, const Units& u, const T* src, T* dst,
               int64_t (*run_base)(const Problem&, int64_t),
               int64_t (*lane_base)(const Problem&, int64_t)) {
  // ~16K elements per task keeps scheduling overhead small.
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 14) / std::max<int64_t>(1, u.per_unit * u.lanes));
  const bool unit = u.stride == 1;
  at::parallel_for(0, u.count, grain, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const int64_t rb = run_base(p, k), lb = lane_base(p, k);
      if (u.interleave) {
        if (unit)
          interleave<T, R, true>(dst + rb, src + lb, u.lane_off.data(), 1, u.lanes, u.per_unit);
        else
          interleave<T, R, false>(dst + rb, src + lb, u.lane_off.data(), u.stride, u.lanes, u.per_unit);
      } else {
        if (unit)
          deinterleave<T, R, true>(dst + lb, u.lane_off.data(), src + rb, 1, u.lanes, u.per_unit);
        else
          deinterleave<T, R, false>(dst + lb, u.lane_off.data(), src + rb, u.stride, u.lanes, u.per_unit);
      }
    }
  });
}

// Contiguous output. Unit = one hi row (n, c, h, i), of W*r elements; its lanes
// are the r lo rows (n, c*r*r + i*r + j, h, :), j < r.
int64_t hi_row_base(const Problem& p, int64_t k) {
  const Shape& s = p.shape;
  const int64_t i = k % s.r, t = k / s.r;
  const int64_t h = t % s.h, t2 = t / s.h;
  const int64_t c = t2 % s.c, n = t2 / s.c;
  return n * p.hi.n + c * p.hi.c + (h * s.r + i) * p.hi.h;
}
int64_t lo_rows_base(const Problem& p, int64_t k) {
  const Shape& s = p.shape;
  const int64_t i = k % s.r, t = k / s.r;
  const int64_t h = t % s.h, t2 = t / s.h;
  const int64_t c = t2 % s.c, n = t2 / s.c;
  return n * p.lo.n + (c * s.r * s.r + i * s.r) * p.lo.c + h * p.lo.h;
}

// channels_last output. Unit = one lo pixel (n, h, w); its run is the pixel's
// C*r*r channels, its lanes the r*r hi pixels (n, :, h*r + i, w*r + j).
int64_t lo_pixel_base(const Problem& p, int64_t k) {
  const Shape& s = p.shape;
  const int64_t w = k % s.w, t = k / s.w;
  const int64_t h = t % s.h, n = t / s.h;
  return n * p.lo.n + h * p.lo.h + w * p.lo.w;
}
int64_t hi_pixels_base(const Problem& p, int64_t k) {
  const Shape& s = p.shape;
  const int64_t w = k % s.w, t = k / s.w;
  const int64_t h = t % s.h, n = t / s.h;
  return n * p.hi.n + h * s.r * p.hi.h + w * s.r * p.hi.w;
}

template <typename T>
void run(const Problem& p) {
  const Shape& s = p.shape;
  const bool shuffle = p.direction == Direction::Shuffle;
  Units u;
  int64_t (*run_base)(const Problem&, int64_t);
  int64_t (*lane_base)(const Problem&, int64_t);
  if (!p.channels_last) {
    // run: the hi row; lanes: the r lo rows, lo's channel stride apart.
    u.count = s.n * s.c * s.h * s.r;
    u.per_unit = s.w;
    u.lanes = s.r;
    for (int64_t j = 0; j < s.r; ++j) u.lane_off.push_back(j * p.lo.c);
    u.interleave = shuffle;  // shuffle writes the hi row, unshuffle reads it
    u.stride = shuffle ? p.lo.w : p.hi.w;
    run_base = hi_row_base;
    lane_base = lo_rows_base;
  } else {
    // run: the lo pixel's channels; lanes: the r*r hi pixels' channels.
    u.count = s.n * s.h * s.w;
    u.per_unit = s.c;
    u.lanes = s.r * s.r;
    for (int64_t i = 0; i < s.r; ++i)
      for (int64_t j = 0; j < s.r; ++j) u.lane_off.push_back(i * p.hi.h + j * p.hi.w);
    u.interleave = !shuffle;  // unshuffle writes the lo pixel, shuffle reads it
    u.stride = shuffle ? p.lo.c : p.hi.c;
    run_base = lo_pixel_base;
    lane_base = hi_pixels_base;
  }
  const T* src = static_cast<const T*>(p.src.const_data_ptr());
  T* dst = static_cast<T*>(p.dst.mutable_data_ptr());
  switch (u.lanes) {
    case 2: return run_units<T, 2>(p, u, src, dst, run_base, lane_base);
    case 3: return run_units<T, 3>(p, u, src, dst, run_base, lane_base);
    case 4: return run_units<T, 4>(p, u, src, dst, run_base, lane_base);
    case 9: return run_units<T, 9>(p, u, src, dst, run_base, lane_base);
    case 16: return run_units<T, 16>(p, u, src, dst, run_base, lane_base);
    default: return run_units<T, 0>(p, u, src, dst, run_base, lane_base);
  }
}

at::Tensor forward(const at::Tensor& input, int64_t factor, Direction direction) {
  Problem p = prepare(input, factor, direction);
  if (p.output.numel() == 0) return p.output;
  KZ_DISPATCH_BY_ELEMENT_SIZE(p.elem_size, "pixel_shuffle", [&] { run<elem_t>(p); });
  return p.output;
}

at::Tensor pixel_shuffle_cpu(const at::Tensor& input, int64_t upscale_factor) {
  return forward(input, upscale_factor, Direction::Shuffle);
}

at::Tensor pixel_unshuffle_cpu(const at::Tensor& input, int64_t downscale_factor) {
  return forward(input, downscale_factor, Direction::Unshuffle);
}

}  // namespace
}  // namespace pixel_shuffle_detail
}  // namespace kernelzoo

TORCH_LIBRARY_IMPL(kernelzoo, CPU, m) {
  m.impl("pixel_shuffle", &kernelzoo::pixel_shuffle_detail::pixel_shuffle_cpu);
  m.impl("pixel_unshuffle", &kernelzoo::pixel_shuffle_detail::pixel_unshuffle_cpu);
}

// Quantized (quint8, qint8, qint32, ... per-tensor affine) tensors, as torch's
// pixel_shuffle takes them: the same permutation of their integers.
TORCH_LIBRARY_IMPL(kernelzoo, QuantizedCPU, m) {
  m.impl("pixel_shuffle", &kernelzoo::pixel_shuffle_detail::pixel_shuffle_cpu);
  m.impl("pixel_unshuffle", &kernelzoo::pixel_shuffle_detail::pixel_unshuffle_cpu);
}
