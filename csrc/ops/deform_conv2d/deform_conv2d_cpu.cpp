// deform_conv2d on the CPU: im2col into a bounded column buffer, the products
// on at::mm, and a deterministic backward.
//
// The images are taken a chunk at a time (images_per_chunk: the columns and the
// sampling table stay within about 64 MiB). For a chunk:
//   1. the sampling table: one Sample (deform_conv2d_math.h) per (image, offset
//      group, tap, output position): where the tap samples and with which
//      weights, shared by every channel of the offset group;
//   2. im2col: columns (C * kh * kw, images * H_out * W_out), row c * kh * kw +
//      tap holding channel c's samples of that tap, in parallel over (image,
//      channel);
//   3. per group, output = weight (C_out / groups, C / groups * kh * kw) x columns.
// The backward recomputes the table and the columns per chunk, then: the
// weight's gradient accumulates grad x columns^T chunk after chunk (in order);
// the columns' gradient weight^T x grad gives, per (image, offset group, tap),
// the offset's and the mask's gradients (a sum over the group's channels, each
// output element written by one task), and per (image, channel) plane the
// input's gradient (col2im: each plane accumulated by the one task that owns
// it). No two tasks write one element: the results do not depend on the
// number of threads. float16 and bfloat16 compute in float32, float64 in
// float64.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "../../common/acc_type.h"
#include "../../common/dispatch.h"
#include "../../common/tensor_data.h"
#include "deform_conv2d_args.h"
#include "deform_conv2d_math.h"

namespace kernelzoo {
namespace deform_detail {
namespace {

// a @ b. In float32 through oneDNN's linear (torch's mkldnn::_linear_pointwise,
// which takes the transposed operands as views): measured about twice as fast
// as at::mm (MKL) on this project's CPUs for these shapes; at::mm otherwise.
at::Tensor product(const at::Tensor& a, const at::Tensor& b) {
  using LinearSig = at::Tensor(
      const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&, c10::string_view,
      c10::List<std::optional<at::Scalar>>, std::optional<c10::string_view>);
  static const auto handle =
      c10::Dispatcher::singleton().findSchema({"mkldnn::_linear_pointwise", ""});
  if (a.scalar_type() == at::kFloat && handle.has_value() && a.numel() > 0 && b.numel() > 0) {
    static const auto linear = handle->typed<LinearSig>();
    return linear.call(a, b.t(), std::nullopt, "none", c10::List<std::optional<at::Scalar>>(),
                       std::nullopt);
  }
  return at::mm(a, b);
}

// The grain of at::parallel_for for rows of `per_row` element operations.
int64_t grain(int64_t per_row) {
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(per_row, 1));
}

// Samples of images [n0, n0 + nb): entry ((i * OG + og) * K + tap) * P + pos, i = n - n0.
template <typename scalar_t, typename acc_t>
void build_table(const Problem& p, int64_t n0, int64_t nb, std::vector<Sample<acc_t>>& table) {
  const Geometry& g = p.g;
  const int64_t P = g.positions(), K = g.taps(), OG = g.offset_groups;
  table.resize(static_cast<size_t>(nb * OG * K * P));
  const scalar_t* off = p.offset.const_data_ptr<scalar_t>();
  const scalar_t* msk = data_or_null<scalar_t>(p.mask);
  Sample<acc_t>* t = table.data();
  at::parallel_for(0, nb * OG * K, grain(P * 8), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t n = n0 + r / (OG * K), og = r / K % OG, tap = r % K;
      for (int64_t pos = 0; pos < P; ++pos) {
        t[r * P + pos] = make_sample<acc_t>(g, off, msk, n, og, tap, pos);
      }
    }
  });
}

// columns (C * K, nb * P) of images [n0, n0 + nb).
template <typename scalar_t, typename acc_t>
void im2col(const Problem& p, int64_t n0, int64_t nb, const std::vector<Sample<acc_t>>& table,
            acc_t* cols) {
  const Geometry& g = p.g;
  const int64_t P = g.positions(), K = g.taps(), C = g.C, HW = g.H * g.W;
  const int64_t per_og = C / g.offset_groups, width = nb * P;
  const scalar_t* in = p.input.const_data_ptr<scalar_t>();
  at::parallel_for(0, nb * C, grain(K * P * 4), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t i = r / C, c = r % C, og = c / per_og;
      const scalar_t* plane = in + ((n0 + i) * C + c) * HW;
      for (int64_t tap = 0; tap < K; ++tap) {
        const Sample<acc_t>* s = table.data() + ((i * g.offset_groups + og) * K + tap) * P;
        acc_t* row = cols + (c * K + tap) * width + i * P;
        for (int64_t pos = 0; pos < P; ++pos) row[pos] = sample_value(s[pos], s[pos].w, plane);
      }
    }
  });
}

template <typename scalar_t>
void forward_cpu(const Problem& p, at::Tensor& output) {
  using acc_t = acc_type_t<scalar_t>;
  const Geometry& g = p.g;
  const int64_t P = g.positions(), K = g.taps();
  const int64_t cin_g = g.C / g.groups * K, cout_g = g.C_out / g.groups;
  const auto acc = p.input.options().dtype(c10::CppTypeToScalarType<acc_t>::value);
  const at::Tensor w = p.weight.to(acc.dtype()).reshape({g.C_out, cin_g});
  const at::Tensor bias =
      p.bias.defined() ? p.bias.to(acc.dtype()).view({g.C_out, 1}) : at::Tensor();
  const int64_t chunk = images_per_chunk<acc_t>(g);
  std::vector<Sample<acc_t>> table;
  for (int64_t n0 = 0; n0 < g.N; n0 += chunk) {
    const int64_t nb = std::min(chunk, g.N - n0);
    build_table<scalar_t, acc_t>(p, n0, nb, table);
    at::Tensor cols = at::empty({g.C * K, nb * P}, acc);
    im2col<scalar_t, acc_t>(p, n0, nb, table, cols.mutable_data_ptr<acc_t>());
    std::vector<at::Tensor> parts;
    for (int64_t gr = 0; gr < g.groups; ++gr) {
      parts.push_back(product(w.narrow(0, gr * cout_g, cout_g), cols.narrow(0, gr * cin_g, cin_g)));
    }
    at::Tensor out = g.groups == 1 ? parts[0] : at::cat(parts, 0);
    if (bias.defined()) out.add_(bias);
    output.narrow(0, n0, nb).copy_(out.view({g.C_out, nb, g.H_out, g.W_out}).transpose(0, 1));
  }
}

template <typename scalar_t>
void backward_cpu(const BackwardProblem& b, at::Tensor& grad_input, at::Tensor& grad_weight,
                  at::Tensor& grad_offset, at::Tensor& grad_mask) {
  using acc_t = acc_type_t<scalar_t>;
  const Problem& p = b.p;
  const Geometry& g = p.g;
  const int64_t P = g.positions(), K = g.taps(), C = g.C, HW = g.H * g.W, OG = g.offset_groups;
  const int64_t cin_g = C / g.groups * K, cout_g = g.C_out / g.groups, per_og = C / OG;
  const auto acc = p.input.options().dtype(c10::CppTypeToScalarType<acc_t>::value);
  const at::Tensor w = p.weight.to(acc.dtype()).reshape({g.C_out, cin_g});
  at::Tensor gw = at::zeros({g.C_out, cin_g}, acc);
  const int64_t chunk = images_per_chunk<acc_t>(g);
  const scalar_t* in = p.input.const_data_ptr<scalar_t>();
  scalar_t* gin = grad_input.mutable_data_ptr<scalar_t>();
  scalar_t* goff = grad_offset.mutable_data_ptr<scalar_t>();
  scalar_t* gmask = p.mask.defined() ? grad_mask.mutable_data_ptr<scalar_t>() : nullptr;
  std::vector<Sample<acc_t>> table;
  for (int64_t n0 = 0; n0 < g.N; n0 += chunk) {
    const int64_t nb = std::min(chunk, g.N - n0), width = nb * P;
    build_table<scalar_t, acc_t>(p, n0, nb, table);
    at::Tensor cols = at::empty({C * K, width}, acc);
    im2col<scalar_t, acc_t>(p, n0, nb, table, cols.mutable_data_ptr<acc_t>());
    // grad of the chunk as (C_out, nb * P)
    const at::Tensor gout = b.grad.narrow(0, n0, nb)
                                .view({nb, g.C_out, P})
                                .transpose(0, 1)
                                .to(acc.dtype())
                                .reshape({g.C_out, width});
    std::vector<at::Tensor> parts;
    for (int64_t gr = 0; gr < g.groups; ++gr) {
      const at::Tensor go = gout.narrow(0, gr * cout_g, cout_g);
      gw.narrow(0, gr * cout_g, cout_g).add_(product(go, cols.narrow(0, gr * cin_g, cin_g).t()));
      parts.push_back(product(w.narrow(0, gr * cout_g, cout_g).t(), go));
    }
    const at::Tensor gcols = (g.groups == 1 ? parts[0] : at::cat(parts, 0)).contiguous();
    const acc_t* gc = gcols.const_data_ptr<acc_t>();
    // offset and mask: per (image, offset group, tap), summed over the group's channels
    at::parallel_for(0, nb * OG * K, grain(per_og * P * 12), [&](int64_t r0, int64_t r1) {
      std::vector<acc_t> dy(P), dx(P), dm(P);
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t i = r / (OG * K), og = r / K % OG, tap = r % K, n = n0 + i;
        const Sample<acc_t>* s = table.data() + r * P;
        std::fill(dy.begin(), dy.end(), acc_t(0));
        std::fill(dx.begin(), dx.end(), acc_t(0));
        std::fill(dm.begin(), dm.end(), acc_t(0));
        for (int64_t c = og * per_og; c < (og + 1) * per_og; ++c) {
          const scalar_t* plane = in + (n * C + c) * HW;
          const acc_t* grow = gc + (c * K + tap) * width + i * P;
          for (int64_t pos = 0; pos < P; ++pos) {
            const acc_t gv = grow[pos];
            dy[pos] += gv * sample_value(s[pos], s[pos].wy, plane);
            dx[pos] += gv * sample_value(s[pos], s[pos].wx, plane);
            dm[pos] += gv * sample_value(s[pos], s[pos].wu, plane);
          }
        }
        scalar_t* oy = goff + ((n * OG + og) * 2 * K + 2 * tap) * P;
        for (int64_t pos = 0; pos < P; ++pos) {
          oy[pos] = static_cast<scalar_t>(dy[pos] * s[pos].mask);
          oy[P + pos] = static_cast<scalar_t>(dx[pos] * s[pos].mask);
        }
        if (gmask) {
          scalar_t* om = gmask + ((n * OG + og) * K + tap) * P;
          for (int64_t pos = 0; pos < P; ++pos) om[pos] = static_cast<scalar_t>(dm[pos]);
        }
      }
    });
    // input: col2im, one task per (image, channel) plane
    at::parallel_for(0, nb * C, grain(K * P * 4), [&](int64_t r0, int64_t r1) {
      std::vector<acc_t> plane(HW);
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t i = r / C, c = r % C, og = c / per_og;
        std::fill(plane.begin(), plane.end(), acc_t(0));
        for (int64_t tap = 0; tap < K; ++tap) {
          const Sample<acc_t>* s = table.data() + ((i * OG + og) * K + tap) * P;
          const acc_t* grow = gc + (c * K + tap) * width + i * P;
          for (int64_t pos = 0; pos < P; ++pos) {
            for (int t = 0; t < 4; ++t) {
              if (s[pos].idx[t] >= 0) plane[s[pos].idx[t]] += grow[pos] * s[pos].w[t];
            }
          }
        }
        scalar_t* dst = gin + ((n0 + i) * C + c) * HW;
        for (int64_t e = 0; e < HW; ++e) dst[e] = static_cast<scalar_t>(plane[e]);
      }
    });
  }
  grad_weight.copy_(gw.view(p.weight.sizes()));
}

at::Tensor deform_conv2d_cpu(const at::Tensor& input, const at::Tensor& weight,
                             const at::Tensor& offset, const std::optional<at::Tensor>& mask,
                             const std::optional<at::Tensor>& bias, int64_t stride_h,
                             int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dil_h,
                             int64_t dil_w, int64_t groups, int64_t offset_groups) {
  const Problem p = prepare("deform_conv2d", input, weight, offset, mask, bias, stride_h, stride_w,
                            pad_h, pad_w, dil_h, dil_w, groups, offset_groups);
  at::Tensor output = allocate_output(p);
  KZ_DISPATCH_FLOATING_TYPES(input.scalar_type(), "deform_conv2d",
                             [&] { forward_cpu<scalar_t>(p, output); });
  return output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> deform_conv2d_backward_cpu(
    const at::Tensor& grad, const at::Tensor& input, const at::Tensor& weight,
    const at::Tensor& offset, const std::optional<at::Tensor>& mask,
    const std::optional<at::Tensor>& bias, int64_t stride_h, int64_t stride_w, int64_t pad_h,
    int64_t pad_w, int64_t dil_h, int64_t dil_w, int64_t groups, int64_t offset_groups) {
  const BackwardProblem b =
      prepare_backward(grad, input, weight, offset, mask, bias, stride_h, stride_w, pad_h, pad_w,
                       dil_h, dil_w, groups, offset_groups);
  Grads g = allocate_grads(b);
  KZ_DISPATCH_FLOATING_TYPES(input.scalar_type(), "_deform_conv2d_backward", [&] {
    backward_cpu<scalar_t>(b, g.input, g.weight, g.offset, g.mask);
  });
  return g.tuple();
}

}  // namespace
}  // namespace deform_detail
}  // namespace kernelzoo

TORCH_LIBRARY_IMPL(kernelzoo, CPU, m) {
  m.impl("deform_conv2d", &kernelzoo::deform_detail::deform_conv2d_cpu);
  m.impl("_deform_conv2d_backward", &kernelzoo::deform_detail::deform_conv2d_backward_cpu);
}
