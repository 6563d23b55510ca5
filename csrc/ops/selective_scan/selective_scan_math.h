// Scalar math of the selective scan's CUDA kernels, by overload for float and
// double: exp, softplus with mamba's threshold (softplus(x) = x above 20, as
// the CPU kernels' softplus_lane), sigmoid. Kernel-safe: no tensor or runtime
// headers.
#pragma once

#include <math.h>

#include "../../common/macros.h"

namespace kernelzoo {
namespace selective_scan_detail {

KZ_HOST_DEVICE KZ_INLINE float scan_exp(float x) { return expf(x); }
KZ_HOST_DEVICE KZ_INLINE double scan_exp(double x) { return exp(x); }
KZ_HOST_DEVICE KZ_INLINE float scan_log1p(float x) { return log1pf(x); }
KZ_HOST_DEVICE KZ_INLINE double scan_log1p(double x) { return log1p(x); }

template <typename acc_t>
KZ_HOST_DEVICE KZ_INLINE acc_t scan_softplus(acc_t x) {
  return x > acc_t(20) ? x : scan_log1p(scan_exp(x));
}

template <typename acc_t>
KZ_HOST_DEVICE KZ_INLINE acc_t scan_sigmoid(acc_t x) {
  return acc_t(1) / (acc_t(1) + scan_exp(-x));
}

// delta + bias, then softplus when asked: the step size dt of one position.
template <typename acc_t>
KZ_HOST_DEVICE KZ_INLINE acc_t step_size(acc_t pre, bool softplus) {
  return softplus ? scan_softplus(pre) : pre;
}

}  // namespace selective_scan_detail
}  // namespace kernelzoo
