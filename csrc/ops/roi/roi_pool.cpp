// Schemas of roi_pool and its backward, the C++ API, and the argument handling
// that the CPU and CUDA kernels share.
#include "roi_pool.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "../../common/cuda_missing.h"
#include "../../common/host_alloc.h"
#include "roi_host.h"
#include "roi_pool_host.h"

namespace kernelzoo {

namespace roi_pool_detail {

namespace {
at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
  return options.device().is_cpu()
             ? empty_cpu_output(sizes, options, at::MemoryFormat::Contiguous)
             : at::empty(sizes, options);
}
}  // namespace

Forward prepare_forward(const at::Tensor& input, const at::Tensor& rois, const Args& args) {
  roi_detail::check_forward_args("roi_pool", input, rois, args.pooled_h, args.pooled_w);
  Forward f;
  f.input = input;
  f.rois = rois;
  f.args = args;
  const std::vector<int64_t> sizes{rois.size(0), input.size(1), args.pooled_h, args.pooled_w};
  f.output = empty_output(sizes, input.options());
  f.argmax = empty_output(sizes, input.options().dtype(at::kInt));
  return f;
}

Backward prepare_backward(const at::Tensor& grad, const at::Tensor& rois, const at::Tensor& argmax,
                          const Args& args, int64_t batch_size, int64_t channels, int64_t height,
                          int64_t width) {
  const char* op = "_roi_pool_backward";
  roi_detail::check_backward_args(op, grad, rois, args.pooled_h, args.pooled_w, batch_size,
                                  channels, height, width);
  TORCH_CHECK(argmax.scalar_type() == at::kInt, op,
              ": expected argmax of dtype int32 (the second output of roi_pool), but got ",
              roi_detail::dtype_name(argmax.scalar_type()));
  TORCH_CHECK(argmax.sizes() == grad.sizes(), op,
              ": expected argmax of the same shape as grad, ", grad.sizes(), ", but got ",
              argmax.sizes());
  TORCH_CHECK(argmax.device() == grad.device(), op,
              ": grad and argmax must be on the same device, but got grad on ", grad.device(),
              " and argmax on ", argmax.device());
  Backward b;
  b.grad = grad;
  b.rois = rois;
  b.argmax = argmax.contiguous();
  b.args = args;
  b.batch_size = batch_size;
  b.channels = channels;
  b.height = height;
  b.width = width;
  b.grad_input = empty_output({batch_size, channels, height, width}, grad.options());
  return b;
}

}  // namespace roi_pool_detail

std::tuple<at::Tensor, at::Tensor> roi_pool(const at::Tensor& input, const at::Tensor& rois,
                                            double spatial_scale, int64_t pooled_height,
                                            int64_t pooled_width) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("kernelzoo::roi_pool", "")
          .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, double,
                                                    c10::SymInt, c10::SymInt)>();
  return op.call(input, rois, spatial_scale, pooled_height, pooled_width);
}

at::Tensor roi_pool_backward(const at::Tensor& grad, const at::Tensor& rois,
                             const at::Tensor& argmax, double spatial_scale, int64_t pooled_height,
                             int64_t pooled_width, int64_t batch_size, int64_t channels,
                             int64_t height, int64_t width) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("kernelzoo::_roi_pool_backward", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, double,
                            c10::SymInt, c10::SymInt, c10::SymInt, c10::SymInt, c10::SymInt,
                            c10::SymInt)>();
  return op.call(grad, rois, argmax, spatial_scale, pooled_height, pooled_width, batch_size,
                 channels, height, width);
}

}  // namespace kernelzoo

TORCH_LIBRARY_FRAGMENT(kernelzoo, m) {
  m.def(
      "roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
      "SymInt pooled_width) -> (Tensor, Tensor)");
  m.def(
      "_roi_pool_backward(Tensor grad, Tensor rois, Tensor argmax, float spatial_scale, "
      "SymInt pooled_height, SymInt pooled_width, SymInt batch_size, SymInt channels, "
      "SymInt height, SymInt width) -> Tensor");
}

KERNELZOO_REGISTER_CUDA_MISSING({"roi_pool", "_roi_pool_backward"})
