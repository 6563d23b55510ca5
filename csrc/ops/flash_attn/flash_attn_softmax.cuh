// The online softmax of the tensor-core forward, on mma accumulator fragments.
// A warp's 16 query rows are spread as mma_m16n8k16's C fragment: lane l holds
// rows l / 4 and l / 4 + 8 (elements 0, 1 and 2, 3 of each 8-column tile),
// shared with the three other lanes of its quad (lanes 4 * (l / 4) .. + 3).
// Row maxima are reduced over the quad with two xor-shuffles; the row sums stay
// per lane until the end (each lane sums its own columns; rescaling is linear).
// Kernel-safe: no tensor or runtime host headers.
#pragma once

#include <math.h>

#include "../../common/macros.h"

namespace kernelzoo {
namespace flash_attn_detail {

KZ_DEVICE KZ_INLINE float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}

KZ_DEVICE KZ_INLINE float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

// Running maximum m and (lane-partial) sum l of a lane's two rows.
struct OnlineSoftmax {
  float m[2] = {-INFINITY, -INFINITY};
  float l[2] = {0.f, 0.f};

  // Folds one block of scores s[kTiles][4] (masked: -inf) into the running
  // state: s becomes exp(s - m_new), and the returned factors (exp(m_old -
  // m_new), per row) are what the output accumulator must be multiplied by.
  // A row that has seen no key yet (m_new = -inf) keeps exp(...) = 0.
  template <int kTiles>
  KZ_DEVICE KZ_INLINE void update(float (&s)[kTiles][4], float (&correction)[2]) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float mx = m[r];
#pragma unroll
      for (int t = 0; t < kTiles; ++t) mx = fmaxf(mx, fmaxf(s[t][2 * r], s[t][2 * r + 1]));
      mx = quad_max(mx);
      const float shift = mx == -INFINITY ? 0.f : mx;  // exp(-inf - 0) = 0
      correction[r] = expf(m[r] - shift);
      m[r] = mx;
      float sum = 0.f;
#pragma unroll
      for (int t = 0; t < kTiles; ++t) {
        s[t][2 * r] = expf(s[t][2 * r] - shift);
        s[t][2 * r + 1] = expf(s[t][2 * r + 1] - shift);
        sum += s[t][2 * r] + s[t][2 * r + 1];
      }
      l[r] = l[r] * correction[r] + sum;
    }
  }

  // The full row sums (over the quad), at the end.
  KZ_DEVICE KZ_INLINE void finish() {
    l[0] = quad_sum(l[0]);
    l[1] = quad_sum(l[1]);
  }
};

}  // namespace flash_attn_detail
}  // namespace kernelzoo
