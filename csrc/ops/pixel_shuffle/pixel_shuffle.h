// kernelzoo C++ API: pixel_shuffle / pixel_unshuffle through the dispatcher, for
// LibTorch users. Semantics are those of torch::nn::functional::pixel_shuffle:
// (*, C*r*r, H, W) <-> (*, C, H*r, W*r), any dtype, any strides; a 4-d
// channels_last input gives a channels_last output. Per-tensor affine quantized
// inputs (CPU) give quantized outputs with the input's scale and zero point.
#pragma once

#include <ATen/core/Tensor.h>

namespace kernelzoo {

at::Tensor pixel_shuffle(const at::Tensor& input, int64_t upscale_factor);
at::Tensor pixel_unshuffle(const at::Tensor& input, int64_t downscale_factor);

}  // namespace kernelzoo
