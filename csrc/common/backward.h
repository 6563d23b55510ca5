// The two ways a backward kernel that scatters can run on CUDA, and the buffer
// the scattering (atomic) way adds into. Host code (ATen), used by the CUDA
// launchers and launch plans; the CPU backwards are deterministic by design
// (each output element owned by one thread) and need neither.
#pragma once

#include <ATen/Context.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/ScalarType.h>

#include <type_traits>

#include "acc_type.h"

namespace kernelzoo {

// Atomic: threads add their contributions with atomicAdd (fast; the summation
// order, hence the last bits, vary from run to run). Deterministic: a gather in
// which one thread sums each element in a fixed order (bitwise reproducible).
enum class BackwardPath { Atomic, Deterministic };

// The path a CUDA launcher takes: deterministic exactly when the user asked for
// it with torch.use_deterministic_algorithms(True)
// (at::globalContext().setDeterministicAlgorithms in C++).
inline BackwardPath backward_path() {
  return at::globalContext().deterministicAlgorithms() ? BackwardPath::Deterministic
                                                       : BackwardPath::Atomic;
}

// The zeroed buffer an atomic backward adds into: `grad_input` itself when
// scalar_t is already its accumulation type, else an acc_type_t (float32) twin
// of it, so that float16/bfloat16 gradients are summed in float32. Call
// finish() once the kernels are done to convert the twin into grad_input.
template <typename scalar_t>
class AtomicAccumulator {
 public:
  using acc_t = acc_type_t<scalar_t>;

  explicit AtomicAccumulator(const at::Tensor& grad_input) : grad_input_(grad_input) {
    if constexpr (std::is_same_v<scalar_t, acc_t>) {
      buffer_ = grad_input;
    } else {
      buffer_ = at::empty(grad_input.sizes(),
                          grad_input.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
    }
    buffer_.zero_();
  }

  acc_t* data() const { return buffer_.mutable_data_ptr<acc_t>(); }

  void finish() const {
    if (!buffer_.is_same(grad_input_)) grad_input_.copy_(buffer_);
  }

 private:
  at::Tensor grad_input_, buffer_;
};

}  // namespace kernelzoo
