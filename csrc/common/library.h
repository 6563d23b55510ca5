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
// arguments from the 'CUDA' backend". The list of stubbed ops is thus the list
// of schemas: nothing to keep in sync by hand.
#pragma once

#include <torch/library.h>

#include <initializer_list>

namespace kernelzoo {

void define_ops(torch::Library& m, std::initializer_list<const char*> schemas);

// The message of the CUDA stub for `op` (tests check it).
std::string cuda_not_built_message(const std::string& op);

}  // namespace kernelzoo
