// Data pointers of tensors that may be undefined (an absent optional argument,
// an output not asked for), for kernel parameters: null then. Host code.
#pragma once

#include <ATen/core/Tensor.h>

namespace kernelzoo {

template <typename T>
const T* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<T>() : nullptr;
}

template <typename T>
T* mutable_data_or_null(const at::Tensor& t) {
  return t.defined() ? t.mutable_data_ptr<T>() : nullptr;
}

}  // namespace kernelzoo
