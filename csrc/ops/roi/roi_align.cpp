// Schemas of roi_align and its backward, the C++ API, and the argument
// handling that the CPU and CUDA kernels share.
#include "roi_align.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "../../common/cuda_missing.h"
#include "../../common/host_alloc.h"
#include "roi_align_host.h"
#include "roi_host.h"

namespace kernelzoo {

namespace roi_align_detail {

namespace {
at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
  return options.device().is_cpu()
             ? empty_cpu_output(sizes, options, at::MemoryFormat::Contiguous)
             : at::empty(sizes, options);
}
}  // namespace

Forward prepare_forward(const at::Tensor& input, const at::Tensor& rois, const Args& args) {
  roi_detail::check_forward_args("roi_align", input, rois, args.pooled_h, args.pooled_w);
  Forward f;
  f.input = input;
  f.rois = rois;
  f.args = args;
  // As torchvision: a contiguous (K, C, PH, PW) output whatever the input's layout.
  f.output = empty_output({rois.size(0), input.size(1), args.pooled_h, args.pooled_w},
                          input.options());
  return f;
}

Backward prepare_backward(const at::Tensor& grad, const at::Tensor& rois, const Args& args,
                          int64_t batch_size, int64_t channels, int64_t height, int64_t width) {
  roi_detail::check_backward_args("_roi_align_backward", grad, rois, args.pooled_h,
                                  args.pooled_w, batch_size, channels, height, width);
  Backward b;
  b.grad = grad;
  b.rois = rois;
  b.args = args;
  b.batch_size = batch_size;
  b.channels = channels;
  b.height = height;
  b.width = width;
  b.grad_input = empty_output({batch_size, channels, height, width}, grad.options());
  return b;
}

}  // namespace roi_align_detail

at::Tensor roi_align(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                     int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
                     bool aligned) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("kernelzoo::roi_align", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, double, c10::SymInt,
                                         c10::SymInt, int64_t, bool)>();
  return op.call(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned);
}

at::Tensor roi_align_backward(const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                              int64_t pooled_height, int64_t pooled_width, int64_t batch_size,
                              int64_t channels, int64_t height, int64_t width,
                              int64_t sampling_ratio, bool aligned) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("kernelzoo::_roi_align_backward", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&, double, c10::SymInt, c10::SymInt,
                            c10::SymInt, c10::SymInt, c10::SymInt, c10::SymInt, int64_t, bool)>();
  return op.call(grad, rois, spatial_scale, pooled_height, pooled_width, batch_size, channels,
                 height, width, sampling_ratio, aligned);
}

}  // namespace kernelzoo

TORCH_LIBRARY_FRAGMENT(kernelzoo, m) {
  m.def(
      "roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
      "SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor");
  m.def(
      "_roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, SymInt pooled_height, "
      "SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width, "
      "int sampling_ratio, bool aligned) -> Tensor");
}

KERNELZOO_REGISTER_CUDA_MISSING({"roi_align", "_roi_align_backward"})
