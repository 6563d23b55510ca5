// Every operator of the kernelzoo namespace, found through the dispatcher (no
// list to keep in sync): each has a CPU kernel and a CUDA kernel, which in this
// CPU-only build of the library is the stub that define_ops() registers from
// the schemas (csrc/common/library.h), and the stub's message names the op and
// says how to rebuild, or, for an op whose CUDA kernels are not written yet,
// says that. The Python build CI makes has real CUDA kernels instead; this is
// where the stub of every op is tested.
#include <ATen/core/dispatch/Dispatcher.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/library.h"

namespace {

std::vector<c10::OperatorName> kernelzoo_ops() {
  std::vector<c10::OperatorName> ops;
  for (const auto& name : c10::Dispatcher::singleton().getAllOpNames()) {
    if (name.name.rfind("kernelzoo::", 0) == 0) ops.push_back(name);
  }
  return ops;
}

TEST(Library, EveryOpHasCpuKernelAndCudaStub) {
  const auto ops = kernelzoo_ops();
  // pixel_shuffle, pixel_unshuffle, roi_align, roi_pool and the two backward ops at least
  ASSERT_GE(ops.size(), 6u);
  for (const auto& name : ops) {
    const auto op = c10::Dispatcher::singleton().findOp(name);
    ASSERT_TRUE(op.has_value()) << name.name;
    EXPECT_TRUE(op->hasKernelForDispatchKey(c10::DispatchKey::CPU)) << name.name;
    ASSERT_TRUE(op->hasKernelForDispatchKey(c10::DispatchKey::CUDA)) << name.name;
    torch::jit::Stack stack;
    try {
      op->redispatchBoxed(c10::DispatchKeySet(c10::DispatchKey::CUDA), &stack);
      ADD_FAILURE() << name.name << ": the CUDA stub did not raise";
    } catch (const c10::Error& e) {
      const std::string msg = e.what_without_backtrace();
      if (kernelzoo::cuda_not_written(name.name)) {
        EXPECT_EQ(msg, kernelzoo::cuda_not_written_message(name.name)) << name.name;
        EXPECT_NE(msg.find("no CUDA kernel for this operator yet"), std::string::npos);
        continue;
      }
      EXPECT_EQ(msg, kernelzoo::cuda_not_built_message(name.name)) << name.name;
      EXPECT_NE(msg.find("has no CUDA kernels"), std::string::npos);
      // --no-deps: --force-reinstall alone would reinstall torch as well
      EXPECT_NE(msg.find("FORCE_CUDA=1 pip install --no-build-isolation --force-reinstall "
                         "--no-deps ."),
                std::string::npos);
    }
  }
}

}  // namespace
