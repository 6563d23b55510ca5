// CPU kernels of flash attention: forward (dense, varlen, kvcache) and backward.
//
// Forward, per (sequence b, query head h, block of kBlockQ query rows), a task:
// the block's queries are read once, then the key/value blocks of kBlockK keys
// that some row of the block sees (flash_attn_math.h: visible_keys) are
// streamed: S = Q K^T on the BLAS (at::mm on the converted tiles), the scores
// scaled, capped and biased (softcap, ALiBi), masked, and folded into a running
// softmax per row (running maximum m and sum l, the output accumulator rescaled
// by exp(m_old - m_new)), the probabilities dropped out by the counter-based
// mask, then O += P V. Memory is O(tile) per thread; no (seqlen_q x seqlen_k)
// buffer exists. Every row's result is computed by one task in a fixed order:
// results do not depend on the thread count.
//
// Backward (flash-attn 2's recomputation from the saved log-sum-exp), with
// every gradient element owned by one task (deterministic, no atomics). With
// enough (batch, key/value head) pairs, one task per pair walks the query
// blocks of its group's heads and their key blocks once, recomputing P and
// dP = dO V^T, and accumulates dQ = scale * dS K, dV = P_drop^T dO and
// dK = scale * dS^T Q. With few pairs (MQA on one sequence), two passes over
// blocks instead: dQ per (b, h, query block), then dK and dV per (b, g, key
// block), each recomputing P and dP. dS = P * (dP - D) with D = rowsum(dO * O),
// dP taking the dropout mask and scaling like P did. K^T and V^T are built
// once per call, as in the forward.
//
// Everything is computed in acc_type_t<scalar_t> (float for float32, float16
// and bfloat16, whose tiles are converted; double for float64).
#include <ATen/Dispatch.h>
#include <ATen/native/CPUBlas.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "../../common/acc_type.h"
#include "../../common/cpu_math.h"
#include "../../common/cpu_vec.h"
#include "../../common/dispatch.h"
#include "../../common/host_alloc.h"
#include "../../common/parallel.h"
#include "../../common/tensor_data.h"
#include "flash_attn_args.h"
#include "flash_attn_math.h"

namespace kernelzoo {
namespace flash_attn_detail {

constexpr int64_t kBlockQ = 128;  // query rows per task
constexpr int64_t kBlockK = 512;  // keys per streamed block
// The backward runs in one pass per (batch, kv head) when there are at least
// this many of them, else in two passes over blocks. A constant, not the
// thread count, so that the choice, hence the result, does not depend on it.
constexpr int64_t kSinglePassTasks = 4;


// Maximum and sum of a row, on 16 (float) or 8 (double) lanes at once: a fixed
// order, so results do not depend on anything but the row.
template <typename acc_t>
KZ_ALWAYS_INLINE acc_t row_max(const acc_t* x, int64_t n) {
  constexpr int kL = 64 / sizeof(acc_t);
  acc_t mx = -std::numeric_limits<acc_t>::infinity();
  int64_t c = 0;
#if defined(KZ_VECTOR_EXTENSIONS)
  using V = typename Lanes<acc_t, kL>::type;
  if (n >= kL) {
    V m;
    std::memcpy(&m, x, sizeof(V));
    for (c = kL; c + kL <= n; c += kL) {
      V v;
      std::memcpy(&v, x + c, sizeof(V));
      m = v > m ? v : m;
    }
    for (int l = 0; l < kL; ++l) mx = m[l] > mx ? m[l] : mx;
  }
#endif
  for (; c < n; ++c) mx = x[c] > mx ? x[c] : mx;
  return mx;
}

template <typename acc_t>
KZ_ALWAYS_INLINE acc_t row_sum(const acc_t* x, int64_t n) {
  constexpr int kL = 64 / sizeof(acc_t);
  acc_t sum = acc_t(0);
  int64_t c = 0;
#if defined(KZ_VECTOR_EXTENSIONS)
  using V = typename Lanes<acc_t, kL>::type;
  V acc = V{};
  for (; c + kL <= n; c += kL) {
    V v;
    std::memcpy(&v, x + c, sizeof(V));
    acc += v;
  }
  for (int l = 0; l < kL; ++l) sum += acc[l];
#endif
  for (; c < n; ++c) sum += x[c];
  return sum;
}

// The scores of one row of a block after S = Q K^T: scaled, capped, biased,
// masked outside [lo, hi) (as column indices of the block); returns the row's
// maximum (-inf when every column is masked). `tanh_out`, when not null,
// receives tanh of the capped score for the backward.
template <typename acc_t>
KZ_ALWAYS_INLINE acc_t transform_row_impl(acc_t* s, int64_t cols, int64_t lo, int64_t hi, acc_t scale,
                                          acc_t softcap, acc_t slope, int64_t diag, acc_t* tanh_out) {
  const acc_t neg_inf = -std::numeric_limits<acc_t>::infinity();
  if (softcap > acc_t(0)) {  // rare: a loop of its own, with tanh
    for (int64_t c = 0; c < cols; ++c) {
      const acc_t t = std::tanh(s[c] * scale / softcap);
      if (tanh_out) tanh_out[c] = t;
      s[c] = softcap * t;
    }
    scale = acc_t(1);
  }
  // ALiBi: -slope * |i + shift - j|, diag = i + shift - j0 being the distance at column 0.
  const acc_t diag_f = static_cast<acc_t>(diag);
  for (int64_t c = 0; c < cols; ++c) {
    const acc_t d = diag_f - static_cast<acc_t>(c);
    const acc_t v = s[c] * scale - slope * (d < acc_t(0) ? -d : d);
    s[c] = (c >= lo && c < hi) ? v : neg_inf;
  }
  return row_max(s, cols);
}

KZ_CPU_CLONES float transform_row(float* s, int64_t cols, int64_t lo, int64_t hi, float scale,
                                  float softcap, float slope, int64_t diag, float* tanh_out) {
  return transform_row_impl(s, cols, lo, hi, scale, softcap, slope, diag, tanh_out);
}
KZ_CPU_CLONES double transform_row(double* s, int64_t cols, int64_t lo, int64_t hi, double scale,
                                   double softcap, double slope, int64_t diag, double* tanh_out) {
  return transform_row_impl(s, cols, lo, hi, scale, softcap, slope, diag, tanh_out);
}

// s[c] = exp(s[c] - shift); returns the sum.
template <typename acc_t>
KZ_ALWAYS_INLINE acc_t exp_row_impl(acc_t* s, int64_t cols, acc_t shift) {
  for (int64_t c = 0; c < cols; ++c) s[c] = exp_lane(s[c] - shift);
  return row_sum(s, cols);
}

KZ_CPU_CLONES float exp_row(float* s, int64_t cols, float shift) { return exp_row_impl(s, cols, shift); }
KZ_CPU_CLONES double exp_row(double* s, int64_t cols, double shift) {
  return exp_row_impl(s, cols, shift);
}

namespace {

// --- sequences and tiles ------------------------------------------------------------------

// Rows [r0, r0 + rows) of a head, `dim` wide, row stride `stride`, converted
// to a contiguous acc_t tile.
template <typename scalar_t, typename acc_t>
void load_tile(const scalar_t* base, int64_t stride, int64_t rows, int64_t dim, acc_t* dst) {
  for (int64_t r = 0; r < rows; ++r) {
    const scalar_t* src = base + r * stride;
    acc_t* d = dst + r * dim;
    for (int64_t c = 0; c < dim; ++c) d[c] = static_cast<acc_t>(src[c]);
  }
}

// The rows of a head as acc_t rows: the input itself when it is already acc_t
// (no copy), else a converted tile in `buf`.
template <typename acc_t>
struct Rows {
  const acc_t* ptr;
  int64_t ld;
};

template <typename scalar_t, typename acc_t>
Rows<acc_t> rows_of(const scalar_t* base, int64_t stride, int64_t rows, int64_t dim, acc_t* buf) {
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    return {base, stride};
  } else {
    load_tile(base, stride, rows, dim, buf);
    return {buf, dim};
  }
}

// Rows [0, rows) of a head, transposed: dst[c * ld + r] = base[r * stride + c].
// In 16 x 16 tiles, so that the strided side touches 16 cache lines at a time.
template <typename scalar_t, typename acc_t>
void load_tile_transposed(const scalar_t* base, int64_t stride, int64_t rows, int64_t dim,
                          acc_t* dst, int64_t ld) {
  constexpr int64_t kT = 16;
  for (int64_t r0 = 0; r0 < rows; r0 += kT) {
    const int64_t r1 = std::min(r0 + kT, rows);
    for (int64_t c0 = 0; c0 < dim; c0 += kT) {
      const int64_t c1 = std::min(c0 + kT, dim);
      for (int64_t c = c0; c < c1; ++c) {
        for (int64_t r = r0; r < r1; ++r) dst[c * ld + r] = static_cast<acc_t>(base[r * stride + c]);
      }
    }
  }
}

template <typename scalar_t, typename acc_t>
void store_tile(const acc_t* src, int64_t rows, int64_t dim, scalar_t* base, int64_t stride) {
  for (int64_t r = 0; r < rows; ++r) {
    const acc_t* s = src + r * dim;
    scalar_t* d = base + r * stride;
    for (int64_t c = 0; c < dim; ++c) d[c] = static_cast<scalar_t>(s[c]);
  }
}

// C (m x n, row stride ldc) = [C +] A B, with A(i, l) = a[i * a_rs + l * a_cs]
// (m x k) and B(l, j) = b[l * b_rs + j * b_cs] (k x n): a transposed operand is
// the same memory with its strides swapped. float32 with both operands
// row-major runs on torch's batch-reduce GEMM micro-kernel (cpublas::brgemm,
// oneDNN), everything else on the BLAS through at::mm / at::addmm on views (no
// copies; a few microseconds of dispatch per call).
template <typename acc_t>
void gemm(int64_t m, int64_t n, int64_t k, const acc_t* a, int64_t a_rs, int64_t a_cs,
          const acc_t* b, int64_t b_rs, int64_t b_cs, acc_t* c, int64_t ldc, bool accumulate) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    if (!accumulate) {
      for (int64_t i = 0; i < m; ++i) std::fill(c + i * ldc, c + i * ldc + n, acc_t(0));
    }
    return;
  }
  if constexpr (std::is_same_v<acc_t, float>) {
    if (a_cs == 1 && b_cs == 1) {
      at::native::cpublas::brgemm(m, n, k, a_rs, b_rs, ldc, accumulate, a, b, c,
                                  /*is_vnni=*/false);
      return;
    }
  }
  const auto opts = at::TensorOptions().dtype(c10::CppTypeToScalarType<acc_t>::value);
  at::Tensor C = at::from_blob(c, {m, n}, {ldc, 1}, opts);
  const at::Tensor A = at::from_blob(const_cast<acc_t*>(a), {m, k}, {a_rs, a_cs}, opts);
  const at::Tensor B = at::from_blob(const_cast<acc_t*>(b), {k, n}, {b_rs, b_cs}, opts);
  if (accumulate) {
    at::addmm_out(C, C, A, B);
  } else {
    at::mm_out(C, A, B);
  }
}

// The dropout decisions of row i (local to the sequence), columns [j0, j0 + cols),
// as 1 (kept) / 0 in keep[].
void dropout_row(const FlashParams& p, int64_t b, int64_t h, int64_t i, int64_t j0, int64_t cols,
                 uint8_t* keep) {
  int64_t c = 0;
  while (c < cols) {
    const int64_t j = j0 + c;
    const Philox4 r = dropout_bits(p.seed, p.offset, b, h, p.nheads, i, j >> 2);
    for (int64_t w = j & 3; w < 4 && c < cols; ++w, ++c) {
      keep[c] = dropout_keep(r.x[w], p.dropout_threshold) ? 1 : 0;
    }
  }
}

template <typename acc_t>
acc_t alibi_slope(const FlashParams& p, int64_t b, int64_t h) {
  return p.alibi_slopes ? static_cast<acc_t>(p.alibi_slopes[b * p.alibi_batch_stride + h])
                        : acc_t(0);
}

// --- forward ---------------------------------------------------------------------------

// A thread's tiles, reused from task to task.
template <typename acc_t>
struct Buffers {
  std::vector<acc_t> q, k, v, s, o, m, l, t, dp, d, dq, dk, dv, pd, pt, kr, qt, ot;
  std::vector<uint8_t> keep;
};

// The pointers of one head of one sequence.
template <typename scalar_t>
struct Head {
  const scalar_t *q, *k, *v;
};

template <typename scalar_t>
Head<scalar_t> head(const FlashParams& p, const Forward& f, const Seq& s, int64_t b, int64_t h) {
  const int64_t hk = h / (p.nheads / p.nheads_k);
  return {f.q.const_data_ptr<scalar_t>() + b * p.q_batch_stride + s.q0 * p.q_row_stride +
              h * p.q_head_stride,
          f.k.const_data_ptr<scalar_t>() + s.kv_b * p.k_batch_stride + s.k0 * p.k_row_stride +
              hk * p.k_head_stride,
          f.v.const_data_ptr<scalar_t>() + s.kv_b * p.v_batch_stride + s.k0 * p.v_row_stride +
              hk * p.v_head_stride};
}

// The tasks of a pass over query blocks: (sequence, first row) pairs.
std::vector<std::pair<int64_t, int64_t>> query_blocks(const FlashParams& p) {
  std::vector<std::pair<int64_t, int64_t>> blocks;
  for (int64_t b = 0; b < p.batch; ++b) {
    const Seq s = sequence(p, b);
    for (int64_t i0 = 0; i0 < s.sq; i0 += kBlockQ) blocks.emplace_back(b, i0);
  }
  return blocks;
}

// K^T of every key/value head, in acc_t, built once per call (a parallel pass)
// and read by every query block of the head: the GEMM S = Q K^T takes row-major
// operands, and transposing a key block per query block cost as much as the
// product. kt(kv batch kb, head hk) is D x ldk, the keys of sequence b at
// columns [k0, k0 + sk). Not built for KV caches (decoding: one query block
// per head, and the cache may be much longer than the keys in use); scores()
// then transposes the block it needs.
template <typename acc_t>
struct KeysT {
  at::Tensor data;  // from the large-buffer cache (host_alloc.h): no page faults on reuse
  int64_t ld = 0;   // keys per head: seqlen_k (dense) or total_k (varlen)
  int64_t dim = 0;  // rows per head: the head dimension
  const acc_t* head(const FlashParams& p, int64_t kb, int64_t hk) const {
    return data.const_data_ptr<acc_t>() + (kb * p.nheads_k + hk) * dim * ld;
  }
};

// t (k or v, `dim` wide, strides [batch, row, head]) transposed per head.
template <typename scalar_t, typename acc_t>
KeysT<acc_t> transpose_heads(const FlashParams& p, const Forward& f, const at::Tensor& t,
                             int64_t dim, int64_t batch_stride, int64_t row_stride,
                             int64_t head_stride) {
  KeysT<acc_t> kt;
  if (p.seqused_k) return kt;  // a KV cache
  const int64_t kv_batches = p.cu_seqlens_k ? 1 : p.batch;
  kt.ld = t.size(f.varlen ? 0 : 1);
  kt.dim = dim;
  const int64_t Hk = p.nheads_k;
  kt.data = empty_output({std::max<int64_t>(kv_batches * Hk * dim * kt.ld, 1)},
                         t.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
  acc_t* dst = kt.data.template mutable_data_ptr<acc_t>();
  const scalar_t* src = t.const_data_ptr<scalar_t>();
  const int64_t chunks = (kt.ld + kBlockK - 1) / kBlockK;
  for_each_task<int>(kv_batches * Hk * chunks, kv_batches * Hk * kt.ld * dim,
                     [&](int64_t task, int&) {
    const int64_t c = task % chunks, head = task / chunks, kb = head / Hk, hk = head % Hk;
    const int64_t j0 = c * kBlockK, n = std::min(kBlockK, kt.ld - j0);
    load_tile_transposed(src + kb * batch_stride + j0 * row_stride + hk * head_stride, row_stride,
                         n, dim, dst + head * dim * kt.ld + j0, kt.ld);
  });
  return kt;
}

template <typename scalar_t, typename acc_t>
KeysT<acc_t> transpose_keys(const FlashParams& p, const Forward& f) {
  return transpose_heads<scalar_t, acc_t>(p, f, f.k, p.headdim, p.k_batch_stride, p.k_row_stride,
                                          p.k_head_stride);
}

// Runs the scores of rows [i0, i1) of (b, h) against keys [j0, j1), the
// queries being `qr`: the transformed scores (masked: -inf) in buf.s (rows x
// (j1 - j0), row stride kBlockK), each row's maximum in buf.d; buf.t receives
// tanh for the backward when softcap is on.
template <typename scalar_t, typename acc_t>
void scores(const FlashParams& p, const Head<scalar_t>& hd, const KeysT<acc_t>& kt,
            const Seq& s, int64_t b, int64_t h, int64_t i0, int64_t i1, int64_t j0, int64_t j1,
            Rows<acc_t> qr, Buffers<acc_t>& buf, bool keep_tanh) {
  const int64_t rows = i1 - i0, cols = j1 - j0, D = p.headdim;
  // S (rows x cols) = Q (rows x D) K^T (D x cols)
  if (kt.ld > 0) {
    const acc_t* ktr = kt.head(p, s.kv_b, h / (p.nheads / p.nheads_k)) + s.k0 + j0;
    gemm<acc_t>(rows, cols, D, qr.ptr, qr.ld, 1, ktr, kt.ld, 1, buf.s.data(), kBlockK, false);
  } else {
    // A KV cache (no K^T): the key rows as they are, K^T being their
    // transposed view, for the BLAS (a decoding step has few query rows).
    const Rows<acc_t> kr = rows_of(hd.k + j0 * p.k_row_stride, p.k_row_stride, cols, D, buf.k.data());
    gemm<acc_t>(rows, cols, D, qr.ptr, qr.ld, 1, kr.ptr, 1, kr.ld, buf.s.data(), kBlockK, false);
  }
  const acc_t slope = alibi_slope<acc_t>(p, b, h);
  const int64_t shift = s.sk - s.sq;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t i = i0 + r;
    const KeyRange kr = visible_keys(i, s.sq, s.sk, p.window_left, p.window_right);
    buf.d[r] = transform_row(buf.s.data() + r * kBlockK, cols, kr.lo - j0, kr.hi - j0,
                             static_cast<acc_t>(p.scale), static_cast<acc_t>(p.softcap), slope,
                             i + shift - j0, keep_tanh ? buf.t.data() + r * kBlockK : nullptr);
  }
}

template <typename scalar_t>
void forward_cpu(const Forward& f) {
  using acc_t = acc_type_t<scalar_t>;
  const FlashParams& p = f.params;
  const int64_t D = p.headdim, Dv = p.headdim_v, H = p.nheads;
  const auto blocks = query_blocks(p);
  const int64_t tasks = static_cast<int64_t>(blocks.size()) * H;
  scalar_t* out = f.out.mutable_data_ptr<scalar_t>();
  acc_t* lse = f.lse.mutable_data_ptr<acc_t>();  // float32, or float64 for float64
  const bool want_probs = f.s_dmask.numel() > 0;
  const acc_t neg_inf = -std::numeric_limits<acc_t>::infinity();
  const acc_t keep_scale = p.dropout_p > 0 ? acc_t(1) / (acc_t(1) - static_cast<acc_t>(p.dropout_p))
                                           : acc_t(1);
  const int64_t work = tasks * kBlockQ * std::max<int64_t>(p.seqlen_k, 1) * (D + Dv);
  const KeysT<acc_t> kt = transpose_keys<scalar_t, acc_t>(p, f);

  for_each_task<Buffers<acc_t>>(tasks, work, [&](int64_t task, Buffers<acc_t>& buf) {
    const auto [b, i0] = blocks[task / H];
    const int64_t h = task % H;
    const Seq s = sequence(p, b);
    const int64_t i1 = std::min(i0 + kBlockQ, s.sq), rows = i1 - i0;
    const Head<scalar_t> hd = head<scalar_t>(p, f, s, b, h);
    buf.q.resize(kBlockQ * std::max<int64_t>(D, 1));
    buf.k.resize(kBlockK * std::max<int64_t>(D, 1));
    buf.v.resize(kBlockK * std::max<int64_t>(Dv, 1));
    buf.s.resize(kBlockQ * kBlockK);
    buf.o.assign(kBlockQ * std::max<int64_t>(Dv, 1), acc_t(0));
    buf.m.assign(kBlockQ, neg_inf);
    buf.l.assign(kBlockQ, acc_t(0));
    buf.d.resize(kBlockQ);
    buf.keep.resize(kBlockK);
    const Rows<acc_t> qr = rows_of(hd.q + i0 * p.q_row_stride, p.q_row_stride, rows, D, buf.q.data());
    const KeyRange keys = block_keys(p, s, i0, i1);
    for (int64_t j0 = keys.lo; j0 < keys.hi; j0 += kBlockK) {
      const int64_t j1 = std::min(j0 + kBlockK, keys.hi), cols = j1 - j0;
      scores(p, hd, kt, s, b, h, i0, i1, j0, j1, qr, buf, false);
      for (int64_t r = 0; r < rows; ++r) {
        acc_t* srow = buf.s.data() + r * kBlockK;
        const acc_t mx = buf.d[r];  // the row's maximum in this block (scores())
        const acc_t m_new = mx > buf.m[r] ? mx : buf.m[r];
        if (m_new == neg_inf) {  // nothing visible yet: contributes nothing
          std::fill(srow, srow + cols, acc_t(0));
          continue;
        }
        const acc_t corr = buf.m[r] == neg_inf ? acc_t(0) : exp_lane(buf.m[r] - m_new);
        const acc_t sum = exp_row(srow, cols, m_new);
        buf.l[r] = buf.l[r] * corr + sum;
        buf.m[r] = m_new;
        acc_t* orow = buf.o.data() + r * Dv;
        for (int64_t c = 0; c < Dv; ++c) orow[c] *= corr;
        if (p.dropout_p > 0) {
          dropout_row(p, b, h, i0 + r, j0, cols, buf.keep.data());
          for (int64_t c = 0; c < cols; ++c) srow[c] = buf.keep[c] ? srow[c] * keep_scale : acc_t(0);
        }
      }
      const Rows<acc_t> vr = rows_of(hd.v + j0 * p.v_row_stride, p.v_row_stride, cols, Dv, buf.v.data());
      // O (rows x Dv) += P (rows x cols) V (cols x Dv)
      gemm<acc_t>(rows, Dv, cols, buf.s.data(), kBlockK, 1, vr.ptr, vr.ld, 1, buf.o.data(), Dv,
                  true);
    }
    // out = O / l; lse = m + log l (+inf for a row that sees no key; its output is 0)
    scalar_t* obase = out + b * p.o_batch_stride + (s.q0 + i0) * p.o_row_stride + h * p.o_head_stride;
    acc_t* lrow = lse + b * p.lse_batch_stride + h * p.lse_head_stride + s.q0 + i0;
    for (int64_t r = 0; r < rows; ++r) {
      const acc_t l = buf.l[r];
      const acc_t inv = l > acc_t(0) ? acc_t(1) / l : acc_t(0);
      acc_t* orow = buf.o.data() + r * Dv;
      for (int64_t c = 0; c < Dv; ++c) orow[c] *= inv;
      lrow[r] = l > acc_t(0) ? buf.m[r] + std::log(l) : std::numeric_limits<acc_t>::infinity();
    }
    store_tile(buf.o.data(), rows, Dv, obase, p.o_row_stride);
    if (!want_probs) return;
    // S_dmask (tests): P = exp(s - lse), dropped entries negated.
    scalar_t* dm = f.s_dmask.mutable_data_ptr<scalar_t>() + ((b * H + h) * p.seqlen_q + i0) * p.seqlen_k;
    for (int64_t j0 = keys.lo; j0 < keys.hi; j0 += kBlockK) {
      const int64_t j1 = std::min(j0 + kBlockK, keys.hi), cols = j1 - j0;
      scores(p, hd, kt, s, b, h, i0, i1, j0, j1, qr, buf, false);
      for (int64_t r = 0; r < rows; ++r) {
        acc_t* srow = buf.s.data() + r * kBlockK;
        const acc_t shift = static_cast<acc_t>(lrow[r]);
        if (p.dropout_p > 0) dropout_row(p, b, h, i0 + r, j0, cols, buf.keep.data());
        for (int64_t c = 0; c < cols; ++c) {
          const acc_t e = std::isinf(shift) ? acc_t(0) : std::exp(srow[c] - shift);
          const bool kept = p.dropout_p <= 0 || buf.keep[c];
          dm[r * p.seqlen_k + j0 + c] = static_cast<scalar_t>(kept ? e : -e);
        }
      }
    }
  });
}

// --- backward ---------------------------------------------------------------------------

// dst (cols x rows, row stride ld_dst) = src^T, src rows x cols with row stride ld_src.
template <typename acc_t>
void transpose_block(const acc_t* src, int64_t ld_src, int64_t rows, int64_t cols, acc_t* dst,
                     int64_t ld_dst) {
  constexpr int64_t kT = 16;  // cache-friendly tiles
  for (int64_t r0 = 0; r0 < rows; r0 += kT) {
    for (int64_t c0 = 0; c0 < cols; c0 += kT) {
      const int64_t r1 = std::min(r0 + kT, rows), c1 = std::min(c0 + kT, cols);
      for (int64_t r = r0; r < r1; ++r) {
        for (int64_t c = c0; c < c1; ++c) dst[c * ld_dst + r] = src[r * ld_src + c];
      }
    }
  }
}

// Stores src^T * scale, src being (dim x rows, row stride ld): row r of the
// result (dim wide) goes to base + r * stride. Through `tmp` (kBlockQ *
// kBlockK values) a block of rows at a time, so that the transposition stays
// in cache and the stores are contiguous.
template <typename scalar_t, typename acc_t>
void store_transposed(const acc_t* src, int64_t ld, int64_t rows, int64_t dim, acc_t scale,
                      scalar_t* base, int64_t stride, acc_t* tmp) {
  if (dim == 0) return;
  const int64_t chunk = std::max<int64_t>(kBlockQ * kBlockK / dim, 1);
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t n = std::min(chunk, rows - r0);
    transpose_block(src + r0, ld, dim, n, tmp, dim);
    for (int64_t e = 0; e < n * dim; ++e) tmp[e] *= scale;
    store_tile(tmp, n, dim, base + r0 * stride, stride);
  }
}

// P = exp(s - lse) over a block of scores (rows x cols, row stride kBlockK); a
// row that sees no key (lse = +inf) gives 0.
template <typename acc_t>
void probabilities(acc_t* s, int64_t rows, int64_t cols, const acc_t* lse) {
  for (int64_t r = 0; r < rows; ++r) {
    acc_t* row = s + r * kBlockK;
    if (std::isinf(lse[r])) {
      std::fill(row, row + cols, acc_t(0));
    } else {
      exp_row(row, cols, lse[r]);
    }
  }
}

// dS = P * (dP - D) (times 1 - tanh^2 under softcap) in place of dP, where dP
// (rows x cols) = dO V^T, masked by the dropout of the forward: the last
// step of both backward passes. With dropout and want_p_drop, buf.pd receives
// P with dropout, for dV (without dropout, dV takes P itself from buf.s).
template <typename acc_t>
void score_grads(const FlashParams& p, int64_t b, int64_t h, int64_t i0, int64_t j0, int64_t rows,
                 int64_t cols, const acc_t* dsum, Buffers<acc_t>& buf, acc_t keep_scale,
                 bool want_p_drop) {
  for (int64_t r = 0; r < rows; ++r) {
    const acc_t* prow = buf.s.data() + r * kBlockK;
    acc_t* dp = buf.dp.data() + r * kBlockK;
    acc_t* pd = buf.pd.data() + r * kBlockK;
    if (p.dropout_p > 0) {
      dropout_row(p, b, h, i0 + r, j0, cols, buf.keep.data());
      for (int64_t c = 0; c < cols; ++c) {
        dp[c] = buf.keep[c] ? dp[c] * keep_scale : acc_t(0);
        if (want_p_drop) pd[c] = buf.keep[c] ? prow[c] * keep_scale : acc_t(0);
      }
    }
    for (int64_t c = 0; c < cols; ++c) dp[c] = prow[c] * (dp[c] - dsum[r]);
    if (p.softcap > 0) {
      const acc_t* t = buf.t.data() + r * kBlockK;
      for (int64_t c = 0; c < cols; ++c) dp[c] *= acc_t(1) - t[c] * t[c];
    }
  }
}

// Loads what a query block needs in the backward: Q and dO tiles, the rows'
// lse (buf.m) and D = rowsum(dO * O) (buf.l).
template <typename scalar_t, typename acc_t>
void load_query_block(const FlashParams& p, const Backward& bw, const Head<scalar_t>& hd,
                      const Seq& s, int64_t b, int64_t h, int64_t i0, int64_t rows,
                      Buffers<acc_t>& buf) {
  const int64_t D = p.headdim, Dv = p.headdim_v;
  load_tile(hd.q + i0 * p.q_row_stride, p.q_row_stride, rows, D, buf.q.data());
  const int64_t o_off = b * p.o_batch_stride + (s.q0 + i0) * p.o_row_stride + h * p.o_head_stride;
  load_tile(bw.dout.const_data_ptr<scalar_t>() + o_off, p.o_row_stride, rows, Dv, buf.o.data());
  const scalar_t* out = bw.f.out.const_data_ptr<scalar_t>() + o_off;
  const acc_t* lse = bw.f.lse.const_data_ptr<acc_t>() + b * p.lse_batch_stride +
                     h * p.lse_head_stride + s.q0 + i0;
  for (int64_t r = 0; r < rows; ++r) {
    buf.m[r] = lse[r];
    acc_t d = acc_t(0);
    for (int64_t c = 0; c < Dv; ++c) {
      d += buf.o[r * Dv + c] * static_cast<acc_t>(out[r * p.o_row_stride + c]);
    }
    buf.l[r] = d;
  }
}

template <typename acc_t>
void size_buffers(Buffers<acc_t>& buf, int64_t D, int64_t Dv) {
  D = std::max<int64_t>(D, 1);
  Dv = std::max<int64_t>(Dv, 1);
  buf.q.resize(kBlockQ * D);
  buf.k.resize(kBlockK * D);
  buf.v.resize(kBlockK * Dv);
  buf.o.resize(kBlockQ * Dv);
  buf.s.resize(kBlockQ * kBlockK);
  buf.t.resize(kBlockQ * kBlockK);
  buf.dp.resize(kBlockQ * kBlockK);
  buf.pd.resize(kBlockQ * kBlockK);
  buf.pt.resize(kBlockQ * kBlockK);
  buf.kr.resize(kBlockK * D);
  buf.qt.resize(D * kBlockQ);
  buf.ot.resize(Dv * kBlockQ);
  buf.m.resize(kBlockQ);
  buf.l.resize(kBlockQ);
  buf.d.resize(kBlockQ);
  buf.keep.resize(kBlockK);
}

template <typename scalar_t>
void backward_cpu(const Backward& bw) {
  using acc_t = acc_type_t<scalar_t>;
  const Forward& f = bw.f;
  const FlashParams& p = f.params;
  const int64_t D = p.headdim, Dv = p.headdim_v, H = p.nheads, Hk = p.nheads_k;
  const int64_t group = H / Hk;
  const bool softcap = p.softcap > 0;
  const acc_t keep_scale = p.dropout_p > 0 ? acc_t(1) / (acc_t(1) - static_cast<acc_t>(p.dropout_p))
                                           : acc_t(1);
  const acc_t scale = static_cast<acc_t>(p.scale);
  const int64_t work = p.batch * H * std::max<int64_t>(p.seqlen_q, 1) *
                       std::max<int64_t>(p.seqlen_k, 1) * (D + Dv);
  const KeysT<acc_t> kt = transpose_keys<scalar_t, acc_t>(p, f);
  const KeysT<acc_t> vt = transpose_heads<scalar_t, acc_t>(p, f, f.v, Dv, p.v_batch_stride,
                                                           p.v_row_stride, p.v_head_stride);
  // dP (rows x cols) = dO (rows x Dv) V^T, V^T read from vt
  auto dp_block = [&](const Seq& s, int64_t h, int64_t j0, int64_t rows, int64_t cols,
                      Buffers<acc_t>& buf) {
    const acc_t* vtr = vt.head(p, s.kv_b, h / group) + s.k0 + j0;
    gemm<acc_t>(rows, cols, Dv, buf.o.data(), Dv, 1, vtr, vt.ld, 1, buf.dp.data(), kBlockK, false);
  };

  scalar_t* dq_out = bw.dq.mutable_data_ptr<scalar_t>();
  scalar_t* dk_out = bw.dk.mutable_data_ptr<scalar_t>();
  scalar_t* dv_out = bw.dv.mutable_data_ptr<scalar_t>();
  // dq, dk and dv are contiguous, shaped like q, k and v (whose strides may be
  // anything: views of a packed tensor): the offset of (b, head, row j) in
  // their own strides.
  auto grad_offset = [&](const at::Tensor& t, int64_t b, int64_t g, int64_t j) {
    const int64_t d = f.varlen ? 0 : 1;
    return (f.varlen ? 0 : b * t.stride(0)) + j * t.stride(d) + g * t.stride(d + 1);
  };
  const int64_t dq_row = bw.dq.stride(f.varlen ? 0 : 1), dk_row = bw.dk.stride(f.varlen ? 0 : 1),
                dv_row = bw.dv.stride(f.varlen ? 0 : 1);
  auto store_dq = [&](Buffers<acc_t>& buf, const Seq& s, int64_t b, int64_t h, int64_t i0,
                      int64_t rows) {
    for (int64_t e = 0; e < rows * D; ++e) buf.dq[e] *= scale;
    store_tile(buf.dq.data(), rows, D, dq_out + grad_offset(bw.dq, b, h, s.q0 + i0), dq_row);
  };

  // dV^T (Dv x cols) += dO^T (Dv x rows) P (rows x cols), P with dropout, and
  // dK^T (D x cols) += Q^T (D x rows) dS (rows x cols), into dvt / dkt (row
  // stride ld), after score_grads(): dK and dV are accumulated transposed so
  // that every GEMM reads row-major operands without transposing a block of
  // scores (only Q and dO are transposed, once per query block, into qt / ot).
  auto accumulate_dkdv = [&](Buffers<acc_t>& buf, int64_t rows, int64_t cols, acc_t* dkt,
                             acc_t* dvt, int64_t ld) {
    gemm<acc_t>(Dv, cols, rows, buf.ot.data(), kBlockQ, 1,
                p.dropout_p > 0 ? buf.pd.data() : buf.s.data(), kBlockK, 1, dvt, ld, true);
    gemm<acc_t>(D, cols, rows, buf.qt.data(), kBlockQ, 1, buf.dp.data(), kBlockK, 1, dkt, ld, true);
  };
  auto transpose_query_block = [&](Buffers<acc_t>& buf, int64_t rows) {
    transpose_block(buf.q.data(), D, rows, D, buf.qt.data(), kBlockQ);
    transpose_block(buf.o.data(), Dv, rows, Dv, buf.ot.data(), kBlockQ);
  };

  if (p.batch * Hk >= kSinglePassTasks) {
    // One pass per (b, kv head g): the task owns dK and dV of its head and dQ
    // of the group's query heads, so every product is computed once (five
    // GEMMs per block pair) and nothing is shared between tasks.
    for_each_task<Buffers<acc_t>>(p.batch * Hk, work, [&](int64_t task, Buffers<acc_t>& buf) {
      const int64_t b = task / Hk, g = task % Hk;
      const Seq s = sequence(p, b);
      const int64_t ldk = std::max<int64_t>(s.sk, 1);
      size_buffers(buf, D, Dv);
      buf.dk.assign(std::max<int64_t>(D, 1) * ldk, acc_t(0));   // dK^T (D x sk)
      buf.dv.assign(std::max<int64_t>(Dv, 1) * ldk, acc_t(0));  // dV^T (Dv x sk)
      for (int64_t h = g * group; h < (g + 1) * group; ++h) {
        const Head<scalar_t> hd = head<scalar_t>(p, f, s, b, h);
        for (int64_t i0 = 0; i0 < s.sq; i0 += kBlockQ) {
          const int64_t i1 = std::min(i0 + kBlockQ, s.sq), rows = i1 - i0;
          load_query_block(p, bw, hd, s, b, h, i0, rows, buf);
          transpose_query_block(buf, rows);
          buf.dq.assign(kBlockQ * std::max<int64_t>(D, 1), acc_t(0));
          const KeyRange keys = block_keys(p, s, i0, i1);
          for (int64_t j0 = keys.lo; j0 < keys.hi; j0 += kBlockK) {
            const int64_t j1 = std::min(j0 + kBlockK, keys.hi), cols = j1 - j0;
            scores(p, hd, kt, s, b, h, i0, i1, j0, j1, Rows<acc_t>{buf.q.data(), D}, buf, softcap);
            probabilities(buf.s.data(), rows, cols, buf.m.data());
            dp_block(s, h, j0, rows, cols, buf);
            score_grads(p, b, h, i0, j0, rows, cols, buf.l.data(), buf, keep_scale,
                        p.dropout_p > 0);
            accumulate_dkdv(buf, rows, cols, buf.dk.data() + j0, buf.dv.data() + j0, ldk);
            // dQ (rows x D) += dS (rows x cols) K (cols x D)
            const Rows<acc_t> kr =
                rows_of(hd.k + j0 * p.k_row_stride, p.k_row_stride, cols, D, buf.kr.data());
            gemm<acc_t>(rows, D, cols, buf.dp.data(), kBlockK, 1, kr.ptr, kr.ld, 1, buf.dq.data(),
                        D, true);
          }
          store_dq(buf, s, b, h, i0, rows);
        }
      }
      store_transposed(buf.dk.data(), ldk, s.sk, D, scale, dk_out + grad_offset(bw.dk, b, g, s.k0),
                       dk_row, buf.pt.data());
      store_transposed(buf.dv.data(), ldk, s.sk, Dv, acc_t(1),
                       dv_out + grad_offset(bw.dv, b, g, s.k0), dv_row, buf.pt.data());
    });
    return;
  }

  // Too few (b, kv head) pairs to share among threads: two passes over blocks
  // (seven GEMMs per block pair, but as many tasks as blocks).
  // Pass 1: dQ, per (b, h, query block).

  const auto qblocks = query_blocks(p);
  for_each_task<Buffers<acc_t>>(
      static_cast<int64_t>(qblocks.size()) * H, work, [&](int64_t task, Buffers<acc_t>& buf) {
        const auto [b, i0] = qblocks[task / H];
        const int64_t h = task % H;
        const Seq s = sequence(p, b);
        const int64_t i1 = std::min(i0 + kBlockQ, s.sq), rows = i1 - i0;
        const Head<scalar_t> hd = head<scalar_t>(p, f, s, b, h);
        size_buffers(buf, D, Dv);
        buf.dq.assign(kBlockQ * std::max<int64_t>(D, 1), acc_t(0));
        load_query_block(p, bw, hd, s, b, h, i0, rows, buf);
        const KeyRange keys = block_keys(p, s, i0, i1);
        for (int64_t j0 = keys.lo; j0 < keys.hi; j0 += kBlockK) {
          const int64_t j1 = std::min(j0 + kBlockK, keys.hi), cols = j1 - j0;
          scores(p, hd, kt, s, b, h, i0, i1, j0, j1, Rows<acc_t>{buf.q.data(), D}, buf, softcap);
          probabilities(buf.s.data(), rows, cols, buf.m.data());
          dp_block(s, h, j0, rows, cols, buf);
          score_grads(p, b, h, i0, j0, rows, cols, buf.l.data(), buf, keep_scale, false);
          // dQ (rows x D) += dS (rows x cols) K (cols x D)
          const Rows<acc_t> kr =
              rows_of(hd.k + j0 * p.k_row_stride, p.k_row_stride, cols, D, buf.kr.data());
          gemm<acc_t>(rows, D, cols, buf.dp.data(), kBlockK, 1, kr.ptr, kr.ld, 1, buf.dq.data(), D,
                      true);
        }
        store_dq(buf, s, b, h, i0, rows);
      });

  // Pass 2: dK and dV, per (b, kv head g, key block), over the query heads of group g.
  std::vector<std::pair<int64_t, int64_t>> kblocks;
  for (int64_t b = 0; b < p.batch; ++b) {
    const Seq s = sequence(p, b);
    for (int64_t j0 = 0; j0 < s.sk; j0 += kBlockK) kblocks.emplace_back(b, j0);
  }
  for_each_task<Buffers<acc_t>>(
      static_cast<int64_t>(kblocks.size()) * Hk, work, [&](int64_t task, Buffers<acc_t>& buf) {
        const auto [b, j0] = kblocks[task / Hk];
        const int64_t g = task % Hk;
        const Seq s = sequence(p, b);
        const int64_t j1 = std::min(j0 + kBlockK, s.sk), cols = j1 - j0;
        size_buffers(buf, D, Dv);
        buf.dk.assign(std::max<int64_t>(D, 1) * kBlockK, acc_t(0));   // dK^T (D x cols)
        buf.dv.assign(std::max<int64_t>(Dv, 1) * kBlockK, acc_t(0));  // dV^T (Dv x cols)
        const KeyRange rows_seen = block_rows(p, s, j0, j1);
        for (int64_t h = g * group; h < (g + 1) * group; ++h) {
          const Head<scalar_t> hd = head<scalar_t>(p, f, s, b, h);
          for (int64_t i0 = rows_seen.lo; i0 < rows_seen.hi; i0 += kBlockQ) {
            const int64_t i1 = std::min(i0 + kBlockQ, rows_seen.hi), rows = i1 - i0;
            load_query_block(p, bw, hd, s, b, h, i0, rows, buf);
            transpose_query_block(buf, rows);
            scores(p, hd, kt, s, b, h, i0, i1, j0, j1, Rows<acc_t>{buf.q.data(), D}, buf, softcap);
            probabilities(buf.s.data(), rows, cols, buf.m.data());
            dp_block(s, h, j0, rows, cols, buf);
            score_grads(p, b, h, i0, j0, rows, cols, buf.l.data(), buf, keep_scale,
                        p.dropout_p > 0);
            accumulate_dkdv(buf, rows, cols, buf.dk.data(), buf.dv.data(), kBlockK);
          }
        }
        store_transposed(buf.dk.data(), kBlockK, cols, D, scale,
                         dk_out + grad_offset(bw.dk, b, g, s.k0 + j0), dk_row, buf.pt.data());
        store_transposed(buf.dv.data(), kBlockK, cols, Dv, acc_t(1),
                         dv_out + grad_offset(bw.dv, b, g, s.k0 + j0), dv_row, buf.pt.data());
      });
}

// --- entry points ---------------------------------------------------------------------

void set_pointers(Forward& f) {
  FlashParams& p = f.params;
  p.cu_seqlens_q = data_or_null<int32_t>(f.cu_seqlens_q);
  p.cu_seqlens_k = data_or_null<int32_t>(f.cu_seqlens_k);
  p.seqused_k = data_or_null<int32_t>(f.seqused_k);
  p.kv_batch_idx = data_or_null<int32_t>(f.kv_batch_idx);
  p.alibi_slopes = data_or_null<float>(f.alibi_slopes);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> flash_attn_forward_cpu(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const std::optional<at::Tensor>& cu_seqlens_q, const std::optional<at::Tensor>& cu_seqlens_k,
    int64_t max_seqlen_q, int64_t max_seqlen_k, double dropout_p, double softmax_scale,
    int64_t window_left, int64_t window_right, double softcap,
    const std::optional<at::Tensor>& alibi_slopes, bool return_softmax,
    const std::optional<at::Tensor>& dropout_seed, int64_t offset,
    bool /*deterministic: the backward's, read by autograd*/) {
  Forward f = prepare_forward(
      q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, alibi_slopes,
      make_options(dropout_p, softmax_scale, window_left, window_right, softcap, dropout_seed, offset),
      return_softmax);
  set_pointers(f);
  KZ_DISPATCH_FLOATING_TYPES(f.q.scalar_type(), "flash_attn_forward", [&] { forward_cpu<scalar_t>(f); });
  return {f.out, f.lse, f.s_dmask};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> flash_attn_backward_cpu(
    const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& out, const at::Tensor& softmax_lse,
    const std::optional<at::Tensor>& cu_seqlens_q, const std::optional<at::Tensor>& cu_seqlens_k,
    int64_t max_seqlen_q, int64_t max_seqlen_k, double dropout_p, double softmax_scale,
    int64_t window_left, int64_t window_right, double softcap,
    const std::optional<at::Tensor>& alibi_slopes, bool /*deterministic: always, on CPU*/,
    const std::optional<at::Tensor>& dropout_seed, int64_t offset) {
  Backward bw = prepare_backward(
      dout, q, k, v, out, softmax_lse, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
      alibi_slopes,
      make_options(dropout_p, softmax_scale, window_left, window_right, softcap, dropout_seed, offset));
  set_pointers(bw.f);
  KZ_DISPATCH_FLOATING_TYPES(bw.f.q.scalar_type(), "_flash_attn_backward",
                             [&] { backward_cpu<scalar_t>(bw); });
  return {bw.dq, bw.dk, bw.dv};
}

std::tuple<at::Tensor, at::Tensor> flash_attn_kvcache_cpu(
    const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
    const std::optional<at::Tensor>& k, const std::optional<at::Tensor>& v,
    const std::optional<at::Tensor>& cache_seqlens, const std::optional<at::Tensor>& cache_batch_idx,
    double softmax_scale, int64_t window_left, int64_t window_right, double softcap,
    const std::optional<at::Tensor>& alibi_slopes) {
  Forward f = prepare_kvcache(q, k_cache, v_cache, k, v, cache_seqlens, cache_batch_idx, alibi_slopes,
                              make_options(0.0, softmax_scale, window_left, window_right, softcap,
                                      std::nullopt, 0));
  set_pointers(f);
  KZ_DISPATCH_FLOATING_TYPES(f.q.scalar_type(), "flash_attn_kvcache", [&] { forward_cpu<scalar_t>(f); });
  return {f.out, f.lse};
}

}  // namespace
}  // namespace flash_attn_detail
}  // namespace kernelzoo

TORCH_LIBRARY_IMPL(kernelzoo, CPU, m) {
  m.impl("flash_attn_forward", &kernelzoo::flash_attn_detail::flash_attn_forward_cpu);
  m.impl("_flash_attn_backward", &kernelzoo::flash_attn_detail::flash_attn_backward_cpu);
  m.impl("flash_attn_kvcache", &kernelzoo::flash_attn_detail::flash_attn_kvcache_cpu);
}
