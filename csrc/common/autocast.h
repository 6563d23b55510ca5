// Autocast for ops that compute in float32 whatever the input's precision
// (roi_align, roi_pool; deform_conv2d): under torch.autocast (CUDA or CPU) the
// op's Autocast kernel casts float16/bfloat16 tensors up to float32 (float64 is
// left alone), calls the op below autocast, and casts the floating outputs back
// to the input's dtype, so that float16 features pool with float32 boxes, as
// torchvision does. Autograd records the casts. Host code.
//
//   template <c10::DispatchKey key>
//   at::Tensor my_op_autocast(const at::Tensor& input, ...) {
//     c10::impl::ExcludeDispatchKeyGuard no_autocast(key);
//     return my_op(autocast_float32(input), ...).to(input.scalar_type());
//   }
//   TORCH_LIBRARY_IMPL(kernelzoo, Autocast, m) { m.impl("my_op", TORCH_FN(my_op_autocast<c10::DispatchKey::Autocast>)); }
//   TORCH_LIBRARY_IMPL(kernelzoo, AutocastCPU, m) { ... AutocastCPU ... }
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

namespace kernelzoo {

inline at::Tensor autocast_float32(const at::Tensor& t) {
  const auto type = t.scalar_type();
  return type == at::kHalf || type == at::kBFloat16 ? t.to(at::kFloat) : t;
}

}  // namespace kernelzoo
