// CUDA kernel bodies of deform_conv2d. Kernel-safe: no tensor or runtime host
// headers, so the C++ tests run them through the CPU harness. The work is the
// CPU kernels' (deform_conv2d_cpu.cpp), a chunk of images at a time; the
// matrix products between the kernels are cuBLAS through at::mm, in the plan
// (deform_conv2d_plan.h):
//   table: one thread per (image, offset group, tap, output position): the
//     Sample (deform_conv2d_math.h), shared by the group's channels;
//   im2col: one thread per column element (channel * tap, image * position);
//   offset/mask gradient: one thread per (image, offset group, tap, position),
//     summing over the group's channels (each output element one thread's);
//   col2im, two ways (common/backward.h): atomic, one thread per column
//     element adding its four weighted values into a float32 copy of the
//     input's gradient; deterministic, one thread per (image, channel) plane
//     walking its taps and positions in order (bitwise reproducible, slower).
// Every entry of the table, columns and gradients is indexed in int64.
#pragma once

#include <cstdint>

#include "../../common/acc_type.h"
#include "../../common/grid_stride.cuh"
#include "../../common/launch.h"
#include "../../common/macros.h"
#include "deform_conv2d_math.h"
#include "deform_conv2d_params.h"

namespace kernelzoo {
namespace deform_detail {

// Images [n0, n0 + nb) of one chunk.
struct Chunk {
  int64_t n0, nb;
};

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kBlockThreads)
    deform_table_kernel(const Geometry g, const Chunk ch, const scalar_t* offset,
                        const scalar_t* mask, Sample<acc_t>* table) {
  const int64_t P = g.positions(), K = g.taps(), OG = g.offset_groups;
  for (const int64_t e : grid_stride(ch.nb * OG * K * P)) {
    const int64_t pos = e % P, tap = e / P % K, og = e / (P * K) % OG, i = e / (P * K * OG);
    table[e] = make_sample<acc_t>(g, offset, mask, ch.n0 + i, og, tap, pos);
  }
}

// Column element e of the chunk's (C * K, nb * P) columns: its sample, and the
// offset of its (image, channel) plane in an (N, C, H, W) tensor.
template <typename acc_t>
struct ColumnEntry {
  const Sample<acc_t>* sample;
  int64_t plane;
};

template <typename acc_t>
KZ_DEVICE KZ_INLINE ColumnEntry<acc_t> column_entry(const Geometry& g, const Chunk& ch,
                                                    const Sample<acc_t>* table, int64_t e) {
  const int64_t P = g.positions(), K = g.taps(), width = ch.nb * P;
  const int64_t row = e / width, col = e % width;
  const int64_t c = row / K, tap = row % K, i = col / P, pos = col % P;
  const int64_t og = c / (g.C / g.offset_groups);
  return {table + ((i * g.offset_groups + og) * K + tap) * P + pos,
          ((ch.n0 + i) * g.C + c) * g.H * g.W};
}

// cols (C * K, nb * P).
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kBlockThreads)
    deform_im2col_kernel(const Geometry g, const Chunk ch, const scalar_t* input,
                         const Sample<acc_t>* table, acc_t* cols) {
  for (const int64_t e : grid_stride(g.C * g.taps() * ch.nb * g.positions())) {
    const ColumnEntry<acc_t> c = column_entry(g, ch, table, e);
    cols[e] = sample_value(*c.sample, c.sample->w, input + c.plane);
  }
}

// grad_offset (N, 2 * OG * K, H_out, W_out) and grad_mask (N, OG * K, H_out,
// W_out; null for v1) of the chunk's images, from gcols (C * K, nb * P).
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kBlockThreads)
    deform_offset_grad_kernel(const Geometry g, const Chunk ch, const scalar_t* input,
                              const Sample<acc_t>* table, const acc_t* gcols, scalar_t* grad_offset,
                              scalar_t* grad_mask) {
  const int64_t P = g.positions(), K = g.taps(), OG = g.offset_groups, width = ch.nb * P;
  const int64_t per_og = g.C / OG, HW = g.H * g.W;
  for (const int64_t e : grid_stride(ch.nb * OG * K * P)) {
    const int64_t pos = e % P, tap = e / P % K, og = e / (P * K) % OG, i = e / (P * K * OG);
    const int64_t n = ch.n0 + i;
    const Sample<acc_t>& s = table[e];
    acc_t dy = acc_t(0), dx = acc_t(0), dm = acc_t(0);
    for (int64_t c = og * per_og; c < (og + 1) * per_og; ++c) {
      const scalar_t* plane = input + (n * g.C + c) * HW;
      const acc_t gv = gcols[(c * K + tap) * width + i * P + pos];
      dy += gv * sample_value(s, s.wy, plane);
      dx += gv * sample_value(s, s.wx, plane);
      dm += gv * sample_value(s, s.wu, plane);
    }
    scalar_t* oy = grad_offset + ((n * OG + og) * 2 * K + 2 * tap) * P + pos;
    oy[0] = static_cast<scalar_t>(dy * s.mask);
    oy[P] = static_cast<scalar_t>(dx * s.mask);
    if (grad_mask) grad_mask[((n * OG + og) * K + tap) * P + pos] = static_cast<scalar_t>(dm);
  }
}

// Atomic col2im: grad_input_acc (N, C, H, W) in acc_t, zeroed.
template <typename acc_t>
__global__ void __launch_bounds__(kBlockThreads)
    deform_col2im_atomic_kernel(const Geometry g, const Chunk ch, const Sample<acc_t>* table,
                                const acc_t* gcols, acc_t* grad_input_acc) {
  for (const int64_t e : grid_stride(g.C * g.taps() * ch.nb * g.positions())) {
    const ColumnEntry<acc_t> c = column_entry(g, ch, table, e);
    const Sample<acc_t>& s = *c.sample;
    acc_t* plane = grad_input_acc + c.plane;
    const acc_t gv = gcols[e];
    for (int t = 0; t < 4; ++t) {
      if (s.idx[t] >= 0) atomicAdd(plane + s.idx[t], gv * s.w[t]);
    }
  }
}

// Deterministic col2im: one thread per (image, channel) plane of the chunk,
// adding into grad_input_acc (N, C, H, W) in acc_t, zeroed, in a fixed order.
template <typename acc_t>
__global__ void __launch_bounds__(kBlockThreads)
    deform_col2im_plane_kernel(const Geometry g, const Chunk ch, const Sample<acc_t>* table,
                               const acc_t* gcols, acc_t* grad_input_acc) {
  const int64_t P = g.positions(), K = g.taps(), width = ch.nb * P;
  const int64_t per_og = g.C / g.offset_groups, HW = g.H * g.W;
  for (const int64_t e : grid_stride(ch.nb * g.C)) {
    const int64_t i = e / g.C, c = e % g.C;
    acc_t* plane = grad_input_acc + ((ch.n0 + i) * g.C + c) * HW;
    for (int64_t tap = 0; tap < K; ++tap) {
      const Sample<acc_t>* s = table + ((i * g.offset_groups + c / per_og) * K + tap) * P;
      const acc_t* grow = gcols + (c * K + tap) * width + i * P;
      for (int64_t pos = 0; pos < P; ++pos) {
        for (int t = 0; t < 4; ++t) {
          if (s[pos].idx[t] >= 0) plane[s[pos].idx[t]] += grow[pos] * s[pos].w[t];
        }
      }
    }
  }
}

}  // namespace deform_detail
}  // namespace kernelzoo
