// roi_align and roi_pool: schemas of the ops and of their backward ops, the
// C++ API, and the argument handling that the CPU and CUDA kernels share
// (checks with the documented errors, output allocation, grouping by batch
// index for the CPU kernels). One translation unit for both ops: torch's
// library headers are parsed once.
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

#include <limits>

#include "../../common/cuda_missing.h"
#include "../../common/host_alloc.h"
#include "roi_align.h"
#include "roi_align_host.h"
#include "roi_common.h"
#include "roi_host.h"
#include "roi_pool.h"
#include "roi_pool_host.h"

namespace kernelzoo {
namespace roi_detail {

std::string dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kDouble: return "float64";
    case at::kFloat: return "float32";
    case at::kHalf: return "float16";
    case at::kBFloat16: return "bfloat16";
    case at::kLong: return "int64";
    case at::kInt: return "int32";
    case at::kShort: return "int16";
    case at::kChar: return "int8";
    case at::kByte: return "uint8";
    case at::kBool: return "bool";
    case at::kComplexFloat: return "complex64";
    case at::kComplexDouble: return "complex128";
    default: return c10::toString(t);
  }
}

namespace {

bool supported_dtype(at::ScalarType t) {
  return t == at::kDouble || t == at::kFloat || t == at::kHalf || t == at::kBFloat16;
}

constexpr int64_t kMaxInt = std::numeric_limits<int32_t>::max();

void check_rois_shape(const char* op, const at::Tensor& rois) {
  TORCH_CHECK(rois.dim() == 2 && rois.size(1) == 5, op,
              ": expected boxes as a Tensor[K, 5] of rows (batch_index, x1, y1, x2, y2), but "
              "got a tensor of shape ", rois.sizes());
}

// The kernels hold pooled sizes in int (roi_align_detail::checked_args does the
// same for roi_align's sampling ratio).
void check_output_size(const char* op, int64_t pooled_h, int64_t pooled_w) {
  TORCH_CHECK(pooled_h >= 0 && pooled_w >= 0, op, ": output_size must be non-negative, but got (",
              pooled_h, ", ", pooled_w, ")");
  TORCH_CHECK(pooled_h <= kMaxInt && pooled_w <= kMaxInt, op,
              ": output_size must be at most 2^31 - 1, but got (", pooled_h, ", ", pooled_w, ")");
}

void check_plane(const char* op, int64_t height, int64_t width) {
  // Pixel indices (and roi_pool's argmax) are int32.
  TORCH_CHECK(height <= kMaxInt && width <= kMaxInt &&
                  (height == 0 || width <= kMaxInt / height),
              op, ": feature maps of more than 2^31 - 1 pixels (H * W) are not supported, but "
              "got H=", height, ", W=", width);
}

// An uninitialised contiguous output (or gradient) of either op: on CPU from
// the large-buffer allocator (common/host_alloc.h).
at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
  return options.device().is_cpu()
             ? empty_cpu_output(sizes, options, at::MemoryFormat::Contiguous)
             : at::empty(sizes, options);
}

}  // namespace

void check_forward_args(const char* op, const at::Tensor& input, const at::Tensor& rois,
                        int64_t pooled_h, int64_t pooled_w) {
  TORCH_CHECK(input.dim() == 4, op, ": expected input of shape (N, C, H, W), but got a tensor "
              "with ", input.dim(), " dimension(s), of shape ", input.sizes());
  TORCH_CHECK(supported_dtype(input.scalar_type()), op,
              ": expected a floating-point input (float64, float32, float16 or bfloat16), but "
              "got ", dtype_name(input.scalar_type()));
  check_rois_shape(op, rois);
  TORCH_CHECK(rois.scalar_type() == input.scalar_type(), op,
              ": input and boxes must have the same dtype, but got input ",
              dtype_name(input.scalar_type()), " and boxes ", dtype_name(rois.scalar_type()),
              "; convert the boxes with boxes.to(input.dtype)");
  TORCH_CHECK(rois.device() == input.device(), op,
              ": input and boxes must be on the same device, but got input on ", input.device(),
              " and boxes on ", rois.device());
  check_output_size(op, pooled_h, pooled_w);
  check_plane(op, input.size(2), input.size(3));
}

void check_backward_args(const char* op, const at::Tensor& grad, const at::Tensor& rois,
                         int64_t pooled_h, int64_t pooled_w, int64_t batch_size,
                         int64_t channels, int64_t height, int64_t width) {
  TORCH_CHECK(batch_size >= 0 && channels >= 0 && height >= 0 && width >= 0, op,
              ": batch_size, channels, height and width must be non-negative, but got ",
              batch_size, ", ", channels, ", ", height, ", ", width);
  check_output_size(op, pooled_h, pooled_w);
  TORCH_CHECK(supported_dtype(grad.scalar_type()), op,
              ": expected a floating-point grad (float64, float32, float16 or bfloat16), but "
              "got ", dtype_name(grad.scalar_type()));
  check_rois_shape(op, rois);
  TORCH_CHECK(grad.dim() == 4 && grad.size(0) == rois.size(0) && grad.size(1) == channels &&
                  grad.size(2) == pooled_h && grad.size(3) == pooled_w,
              op, ": expected grad of shape [K, channels, pooled_height, pooled_width] = [",
              rois.size(0), ", ", channels, ", ", pooled_h, ", ", pooled_w, "], but got ",
              grad.sizes());
  TORCH_CHECK(rois.scalar_type() == grad.scalar_type(), op,
              ": grad and boxes must have the same dtype, but got grad ",
              dtype_name(grad.scalar_type()), " and boxes ", dtype_name(rois.scalar_type()));
  TORCH_CHECK(rois.device() == grad.device(), op,
              ": grad and boxes must be on the same device, but got grad on ", grad.device(),
              " and boxes on ", rois.device());
  check_plane(op, height, width);
}

BatchGroups group_by_batch(const char* op, const at::Tensor& rois, int64_t batch_size) {
  const int64_t k = rois.size(0);
  BatchGroups g;
  g.order.resize(k);
  g.begin.assign(batch_size + 1, 0);
  if (k == 0) return g;
  // Column 0 in float64 (exact for every supported dtype).
  const at::Tensor col = rois.select(1, 0).to(at::kDouble).contiguous();
  const double* v = col.const_data_ptr<double>();
  std::vector<int64_t> batch(k);
  for (int64_t i = 0; i < k; ++i) {
    const int64_t b = batch_index<double>(v[i], batch_size);
    TORCH_CHECK(b >= 0, op, ": boxes[", i, ", 0] = ", v[i],
                " is not a valid batch index for an input with batch size ", batch_size,
                " (expected 0 <= index < ", batch_size, ")");
    batch[i] = b;
    ++g.begin[b + 1];
  }
  for (int64_t n = 0; n < batch_size; ++n) g.begin[n + 1] += g.begin[n];
  std::vector<int64_t> next(g.begin.begin(), g.begin.end() - 1);
  for (int64_t i = 0; i < k; ++i) g.order[next[batch[i]]++] = i;
  return g;
}

}  // namespace roi_detail
}  // namespace kernelzoo

namespace kernelzoo {

namespace roi_align_detail {

namespace {
// The kernels hold the sampling ratio in int: larger ones are rejected, and
// every ratio <= 0 (adaptive) becomes 0, so that none wraps to a positive int.
Args checked_args(const char* op, Args args) {
  TORCH_CHECK(args.sampling_ratio <= std::numeric_limits<int32_t>::max(), op,
              ": sampling_ratio must be at most 2^31 - 1, but got ", args.sampling_ratio);
  if (args.sampling_ratio < 0) args.sampling_ratio = 0;
  return args;
}
}  // namespace

Forward prepare_forward(const at::Tensor& input, const at::Tensor& rois, const Args& args) {
  roi_detail::check_forward_args("roi_align", input, rois, args.pooled_h, args.pooled_w);
  Forward f;
  f.input = input;
  f.rois = rois;
  f.args = checked_args("roi_align", args);
  // As torchvision: a contiguous (K, C, PH, PW) output whatever the input's layout.
  f.output = roi_detail::empty_output({rois.size(0), input.size(1), args.pooled_h, args.pooled_w},
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
  b.args = checked_args("_roi_align_backward", args);
  b.batch_size = batch_size;
  b.channels = channels;
  b.height = height;
  b.width = width;
  b.grad_input = roi_detail::empty_output({batch_size, channels, height, width}, grad.options());
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

namespace kernelzoo {

namespace roi_pool_detail {

Forward prepare_forward(const at::Tensor& input, const at::Tensor& rois, const Args& args) {
  roi_detail::check_forward_args("roi_pool", input, rois, args.pooled_h, args.pooled_w);
  Forward f;
  f.input = input;
  f.rois = rois;
  f.args = args;
  const std::vector<int64_t> sizes{rois.size(0), input.size(1), args.pooled_h, args.pooled_w};
  f.output = roi_detail::empty_output(sizes, input.options());
  f.argmax = roi_detail::empty_output(sizes, input.options().dtype(at::kInt));
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
  b.grad_input = roi_detail::empty_output({batch_size, channels, height, width}, grad.options());
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
      "roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
      "SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor");
  m.def(
      "_roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, SymInt pooled_height, "
      "SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width, "
      "int sampling_ratio, bool aligned) -> Tensor");
  m.def(
      "roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
      "SymInt pooled_width) -> (Tensor, Tensor)");
  m.def(
      "_roi_pool_backward(Tensor grad, Tensor rois, Tensor argmax, float spatial_scale, "
      "SymInt pooled_height, SymInt pooled_width, SymInt batch_size, SymInt channels, "
      "SymInt height, SymInt width) -> Tensor");
}

KERNELZOO_REGISTER_CUDA_MISSING({"roi_align", "_roi_align_backward", "roi_pool", "_roi_pool_backward"})

// --- autocast ----------------------------------------------------------------------
// As torchvision: under torch.autocast (CUDA or CPU), the forward ops run in
// float32 (float16/bfloat16 inputs and boxes are cast up, float64 is left
// alone) and the output is cast back to the input's dtype, so that float16
// features pool with float32 boxes. Autograd records the casts.
namespace kernelzoo {
namespace roi_detail {
namespace {

at::Tensor autocast_up(const at::Tensor& t) {
  const auto type = t.scalar_type();
  return type == at::kHalf || type == at::kBFloat16 ? t.to(at::kFloat) : t;
}

template <c10::DispatchKey key>
at::Tensor roi_align_autocast(const at::Tensor& input, const at::Tensor& rois, double scale,
                              c10::SymInt pooled_h, c10::SymInt pooled_w, int64_t sampling_ratio,
                              bool aligned) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(key);
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("kernelzoo::roi_align", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, double, c10::SymInt,
                                         c10::SymInt, int64_t, bool)>();
  return op.call(autocast_up(input), autocast_up(rois), scale, std::move(pooled_h),
                 std::move(pooled_w), sampling_ratio, aligned)
      .to(input.scalar_type());
}

template <c10::DispatchKey key>
std::tuple<at::Tensor, at::Tensor> roi_pool_autocast(const at::Tensor& input,
                                                     const at::Tensor& rois, double scale,
                                                     c10::SymInt pooled_h, c10::SymInt pooled_w) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(key);
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("kernelzoo::roi_pool", "")
          .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, double,
                                                    c10::SymInt, c10::SymInt)>();
  auto [output, argmax] = op.call(autocast_up(input), autocast_up(rois), scale,
                                  std::move(pooled_h), std::move(pooled_w));
  return {output.to(input.scalar_type()), argmax};
}

}  // namespace
}  // namespace roi_detail
}  // namespace kernelzoo

TORCH_LIBRARY_IMPL(kernelzoo, Autocast, m) {
  using namespace kernelzoo::roi_detail;
  m.impl("roi_align", TORCH_FN(roi_align_autocast<c10::DispatchKey::Autocast>));
  m.impl("roi_pool", TORCH_FN(roi_pool_autocast<c10::DispatchKey::Autocast>));
}

TORCH_LIBRARY_IMPL(kernelzoo, AutocastCPU, m) {
  using namespace kernelzoo::roi_detail;
  m.impl("roi_align", TORCH_FN(roi_align_autocast<c10::DispatchKey::AutocastCPU>));
  m.impl("roi_pool", TORCH_FN(roi_pool_autocast<c10::DispatchKey::AutocastCPU>));
}
