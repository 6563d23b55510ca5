// Owns the `kernelzoo` operator namespace; each operator adds its schemas with
// TORCH_LIBRARY_FRAGMENT and define_ops() in csrc/ops/<op>/<op>.cpp.
#include "library.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/Exception.h>

#include <mutex>
#include <set>
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

std::string cuda_not_written_message(const std::string& op) {
  return op +
         ": kernelzoo has no CUDA kernel for this operator yet; it runs on CPU tensors (move "
         "the inputs with .cpu())";
}

namespace {

void cuda_kernels_not_built(const c10::OperatorHandle& op, torch::jit::Stack* /*stack*/) {
  TORCH_CHECK(false, cuda_not_built_message(op.schema().name()));
}

void cuda_kernel_not_written(const c10::OperatorHandle& op, torch::jit::Stack* /*stack*/) {
  TORCH_CHECK(false, cuda_not_written_message(op.schema().name()));
}

// The registrations of the stubs (of ops whose kernels are Written but not
// built, and of ops whose kernels are NotYet written), kept for the life of the
// process like the schemas they belong to; their "file" is the marker that
// kernelzoo info reads.
torch::Library& stubs(CudaKernels cuda) {
  static auto* not_built =
      new torch::Library(torch::Library::IMPL, "kernelzoo", c10::DispatchKey::CUDA,
                         kCudaNotBuiltMarker, 0);
  static auto* not_written =
      new torch::Library(torch::Library::IMPL, "kernelzoo", c10::DispatchKey::CUDA,
                         kCudaNotWrittenMarker, 0);
  return cuda == CudaKernels::Written ? *not_built : *not_written;
}

std::mutex& not_written_mutex() {
  static std::mutex m;
  return m;
}

std::set<std::string>& not_written_ops() {
  static auto* s = new std::set<std::string>();
  return *s;
}

}  // namespace

bool cuda_not_written(const std::string& op) {
  std::lock_guard<std::mutex> lock(not_written_mutex());
  return not_written_ops().count(op) > 0;
}

void define_ops(torch::Library& m, std::initializer_list<const char*> schemas,
                CudaKernels cuda) {
  for (const char* schema : schemas) {
    m.def(schema);
    const std::string s(schema);
    const std::string name = s.substr(0, s.find('('));
    if (cuda == CudaKernels::NotYet) {
      stubs(CudaKernels::NotYet)
          .impl(name.c_str(), torch::CppFunction::makeFromBoxedFunction<&cuda_kernel_not_written>());
      std::lock_guard<std::mutex> lock(not_written_mutex());
      not_written_ops().insert("kernelzoo::" + name.substr(0, name.find('.')));
      continue;
    }
#if !defined(KERNELZOO_WITH_CUDA)
    stubs(CudaKernels::Written)
        .impl(name.c_str(), torch::CppFunction::makeFromBoxedFunction<&cuda_kernels_not_built>());
#endif
  }
}

}  // namespace kernelzoo
