#include "cuda_missing.h"

namespace kernelzoo {

void cuda_kernels_not_built(const c10::OperatorHandle& op, torch::jit::Stack* /*stack*/) {
  TORCH_CHECK(false, op.schema().name(),
              ": this build of kernelzoo has no CUDA kernels, so it cannot run on a "
              "CUDA tensor. Rebuild it with the CUDA toolkit (nvcc) available: "
              "FORCE_CUDA=1 pip install --no-build-isolation --force-reinstall --no-deps . "
              "(see `kernelzoo info` for this build's configuration)");
}

}  // namespace kernelzoo
