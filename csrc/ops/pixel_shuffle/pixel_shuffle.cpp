// pixel_shuffle / pixel_unshuffle: schemas, argument checks and output
// allocation shared by the CPU and CUDA entry points (prepare), and the C++ API.
#include "pixel_shuffle.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/_empty_affine_quantized.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "../../common/host_alloc.h"
#include "../../common/library.h"
#include "pixel_shuffle_args.h"

namespace kernelzoo {

namespace pixel_shuffle_detail {

Problem prepare(const at::Tensor& input, int64_t factor, Direction direction) {
  const bool shuffle = direction == Direction::Shuffle;
  const char* op = shuffle ? "pixel_shuffle" : "pixel_unshuffle";
  const char* factor_name = shuffle ? "upscale_factor" : "downscale_factor";
  TORCH_CHECK(input.dim() >= 3, op,
              " expects input to have at least 3 dimensions, but got input with ",
              input.dim(), " dimension(s)");
  TORCH_CHECK(factor > 0, op, " expects a positive ", factor_name, ", but got ", factor);
  // Quantized tensors (QuantizedCPU kernels) move their integers; the output
  // keeps the input's scale and zero point. A per-channel scheme would need
  // its parameters permuted with the channels: torch rejects it too.
  TORCH_CHECK(!input.is_quantized() || input.qscheme() == at::kPerTensorAffine, op,
              " supports per-tensor affine quantized tensors only, but got ",
              c10::toString(input.qscheme()));
  const int64_t c = input.size(-3), h = input.size(-2), w = input.size(-1);
  const int64_t r = factor;
  // r*r overflows only for factors no tensor could satisfy; reject them plainly.
  TORCH_CHECK(r <= (int64_t{1} << 31), op, ": ", factor_name, "=", r, " is too large");
  const int64_t rr = r * r;
  if (shuffle) {
    TORCH_CHECK(c % rr == 0, op,
                " expects its input's 'channel' dimension to be divisible by the square of "
                "upscale_factor, but input.size(-3)=", c, " is not divisible by ", rr);
  } else {
    TORCH_CHECK(h % r == 0, op, " expects height to be divisible by downscale_factor, but "
                "input.size(-2)=", h, " is not divisible by ", r);
    TORCH_CHECK(w % r == 0, op, " expects width to be divisible by downscale_factor, but "
                "input.size(-1)=", w, " is not divisible by ", r);
  }

  std::vector<int64_t> out_sizes(input.sizes().begin(), input.sizes().end() - 3);
  if (shuffle) {
    out_sizes.insert(out_sizes.end(), {c / rr, h * r, w * r});
  } else {
    out_sizes.insert(out_sizes.end(), {c * rr, h / r, w / r});
  }
  // As torch: a 4-d input whose strides look channels_last gives a channels_last
  // output; everything else (including 5-d channels_last_3d) gives a contiguous one.
  const bool channels_last =
      input.dim() == 4 && input.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
  Problem p;
  const auto format = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  if (input.is_quantized()) {
    p.output = at::_empty_affine_quantized(out_sizes, input.options(), input.q_scale(),
                                           input.q_zero_point(), format);
  } else {
    p.output = input.is_cpu() ? empty_cpu_output(out_sizes, input.options(), format)
                              : at::empty(out_sizes, input.options().memory_format(format));
  }
  p.channels_last = channels_last;
  p.direction = direction;
  p.elem_size = static_cast<int64_t>(input.element_size());
  if (p.output.numel() == 0) {
    return p;
  }
  // Flatten leading dims into one batch dim: a view whenever the strides allow
  // it (always for the output we allocated), a copy otherwise.
  auto as4d = [](const at::Tensor& t) {
    return t.dim() == 3 ? t.unsqueeze(0) : t.flatten(0, t.dim() - 4);
  };
  p.src = as4d(input);
  p.dst = as4d(p.output);
  const at::Tensor& lo = shuffle ? p.src : p.dst;
  const at::Tensor& hi = shuffle ? p.dst : p.src;
  p.shape = Shape{hi.size(0), hi.size(1), lo.size(2), lo.size(3), r};
  p.lo = Strides4{lo.stride(0), lo.stride(1), lo.stride(2), lo.stride(3)};
  p.hi = Strides4{hi.stride(0), hi.stride(1), hi.stride(2), hi.stride(3)};
  return p;
}

}  // namespace pixel_shuffle_detail

at::Tensor pixel_shuffle(const at::Tensor& input, int64_t upscale_factor) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("kernelzoo::pixel_shuffle", "")
                       .typed<at::Tensor(const at::Tensor&, int64_t)>();
  return op.call(input, upscale_factor);
}

at::Tensor pixel_unshuffle(const at::Tensor& input, int64_t downscale_factor) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("kernelzoo::pixel_unshuffle", "")
                       .typed<at::Tensor(const at::Tensor&, int64_t)>();
  return op.call(input, downscale_factor);
}

}  // namespace kernelzoo

TORCH_LIBRARY_FRAGMENT(kernelzoo, m) {
  kernelzoo::define_ops(m, {
                               "pixel_shuffle(Tensor self, int upscale_factor) -> Tensor",
                               "pixel_unshuffle(Tensor self, int downscale_factor) -> Tensor",
                           });
}
