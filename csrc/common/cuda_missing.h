// In a build without CUDA kernels, every op registers this boxed kernel for the
// CUDA dispatch key so that a CUDA tensor gets an actionable message instead of
// the dispatcher's "could not run ... with arguments from the 'CUDA' backend".
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

namespace kernelzoo {

void cuda_kernels_not_built(const c10::OperatorHandle& op, torch::jit::Stack* stack);

}  // namespace kernelzoo

#if defined(KERNELZOO_WITH_CUDA)
#define KERNELZOO_REGISTER_CUDA_MISSING(...)
#else
// Registers the stub for the listed op names (a braced list of strings).
#define KERNELZOO_REGISTER_CUDA_MISSING(...)                                       \
  TORCH_LIBRARY_IMPL(kernelzoo, CUDA, m) {                                         \
    for (const char* name : __VA_ARGS__) {                                         \
      m.impl(name, torch::CppFunction::makeFromBoxedFunction<                      \
                       &::kernelzoo::cuda_kernels_not_built>());                   \
    }                                                                              \
  }
#endif
