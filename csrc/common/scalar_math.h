// Scalar math by overload for float and double, callable from host code and
// kernel bodies alike (the std:: overloads are not all device functions).
// Kernel-safe: no tensor or runtime headers.
#pragma once

#include <math.h>

#include "macros.h"

namespace kernelzoo {

KZ_HOST_DEVICE KZ_INLINE float kz_floor(float v) { return floorf(v); }
KZ_HOST_DEVICE KZ_INLINE double kz_floor(double v) { return floor(v); }
KZ_HOST_DEVICE KZ_INLINE float kz_ceil(float v) { return ceilf(v); }
KZ_HOST_DEVICE KZ_INLINE double kz_ceil(double v) { return ceil(v); }
KZ_HOST_DEVICE KZ_INLINE float kz_round(float v) { return roundf(v); }  // half away from zero
KZ_HOST_DEVICE KZ_INLINE double kz_round(double v) { return round(v); }

}  // namespace kernelzoo
