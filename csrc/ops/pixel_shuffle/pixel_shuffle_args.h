// Host side of pixel_shuffle / pixel_unshuffle shared by the CPU and CUDA entry
// points and the C++ tests: the validated arguments, the allocated output and
// the flattened 4-d views the kernels work on (prepare() is in pixel_shuffle.cpp).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "pixel_shuffle_params.h"

namespace kernelzoo {
namespace pixel_shuffle_detail {

enum class Direction { Shuffle, Unshuffle };

struct Problem {
  at::Tensor output;      // what the op returns, shaped like the peer's output
  at::Tensor src, dst;    // 4-d (N, C, H, W) views of input and output
  Shape shape;            // in terms of hi; see pixel_shuffle_params.h
  Strides4 lo, hi;        // element strides of the lo and hi 4-d views
  bool channels_last;     // the output (destination) is channels_last
  Direction direction;
  int64_t elem_size;
};

// Validates the arguments (raising the documented errors), allocates the output
// in the input's memory format and describes the copy. When the output is
// empty, `src`/`dst` are undefined and the caller returns `output` as it is.
Problem prepare(const at::Tensor& input, int64_t factor, Direction direction);

}  // namespace pixel_shuffle_detail
}  // namespace kernelzoo
