// Output allocation for CPU kernels that are limited by memory traffic.
#pragma once

#include <ATen/core/Tensor.h>

namespace kernelzoo {

// at::empty for CPU outputs, except that large buffers come from 2 MiB-aligned
// memory advised for transparent huge pages (MADV_HUGEPAGE). A fresh buffer is
// faulted in page by page on first write; with 4 KiB pages that costs more than
// the copy itself for a permutation kernel (a 32 MiB output takes ~8000 faults),
// with huge pages it takes a few dozen. Where the system disallows huge pages
// (transparent_hugepage=never) this is an ordinary aligned allocation.
// Freed large buffers are kept for reuse by later outputs of the same rounded
// size, up to KERNELZOO_HOST_CACHE_MB (default 256; 0 disables the cache), so
// that repeated calls on same-shaped tensors skip the page faults altogether.
at::Tensor empty_cpu_output(at::IntArrayRef sizes, const at::TensorOptions& options,
                            at::MemoryFormat memory_format);

// An uninitialised contiguous output, gradient or scratch buffer: on the CPU
// from empty_cpu_output, elsewhere at::empty.
at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options);

}  // namespace kernelzoo
