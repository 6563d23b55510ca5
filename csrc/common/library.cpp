// Owns the `kernelzoo` operator namespace; each operator adds its schemas with
// TORCH_LIBRARY_FRAGMENT and define_ops() in csrc/ops/<op>/<op>.cpp.
#include "library.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/Exception.h>

#include <string>

TORCH_LIBRARY(kernelzoo, m) {}

namespace kernelzoo {

std::string cuda_not_built_message(const std::string& op) {
  return op +
         ": this build of kernelzoo has no CUDA kernels, so it cannot run on a CUDA tensor. "
         "Rebuild it with the CUDA toolkit (nvcc) available: FORCE_CUDA=1 pip install "
         "--no-build-isolation --force-reinstall --no-deps . (see `kernelzoo info` for this "
         "build's configuration)";
}

#if !defined(KERNELZOO_WITH_CUDA)
namespace {

void cuda_kernels_not_built(const c10::OperatorHandle& op, torch::jit::Stack* /*stack*/) {
  TORCH_CHECK(false, cuda_not_built_message(op.schema().name()));
}

// The registrations of the stubs; kept for the life of the process, like the
// schemas they belong to.
torch::Library& cuda_stubs() {
  static auto* lib = new torch::Library(torch::Library::IMPL, "kernelzoo", c10::DispatchKey::CUDA,
                                        __FILE__, __LINE__);
  return *lib;
}

}  // namespace
#endif

void define_ops(torch::Library& m, std::initializer_list<const char*> schemas) {
  for (const char* schema : schemas) {
    m.def(schema);
#if !defined(KERNELZOO_WITH_CUDA)
    const std::string s(schema);
    cuda_stubs().impl(s.substr(0, s.find('(')).c_str(),
                      torch::CppFunction::makeFromBoxedFunction<&cuda_kernels_not_built>());
#endif
  }
}

}  // namespace kernelzoo
