#include "roi_host.h"

#include <limits>

#include "roi_common.h"

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

constexpr int64_t kMaxPlane = std::numeric_limits<int32_t>::max();

void check_rois_shape(const char* op, const at::Tensor& rois) {
  TORCH_CHECK(rois.dim() == 2 && rois.size(1) == 5, op,
              ": expected boxes as a Tensor[K, 5] of rows (batch_index, x1, y1, x2, y2), but "
              "got a tensor of shape ", rois.sizes());
}

void check_plane(const char* op, int64_t height, int64_t width) {
  // Pixel indices (and roi_pool's argmax) are int32.
  TORCH_CHECK(height <= kMaxPlane && width <= kMaxPlane &&
                  (height == 0 || width <= kMaxPlane / height),
              op, ": feature maps of more than 2^31 - 1 pixels (H * W) are not supported, but "
              "got H=", height, ", W=", width);
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
  TORCH_CHECK(pooled_h > 0 && pooled_w > 0, op, ": output_size must be positive, but got (",
              pooled_h, ", ", pooled_w, ")");
  check_plane(op, input.size(2), input.size(3));
}

void check_backward_args(const char* op, const at::Tensor& grad, const at::Tensor& rois,
                         int64_t pooled_h, int64_t pooled_w, int64_t batch_size,
                         int64_t channels, int64_t height, int64_t width) {
  TORCH_CHECK(batch_size >= 0 && channels >= 0 && height >= 0 && width >= 0, op,
              ": batch_size, channels, height and width must be non-negative, but got ",
              batch_size, ", ", channels, ", ", height, ", ", width);
  TORCH_CHECK(pooled_h > 0 && pooled_w > 0, op, ": output_size must be positive, but got (",
              pooled_h, ", ", pooled_w, ")");
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
