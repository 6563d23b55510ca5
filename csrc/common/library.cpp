// Owns the `kernelzoo` operator namespace. Each operator adds its schemas with
// TORCH_LIBRARY_FRAGMENT in csrc/ops/<op>/<op>.cpp.
#include <torch/library.h>

TORCH_LIBRARY(kernelzoo, m) {}
