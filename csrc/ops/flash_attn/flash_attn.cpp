// flash attention: the schemas of the forward, backward and kvcache ops, the
// argument checks and output allocation that the entry points share
// (prepare_*), and the C++ API. Kernels: flash_attn_cpu.cpp (CPU) and
// flash_attn_cuda.cu (CUDA).
#include "flash_attn.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/csrc/autograd/autograd_not_implemented_fallback.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <string>

#include "../../common/dtype_names.h"
#include "../../common/host_alloc.h"
#include "../../common/library.h"
#include "../../common/tensor_data.h"
#include "flash_attn_args.h"

TORCH_LIBRARY_FRAGMENT(kernelzoo, m) {
  kernelzoo::define_ops(
      m,
      {
          "flash_attn_forward(Tensor q, Tensor k, Tensor v, Tensor? cu_seqlens_q, "
          "Tensor? cu_seqlens_k, SymInt max_seqlen_q, SymInt max_seqlen_k, float dropout_p, "
          "float softmax_scale, int window_left, int window_right, float softcap, "
          "Tensor? alibi_slopes, bool return_softmax, Tensor? dropout_seed, int offset, "
          "bool deterministic=False) -> (Tensor out, Tensor softmax_lse, Tensor S_dmask)",
          "_flash_attn_backward(Tensor dout, Tensor q, Tensor k, Tensor v, Tensor out, "
          "Tensor softmax_lse, Tensor? cu_seqlens_q, Tensor? cu_seqlens_k, SymInt max_seqlen_q, "
          "SymInt max_seqlen_k, float dropout_p, float softmax_scale, int window_left, "
          "int window_right, float softcap, Tensor? alibi_slopes, bool deterministic, "
          "Tensor? dropout_seed, "
          "int offset) -> (Tensor dq, Tensor dk, Tensor dv)",
          "flash_attn_kvcache(Tensor q, Tensor(a!) k_cache, Tensor(b!) v_cache, Tensor? k, "
          "Tensor? v, Tensor? cache_seqlens, Tensor? cache_batch_idx, float softmax_scale, "
          "int window_left, int window_right, float softcap, Tensor? alibi_slopes) "
          "-> (Tensor out, Tensor softmax_lse)",
      });
}

// The forward's autograd formula is registered from Python (ops/flash_attn.py).
// The backward op (no double backward) and the kvcache op (decoding, in place)
// are not differentiable: differentiating through them raises.
TORCH_LIBRARY_IMPL(kernelzoo, Autograd, m) {
  m.impl("_flash_attn_backward", torch::autograd::autogradNotImplementedFallback());
  m.impl("flash_attn_kvcache", torch::autograd::autogradNotImplementedFallback());
}

namespace kernelzoo {
namespace flash_attn_detail {
namespace {

// The last dimension contiguous, as the kernels read rows of a head.
at::Tensor rows_contiguous(const at::Tensor& t) {
  return t.size(-1) <= 1 || t.stride(-1) == 1 ? t : t.contiguous();
}

void check_options(const Options& o) {
  TORCH_CHECK(o.dropout_p >= 0 && o.dropout_p < 1, "flash_attn: dropout_p must be in [0, 1), but got ",
              o.dropout_p);
  TORCH_CHECK(o.softcap >= 0 && std::isfinite(o.softcap),
              "flash_attn: softcap must be 0 (off) or positive, but got ", o.softcap);
  TORCH_CHECK(std::isfinite(o.softmax_scale), "flash_attn: softmax_scale must be finite, but got ",
              o.softmax_scale);
  TORCH_CHECK(o.window_left >= -1 && o.window_right >= -1,
              "flash_attn: window_size entries must be -1 (unbounded) or non-negative, but got (",
              o.window_left, ", ", o.window_right, ")");
  TORCH_CHECK(o.seed >= 0 && o.offset >= 0, "flash_attn: the dropout seed and offset must be "
              "non-negative, but got ", o.seed, " and ", o.offset);
  TORCH_CHECK(o.dropout_p == 0 || o.has_seed, "flash_attn: dropout needs dropout_seed (an int64 "
              "tensor of one element; kernelzoo.ops draws it from torch's generator)");
}

// cache: k and v are KV caches whose rows q's batch reaches through
// cache_batch_idx, so their batch size is free.
void check_qkv(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool varlen,
               bool cache = false) {
  const int64_t dims = varlen ? 3 : 4;
  const char* shape = varlen ? "(total, nheads, headdim)" : "(batch, seqlen, nheads, headdim)";
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor*>{"q", &q}, {"k", &k},
                                {"v", &v}}) {
    TORCH_CHECK(t->dim() == dims, "flash_attn: expected ", name, " of shape ", shape,
                varlen ? " (cu_seqlens given)" : "", ", but got a tensor of shape ", t->sizes());
  }
  TORCH_CHECK(is_float_dtype(q.scalar_type()),
              "flash_attn: expected floating-point q, k and v (float64, float32, float16 or "
              "bfloat16), but got q of dtype ", dtype_name(q.scalar_type()));
  TORCH_CHECK(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(),
              "flash_attn: q, k and v must have the same dtype, but got ",
              dtype_name(q.scalar_type()), ", ", dtype_name(k.scalar_type()), " and ",
              dtype_name(v.scalar_type()));
  TORCH_CHECK(k.device() == q.device() && v.device() == q.device(),
              "flash_attn: q, k and v must be on the same device, but got ", q.device(), ", ",
              k.device(), " and ", v.device());
  if (!varlen && !cache) {
    TORCH_CHECK(k.size(0) == q.size(0) && v.size(0) == q.size(0),
                "flash_attn: q, k and v must have the same batch size, but got ", q.size(0),
                ", ", k.size(0), " and ", v.size(0));
  }
  const int64_t r = dims - 3;  // the row dimension
  TORCH_CHECK(k.size(r) == v.size(r), "flash_attn: k and v must have the same number of ",
              varlen ? "tokens" : "keys (seqlen_k)", ", but got ", k.size(r), " and ", v.size(r));
  TORCH_CHECK(k.size(-2) == v.size(-2), "flash_attn: k and v must have the same number of heads, "
              "but got ", k.size(-2), " and ", v.size(-2));
  TORCH_CHECK(k.size(-2) > 0 && q.size(-2) % k.size(-2) == 0,
              "flash_attn: the number of query heads (", q.size(-2), ") must be a multiple of "
              "the number of key/value heads (", k.size(-2), ")");
  TORCH_CHECK(q.size(-1) == k.size(-1), "flash_attn: q and k must have the same head dimension, "
              "but got ", q.size(-1), " and ", k.size(-1));
}

// A contiguous host copy of t (t itself when it is already one).
at::Tensor host_copy(const at::Tensor& t) {
  return t.is_cpu() ? t.contiguous() : t.to(at::kCPU).contiguous();
}

// cu_seqlens: int32 (batch + 1), starting at 0, non-decreasing, ending at the
// number of tokens; max_seqlen at least every length. Returns the batch size.
int64_t check_cu_seqlens(const char* name, const at::Tensor& cu, int64_t total,
                         int64_t max_seqlen, const at::Tensor& q) {
  TORCH_CHECK(cu.scalar_type() == at::kInt, "flash_attn: ", name, " must be int32, but got ",
              dtype_name(cu.scalar_type()));
  TORCH_CHECK(cu.dim() == 1 && cu.size(0) >= 1, "flash_attn: ", name,
              " must be a 1-d tensor of batch + 1 offsets, but got shape ", cu.sizes());
  TORCH_CHECK(cu.device() == q.device(), "flash_attn: ", name, " must be on q's device (",
              q.device(), "), but got ", cu.device());
  const at::Tensor c = host_copy(cu);  // checked on the host (on CUDA: a copy and a sync)
  const int32_t* p = c.const_data_ptr<int32_t>();
  const int64_t n = c.size(0);
  TORCH_CHECK(p[0] == 0, "flash_attn: ", name, " must start at 0, but starts at ", p[0]);
  for (int64_t i = 1; i < n; ++i) {
    TORCH_CHECK(p[i] >= p[i - 1], "flash_attn: ", name, " must be non-decreasing, but ", name,
                "[", i, "] = ", p[i], " < ", name, "[", i - 1, "] = ", p[i - 1]);
    TORCH_CHECK(p[i] - p[i - 1] <= max_seqlen, "flash_attn: max_seqlen (", max_seqlen,
                ") is smaller than sequence ", i - 1, "'s length ", p[i] - p[i - 1], " in ", name);
  }
  TORCH_CHECK(p[n - 1] == total, "flash_attn: ", name, " must end at the number of tokens (",
              total, "), but ends at ", p[n - 1]);
  return n - 1;
}

void check_alibi(const at::Tensor& a, int64_t batch, int64_t nheads, const at::Tensor& q) {
  TORCH_CHECK(a.scalar_type() == at::kFloat, "flash_attn: alibi_slopes must be float32, but got ",
              dtype_name(a.scalar_type()));
  TORCH_CHECK(a.device() == q.device(), "flash_attn: alibi_slopes must be on q's device (",
              q.device(), "), but got ", a.device());
  TORCH_CHECK((a.dim() == 1 && a.size(0) == nheads) ||
                  (a.dim() == 2 && a.size(0) == batch && a.size(1) == nheads),
              "flash_attn: alibi_slopes must have shape (nheads,) = (", nheads,
              ",) or (batch, nheads) = (", batch, ", ", nheads, "), but got ", a.sizes());
}

void set_strides(const at::Tensor& t, bool varlen, int64_t& batch, int64_t& row, int64_t& head) {
  batch = varlen ? 0 : t.stride(0);
  row = t.stride(varlen ? 0 : 1);
  head = t.stride(varlen ? 1 : 2);
}

}  // namespace

namespace {

Forward prepare(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
                const std::optional<at::Tensor>& cu_seqlens_q,
                const std::optional<at::Tensor>& cu_seqlens_k, int64_t max_seqlen_q,
                int64_t max_seqlen_k, const std::optional<at::Tensor>& alibi_slopes,
                const Options& o, bool return_softmax, bool cache) {
  TORCH_CHECK(cu_seqlens_q.has_value() == cu_seqlens_k.has_value(),
              "flash_attn: give both cu_seqlens_q and cu_seqlens_k (varlen) or neither (dense)");
  const bool varlen = cu_seqlens_q.has_value();
  check_qkv(q_in, k_in, v_in, varlen, cache);
  check_options(o);
  Forward f;
  f.varlen = varlen;
  f.q = rows_contiguous(q_in);
  f.k = rows_contiguous(k_in);
  f.v = rows_contiguous(v_in);
  FlashParams& p = f.params;
  p.nheads = f.q.size(-2);
  p.nheads_k = f.k.size(-2);
  p.headdim = f.q.size(-1);
  p.headdim_v = f.v.size(-1);
  if (varlen) {
    TORCH_CHECK(max_seqlen_q >= 0 && max_seqlen_k >= 0, "flash_attn: max_seqlen_q and "
                "max_seqlen_k must be non-negative, but got ", max_seqlen_q, " and ", max_seqlen_k);
    p.batch = check_cu_seqlens("cu_seqlens_q", *cu_seqlens_q, f.q.size(0), max_seqlen_q, f.q);
    const int64_t bk = check_cu_seqlens("cu_seqlens_k", *cu_seqlens_k, f.k.size(0), max_seqlen_k, f.q);
    TORCH_CHECK(bk == p.batch, "flash_attn: cu_seqlens_q and cu_seqlens_k must describe the same "
                "number of sequences, but got ", p.batch, " and ", bk);
    f.cu_seqlens_q = cu_seqlens_q->contiguous();
    f.cu_seqlens_k = cu_seqlens_k->contiguous();
    p.seqlen_q = max_seqlen_q;
    p.seqlen_k = max_seqlen_k;
  } else {
    p.batch = f.q.size(0);
    p.seqlen_q = f.q.size(1);
    p.seqlen_k = f.k.size(1);
  }
  if (alibi_slopes.has_value()) {
    check_alibi(*alibi_slopes, p.batch, p.nheads, f.q);
    f.alibi_slopes = alibi_slopes->contiguous();
    p.alibi_batch_stride = f.alibi_slopes.dim() == 2 ? p.nheads : 0;
  }
  set_strides(f.q, varlen, p.q_batch_stride, p.q_row_stride, p.q_head_stride);
  set_strides(f.k, varlen, p.k_batch_stride, p.k_row_stride, p.k_head_stride);
  set_strides(f.v, varlen, p.v_batch_stride, p.v_row_stride, p.v_head_stride);
  std::vector<int64_t> out_sizes(f.q.sizes().begin(), f.q.sizes().end());
  out_sizes.back() = p.headdim_v;
  f.out = empty_output(out_sizes, f.q.options());
  set_strides(f.out, varlen, p.o_batch_stride, p.o_row_stride, p.o_head_stride);
  // float32 as flash-attn's; float64 for float64 inputs, so that their backward,
  // which recomputes the probabilities from it, keeps float64 precision.
  const auto lse_options =
      f.q.options().dtype(f.q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat);
  if (varlen) {
    f.lse = empty_output({p.nheads, f.q.size(0)}, lse_options);
    p.lse_batch_stride = 0;
    p.lse_head_stride = f.q.size(0);
  } else {
    f.lse = empty_output({p.batch, p.nheads, p.seqlen_q}, lse_options);
    p.lse_batch_stride = p.nheads * p.seqlen_q;
    p.lse_head_stride = p.seqlen_q;
  }
  f.s_dmask = return_softmax ? at::zeros({p.batch, p.nheads, p.seqlen_q, p.seqlen_k}, f.q.options())
                             : at::empty({0}, f.q.options());
  p.scale = o.softmax_scale;
  p.softcap = o.softcap;
  p.window_left = o.window_left;
  p.window_right = o.window_right;
  p.dropout_p = o.dropout_p;
  p.dropout_threshold = static_cast<uint32_t>(std::ceil(o.dropout_p * 16777216.0));
  p.seed = static_cast<uint64_t>(o.seed);
  p.offset = static_cast<uint64_t>(o.offset);
  return f;
}

}  // namespace

Options make_options(double dropout_p, double softmax_scale, int64_t window_left, int64_t window_right,
                double softcap, const std::optional<at::Tensor>& dropout_seed, int64_t offset) {
  Options o;
  if (dropout_seed.has_value()) {
    TORCH_CHECK(dropout_seed->numel() == 1 && dropout_seed->scalar_type() == at::kLong,
                "flash_attn: dropout_seed must be an int64 tensor of one element, but got ",
                dropout_seed->scalar_type(), " of shape ", dropout_seed->sizes());
    o.seed = dropout_seed->item<int64_t>();
    o.has_seed = true;
  }
  o.dropout_p = dropout_p;
  o.softmax_scale = softmax_scale;
  o.window_left = window_left;
  o.window_right = window_right;
  o.softcap = softcap;
  o.offset = offset;
  return o;
}

Forward prepare_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                        const std::optional<at::Tensor>& cu_seqlens_q,
                        const std::optional<at::Tensor>& cu_seqlens_k, int64_t max_seqlen_q,
                        int64_t max_seqlen_k, const std::optional<at::Tensor>& alibi_slopes,
                        const Options& o, bool return_softmax) {
  return prepare(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, alibi_slopes, o,
                 return_softmax, false);
}

Backward prepare_backward(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k,
                          const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
                          const std::optional<at::Tensor>& cu_seqlens_q,
                          const std::optional<at::Tensor>& cu_seqlens_k, int64_t max_seqlen_q,
                          int64_t max_seqlen_k, const std::optional<at::Tensor>& alibi_slopes,
                          const Options& o) {
  Backward b;
  b.f = prepare_forward(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                        alibi_slopes, o, false);
  const Forward& f = b.f;
  TORCH_CHECK(out.sizes() == f.out.sizes() && dout.sizes() == f.out.sizes(),
              "_flash_attn_backward: expected out and dout of shape ", f.out.sizes(),
              ", but got ", out.sizes(), " and ", dout.sizes());
  TORCH_CHECK(out.scalar_type() == q.scalar_type() && dout.scalar_type() == q.scalar_type(),
              "_flash_attn_backward: out and dout must have q's dtype (", dtype_name(q.scalar_type()),
              "), but got ", dtype_name(out.scalar_type()), " and ", dtype_name(dout.scalar_type()));
  TORCH_CHECK(lse.sizes() == f.lse.sizes() && lse.scalar_type() == f.lse.scalar_type(),
              "_flash_attn_backward: expected softmax_lse ", dtype_name(f.lse.scalar_type()),
              " of shape ", f.lse.sizes(), ", but got ", dtype_name(lse.scalar_type()),
              " of shape ", lse.sizes());
  // The kernels read out and dout with the strides of f.out, a contiguous
  // tensor of their shape (set by prepare_forward).
  b.f.out = out.contiguous();
  b.f.lse = lse.contiguous();
  b.dout = dout.contiguous();
  b.dq = empty_output(f.q.sizes(), f.q.options());
  b.dk = empty_output(f.k.sizes(), f.k.options());
  b.dv = empty_output(f.v.sizes(), f.v.options());
  return b;
}

Forward prepare_kvcache(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                        const std::optional<at::Tensor>& k, const std::optional<at::Tensor>& v,
                        const std::optional<at::Tensor>& cache_seqlens,
                        const std::optional<at::Tensor>& cache_batch_idx,
                        const std::optional<at::Tensor>& alibi_slopes, const Options& o) {
  TORCH_CHECK(k.has_value() == v.has_value(),
              "flash_attn_with_kvcache: give both k and v (to append to the cache) or neither");
  TORCH_CHECK(k_cache.dim() == 4 && v_cache.dim() == 4,
              "flash_attn_with_kvcache: expected k_cache and v_cache of shape (batch_cache, "
              "seqlen_cache, nheads_k, headdim), but got ", k_cache.sizes(), " and ",
              v_cache.sizes());
  TORCH_CHECK(q.dim() == 4, "flash_attn_with_kvcache: expected q of shape (batch, seqlen_q, "
              "nheads, headdim), but got a tensor of shape ", q.sizes());
  TORCH_CHECK(k_cache.size(0) == v_cache.size(0) && k_cache.size(1) == v_cache.size(1),
              "flash_attn_with_kvcache: k_cache and v_cache must have the same batch and "
              "sequence sizes, but got ", k_cache.sizes(), " and ", v_cache.sizes());
  const int64_t batch = q.size(0), cache_rows = k_cache.size(0), capacity = k_cache.size(1);
  // The rows of the caches q attends to, as a batch of the dense problem.
  at::Tensor idx, idx_host;  // on q's device, and on the host
  if (cache_batch_idx.has_value()) {
    const at::Tensor& c = *cache_batch_idx;
    TORCH_CHECK(c.scalar_type() == at::kInt && c.dim() == 1 && c.size(0) == batch,
                "flash_attn_with_kvcache: cache_batch_idx must be int32 of shape (batch,) = (",
                batch, ",), but got ", dtype_name(c.scalar_type()), " of shape ", c.sizes());
    TORCH_CHECK(c.device() == q.device(), "flash_attn_with_kvcache: cache_batch_idx must be on "
                "q's device");
    idx = c.contiguous();
    idx_host = host_copy(c);
    const int32_t* pi = idx_host.const_data_ptr<int32_t>();
    for (int64_t b = 0; b < batch; ++b) {
      TORCH_CHECK(pi[b] >= 0 && pi[b] < cache_rows, "flash_attn_with_kvcache: cache_batch_idx[",
                  b, "] = ", pi[b], " is not a row of the cache (batch_cache = ", cache_rows, ")");
    }
  } else {
    TORCH_CHECK(cache_rows >= batch, "flash_attn_with_kvcache: without cache_batch_idx, q's "
                "batch (", batch, ") uses the first rows of the cache, but the cache has only ",
                cache_rows);
  }
  const int64_t seqlen_new = k.has_value() ? k->size(1) : 0;
  at::Tensor used;
  if (cache_seqlens.has_value()) {
    const at::Tensor& c = *cache_seqlens;
    TORCH_CHECK(c.scalar_type() == at::kInt && c.dim() == 1 && c.size(0) == batch,
                "flash_attn_with_kvcache: cache_seqlens must be int32 of shape (batch,) = (", batch,
                ",), but got ", dtype_name(c.scalar_type()), " of shape ", c.sizes());
    TORCH_CHECK(c.device() == q.device(), "flash_attn_with_kvcache: cache_seqlens must be on "
                "q's device");
    const at::Tensor cs = host_copy(c);
    used = at::empty({batch}, cs.options());
    const int32_t* pc = cs.const_data_ptr<int32_t>();
    int32_t* pu = used.mutable_data_ptr<int32_t>();
    for (int64_t b = 0; b < batch; ++b) {
      TORCH_CHECK(pc[b] >= 0 && pc[b] + seqlen_new <= capacity, "flash_attn_with_kvcache: "
                  "cache_seqlens[", b, "] = ", pc[b], " plus the ", seqlen_new, " new keys does "
                  "not fit a cache of ", capacity, " positions");
      pu[b] = static_cast<int32_t>(pc[b] + seqlen_new);
    }
  } else {
    TORCH_CHECK(!k.has_value(), "flash_attn_with_kvcache: appending k and v needs cache_seqlens "
                "(where each sequence's new keys go)");
  }
  // The caches are written in place: their rows must be contiguous, as flash-attn requires.
  TORCH_CHECK(k_cache.stride(-1) == 1 && v_cache.stride(-1) == 1,
              "flash_attn_with_kvcache: k_cache and v_cache must have a contiguous last dimension");
  Forward f = prepare(q, k_cache, v_cache, std::nullopt, std::nullopt, 0, 0, alibi_slopes, o,
                      false, /*cache=*/true);
  if (k.has_value()) {
    const at::Tensor& kn = *k;
    const at::Tensor& vn = *v;
    TORCH_CHECK(kn.dim() == 4 && vn.dim() == 4 && kn.size(0) == batch && vn.size(0) == batch &&
                    kn.size(1) == vn.size(1) && kn.size(2) == k_cache.size(2) &&
                    vn.size(2) == v_cache.size(2) && kn.size(3) == k_cache.size(3) &&
                    vn.size(3) == v_cache.size(3),
                "flash_attn_with_kvcache: expected k of shape (batch, seqlen_new, nheads_k, headdim) "
                "= (", batch, ", *, ", k_cache.size(2), ", ", k_cache.size(3), ") and v like it with "
                "v_cache's head dimension, but got ", kn.sizes(), " and ", vn.sizes());
    TORCH_CHECK(kn.scalar_type() == q.scalar_type() && vn.scalar_type() == q.scalar_type() &&
                    kn.device() == q.device() && vn.device() == q.device(),
                "flash_attn_with_kvcache: k and v must have q's dtype and device");
    // Append: cache[row, cache_seqlens[b] + t] = new[b, t].
    const int32_t* pi = data_or_null<int32_t>(idx_host);
    const int32_t* pu = used.const_data_ptr<int32_t>();
    for (int64_t b = 0; b < batch; ++b) {
      const int64_t row = pi ? pi[b] : b;
      const int64_t start = pu[b] - seqlen_new;
      k_cache.select(0, row).narrow(0, start, seqlen_new).copy_(kn.select(0, b));
      v_cache.select(0, row).narrow(0, start, seqlen_new).copy_(vn.select(0, b));
    }
  }
  f.seqused_k = used.defined() ? used.to(q.device()) : used;
  f.kv_batch_idx = idx;
  return f;
}

}  // namespace flash_attn_detail

// --- C++ API -----------------------------------------------------------------------------

std::tuple<at::Tensor, at::Tensor, at::Tensor> flash_attn_forward(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const std::optional<at::Tensor>& cu_seqlens_q, const std::optional<at::Tensor>& cu_seqlens_k,
    int64_t max_seqlen_q, int64_t max_seqlen_k, double dropout_p, double softmax_scale,
    int64_t window_left, int64_t window_right, double softcap,
    const std::optional<at::Tensor>& alibi_slopes, bool return_softmax,
    const std::optional<at::Tensor>& dropout_seed, int64_t offset, bool deterministic) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("kernelzoo::flash_attn_forward", "")
          .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
              const at::Tensor&, const at::Tensor&, const at::Tensor&,
              const std::optional<at::Tensor>&, const std::optional<at::Tensor>&, c10::SymInt,
              c10::SymInt, double, double, int64_t, int64_t, double,
              const std::optional<at::Tensor>&, bool, const std::optional<at::Tensor>&,
              int64_t, bool)>();
  return op.call(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p,
                 softmax_scale, window_left, window_right, softcap, alibi_slopes, return_softmax,
                 dropout_seed, offset, deterministic);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> flash_attn_backward(
    const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& out, const at::Tensor& softmax_lse,
    const std::optional<at::Tensor>& cu_seqlens_q, const std::optional<at::Tensor>& cu_seqlens_k,
    int64_t max_seqlen_q, int64_t max_seqlen_k, double dropout_p, double softmax_scale,
    int64_t window_left, int64_t window_right, double softcap,
    const std::optional<at::Tensor>& alibi_slopes, bool deterministic,
    const std::optional<at::Tensor>& dropout_seed, int64_t offset) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("kernelzoo::_flash_attn_backward", "")
          .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
              const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
              const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
              const std::optional<at::Tensor>&, c10::SymInt, c10::SymInt, double, double, int64_t,
              int64_t, double, const std::optional<at::Tensor>&, bool,
              const std::optional<at::Tensor>&, int64_t)>();
  return op.call(dout, q, k, v, out, softmax_lse, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                 max_seqlen_k, dropout_p, softmax_scale, window_left, window_right, softcap,
                 alibi_slopes, deterministic, dropout_seed, offset);
}

std::tuple<at::Tensor, at::Tensor> flash_attn_kvcache(
    const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
    const std::optional<at::Tensor>& k, const std::optional<at::Tensor>& v,
    const std::optional<at::Tensor>& cache_seqlens, const std::optional<at::Tensor>& cache_batch_idx,
    double softmax_scale, int64_t window_left, int64_t window_right, double softcap,
    const std::optional<at::Tensor>& alibi_slopes) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("kernelzoo::flash_attn_kvcache", "")
          .typed<std::tuple<at::Tensor, at::Tensor>(
              const at::Tensor&, const at::Tensor&, const at::Tensor&,
              const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
              const std::optional<at::Tensor>&, const std::optional<at::Tensor>&, double, int64_t,
              int64_t, double, const std::optional<at::Tensor>&)>();
  return op.call(q, k_cache, v_cache, k, v, cache_seqlens, cache_batch_idx, softmax_scale,
                 window_left, window_right, softcap, alibi_slopes);
}

}  // namespace kernelzoo
