// deform_conv2d: the schemas of the op and of its backward, the argument checks
// that the CPU and CUDA entry points share (prepare, prepare_backward), the C++
// API, and autocast (float32, as torchvision's).
#include "deform_conv2d.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/sum.h>
#include <torch/csrc/autograd/autograd_not_implemented_fallback.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>

#include "../../common/autocast.h"
#include "../../common/dtype_names.h"
#include "../../common/library.h"
#include "deform_conv2d_args.h"

TORCH_LIBRARY_FRAGMENT(kernelzoo, m) {
  kernelzoo::define_ops(
      m, {
             "deform_conv2d(Tensor input, Tensor weight, Tensor offset, Tensor? mask, "
             "Tensor? bias, int stride_h, int stride_w, int pad_h, int pad_w, int dilation_h, "
             "int dilation_w, int groups, int offset_groups) -> Tensor",
             "_deform_conv2d_backward(Tensor grad, Tensor input, Tensor weight, Tensor offset, "
             "Tensor? mask, Tensor? bias, int stride_h, int stride_w, int pad_h, int pad_w, "
             "int dilation_h, int dilation_w, int groups, int offset_groups) "
             "-> (Tensor grad_input, Tensor grad_weight, Tensor grad_offset, Tensor grad_mask, "
             "Tensor grad_bias)",
         });
}

// The op's autograd formula is registered from Python (ops/deform_conv2d.py);
// the backward op has none (no double backward).
TORCH_LIBRARY_IMPL(kernelzoo, Autograd, m) {
  m.impl("_deform_conv2d_backward", torch::autograd::autogradNotImplementedFallback());
}

namespace kernelzoo {
namespace deform_detail {
namespace {

void check_like(const char* name, const at::Tensor& t, const char* what, const at::Tensor& input) {
  TORCH_CHECK(t.scalar_type() == input.scalar_type(), name, ": ", what,
              " must have input's dtype (", dtype_name(input.scalar_type()), "), but got ",
              dtype_name(t.scalar_type()));
  TORCH_CHECK(t.device() == input.device(), name, ": ", what, " must be on input's device (",
              input.device(), "), but is on ", t.device());
}

}  // namespace

Problem prepare(const char* name, const at::Tensor& input, const at::Tensor& weight,
                const at::Tensor& offset, const std::optional<at::Tensor>& mask,
                const std::optional<at::Tensor>& bias, int64_t stride_h, int64_t stride_w,
                int64_t pad_h, int64_t pad_w, int64_t dil_h, int64_t dil_w, int64_t groups,
                int64_t offset_groups) {
  TORCH_CHECK(input.dim() == 4, name, ": expected input of shape (N, C, H, W), but got shape ",
              input.sizes());
  TORCH_CHECK(is_float_dtype(input.scalar_type()), name,
              ": expected a floating-point input (float64, float32, float16 or bfloat16), but "
              "got ",
              dtype_name(input.scalar_type()));
  TORCH_CHECK(weight.dim() == 4, name,
              ": expected weight of shape (C_out, C / groups, kh, kw), but got shape ",
              weight.sizes());
  TORCH_CHECK(offset.dim() == 4, name,
              ": expected offset of shape (N, 2 * offset_groups * kh * kw, H_out, W_out), but "
              "got shape ",
              offset.sizes());
  check_like(name, weight, "weight", input);
  check_like(name, offset, "offset", input);
  TORCH_CHECK(stride_h > 0 && stride_w > 0, name, ": stride must be positive, but got (", stride_h,
              ", ", stride_w, ")");
  TORCH_CHECK(dil_h > 0 && dil_w > 0, name, ": dilation must be positive, but got (", dil_h, ", ",
              dil_w, ")");
  TORCH_CHECK(pad_h >= 0 && pad_w >= 0, name, ": padding must be non-negative, but got (", pad_h,
              ", ", pad_w, ")");
  Geometry g;
  g.N = input.size(0);
  g.C = input.size(1);
  g.H = input.size(2);
  g.W = input.size(3);
  g.C_out = weight.size(0);
  g.kh = weight.size(2);
  g.kw = weight.size(3);
  g.stride_h = stride_h;
  g.stride_w = stride_w;
  g.pad_h = pad_h;
  g.pad_w = pad_w;
  g.dil_h = dil_h;
  g.dil_w = dil_w;
  g.groups = groups;
  g.offset_groups = offset_groups;
  TORCH_CHECK(g.kh > 0 && g.kw > 0, name,
              ": the kernel must be at least 1x1, but weight has shape ", weight.sizes());
  TORCH_CHECK(groups > 0 && g.C % groups == 0 && g.C_out % groups == 0, name, ": groups (", groups,
              ") must divide the input channels (", g.C, ") and the output channels (", g.C_out,
              ")");
  TORCH_CHECK(weight.size(1) * groups == g.C, name,
              ": weight.size(1) * groups must equal the "
              "input channels: ",
              weight.size(1), " * ", groups, " != ", g.C);
  const int64_t K = g.taps();
  TORCH_CHECK(offset.size(1) % (2 * K) == 0 && offset.size(1) > 0, name,
              ": offset must have 2 * offset_groups * kh * kw channels (a multiple of 2 * ", K,
              " for a ", g.kh, "x", g.kw, " kernel), but has ", offset.size(1));
  TORCH_CHECK(offset_groups > 0 && offset.size(1) == 2 * offset_groups * K, name, ": offset has ",
              offset.size(1), " channels, but offset_groups = ", offset_groups, " needs ",
              2 * offset_groups * K);
  TORCH_CHECK(g.C % offset_groups == 0, name, ": offset_groups (", offset_groups,
              ") must divide the input channels (", g.C, ")");
  const int64_t eff_h = dil_h * (g.kh - 1) + 1, eff_w = dil_w * (g.kw - 1) + 1;
  g.H_out = (g.H + 2 * pad_h - eff_h) / stride_h + 1;
  g.W_out = (g.W + 2 * pad_w - eff_w) / stride_w + 1;
  TORCH_CHECK(g.H + 2 * pad_h >= eff_h && g.W + 2 * pad_w >= eff_w && g.H_out > 0 && g.W_out > 0,
              name, ": the output would be empty: input ", g.H, "x", g.W, " with padding (", pad_h,
              ", ", pad_w, ") is smaller than the dilated kernel ", eff_h, "x", eff_w);
  TORCH_CHECK(offset.size(0) == g.N && offset.size(2) == g.H_out && offset.size(3) == g.W_out, name,
              ": offset must have shape (N, ", offset.size(1), ", H_out, W_out) = (", g.N, ", ",
              offset.size(1), ", ", g.H_out, ", ", g.W_out, "), but got ", offset.sizes());
  constexpr int64_t kMaxInt = std::numeric_limits<int32_t>::max();
  TORCH_CHECK(g.H <= kMaxInt && g.W <= kMaxInt && (g.H == 0 || g.W <= kMaxInt / g.H), name,
              ": input planes of more than 2^31 - 1 pixels are not supported, but got ", g.H, "x",
              g.W);
  Problem p;
  if (mask.has_value() && mask->defined()) {
    const at::Tensor& m = *mask;
    check_like(name, m, "mask", input);
    TORCH_CHECK(m.dim() == 4 && m.size(0) == g.N && m.size(1) == offset_groups * K &&
                    m.size(2) == g.H_out && m.size(3) == g.W_out,
                name, ": mask must have shape (N, offset_groups * kh * kw, H_out, W_out) = (", g.N,
                ", ", offset_groups * K, ", ", g.H_out, ", ", g.W_out, "), but got ", m.sizes());
    p.mask = m.contiguous();
  }
  if (bias.has_value() && bias->defined()) {
    check_like(name, *bias, "bias", input);
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == g.C_out, name,
                ": bias must have shape (C_out,) = (", g.C_out, ",), but got ", bias->sizes());
    p.bias = bias->contiguous();
  }
  p.input = input.contiguous();
  p.weight = weight.contiguous();
  p.offset = offset.contiguous();
  p.g = g;
  return p;
}

BackwardProblem prepare_backward(const at::Tensor& grad, const at::Tensor& input,
                                 const at::Tensor& weight, const at::Tensor& offset,
                                 const std::optional<at::Tensor>& mask,
                                 const std::optional<at::Tensor>& bias, int64_t stride_h,
                                 int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dil_h,
                                 int64_t dil_w, int64_t groups, int64_t offset_groups) {
  constexpr const char* name = "_deform_conv2d_backward";
  BackwardProblem b;
  b.p = prepare(name, input, weight, offset, mask, bias, stride_h, stride_w, pad_h, pad_w, dil_h,
                dil_w, groups, offset_groups);
  const Geometry& g = b.p.g;
  check_like(name, grad, "grad", input);
  TORCH_CHECK(grad.sizes() == at::IntArrayRef({g.N, g.C_out, g.H_out, g.W_out}), name,
              ": grad must have the output's shape (", g.N, ", ", g.C_out, ", ", g.H_out, ", ",
              g.W_out, "), but got ", grad.sizes());
  b.grad = grad.contiguous();
  return b;
}

at::Tensor allocate_output(const Problem& p) {
  return at::empty({p.g.N, p.g.C_out, p.g.H_out, p.g.W_out}, p.input.options());
}

Grads allocate_grads(const BackwardProblem& b) {
  const Problem& p = b.p;
  Grads g;
  g.input = at::empty(p.input.sizes(), p.input.options());
  g.weight = at::empty(p.weight.sizes(), p.weight.options());
  g.offset = at::empty(p.offset.sizes(), p.offset.options());
  g.mask = p.mask.defined() ? at::empty(p.mask.sizes(), p.mask.options())
                            : at::empty({0}, p.input.options());
  g.bias = at::empty({0}, p.input.options());
  if (p.bias.defined()) {
    const auto acc = b.grad.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    g.bias = at::sum(b.grad, {0, 2, 3}, false, acc).to(b.grad.scalar_type());
  }
  return g;
}

}  // namespace deform_detail

// --- C++ API -------------------------------------------------------------------------------

namespace {

using ForwardSig = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                              const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
                              int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                              int64_t);

const c10::TypedOperatorHandle<ForwardSig>& forward_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("kernelzoo::deform_conv2d", "")
                             .typed<ForwardSig>();
  return op;
}

}  // namespace

at::Tensor deform_conv2d(const at::Tensor& input, const at::Tensor& weight,
                         const at::Tensor& offset, const std::optional<at::Tensor>& mask,
                         const std::optional<at::Tensor>& bias, int64_t stride_h, int64_t stride_w,
                         int64_t pad_h, int64_t pad_w, int64_t dilation_h, int64_t dilation_w,
                         int64_t groups, int64_t offset_groups) {
  return forward_op().call(input, weight, offset, mask, bias, stride_h, stride_w, pad_h, pad_w,
                           dilation_h, dilation_w, groups, offset_groups);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> deform_conv2d_backward(
    const at::Tensor& grad, const at::Tensor& input, const at::Tensor& weight,
    const at::Tensor& offset, const std::optional<at::Tensor>& mask,
    const std::optional<at::Tensor>& bias, int64_t stride_h, int64_t stride_w, int64_t pad_h,
    int64_t pad_w, int64_t dilation_h, int64_t dilation_w, int64_t groups, int64_t offset_groups) {
  using Out = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("kernelzoo::_deform_conv2d_backward", "")
          .typed<Out(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                     const std::optional<at::Tensor>&, const std::optional<at::Tensor>&, int64_t,
                     int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t)>();
  return op.call(grad, input, weight, offset, mask, bias, stride_h, stride_w, pad_h, pad_w,
                 dilation_h, dilation_w, groups, offset_groups);
}

// --- autocast (common/autocast.h): float32, the output in input's dtype ----------------------

namespace deform_detail {
namespace {

std::optional<at::Tensor> autocast_opt(const std::optional<at::Tensor>& t) {
  if (!t.has_value() || !t->defined()) return t;
  return autocast_float32(*t);
}

template <c10::DispatchKey key>
at::Tensor deform_conv2d_autocast(const at::Tensor& input, const at::Tensor& weight,
                                  const at::Tensor& offset, const std::optional<at::Tensor>& mask,
                                  const std::optional<at::Tensor>& bias, int64_t stride_h,
                                  int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dil_h,
                                  int64_t dil_w, int64_t groups, int64_t offset_groups) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(key);
  return forward_op()
      .call(autocast_float32(input), autocast_float32(weight), autocast_float32(offset),
            autocast_opt(mask), autocast_opt(bias), stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
            groups, offset_groups)
      .to(input.scalar_type());
}

}  // namespace
}  // namespace deform_detail
}  // namespace kernelzoo

TORCH_LIBRARY_IMPL(kernelzoo, Autocast, m) {
  m.impl("deform_conv2d",
         TORCH_FN(kernelzoo::deform_detail::deform_conv2d_autocast<c10::DispatchKey::Autocast>));
}

TORCH_LIBRARY_IMPL(kernelzoo, AutocastCPU, m) {
  m.impl("deform_conv2d",
         TORCH_FN(kernelzoo::deform_detail::deform_conv2d_autocast<c10::DispatchKey::AutocastCPU>));
}
