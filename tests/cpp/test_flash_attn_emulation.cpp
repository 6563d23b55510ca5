// The flash-attention CUDA forward kernels (flash_attn_fwd_kernel.cuh: tensor
// cores; flash_attn_simt_kernel.cuh: float32/float64, split-KV merge,
// probabilities) run on the CPU through the execution harness, with the
// launcher's own buckets, padding, splits and grids (flash_attn_plan.h),
// compared with the CPU kernels through the dispatcher: outputs, log-sum-exp,
// S_dmask, for dense, varlen and KV-cache problems.
#include <ATen/Context.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/abs.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/isinf.h>
#include <ATen/ops/rand.h>
#include <ATen/ops/randint.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/sign.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros_like.h>
#include <gtest/gtest.h>

#include <cmath>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "ops/flash_attn/flash_attn.h"
#include "ops/flash_attn/flash_attn_args.h"
// The harness adapter, then the plan and its kernel bodies: device code.
#include "harness_launch.h"
#include "ops/flash_attn/flash_attn_fwd_launch.h"

KZ_HARNESS_DYNAMIC_SHARED(kernelzoo::flash_attn_detail, unsigned char, flash_smem);

namespace {

namespace fd = kernelzoo::flash_attn_detail;
using kernelzoo::harness::HarnessLaunch;
using kernelzoo::harness::Schedule;
using Opt = std::optional<at::Tensor>;

HarnessLaunch harness(Schedule schedule = Schedule::Forward,
                      std::vector<kernelzoo::harness::LaunchRecord>* record = nullptr) {
  HarnessLaunch launch;
  launch.options.schedule = schedule;
  launch.record = record;
  return launch;
}

// --- problems ------------------------------------------------------------------------------

struct Case {
  int64_t batch = 1, sq = 17, sk = 113, h = 2, hk = 1, d = 64, dv = -1;  // dv -1: d
  bool causal = false;
  int64_t left = -1, right = -1;  // window (causal sets right = 0)
  double softcap = 0, dropout = 0;
  int alibi = 0;  // 0: none, 1: (nheads), 2: (batch, nheads)
  std::vector<int32_t> cu_q, cu_k;  // varlen when not empty
  int64_t splits = 0;               // ForwardConfig::num_splits (0: the heuristic)
  int sm_count = 132;
};

std::string describe(const Case& c, at::ScalarType t) {
  std::string s = std::string(c10::toString(t)) + " b" + std::to_string(c.batch) + " sq" +
                  std::to_string(c.sq) + " sk" + std::to_string(c.sk) + " h" + std::to_string(c.h) +
                  "/" + std::to_string(c.hk) + " d" + std::to_string(c.d) + "/" + std::to_string(c.dv);
  if (c.causal) s += " causal";
  if (c.left >= 0 || c.right >= 0) s += " window(" + std::to_string(c.left) + "," + std::to_string(c.right) + ")";
  if (c.softcap > 0) s += " softcap";
  if (c.dropout > 0) s += " dropout";
  if (c.alibi) s += " alibi" + std::to_string(c.alibi);
  if (!c.cu_q.empty()) s += " varlen";
  if (c.splits) s += " splits" + std::to_string(c.splits);
  return s;
}

struct Inputs {
  at::Tensor q, k, v;
  Opt cu_q, cu_k, alibi;
  int64_t max_q = 0, max_k = 0;
};

Inputs make_inputs(const Case& c, at::ScalarType dtype, int64_t seed = 0) {
  at::manual_seed(seed);
  const int64_t dv = c.dv < 0 ? c.d : c.dv;
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  Inputs in;
  if (c.cu_q.empty()) {
    in.q = at::randn({c.batch, c.sq, c.h, c.d}, f64);
    in.k = at::randn({c.batch, c.sk, c.hk, c.d}, f64);
    in.v = at::randn({c.batch, c.sk, c.hk, dv}, f64);
    in.max_q = c.sq;
    in.max_k = c.sk;
  } else {
    in.q = at::randn({c.cu_q.back(), c.h, c.d}, f64);
    in.k = at::randn({c.cu_k.back(), c.hk, c.d}, f64);
    in.v = at::randn({c.cu_k.back(), c.hk, dv}, f64);
    in.cu_q = at::tensor(c.cu_q, at::kInt);
    in.cu_k = at::tensor(c.cu_k, at::kInt);
    for (size_t i = 1; i < c.cu_q.size(); ++i) {
      in.max_q = std::max<int64_t>(in.max_q, c.cu_q[i] - c.cu_q[i - 1]);
      in.max_k = std::max<int64_t>(in.max_k, c.cu_k[i] - c.cu_k[i - 1]);
    }
  }
  in.q = in.q.to(dtype);
  in.k = in.k.to(dtype);
  in.v = in.v.to(dtype);
  const int64_t batch = c.cu_q.empty() ? c.batch : static_cast<int64_t>(c.cu_q.size()) - 1;
  if (c.alibi == 1) in.alibi = at::rand({c.h}) * 0.5;
  if (c.alibi == 2) in.alibi = at::rand({batch, c.h}) * 0.5;
  return in;
}

Inputs as_dtype(const Inputs& in, at::ScalarType dtype) {
  Inputs out = in;
  out.q = in.q.to(dtype);
  out.k = in.k.to(dtype);
  out.v = in.v.to(dtype);
  return out;
}

constexpr int64_t kSeed = 1234, kOffset = 7;

fd::Options options(const Case& c) {
  fd::Options o;
  o.dropout_p = c.dropout;
  o.softmax_scale = 1.0 / std::sqrt(static_cast<double>(c.d));
  o.window_left = c.left;
  o.window_right = c.causal ? 0 : c.right;
  o.softcap = c.softcap;
  o.seed = kSeed;
  o.offset = kOffset;
  o.has_seed = true;
  return o;
}

using Result = std::tuple<at::Tensor, at::Tensor, at::Tensor>;  // out, lse, S_dmask

Result cpu_forward(const Case& c, const Inputs& in, bool probs = false) {
  const fd::Options o = options(c);
  return kernelzoo::flash_attn_forward(in.q, in.k, in.v, in.cu_q, in.cu_k, in.max_q, in.max_k,
                                       o.dropout_p, o.softmax_scale, o.window_left, o.window_right,
                                       o.softcap, in.alibi, probs, at::tensor({kSeed}, at::kLong),
                                       kOffset);
}

Result harness_forward(const Case& c, const Inputs& in, bool probs = false,
                       const HarnessLaunch& launch = harness()) {
  fd::Forward f = fd::prepare_forward(in.q, in.k, in.v, in.cu_q, in.cu_k, in.max_q, in.max_k,
                                      in.alibi, options(c), probs);
  fd::ForwardConfig config;
  config.num_splits = c.splits;
  config.sm_count = c.sm_count;
  fd::launch_forward(f, launch, config);
  return {f.out, f.lse, f.s_dmask};
}

double max_abs(const at::Tensor& t) { return t.numel() ? t.abs().max().item<double>() : 0.0; }

// Finite entries compared; +-inf entries must match exactly.
double lse_error(const at::Tensor& got, const at::Tensor& want) {
  const at::Tensor g = got.to(at::kDouble), w = want.to(at::kDouble);
  EXPECT_TRUE(at::equal(at::isinf(g), at::isinf(w))) << "rows that see no key differ";
  const at::Tensor fin = at::isinf(w).logical_not();
  return max_abs(at::where(fin, g - w, at::zeros_like(g)));
}

// The tolerance policy (DESIGN.md): in float16 / bfloat16 the kernel's error
// against the float64 CPU result may be at most 3x the CPU kernel's own error
// in that precision, plus two units of the dtype's precision at the output's
// scale; float32 and float64 are compared tightly.
void expect_matches_cpu(const Case& c, at::ScalarType dtype, const Result& got, const Inputs& in64,
                        const Result* cpu_low = nullptr) {
  SCOPED_TRACE(describe(c, dtype));
  const Result ref = cpu_forward(c, in64);
  const at::Tensor out = std::get<0>(got).to(at::kDouble), want = std::get<0>(ref);
  ASSERT_EQ(out.sizes(), want.sizes());
  const double err = max_abs(out - want);
  if (dtype == at::kDouble) {
    EXPECT_LT(err, 1e-12);
    EXPECT_LT(lse_error(std::get<1>(got), std::get<1>(ref)), 1e-12);
    return;
  }
  if (dtype == at::kFloat) {
    EXPECT_LT(err, 2e-5 * std::max(1.0, max_abs(want)));
    EXPECT_LT(lse_error(std::get<1>(got), std::get<1>(ref)), 2e-5);
    return;
  }
  const Result low = cpu_low ? *cpu_low : cpu_forward(c, as_dtype(in64, dtype));
  const double cpu_err = max_abs(std::get<0>(low).to(at::kDouble) - want);
  const double unit = dtype == at::kHalf ? std::ldexp(1.0, -10) : std::ldexp(1.0, -7);
  EXPECT_LE(err, 3 * cpu_err + 2 * unit * std::max(1.0, max_abs(want)))
      << "kernel error " << err << ", CPU " << c10::toString(dtype) << " error " << cpu_err;
  // The log-sum-exp comes from float32 sums of exact products of the same
  // rounded inputs as the CPU kernel's: tight against it.
  EXPECT_LT(lse_error(std::get<1>(got), std::get<1>(low)), 1e-4);
}

void check(const Case& c, at::ScalarType dtype, int64_t seed = 0) {
  const Inputs in64 = make_inputs(c, at::kDouble, seed);
  const Inputs in = as_dtype(in64, dtype);
  expect_matches_cpu(c, dtype, harness_forward(c, in), in64);
}

const at::ScalarType kTensorCoreTypes[] = {at::kHalf, at::kBFloat16};

// --- tests -------------------------------------------------------------------------------

TEST(FlashAttnEmulation, EveryHeadDimBucketOnTensorCores) {
  for (at::ScalarType t : kTensorCoreTypes) {
    for (int64_t d : {32, 64, 96, 128, 160, 192, 224, 256}) {
      Case c;
      c.d = d;
      check(c, t, d);
    }
  }
}

TEST(FlashAttnEmulation, OddAndUnequalHeadDimsArePadded) {
  for (at::ScalarType t : kTensorCoreTypes) {
    Case c;
    c.d = 17;  // a padded copy of q, k and v, bucket 32
    check(c, t);
    c.d = 40;
    c.dv = 24;  // bucket 64, both aligned
    check(c, t);
    c.d = 24;
    c.dv = 72;  // bucket 96
    c.causal = true;
    check(c, t);
  }
}

TEST(FlashAttnEmulation, SeqlensThatAreNoMultipleOfATile) {
  // {17, 143} causal: row 0 sees keys [0, 127), one short of the second key
  // tile's end: the edge where a tile stops being wholly visible.
  for (auto [sq, sk] : std::vector<std::pair<int64_t, int64_t>>{
           {1, 1}, {1, 203}, {113, 17}, {17, 143}, {203, 203}}) {
    for (bool causal : {false, true}) {
      Case c;
      c.sq = sq;
      c.sk = sk;
      c.causal = causal;
      check(c, at::kHalf, sq + sk);
    }
  }
}

TEST(FlashAttnEmulation, MasksCapsBiasesAndHeadGroups) {
  std::vector<Case> cases;
  Case base;
  base.sq = 113;
  base.sk = 203;
  base.h = 4;
  base.hk = 2;
  Case c = base;
  c.left = 17;
  c.right = 5;
  cases.push_back(c);
  c = base;
  c.causal = true;
  c.left = 40;
  cases.push_back(c);
  c = base;
  c.softcap = 2.5;  // strong capping
  cases.push_back(c);
  c = base;
  c.alibi = 1;
  c.causal = true;
  cases.push_back(c);
  c = base;
  c.alibi = 2;
  c.batch = 2;
  cases.push_back(c);
  c = base;
  c.hk = 1;  // MQA
  cases.push_back(c);
  c = base;
  c.hk = 4;  // MHA
  c.softcap = 30;
  c.alibi = 1;
  c.left = 70;
  c.right = 3;
  cases.push_back(c);
  for (at::ScalarType t : kTensorCoreTypes) {
    for (const Case& cc : cases) check(cc, t);
  }
}

TEST(FlashAttnEmulation, RowsThatSeeNoKey) {
  // Causal with more queries than keys: the first sq - sk rows see nothing
  // (out 0, lse +inf); a window can hide every key from a row too.
  for (at::ScalarType t : {at::kHalf, at::kFloat}) {
    Case c;
    c.sq = 203;
    c.sk = 70;
    c.causal = true;
    check(c, t);
    c.sq = 100;
    c.sk = 100;
    c.causal = false;
    c.left = 3;
    c.right = -1;
    check(c, t);
    c.sk = 0;  // no keys at all
    c.left = -1;
    check(c, t);
  }
}

TEST(FlashAttnEmulation, DropoutDrawsTheCpuMask) {
  for (at::ScalarType t : {at::kHalf, at::kBFloat16, at::kFloat}) {
    Case c;
    c.sq = 70;
    c.sk = 113;
    c.dropout = 0.3;
    c.causal = t == at::kBFloat16;
    const Inputs in64 = make_inputs(c, at::kDouble);
    const Inputs in = as_dtype(in64, t);
    const Result got = harness_forward(c, in, /*probs=*/true);
    expect_matches_cpu(c, t, got, in64);
    // The same entries are dropped (negative) on both devices.
    const Result cpu = cpu_forward(c, in, /*probs=*/true);
    const at::Tensor pg = std::get<2>(got).to(at::kDouble), pc = std::get<2>(cpu).to(at::kDouble);
    SCOPED_TRACE(describe(c, t));
    EXPECT_TRUE(at::equal(at::sign(pg), at::sign(pc)));
    EXPECT_LT(max_abs(pg - pc), t == at::kFloat ? 1e-6 : 1e-2);
    // About dropout_p of the visible entries are dropped.
    const double dropped = (pc < 0).sum().item<double>() / (pc != 0).sum().item<double>();
    EXPECT_NEAR(dropped, 0.3, 0.03);
  }
}

TEST(FlashAttnEmulation, ProbabilitiesWithoutDropout) {
  for (at::ScalarType t : {at::kBFloat16, at::kDouble}) {
    Case c;
    c.sq = 40;
    c.sk = 33;
    c.causal = true;
    c.alibi = 1;
    const Inputs in = make_inputs(c, t);
    const at::Tensor got = std::get<2>(harness_forward(c, in, true)).to(at::kDouble);
    const at::Tensor want = std::get<2>(cpu_forward(c, in, true)).to(at::kDouble);
    EXPECT_LT(max_abs(got - want), t == at::kDouble ? 1e-12 : 1e-2);
  }
}

TEST(FlashAttnEmulation, VarlenWithEmptySequences) {
  Case c;
  c.cu_q = {0, 0, 17, 17, 130, 131, 131};
  c.cu_k = {0, 5, 5, 100, 303, 304, 310};
  c.h = 4;
  c.hk = 2;
  for (at::ScalarType t : {at::kHalf, at::kBFloat16, at::kFloat, at::kDouble}) {
    c.causal = t != at::kFloat;
    c.alibi = t == at::kBFloat16 ? 2 : 0;
    check(c, t);
  }
}

TEST(FlashAttnEmulation, Float32AndFloat64WithoutTensorCores) {
  for (at::ScalarType t : {at::kFloat, at::kDouble}) {
    for (int64_t d : {17, 64, 100, 256}) {
      Case c;
      c.d = d;
      c.sq = 70;
      c.sk = 45;
      c.causal = d == 100;
      c.softcap = d == 64 ? 5.0 : 0.0;
      c.alibi = d == 17 ? 1 : 0;
      c.h = 3;
      c.hk = d == 256 ? 1 : 3;
      check(c, t, d);
    }
  }
}

// Split-KV on a KV cache: the same kvcache problem through the CPU op and
// through the plan with forced and chosen splits.
TEST(FlashAttnEmulation, KvCacheWithSplitKv) {
  for (at::ScalarType t : {at::kHalf, at::kBFloat16, at::kFloat, at::kDouble}) {
    at::manual_seed(3);
    // float16 at 72: the split outputs of a head dimension padded to its bucket (96)
    const int64_t d = t == at::kHalf ? 72 : t == at::kDouble ? 40 : 64;
    const int64_t batch = 3, cache_rows = 4, capacity = 300, hk = 2, h = 4, sq = 2, new_k = 3;
    const at::Tensor k_cache = at::randn({cache_rows, capacity, hk, d}).to(t);
    const at::Tensor v_cache = at::randn({cache_rows, capacity, hk, d}).to(t);
    const at::Tensor q = at::randn({batch, sq, h, d}).to(t);
    const at::Tensor kn = at::randn({batch, new_k, hk, d}).to(t);
    const at::Tensor vn = at::randn({batch, new_k, hk, d}).to(t);
    const at::Tensor seqlens = at::tensor(std::vector<int32_t>{297, 0, 150}, at::kInt);
    const at::Tensor rows = at::tensor(std::vector<int32_t>{2, 0, 3}, at::kInt);
    for (int64_t splits : {int64_t{0}, int64_t{3}, int64_t{64}}) {
      for (bool causal : {false, true}) {
        SCOPED_TRACE(std::string(c10::toString(t)) + " splits " + std::to_string(splits) +
                     (causal ? " causal" : ""));
        const double scale = 0.125;
        const int64_t right = causal ? 0 : -1;
        at::Tensor kc1 = k_cache.clone(), vc1 = v_cache.clone();
        const auto [want, want_lse] = kernelzoo::flash_attn_kvcache(
            q, kc1, vc1, kn, vn, seqlens, rows, scale, -1, right, 0.0, std::nullopt);
        at::Tensor kc2 = k_cache.clone(), vc2 = v_cache.clone();
        fd::Options o;
        o.softmax_scale = scale;
        o.window_right = right;
        fd::Forward f = fd::prepare_kvcache(q, kc2, vc2, kn, vn, seqlens, rows, std::nullopt, o);
        fd::ForwardConfig config;
        config.num_splits = splits;
        config.sm_count = 64;  // 12 blocks fill less than half: the heuristic splits too
        std::vector<kernelzoo::harness::LaunchRecord> record;
        fd::launch_forward(f, harness(Schedule::Forward, &record), config);
        EXPECT_TRUE(at::equal(kc1, kc2));
        const double tol = t == at::kDouble ? 1e-12 : t == at::kFloat ? 2e-5 : t == at::kHalf ? 4e-3 : 3e-2;
        EXPECT_LT(max_abs(f.out.to(at::kDouble) - want.to(at::kDouble)), tol);
        EXPECT_LT(lse_error(f.lse, want_lse), 1e-4);
        // A forced split count runs the combine kernel after the forward.
        ASSERT_FALSE(record.empty());
        if (splits > 1) {
          ASSERT_EQ(record.size(), 2u);
          EXPECT_GT(record[0].grid.z, static_cast<unsigned>(batch));
        }
        if (splits == 0) EXPECT_EQ(record.size(), 2u) << "the heuristic splits";
      }
    }
  }
}

TEST(FlashAttnEmulation, EmptyProblems) {
  for (at::ScalarType t : {at::kHalf, at::kFloat}) {
    Case c;
    c.batch = 0;
    check(c, t);
    c.batch = 2;
    c.sq = 0;
    check(c, t);
    c.sq = 5;
    c.sk = 0;
    check(c, t);
  }
}

TEST(FlashAttnEmulation, StridedInputs) {
  // q, k, v as views of one packed (batch, seqlen, 3, heads, d) tensor: strides
  // of 3 * heads * d, aligned; and a view whose head stride is odd (copied).
  at::manual_seed(5);
  const at::Tensor qkv = at::randn({2, 50, 3, 2, 64}, at::kDouble);
  Case c;
  c.batch = 2;
  c.sq = c.sk = 50;
  c.h = c.hk = 2;
  Inputs in64;
  in64.q = qkv.select(2, 0);
  in64.k = qkv.select(2, 1);
  in64.v = qkv.select(2, 2);
  in64.max_q = in64.max_k = 50;
  const Inputs in = as_dtype(in64, at::kHalf);
  Inputs packed;
  const at::Tensor qkv16 = qkv.to(at::kHalf);
  packed.q = qkv16.select(2, 0);
  packed.k = qkv16.select(2, 1);
  packed.v = qkv16.select(2, 2);
  packed.max_q = packed.max_k = 50;
  expect_matches_cpu(c, at::kHalf, harness_forward(c, packed), in64);
  const at::Tensor odd = at::randn({2, 50, 2, 65}, at::kDouble);
  Inputs in_odd64 = in64;
  in_odd64.k = odd.narrow(-1, 0, 64);  // row stride 130, head stride 65
  Inputs in_odd = as_dtype(in64, at::kHalf);
  in_odd.k = odd.to(at::kHalf).narrow(-1, 0, 64);
  expect_matches_cpu(c, at::kHalf, harness_forward(c, in_odd), in_odd64);
}

TEST(FlashAttnEmulation, EveryScheduleGivesTheSameBits) {
  Case c;
  c.sq = 113;
  c.sk = 150;
  c.causal = true;
  c.dropout = 0.2;
  const Inputs in = make_inputs(c, at::kBFloat16);
  const Result fwd = harness_forward(c, in);
  for (Schedule s : {Schedule::Reverse, Schedule::Shuffled, Schedule::WarpByWarp}) {
    const Result other = harness_forward(c, in, false, harness(s));
    EXPECT_TRUE(at::equal(std::get<0>(fwd), std::get<0>(other)));
    EXPECT_TRUE(at::equal(std::get<1>(fwd), std::get<1>(other)));
  }
}

TEST(FlashAttnEmulation, LaunchPlan) {
  std::vector<kernelzoo::harness::LaunchRecord> record;
  Case c;
  c.batch = 2;
  c.sq = 130;
  c.sk = 40;
  c.h = 3;
  c.hk = 1;
  c.d = 96;
  const Inputs in = make_inputs(c, at::kHalf);
  harness_forward(c, in, false, harness(Schedule::Forward, &record));
  ASSERT_EQ(record.size(), 1u);
  EXPECT_EQ(record[0].kernel, kernelzoo::harness::kernel_id(fd::flash_fwd_kernel<c10::Half, 96>));
  EXPECT_EQ(record[0].grid.x, 3u);  // ceil(130 / 64)
  EXPECT_EQ(record[0].grid.y, 3u);
  EXPECT_EQ(record[0].grid.z, 2u);
  EXPECT_EQ(record[0].block.x, 128u);
  EXPECT_EQ(record[0].shared_bytes, (64u + 4u * 64u) * 104u * 2u);
}

}  // namespace
