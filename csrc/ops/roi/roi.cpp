// roi_align and roi_pool: the schemas of the ops and of their backward ops, the
// argument checks and output allocation that the CPU and CUDA entry points
// share (prepare_forward / prepare_backward), the C++ API, and autocast.
#include "roi.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <limits>

#include "../../common/autocast.h"
#include "../../common/dtype_names.h"
#include "../../common/host_alloc.h"
#include "../../common/library.h"
#include "roi_args.h"
#include "roi_math.h"

TORCH_LIBRARY_FRAGMENT(kernelzoo, m) {
  kernelzoo::define_ops(
      m, {
             "roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
             "SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor",
             "_roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, "
             "SymInt pooled_height, SymInt pooled_width, SymInt batch_size, SymInt channels, "
             "SymInt height, SymInt width, int sampling_ratio, bool aligned) -> Tensor",
             "roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
             "SymInt pooled_width) -> (Tensor, Tensor)",
             "_roi_pool_backward(Tensor grad, Tensor rois, Tensor argmax, float spatial_scale, "
             "SymInt pooled_height, SymInt pooled_width, SymInt batch_size, SymInt channels, "
             "SymInt height, SymInt width) -> Tensor",
         });
}

// --- checks and outputs --------------------------------------------------------------

namespace kernelzoo {
namespace roi_detail {

const char* op_name(RoiOp op) { return op == RoiOp::Align ? "roi_align" : "roi_pool"; }

const char* backward_name(RoiOp op) {
  return op == RoiOp::Align ? "_roi_align_backward" : "_roi_pool_backward";
}

namespace {

constexpr int64_t kMaxInt = std::numeric_limits<int32_t>::max();

void check_rois_shape(const char* op, const at::Tensor& rois) {
  TORCH_CHECK(rois.dim() == 2 && rois.size(1) == 5, op,
              ": expected boxes as a Tensor[K, 5] of rows (batch_index, x1, y1, x2, y2), but "
              "got a tensor of shape ", rois.sizes());
}

// The kernels hold pooled sizes and the sampling ratio in int.
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

// roi_align's ratio above kMaxSamplingRatio (roi_math.h) is rejected, and
// every ratio <= 0 (adaptive) becomes 0, so that none wraps to a positive int.
Args checked_args(RoiOp op, const char* name, Args args) {
  if (op == RoiOp::Align) {
    TORCH_CHECK(args.sampling_ratio <= kMaxSamplingRatio, name, ": sampling_ratio must be at most ",
                kMaxSamplingRatio, " (samples per bin and axis; 0 or less: adaptive), but got ",
                args.sampling_ratio);
    if (args.sampling_ratio < 0) args.sampling_ratio = 0;
  }
  return args;
}

// Checks of the forward ops, in this order: input rank, input dtype, boxes
// shape, boxes dtype, device, output size, feature-map size, sampling ratio.
void check_forward_args(const char* op, const at::Tensor& input, const at::Tensor& rois,
                        int64_t pooled_h, int64_t pooled_w) {
  TORCH_CHECK(input.dim() == 4, op, ": expected input of shape (N, C, H, W), but got a tensor "
              "with ", input.dim(), " dimension(s), of shape ", input.sizes());
  TORCH_CHECK(is_float_dtype(input.scalar_type()), op,
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

// Checks of the backward ops, in this order: sizes non-negative, output size,
// grad dtype, boxes shape, grad shape, boxes dtype, device, feature-map size,
// sampling ratio; then roi_pool's argmax.
void check_backward_args(const char* op, const at::Tensor& grad, const at::Tensor& rois,
                         int64_t pooled_h, int64_t pooled_w, int64_t batch_size,
                         int64_t channels, int64_t height, int64_t width) {
  TORCH_CHECK(batch_size >= 0 && channels >= 0 && height >= 0 && width >= 0, op,
              ": batch_size, channels, height and width must be non-negative, but got ",
              batch_size, ", ", channels, ", ", height, ", ", width);
  check_output_size(op, pooled_h, pooled_w);
  TORCH_CHECK(is_float_dtype(grad.scalar_type()), op,
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

void check_argmax(const char* op, const at::Tensor& argmax, const at::Tensor& grad) {
  TORCH_CHECK(argmax.scalar_type() == at::kInt, op,
              ": expected argmax of dtype int32 (the second output of roi_pool), but got ",
              dtype_name(argmax.scalar_type()));
  TORCH_CHECK(argmax.sizes() == grad.sizes(), op,
              ": expected argmax of the same shape as grad, ", grad.sizes(), ", but got ",
              argmax.sizes());
  TORCH_CHECK(argmax.device() == grad.device(), op,
              ": grad and argmax must be on the same device, but got grad on ", grad.device(),
              " and argmax on ", argmax.device());
}

}  // namespace

Forward prepare_forward(RoiOp op, const at::Tensor& input, const at::Tensor& rois,
                        const Args& args) {
  const char* name = op_name(op);
  check_forward_args(name, input, rois, args.pooled_h, args.pooled_w);
  Forward f{op, input, rois, {}, {}, checked_args(op, name, args)};
  // As torchvision: a contiguous (K, C, PH, PW) output whatever the input's layout.
  const std::vector<int64_t> sizes{rois.size(0), input.size(1), args.pooled_h, args.pooled_w};
  f.output = empty_output(sizes, input.options());
  if (op == RoiOp::Pool) f.argmax = empty_output(sizes, input.options().dtype(at::kInt));
  return f;
}

Backward prepare_backward(RoiOp op, const at::Tensor& grad, const at::Tensor& rois,
                          const at::Tensor& argmax, const Args& args, int64_t batch_size,
                          int64_t channels, int64_t height, int64_t width) {
  const char* name = backward_name(op);
  check_backward_args(name, grad, rois, args.pooled_h, args.pooled_w, batch_size, channels,
                      height, width);
  Backward b{op, grad, rois, {}, {}, checked_args(op, name, args), batch_size, channels, height,
             width};
  if (op == RoiOp::Pool) {
    check_argmax(name, argmax, grad);
    b.argmax = argmax.contiguous();
  }
  b.grad_input = empty_output({batch_size, channels, height, width}, grad.options());
  return b;
}

}  // namespace roi_detail

// --- C++ API (and the typed handles that autocast calls too) ----------------------------

namespace {

using RoiAlignSig = at::Tensor(const at::Tensor&, const at::Tensor&, double, c10::SymInt,
                               c10::SymInt, int64_t, bool);
using RoiPoolSig = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, double,
                                                      c10::SymInt, c10::SymInt);

const c10::TypedOperatorHandle<RoiAlignSig>& roi_align_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("kernelzoo::roi_align", "")
                             .typed<RoiAlignSig>();
  return op;
}

const c10::TypedOperatorHandle<RoiPoolSig>& roi_pool_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("kernelzoo::roi_pool", "")
                             .typed<RoiPoolSig>();
  return op;
}

}  // namespace

at::Tensor roi_align(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                     int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
                     bool aligned) {
  return roi_align_op().call(input, rois, spatial_scale, pooled_height, pooled_width,
                             sampling_ratio, aligned);
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

std::tuple<at::Tensor, at::Tensor> roi_pool(const at::Tensor& input, const at::Tensor& rois,
                                            double spatial_scale, int64_t pooled_height,
                                            int64_t pooled_width) {
  return roi_pool_op().call(input, rois, spatial_scale, pooled_height, pooled_width);
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

// --- autocast (common/autocast.h): both forward ops run in float32 -----------------------

namespace roi_detail {
namespace {

template <c10::DispatchKey key>
at::Tensor roi_align_autocast(const at::Tensor& input, const at::Tensor& rois, double scale,
                              c10::SymInt pooled_h, c10::SymInt pooled_w, int64_t sampling_ratio,
                              bool aligned) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(key);
  return roi_align_op()
      .call(autocast_float32(input), autocast_float32(rois), scale, std::move(pooled_h),
            std::move(pooled_w), sampling_ratio, aligned)
      .to(input.scalar_type());
}

template <c10::DispatchKey key>
std::tuple<at::Tensor, at::Tensor> roi_pool_autocast(const at::Tensor& input,
                                                     const at::Tensor& rois, double scale,
                                                     c10::SymInt pooled_h, c10::SymInt pooled_w) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(key);
  auto [output, argmax] = roi_pool_op().call(autocast_float32(input), autocast_float32(rois),
                                             scale, std::move(pooled_h), std::move(pooled_w));
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
