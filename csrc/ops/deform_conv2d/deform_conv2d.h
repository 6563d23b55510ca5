// kernelzoo C++ API: deformable convolution (v1 and v2) through the dispatcher,
// for LibTorch users. Semantics are torchvision's deform_conv2d (see the Python
// docstring of kernelzoo.ops.deform_conv2d): input (N, C, H, W), weight (C_out,
// C / groups, kh, kw), offset (N, 2 * offset_groups * kh * kw, H_out, W_out),
// mask (N, offset_groups * kh * kw, H_out, W_out) or undefined (v1), bias
// (C_out) or undefined.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

namespace kernelzoo {

at::Tensor deform_conv2d(const at::Tensor& input, const at::Tensor& weight,
                         const at::Tensor& offset, const std::optional<at::Tensor>& mask,
                         const std::optional<at::Tensor>& bias, int64_t stride_h, int64_t stride_w,
                         int64_t pad_h, int64_t pad_w, int64_t dilation_h, int64_t dilation_w,
                         int64_t groups, int64_t offset_groups);

// Gradients (input, weight, offset, mask, bias) of sum(grad * output); those of
// an absent mask or bias are empty tensors.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> deform_conv2d_backward(
    const at::Tensor& grad, const at::Tensor& input, const at::Tensor& weight,
    const at::Tensor& offset, const std::optional<at::Tensor>& mask,
    const std::optional<at::Tensor>& bias, int64_t stride_h, int64_t stride_w, int64_t pad_h,
    int64_t pad_w, int64_t dilation_h, int64_t dilation_w, int64_t groups, int64_t offset_groups);

}  // namespace kernelzoo
