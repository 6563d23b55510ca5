// Defining kernelzoo's operators. Each op's schema file (csrc/ops/<op>/<op>.cpp)
// lists its schemas once:
//
//     TORCH_LIBRARY_FRAGMENT(kernelzoo, m) {
//       kernelzoo::define_ops(m, {"pixel_shuffle(Tensor self, int upscale_factor) -> Tensor", ...});
//     }
//
// define_ops defines each schema and, in a build without CUDA kernels, registers
// for its CUDA dispatch key a kernel that raises an actionable message (rebuild
// with FORCE_CUDA=1) instead of the dispatcher's "could not run ... with
// arguments from the 'CUDA' backend". An op whose CUDA kernels are not written
// yet passes CudaKernels::NotYet: its CUDA key then holds, in every build, a
// kernel that says so. The lists of stubbed ops are thus the lists of schemas:
// nothing to keep in sync by hand.
#pragma once

#include <torch/library.h>

#include <initializer_list>
#include <string>

namespace kernelzoo {

enum class CudaKernels { Written, NotYet };

void define_ops(torch::Library& m, std::initializer_list<const char*> schemas,
                CudaKernels cuda = CudaKernels::Written);

// The messages of the CUDA stubs for `op` (tests check them).
std::string cuda_not_built_message(const std::string& op);
std::string cuda_not_written_message(const std::string& op);

// Whether `op` ("kernelzoo::name") was defined with CudaKernels::NotYet.
bool cuda_not_written(const std::string& op);

// The "file" the stubs are registered from, as the dispatcher reports it
// (torch._C._dispatch_dump): kernelzoo info tells stubs from kernels by it.
constexpr const char* kCudaNotBuiltMarker = "[kernelzoo CUDA stub: not built]";
constexpr const char* kCudaNotWrittenMarker = "[kernelzoo CUDA stub: not written yet]";

}  // namespace kernelzoo
