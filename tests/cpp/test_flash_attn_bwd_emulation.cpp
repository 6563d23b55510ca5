// The flash-attention CUDA backward (flash_attn_bwd_kernel.cuh) run on the CPU
// through the execution harness, with the launcher's own parameters, scratch
// buffers, dispatch and reductions (flash_attn_bwd_plan.h, run_bwd of
// flash_attn_bwd_launch.h), compared with the CPU backward through the
// dispatcher (kernelzoo::flash_attn_backward): sequence lengths that are not
// multiples of the blocks, head dimensions of every accumulator width (odd,
// D != Dv), MHA / GQA / MQA, causal and local windows, softcap, ALiBi, dropout,
// varlen with empty sequences, empty problems, both backward paths (the
// deterministic one bitwise reproducible under every schedule), every dtype,
// and the launches themselves.
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/abs.h>
#include <ATen/ops/allclose.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/max.h>
#include <ATen/ops/rand.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/sub.h>
#include <ATen/ops/tensor.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "ops/flash_attn/flash_attn.h"
#include "ops/flash_attn/flash_attn_args.h"
// The harness adapter, then the plan and run_bwd with its kernel bodies: device code.
#include "harness_launch.h"
#include "ops/flash_attn/flash_attn_bwd_launch.h"
#include "ops/flash_attn/flash_attn_bwd_plan.h"

KZ_HARNESS_DYNAMIC_SHARED(kernelzoo::flash_attn_detail, unsigned char, flash_smem);

namespace {

namespace fd = kernelzoo::flash_attn_detail;
using kernelzoo::harness::HarnessLaunch;
using kernelzoo::harness::LaunchRecord;
using kernelzoo::harness::Schedule;
using Path = kernelzoo::BackwardPath;
using Opt = std::optional<at::Tensor>;

HarnessLaunch harness(Schedule schedule = Schedule::Forward,
                      std::vector<LaunchRecord>* record = nullptr) {
  HarnessLaunch launch;
  launch.options.schedule = schedule;
  launch.options.seed = 5;
  launch.record = record;
  return launch;
}

// --- problems ------------------------------------------------------------------------------

struct Case {
  int64_t batch = 1, sq = 17, sk = 17, h = 2, hk = 2, d = 32, dv = 32;
  int64_t left = -1, right = -1;               // window, -1 unbounded
  double softcap = 0, dropout = 0, scale = 0;  // scale 0: 1 / sqrt(d)
  int alibi = 0;                               // dimensions of the slopes (0: none)
  std::vector<int32_t> cu_q, cu_k;             // varlen when not empty
};

std::string describe(const Case& c) {
  auto list = [](const std::vector<int32_t>& v) {
    std::string s;
    for (int32_t x : v) s += (s.empty() ? "" : ",") + std::to_string(x);
    return "{" + s + "}";
  };
  std::string s = c.cu_q.empty() ? "batch " + std::to_string(c.batch) + " sq " +
                                       std::to_string(c.sq) + " sk " + std::to_string(c.sk)
                                 : "varlen q " + list(c.cu_q) + " k " + list(c.cu_k);
  s += " h " + std::to_string(c.h) + "/" + std::to_string(c.hk) + " d " + std::to_string(c.d) +
       "/" + std::to_string(c.dv);
  if (c.left >= 0 || c.right >= 0)
    s += " window (" + std::to_string(c.left) + ", " + std::to_string(c.right) + ")";
  if (c.softcap > 0) s += " softcap";
  if (c.dropout > 0) s += " dropout";
  if (c.alibi) s += " alibi " + std::to_string(c.alibi) + "-d";
  return s;
}

// The inputs of one case in one dtype (out and lse from the CPU forward).
struct Problem {
  at::Tensor q, k, v, dout, out, lse;
  Opt cu_q, cu_k, alibi, seed;
  int64_t max_q = 0, max_k = 0;
  fd::Options o;
};

struct Grads {
  at::Tensor dq, dk, dv;
};

const char* const kNames[3] = {"dq", "dk", "dv"};

void forward(Problem& p) {
  auto [out, lse, unused] = kernelzoo::flash_attn_forward(
      p.q, p.k, p.v, p.cu_q, p.cu_k, p.max_q, p.max_k, p.o.dropout_p, p.o.softmax_scale,
      p.o.window_left, p.o.window_right, p.o.softcap, p.alibi, false, p.seed, p.o.offset);
  p.out = out;
  p.lse = lse;
}

Problem make_problem(const Case& c, at::ScalarType dtype) {
  at::manual_seed(11);
  Problem p;
  const bool varlen = !c.cu_q.empty();
  int64_t batch = c.batch, tq = 0, tk = 0;
  if (varlen) {
    batch = static_cast<int64_t>(c.cu_q.size()) - 1;
    tq = c.cu_q.back();
    tk = c.cu_k.back();
    for (int64_t b = 0; b < batch; ++b) {
      p.max_q = std::max<int64_t>(p.max_q, c.cu_q[b + 1] - c.cu_q[b]);
      p.max_k = std::max<int64_t>(p.max_k, c.cu_k[b + 1] - c.cu_k[b]);
    }
    p.cu_q = at::tensor(c.cu_q, at::kInt);
    p.cu_k = at::tensor(c.cu_k, at::kInt);
  } else {
    p.max_q = c.sq;
    p.max_k = c.sk;
  }
  auto shape = [&](int64_t rows, int64_t total, int64_t heads, int64_t dim) {
    return varlen ? std::vector<int64_t>{total, heads, dim}
                  : std::vector<int64_t>{batch, rows, heads, dim};
  };
  p.q = at::randn(shape(c.sq, tq, c.h, c.d), at::kDouble).to(dtype);
  p.k = at::randn(shape(c.sk, tk, c.hk, c.d), at::kDouble).to(dtype);
  p.v = at::randn(shape(c.sk, tk, c.hk, c.dv), at::kDouble).to(dtype);
  p.dout = at::randn(shape(c.sq, tq, c.h, c.dv), at::kDouble).to(dtype);
  if (c.alibi == 1) p.alibi = at::rand({c.h}, at::kFloat) * 0.5;
  if (c.alibi == 2) p.alibi = at::rand({batch, c.h}, at::kFloat) * 0.5;
  p.o.dropout_p = c.dropout;
  p.o.softmax_scale = c.scale > 0 ? c.scale : 1.0 / std::sqrt(static_cast<double>(c.d));
  p.o.window_left = c.left;
  p.o.window_right = c.right;
  p.o.softcap = c.softcap;
  if (c.dropout > 0) {
    p.o.seed = 20240611;
    p.o.has_seed = true;
    p.o.offset = 3;
    p.seed = at::tensor(std::vector<int64_t>{p.o.seed}, at::kLong);
  }
  forward(p);
  return p;
}

// The same problem in float64 from the rounded inputs, with its own forward:
// the reference of the low-precision checks.
Problem upcast(const Problem& p) {
  Problem r = p;
  r.q = p.q.to(at::kDouble);
  r.k = p.k.to(at::kDouble);
  r.v = p.v.to(at::kDouble);
  r.dout = p.dout.to(at::kDouble);
  forward(r);
  return r;
}

Grads cpu_backward(const Problem& p) {
  auto [dq, dk, dv] = kernelzoo::flash_attn_backward(
      p.dout, p.q, p.k, p.v, p.out, p.lse, p.cu_q, p.cu_k, p.max_q, p.max_k, p.o.dropout_p,
      p.o.softmax_scale, p.o.window_left, p.o.window_right, p.o.softcap, p.alibi, true, p.seed,
      p.o.offset);
  return {dq, dk, dv};
}

Grads emulated_backward(const Problem& p, Path path, const HarnessLaunch& launch,
                        int64_t dq_budget_bytes = int64_t{1} << 30) {
  const fd::Backward bw = fd::prepare_backward(p.dout, p.q, p.k, p.v, p.out, p.lse, p.cu_q, p.cu_k,
                                               p.max_q, p.max_k, p.alibi, p.o);
  fd::launch_backward(bw, launch, path, dq_budget_bytes);
  return {bw.dq, bw.dk, bw.dv};
}

// --- comparisons ---------------------------------------------------------------------------

double max_abs(const at::Tensor& t) {
  return t.numel() == 0 ? 0.0 : t.to(at::kDouble).abs().max().item<double>();
}

double max_diff(const at::Tensor& a, const at::Tensor& b) {
  return a.numel() == 0 ? 0.0 : max_abs(at::sub(a.to(at::kDouble), b.to(at::kDouble)));
}

bool same_layout(const at::Tensor& got, const at::Tensor& want, const std::string& what) {
  EXPECT_EQ(got.sizes(), want.sizes()) << what;
  EXPECT_EQ(got.scalar_type(), want.scalar_type()) << what;
  return got.sizes() == want.sizes() && got.scalar_type() == want.scalar_type();
}

// float64 to 1e-10 and float32 to 2e-5 of the gradient's magnitude, against
// the CPU backward in the same dtype (the summation orders differ).
void expect_close(const Grads& got, const Grads& want, const std::string& what) {
  const at::Tensor g[3] = {got.dq, got.dk, got.dv}, w[3] = {want.dq, want.dk, want.dv};
  for (int t = 0; t < 3; ++t) {
    const std::string name = what + ": " + kNames[t];
    if (!same_layout(g[t], w[t], name)) continue;
    const double tol = w[t].scalar_type() == at::kDouble ? 1e-10 : 2e-5;
    const double scale = std::max(1.0, max_abs(w[t]));
    EXPECT_LE(max_diff(g[t], w[t]), tol * scale) << name << " (magnitude " << scale << ")";
  }
}

// The same bits in dq, dk and dv.
void expect_same_bits(const Grads& got, const Grads& want, const std::string& what) {
  EXPECT_TRUE(at::equal(got.dq, want.dq)) << what << ": dq";
  EXPECT_TRUE(at::equal(got.dk, want.dk)) << what << ": dk";
  EXPECT_TRUE(at::equal(got.dv, want.dv)) << what << ": dv";
}

// The tolerance policy for float16 / bfloat16 (DESIGN.md): the error of the
// emulated kernel against a float64 reference is at most 3x the error of the
// CPU backward in the same dtype, plus a floor of 1e-4 of the magnitude (for
// gradients the low-precision CPU result gets exactly right, zeros).
void expect_low_precision(const Grads& got, const Grads& cpu_low, const Grads& ref,
                          const std::string& what) {
  const at::Tensor g[3] = {got.dq, got.dk, got.dv}, c[3] = {cpu_low.dq, cpu_low.dk, cpu_low.dv},
                   r[3] = {ref.dq, ref.dk, ref.dv};
  for (int t = 0; t < 3; ++t) {
    const std::string name = what + ": " + kNames[t];
    if (!same_layout(g[t], c[t], name)) continue;
    const double err = max_diff(g[t], r[t]), cpu_err = max_diff(c[t], r[t]);
    const double floor = 1e-4 * std::max(1.0, max_abs(r[t]));
    EXPECT_LE(err, 3 * cpu_err + floor) << name << ": CPU error " << cpu_err;
  }
}

// One case in one dtype, on the given paths, against the CPU backward.
void check_case(const Case& c, at::ScalarType dtype = at::kDouble,
                std::vector<Path> paths = {Path::Atomic, Path::Deterministic}) {
  const std::string what = describe(c) + " " + c10::toString(dtype);
  const Problem p = make_problem(c, dtype);
  const Grads want = cpu_backward(p);
  const bool low = dtype == at::kHalf || dtype == at::kBFloat16;
  const Grads ref = low ? cpu_backward(upcast(p)) : Grads{};
  for (Path path : paths) {
    const std::string w = what + (path == Path::Atomic ? " atomic" : " deterministic");
    const Grads got = emulated_backward(p, path, harness());
    if (low) {
      expect_low_precision(got, want, ref, w);
    } else {
      expect_close(got, want, w);
    }
  }
}

// The tensor-core backward's kernel for a head-dimension bucket.
template <typename T>
const void* bwd_mma_kernel(int bucket) {
  return fd::with_bucket(bucket, [](auto d) {
    return kernelzoo::harness::kernel_id(fd::flash_bwd_mma_kernel<T, decltype(d)::value>);
  });
}

// --- cases ---------------------------------------------------------------------------------

// Sequence lengths around and across the 64-key blocks and the 16-row steps,
// seqlen_q != seqlen_k both ways, full attention and causal (bottom-right:
// with seqlen_q > seqlen_k the first rows see no key, lse = +inf).
TEST(FlashAttnBwdEmulation, SequenceLengths) {
  const std::vector<std::pair<int64_t, int64_t>> lengths = {
      {1, 1}, {17, 17}, {1, 113}, {113, 1}, {113, 203}, {203, 113}, {203, 203}};
  for (const auto& [sq, sk] : lengths) {
    for (int64_t right : {-1, 0}) {
      Case c;
      c.batch = 2;
      c.sq = sq;
      c.sk = sk;
      c.h = c.hk = 1;
      c.d = c.dv = 16;
      c.right = right;
      check_case(c);
    }
  }
}

// Head dimensions of every accumulator width (64, 128, 256), odd ones, and
// D != Dv picking the bucket of the larger.
TEST(FlashAttnBwdEmulation, HeadDims) {
  const std::vector<std::pair<int64_t, int64_t>> dims = {{17, 17}, {32, 32},   {64, 64},
                                                         {96, 96}, {160, 160}, {256, 256},
                                                         {17, 96}, {160, 64},  {64, 256}};
  for (const auto& [d, dv] : dims) {
    Case c;
    c.sq = 19;
    c.sk = 70;
    c.h = c.hk = 1;
    c.d = d;
    c.dv = dv;
    c.right = 0;
    check_case(c);
  }
}

// Grouped (4 query heads on 2 kv heads) and multi-query (3 on 1) attention:
// dk and dv sum the query heads of each kv head.
TEST(FlashAttnBwdEmulation, GroupedAndMultiQuery) {
  for (const auto& [h, hk] : std::vector<std::pair<int64_t, int64_t>>{{4, 2}, {3, 1}}) {
    Case c;
    c.batch = 2;
    c.sq = 33;
    c.sk = 75;
    c.h = h;
    c.hk = hk;
    c.d = 24;
    c.dv = 40;
    check_case(c);
    c.right = 0;
    check_case(c, at::kDouble, {Path::Atomic});
  }
  Case big;  // four key blocks, thirteen row steps, groups of three
  big.batch = 2;
  big.sq = big.sk = 203;
  big.h = 6;
  big.hk = 2;
  big.d = big.dv = 64;
  big.right = 0;
  check_case(big, at::kFloat, {Path::Atomic});
}

// Local windows (bottom-right aligned): key blocks some rows see none of, and
// rows that see no key at all.
TEST(FlashAttnBwdEmulation, Windows) {
  const std::vector<std::pair<int64_t, int64_t>> windows = {{20, 5}, {0, 0}, {-1, 3}, {7, -1}};
  for (const auto& [left, right] : windows) {
    Case c;
    c.sq = 90;
    c.sk = 150;
    c.h = c.hk = 1;
    c.d = c.dv = 16;
    c.left = left;
    c.right = right;
    check_case(c);
  }
  Case none;  // seqlen_q > seqlen_k: rows above the window see nothing
  none.sq = 100;
  none.sk = 30;
  none.h = none.hk = 1;
  none.d = none.dv = 8;
  none.left = 4;
  none.right = 2;
  check_case(none);
}

// softcap (the 1 - tanh^2 of the backward, with scores large enough to
// saturate), ALiBi with (nheads) and (batch, nheads) slopes, together and with
// a window.
TEST(FlashAttnBwdEmulation, SoftcapAndAlibi) {
  Case c;
  c.batch = 2;
  c.sq = 40;
  c.sk = 81;
  c.d = c.dv = 16;
  c.softcap = 1.5;
  c.scale = 0.6;
  check_case(c);
  c.softcap = 0;
  c.scale = 0;
  for (int alibi : {1, 2}) {
    c.alibi = alibi;
    check_case(c);
  }
  c.softcap = 2.0;
  c.right = 0;
  c.left = 30;
  check_case(c, at::kDouble, {Path::Atomic});
}

// Dropout: the same seed and offset give the CPU's mask, so the gradients
// match; with GQA, causal and softcap too.
TEST(FlashAttnBwdEmulation, Dropout) {
  Case c;
  c.batch = 2;
  c.sq = 37;
  c.sk = 70;
  c.d = c.dv = 16;
  c.dropout = 0.17;
  check_case(c);
  c.h = 4;
  c.hk = 2;
  c.right = 0;
  c.softcap = 3.0;
  c.alibi = 2;
  check_case(c, at::kDouble, {Path::Atomic});
}

// Packed sequences with empty ones at the start, in the middle and at the
// end, a sequence with queries but no keys and one with keys but no queries.
TEST(FlashAttnBwdEmulation, Varlen) {
  Case c;
  c.h = 2;
  c.hk = 1;
  c.d = 16;
  c.dv = 24;
  //          empty  q,k  no k  no q   q,k   empty
  c.cu_q = {0, 0, 17, 30, 30, 100, 100};
  c.cu_k = {0, 0, 70, 70, 85, 160, 160};
  check_case(c);
  c.right = 0;
  c.dropout = 0.2;
  c.alibi = 2;
  check_case(c, at::kDouble, {Path::Atomic});
}

// float32 tight against the CPU float32 backward; float16 and bfloat16 under
// the low-precision policy.
TEST(FlashAttnBwdEmulation, Dtypes) {
  Case c;
  c.batch = 2;
  c.sq = 50;
  c.sk = 90;
  c.h = 2;
  c.hk = 1;
  c.d = 40;
  c.dv = 24;
  c.right = 0;
  for (at::ScalarType dtype : {at::kFloat, at::kHalf, at::kBFloat16}) check_case(c, dtype);
  Case v;
  v.d = v.dv = 32;
  v.cu_q = {0, 20, 20, 83};
  v.cu_k = {0, 65, 70, 140};
  v.softcap = 2.0;
  v.dropout = 0.1;
  for (at::ScalarType dtype : {at::kFloat, at::kHalf, at::kBFloat16})
    check_case(v, dtype, {Path::Atomic});
  // 16-bit head dimensions that are no multiple of 8: on tensor cores, through
  // copies padded with zeros (q, k, v, out and dout alike)
  Case odd;
  odd.sq = 20;
  odd.sk = 70;
  odd.h = odd.hk = 1;
  for (const auto& [d, dv] :
       std::vector<std::pair<int64_t, int64_t>>{{17, 24}, {100, 84}, {161, 250}}) {
    odd.d = d;
    odd.dv = dv;
    for (at::ScalarType dtype : {at::kHalf, at::kBFloat16}) {
      std::vector<kernelzoo::harness::LaunchRecord> record;
      emulated_backward(make_problem(odd, dtype), Path::Atomic, harness(Schedule::Forward, &record));
      ASSERT_EQ(record.size(), 2u);
      const int64_t bucket = fd::head_dim_bucket(std::max(d, dv));
      EXPECT_EQ(record[1].kernel, dtype == at::kHalf ? bwd_mma_kernel<c10::Half>(bucket)
                                                     : bwd_mma_kernel<c10::BFloat16>(bucket))
          << d << " " << dv;
      check_case(odd, dtype, {Path::Atomic});
    }
  }
}

// The deterministic path: the same bits under every schedule (threads and
// blocks in forward, reverse and shuffled order, warp by warp), on the kernel
// without tensor cores (float32) and on the tensor-core kernel with 64-key
// blocks (16) and with 32-key blocks, where the warps split dQ by columns
// (160); both paths close to the CPU.
TEST(FlashAttnBwdEmulation, DeterministicPathIsReproducible) {
  Case c;
  c.batch = 2;
  c.sq = 45;
  c.sk = 140;
  c.h = 2;
  c.hk = 1;
  c.left = 60;
  for (const auto& [dtype, d] : std::vector<std::pair<at::ScalarType, int64_t>>{
           {at::kFloat, 16}, {at::kHalf, 16}, {at::kHalf, 160}}) {
    c.d = c.dv = d;
    const Problem p = make_problem(c, dtype);
    const Grads first = emulated_backward(p, Path::Deterministic, harness(Schedule::Forward));
    for (Schedule s : {Schedule::Reverse, Schedule::Shuffled, Schedule::WarpByWarp}) {
      expect_same_bits(emulated_backward(p, Path::Deterministic, harness(s)), first,
                       describe(c) + " schedule " + std::to_string(static_cast<int>(s)));
    }
  }
  c.d = c.dv = 16;
  // the atomic path under the other schedules (the shared tiles' barriers)
  for (Schedule s : {Schedule::Reverse, Schedule::Shuffled, Schedule::WarpByWarp}) {
    const Problem p = make_problem(c, at::kDouble);
    expect_close(emulated_backward(p, Path::Atomic, harness(s)), cpu_backward(p),
                 describe(c) + " schedule " + std::to_string(static_cast<int>(s)));
  }
}

// Empty problems: zero gradients of the right shapes, and no launch on an
// empty grid (seqlen_q 0 still launches the main kernel: dk and dv are zero).
TEST(FlashAttnBwdEmulation, EmptyProblems) {
  struct Empty {
    int64_t batch, sq, sk;
    size_t launches;
  };
  for (const Empty& e : {Empty{2, 0, 20, 1}, Empty{2, 20, 0, 0}, Empty{0, 20, 20, 0}}) {
    Case c;
    c.batch = e.batch;
    c.sq = e.sq;
    c.sk = e.sk;
    c.d = c.dv = 8;
    const Problem p = make_problem(c, at::kFloat);
    for (Path path : {Path::Atomic, Path::Deterministic}) {
      std::vector<LaunchRecord> record;
      const Grads got = emulated_backward(p, path, harness(Schedule::Forward, &record));
      expect_close(got, cpu_backward(p), describe(c));
      EXPECT_EQ(record.size(), e.launches) << describe(c);
      for (const at::Tensor& t : {got.dq, got.dk, got.dv}) {
        EXPECT_EQ(max_abs(t), 0.0) << describe(c);
      }
    }
  }
}

// The launches: dsum over (row blocks, heads, batch), then the main kernel
// over (key blocks, heads, batch) with the accumulator width of the larger
// head dimension and the shared memory of the actual ones.
TEST(FlashAttnBwdEmulation, Launches) {
  struct Expect {
    int64_t d, dv;
    const void* kernel;
  };
  const std::vector<Expect> cases = {
      {17, 17, kernelzoo::harness::kernel_id(fd::flash_bwd_simt_kernel<float, 64>)},
      {64, 65, kernelzoo::harness::kernel_id(fd::flash_bwd_simt_kernel<float, 128>)},
      {160, 8, kernelzoo::harness::kernel_id(fd::flash_bwd_simt_kernel<float, 256>)}};
  for (const Expect& e : cases) {
    Case c;
    c.batch = 3;
    c.sq = 130;
    c.sk = 65;
    c.h = 2;
    c.hk = 1;
    c.d = e.d;
    c.dv = e.dv;
    c.left = 0;
    c.right = 0;  // small work: the diagonal only
    const Problem p = make_problem(c, at::kFloat);
    std::vector<LaunchRecord> record;
    expect_close(emulated_backward(p, Path::Atomic, harness(Schedule::Forward, &record)),
                 cpu_backward(p), describe(c));
    ASSERT_EQ(record.size(), 2u);
    EXPECT_EQ(record[0].kernel, kernelzoo::harness::kernel_id(fd::flash_bwd_dsum_kernel<float>));
    EXPECT_EQ(record[0].grid.x, 2u);  // ceil(130 / 128)
    EXPECT_EQ(record[0].grid.y, 2u);
    EXPECT_EQ(record[0].grid.z, 3u);
    EXPECT_EQ(record[0].block.x, static_cast<unsigned>(fd::kDsumThreads));
    EXPECT_EQ(record[0].shared_bytes, 0u);
    EXPECT_EQ(record[1].kernel, e.kernel) << describe(c);
    EXPECT_EQ(record[1].grid.x, 2u);  // ceil(65 / 64)
    EXPECT_EQ(record[1].grid.y, 2u);
    EXPECT_EQ(record[1].grid.z, 3u);
    EXPECT_EQ(record[1].block.x, static_cast<unsigned>(fd::kBwdThreads));
    EXPECT_EQ(record[1].shared_bytes, 4u * (16 * (e.d + e.dv) + 2 * 16 * 64 + 2 * 16));
  }
  // float64 accumulates in double
  Case c;
  c.d = c.dv = 8;
  std::vector<LaunchRecord> record;
  emulated_backward(make_problem(c, at::kDouble), Path::Atomic,
                    harness(Schedule::Forward, &record));
  ASSERT_EQ(record.size(), 2u);
  EXPECT_EQ(record[1].kernel, kernelzoo::harness::kernel_id(fd::flash_bwd_simt_kernel<double, 64>));
  EXPECT_EQ(record[1].shared_bytes, 8u * (16 * 16 + 2 * 16 * 64 + 2 * 16));
}

// out and dout given as views with the head dimension contiguous but other
// strides their own: the plan reads them with one layout (float16 at an odd
// head dimension: both padded).
TEST(FlashAttnBwdEmulation, StridedOutAndDout) {
  for (const auto& [dtype, d] :
       std::vector<std::pair<at::ScalarType, int64_t>>{{at::kDouble, 8}, {at::kHalf, 20}}) {
    Case c;
    c.batch = 2;
    c.sq = 20;
    c.sk = 30;
    c.d = c.dv = d;
    Problem p = make_problem(c, dtype);
    const Grads want = emulated_backward(p, Path::Atomic, harness());
    Problem s = p;
    s.out = p.out.transpose(1, 2).contiguous().transpose(1, 2);  // (b, s, h, d) with h outer
    s.dout = p.dout.transpose(1, 2).contiguous().transpose(1, 2);
    ASSERT_FALSE(s.dout.is_contiguous());
    expect_same_bits(emulated_backward(s, Path::Atomic, harness()), want, c10::toString(dtype));
  }
  // only dout strided (out contiguous): the same bits again
  Case c;
  c.d = c.dv = 20;
  Problem p = make_problem(c, at::kHalf);
  const Grads want = emulated_backward(p, Path::Atomic, harness());
  p.dout = p.dout.transpose(1, 2).contiguous().transpose(1, 2);
  expect_same_bits(emulated_backward(p, Path::Atomic, harness()), want, "strided dout");
}

// --- the tensor-core backward (flash_attn_bwd_mma_kernel.cuh) ---------------------------

// float16 / bfloat16 with head dimensions that are multiples of 8 run on
// tensor cores: every bucket (64-key blocks up to 128, 32-key blocks with the
// warps in 2 x 2 above), with the masks, caps, biases and dropout, both paths,
// on shapes that are no multiple of the tiles.
TEST(FlashAttnBwdEmulation, TensorCoreKernelEveryBucket) {
  for (int64_t d : {32, 64, 96, 128, 160, 192, 224, 256}) {
    for (at::ScalarType dtype : {at::kHalf, at::kBFloat16}) {
      const bool wide = d > 128;  // smaller shapes: the harness is slow at these widths
      Case c;
      c.sq = wide ? 45 : 113;
      c.sk = wide ? 75 : 203;
      c.h = wide ? 2 : 4;
      c.hk = wide ? 1 : 2;
      c.d = d;
      c.dv = d == 96 ? 72 : d == 224 ? 200 : d;
      c.right = d == 32 || d == 160 ? 0 : -1;
      c.left = d == 64 ? 50 : d == 192 ? 20 : -1;
      c.softcap = d == 96 || d == 224 ? 3.0 : 0.0;
      c.alibi = d == 96 || d == 224 ? 1 : 0;
      c.dropout = d == 128 || d == 256 ? 0.25 : 0.0;
      std::vector<kernelzoo::harness::LaunchRecord> record;
      const Problem p = make_problem(c, dtype);
      emulated_backward(p, Path::Atomic, harness(Schedule::Forward, &record));
      ASSERT_EQ(record.size(), 2u);
      const void* want =
          dtype == at::kHalf ? bwd_mma_kernel<c10::Half>(d) : bwd_mma_kernel<c10::BFloat16>(d);
      EXPECT_EQ(record[1].kernel, want) << d;
      EXPECT_EQ(record[1].grid.x, wide ? 3u : 4u) << d;  // ceil(75 / 32), ceil(203 / 64) key blocks
      EXPECT_EQ(record[1].block.x, 128u);
      check_case(c, dtype);
    }
  }
}

// Rows that see no key (causal, seqlen_q > seqlen_k), varlen with empty
// sequences and MQA on the tensor-core kernel, both block sizes.
TEST(FlashAttnBwdEmulation, TensorCoreKernelEdges) {
  Case c;
  c.sq = 150;
  c.sk = 70;
  c.right = 0;
  c.h = 3;
  c.hk = 1;
  Case v;
  v.cu_q = {0, 0, 17, 17, 130, 131};
  v.cu_k = {0, 5, 5, 100, 303, 303};
  v.right = 0;
  for (int64_t d : {64, 176}) {  // 64-key and 32-key blocks
    c.d = c.dv = d;
    check_case(c, at::kHalf);
    v.d = v.dv = d - 16;
    check_case(v, at::kBFloat16);
  }
}

// The deterministic slices under a memory budget of two slices: the key blocks
// run in several launches, summed in launch order; reproducible bit for bit,
// on both backward kernels.
TEST(FlashAttnBwdEmulation, DeterministicSlicesUnderABudget) {
  for (at::ScalarType dtype : {at::kHalf, at::kFloat}) {
    Case c;
    c.sq = 40;
    c.sk = 300;  // 5 key blocks
    c.h = c.hk = 1;
    c.d = c.dv = 32;
    const Problem p = make_problem(c, dtype);
    const int64_t slice = 40 * 1 * 32 * 4;
    std::vector<kernelzoo::harness::LaunchRecord> record;
    const Grads split = emulated_backward(p, Path::Deterministic, harness(Schedule::Forward, &record),
                                          2 * slice);
    EXPECT_EQ(record.size(), 4u);  // dsum, then key blocks [0, 2), [2, 4), [4, 5)
    const Grads whole = emulated_backward(p, Path::Deterministic, harness());
    // (s0 + s1) + (s2 + s3) + s4 against one sum of five: the same up to rounding.
    EXPECT_TRUE(at::allclose(split.dq, whole.dq, 1e-5, 1e-6));
    EXPECT_TRUE(at::equal(split.dk, whole.dk));
    EXPECT_TRUE(at::equal(split.dv, whole.dv));
    const Grads again = emulated_backward(p, Path::Deterministic, harness(Schedule::Shuffled),
                                          2 * slice);
    EXPECT_TRUE(at::equal(split.dq, again.dq));
    if (dtype == at::kFloat) {
      expect_close(split, cpu_backward(p), "budgeted deterministic slices");
    } else {
      expect_low_precision(split, cpu_backward(p), cpu_backward(upcast(p)), "budgeted slices");
    }
  }
}

}  // namespace
