#include "host_alloc.h"

#include <ATen/EmptyTensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/CPUAllocator.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace kernelzoo {
namespace {

constexpr size_t kHugePage = size_t{2} << 20;
// Below this size the default allocator's pages are few enough not to matter.
constexpr size_t kLargeThreshold = size_t{4} << 20;

size_t cache_capacity() {
  const char* env = std::getenv("KERNELZOO_HOST_CACHE_MB");
  constexpr size_t kDefault = size_t{256} << 20;
  if (env == nullptr || *env == '\0') return kDefault;
  // A whole number of MiB; anything else (negative, not a number) keeps the default.
  char* end = nullptr;
  const long long mb = std::strtoll(env, &end, 10);
  if (end == env || *end != '\0' || mb < 0 || mb > (1LL << 30)) return kDefault;
  return static_cast<size_t>(mb) << 20;
}

// Freed large buffers, kept (up to a byte budget) for reuse by a later output
// of the same rounded size, so that repeated calls on same-shaped tensors skip
// the page faults altogether.
class BlockCache {
 public:
  void* take(size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = blocks_.find(bytes);
    if (it == blocks_.end()) return nullptr;
    void* p = it->second;
    blocks_.erase(it);
    cached_ -= bytes;
    return p;
  }

  bool give(void* p, size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (cached_ + bytes > capacity_) return false;
    blocks_.emplace(bytes, p);
    cached_ += bytes;
    return true;
  }

 private:
  std::mutex mutex_;
  std::multimap<size_t, void*> blocks_;
  size_t cached_ = 0;
  const size_t capacity_ = cache_capacity();
};

BlockCache& cache() {
  // Leaked on purpose: buffers may be released during static destruction.
  static BlockCache* c = new BlockCache();
  return *c;
}

struct Block {
  void* ptr;
  size_t bytes;
};

void release_block(void* ctx) {
  auto* b = static_cast<Block*>(ctx);
  if (!cache().give(b->ptr, b->bytes)) std::free(b->ptr);
  delete b;
}

class LargeBufferAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t n) override {
    if (n < kLargeThreshold) return c10::GetCPUAllocator()->allocate(n);
    const size_t bytes = (n + kHugePage - 1) / kHugePage * kHugePage;
    void* p = cache().take(bytes);
    if (p == nullptr) {
      TORCH_CHECK(posix_memalign(&p, kHugePage, bytes) == 0 && p != nullptr,
                  "kernelzoo: out of memory allocating ", n, " bytes");
#if defined(__linux__) && defined(MADV_HUGEPAGE)
      madvise(p, bytes, MADV_HUGEPAGE);  // advice only: failure leaves normal pages
#endif
    }
    return {p, new Block{p, bytes}, &release_block, c10::Device(c10::DeviceType::CPU)};
  }

  c10::DeleterFnPtr raw_deleter() const override { return nullptr; }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    std::memcpy(dest, src, count);
  }
};

LargeBufferAllocator g_allocator;

}  // namespace

at::Tensor empty_cpu_output(at::IntArrayRef sizes, const at::TensorOptions& options,
                            at::MemoryFormat memory_format) {
  TORCH_INTERNAL_ASSERT(options.device().is_cpu());
  return at::detail::empty_generic(sizes, &g_allocator,
                                   c10::DispatchKeySet(c10::DispatchKey::CPU),
                                   c10::typeMetaToScalarType(options.dtype()), memory_format);
}

at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
  return options.device().is_cpu()
             ? empty_cpu_output(sizes, options, at::MemoryFormat::Contiguous)
             : at::empty(sizes, options);
}

}  // namespace kernelzoo
