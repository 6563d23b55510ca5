// Dtype names in argument errors, and the dtypes arithmetic kernels take.
// Host code only.
#pragma once

#include <c10/core/ScalarType.h>

#include <string>

namespace kernelzoo {

// "float32" etc., as Python spells the dtype.
inline std::string dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kDouble: return "float64";
    case at::kFloat: return "float32";
    case at::kHalf: return "float16";
    case at::kBFloat16: return "bfloat16";
    case at::kLong: return "int64";
    case at::kInt: return "int32";
    case at::kShort: return "int16";
    case at::kChar: return "int8";
    case at::kByte: return "uint8";
    case at::kBool: return "bool";
    case at::kComplexFloat: return "complex64";
    case at::kComplexDouble: return "complex128";
    default: return c10::toString(t);
  }
}

// float64, float32, float16, bfloat16: the dtypes of KZ_DISPATCH_FLOATING_TYPES.
inline bool is_float_dtype(at::ScalarType t) {
  return t == at::kDouble || t == at::kFloat || t == at::kHalf || t == at::kBFloat16;
}

}  // namespace kernelzoo
