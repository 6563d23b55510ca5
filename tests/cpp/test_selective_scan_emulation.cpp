// The selective scan CUDA kernels (selective_scan_kernel.cuh) run on the CPU
// through the execution harness, with the launcher's own choices of element
// type, parameters, grid and scratch buffers (selective_scan_plan.h), compared
// with the CPU kernels through the dispatcher: the forward (outputs, last
// states, checkpoints), both backward paths (every gradient, from the output
// and from the last state), and the decoding step.
#include <ATen/Context.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/abs.h>
#include <ATen/ops/allclose.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_strided.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/max.h>
#include <ATen/ops/rand.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/sub.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/zeros.h>
#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "ops/selective_scan/selective_scan.h"
#include "ops/selective_scan/selective_scan_args.h"
// The harness adapter, then the plan and its kernel bodies: device code.
#include "harness_launch.h"
#include "ops/selective_scan/selective_scan_plan.h"

namespace {

namespace sd = kernelzoo::selective_scan_detail;
using kernelzoo::harness::HarnessLaunch;
using kernelzoo::harness::Schedule;
using Path = kernelzoo::BackwardPath;
using Opt = std::optional<at::Tensor>;

HarnessLaunch harness(Schedule schedule = Schedule::Forward, unsigned grid_cap = 0,
                      std::vector<kernelzoo::harness::LaunchRecord>* record = nullptr) {
  HarnessLaunch launch;
  launch.options.schedule = schedule;
  launch.grid_cap = grid_cap;
  launch.record = record;
  return launch;
}

// --- problems ------------------------------------------------------------------------------

enum class Form { Const, Var, Grouped };

struct Case {
  int64_t batch, dim, seqlen, dstate;
  Form bform = Form::Var, cform = Form::Var;
  int64_t gB = 1, gC = 1;
  bool D = true, z = true, bias = true, init = false, softplus = true, dlast = true;
  bool large_delta = false;  // some delta + bias above softplus's threshold (20)
  std::vector<int32_t> cu;   // packed sequences (batch 1) when not empty
};

std::string describe(const Case& c) {
  auto form = [](Form f) {
    return f == Form::Const ? "const" : f == Form::Var ? "var" : "grouped";
  };
  std::string s = "batch " + std::to_string(c.batch) + " dim " + std::to_string(c.dim) +
                  " seqlen " + std::to_string(c.seqlen) + " dstate " + std::to_string(c.dstate) +
                  " B " + form(c.bform) + " C " + form(c.cform);
  if (!c.cu.empty()) s += " packed";
  return s;
}

struct Problem {
  at::Tensor u, delta, A, B, C;
  Opt D, z, bias, init, cu;
  bool softplus = true;
};

Problem make_problem(const Case& c, at::ScalarType dtype, uint64_t seed = 0) {
  at::manual_seed(seed);
  const at::ScalarType w = dtype == at::kDouble ? at::kDouble : at::kFloat;
  const int64_t nseq = c.cu.empty() ? c.batch : static_cast<int64_t>(c.cu.size()) - 1;
  auto bc = [&](Form f, int64_t g) {
    if (f == Form::Const) return at::randn({c.dim, c.dstate}, at::kDouble).to(w);
    if (f == Form::Var) return at::randn({c.batch, c.dstate, c.seqlen}, at::kDouble).to(dtype);
    return at::randn({c.batch, g, c.dstate, c.seqlen}, at::kDouble).to(dtype);
  };
  Problem p;
  p.u = at::randn({c.batch, c.dim, c.seqlen}, at::kDouble).to(dtype);
  at::Tensor delta = at::rand({c.batch, c.dim, c.seqlen}, at::kDouble) * 0.5;
  if (c.large_delta && c.seqlen > 0) delta.select(2, c.seqlen / 2).add_(25.0);
  p.delta = delta.to(dtype);
  p.A = (-at::rand({c.dim, c.dstate}, at::kDouble) * 2).to(w);
  p.B = bc(c.bform, c.gB);
  p.C = bc(c.cform, c.gC);
  if (c.D) p.D = at::randn({c.dim}, at::kDouble).to(w);
  if (c.z) p.z = at::randn({c.batch, c.dim, c.seqlen}, at::kDouble).to(dtype);
  if (c.bias) p.bias = (at::randn({c.dim}, at::kDouble) * 0.1).to(w);
  if (c.init) p.init = at::randn({nseq, c.dim, c.dstate}, at::kDouble).to(w);
  if (!c.cu.empty()) p.cu = at::tensor(c.cu, at::kInt);
  p.softplus = c.softplus;
  return p;
}

double tolerance(at::ScalarType dtype) {
  switch (dtype) {
    case at::kDouble: return 1e-10;
    case at::kFloat: return 2e-4;  // the scan's order of operations differs from the CPU's
    default: return 2e-2;          // one rounding of float16 / bfloat16 results
  }
}

void expect_close(const at::Tensor& got, const at::Tensor& want, const std::string& what) {
  ASSERT_EQ(got.defined(), want.defined()) << what;
  if (!want.defined()) return;
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  ASSERT_EQ(got.scalar_type(), want.scalar_type()) << what;
  if (want.numel() == 0) return;
  const double tol = tolerance(want.scalar_type());
  const at::Tensor g = got.to(at::kDouble), e = want.to(at::kDouble);
  // relative to the magnitude of the expected values (sums of many terms)
  const double scale = std::max(1.0, e.abs().max().item<double>());
  EXPECT_TRUE(at::allclose(g, e, tol, tol * scale))
      << what << ": max abs diff " << at::sub(g, e).abs().max().item<double>() << " (scale "
      << scale << ")";
}

using Forward = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                         at::Tensor, at::Tensor, at::Tensor>;
const char* const kGradNames[9] = {"du",          "ddelta",        "dA", "dB", "dC", "dD", "dz",
                                   "ddelta_bias", "dinitial_state"};

Forward emulate_forward(const Problem& p, const HarnessLaunch& launch) {
  const sd::Scan s =
      sd::prepare_scan(p.u, p.delta, p.A, p.B, p.C, p.D, p.z, p.bias, p.softplus, p.init, p.cu);
  const auto acc = s.A.options();
  at::Tensor out = at::empty(p.u.sizes(), p.u.options());
  at::Tensor last = at::empty({s.nseq, s.dim, s.dstate}, acc);
  at::Tensor ckpt = at::empty({s.batch, s.dim, s.chunks(), s.dstate}, acc);
  sd::launch_forward(s, out, last, ckpt, launch);
  return {out, last, ckpt};
}

Forward cpu_forward(const Problem& p) {
  return kernelzoo::selective_scan_forward(p.u, p.delta, p.A, p.B, p.C, p.D, p.z, p.bias,
                                           p.softplus, p.init, p.cu);
}

Grads emulate_backward(const Problem& p, const at::Tensor& dout, const Opt& dlast,
                       const at::Tensor& ckpt, Path path, const HarnessLaunch& launch) {
  const sd::ScanBackward b = sd::prepare_scan_backward(
      dout, dlast, p.u, p.delta, p.A, p.B, p.C, p.D, p.z, p.bias, p.softplus, p.init, p.cu, ckpt);
  return sd::finish_grads(b.s, sd::launch_backward(b, launch, path));
}

Grads cpu_backward(const Problem& p, const at::Tensor& dout, const Opt& dlast,
                   const at::Tensor& ckpt) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("kernelzoo::_selective_scan_backward", "")
          .typed<Grads(const at::Tensor&, const Opt&, const at::Tensor&, const at::Tensor&,
                       const at::Tensor&, const at::Tensor&, const at::Tensor&, const Opt&,
                       const Opt&, const Opt&, bool, const Opt&, const Opt&, const at::Tensor&)>();
  return op.call(dout, dlast, p.u, p.delta, p.A, p.B, p.C, p.D, p.z, p.bias, p.softplus, p.init,
                 p.cu, ckpt);
}

void expect_grads(const Grads& got, const Grads& want, const std::string& what) {
  const at::Tensor g[9] = {std::get<0>(got), std::get<1>(got), std::get<2>(got),
                           std::get<3>(got), std::get<4>(got), std::get<5>(got),
                           std::get<6>(got), std::get<7>(got), std::get<8>(got)};
  const at::Tensor w[9] = {std::get<0>(want), std::get<1>(want), std::get<2>(want),
                           std::get<3>(want), std::get<4>(want), std::get<5>(want),
                           std::get<6>(want), std::get<7>(want), std::get<8>(want)};
  for (int i = 0; i < 9; ++i) expect_close(g[i], w[i], what + ": " + kGradNames[i]);
}

// Forward and both backward paths of one case against the CPU kernels.
void check_case(const Case& c, at::ScalarType dtype, Schedule schedule = Schedule::Forward) {
  const std::string what = describe(c) + " " + c10::toString(dtype);
  const Problem p = make_problem(c, dtype);
  const auto [out, last, ckpt] = emulate_forward(p, harness(schedule));
  const auto [out_c, last_c, ckpt_c] = cpu_forward(p);
  expect_close(out, out_c, what + ": out");
  expect_close(last, last_c, what + ": last_state");
  expect_close(ckpt, ckpt_c, what + ": checkpoints");
  at::manual_seed(7);
  const at::Tensor dout = at::randn(p.u.sizes(), at::kDouble).to(dtype);
  Opt dlast;
  if (c.dlast) dlast = at::randn(last_c.sizes(), at::kDouble).to(last_c.scalar_type());
  const Grads want = cpu_backward(p, dout, dlast, ckpt_c);
  for (Path path : {Path::Atomic, Path::Deterministic}) {
    SCOPED_TRACE(path == Path::Atomic ? "atomic" : "deterministic");
    expect_grads(emulate_backward(p, dout, dlast, ckpt, path, harness(schedule)), want, what);
  }
}

// --- cases ---------------------------------------------------------------------------------

// Every B/C form, with and without D, z, delta_bias, softplus, an initial
// state and a last-state gradient, in float64 (round-off).
TEST(SelectiveScanEmulation, EveryFormAndOptionFloat64) {
  // dim 9: two blocks of four channels and one of one, seqlen 70: a chunk and a partial one
  const std::vector<std::tuple<Form, Form, int64_t, int64_t>> forms = {
      {Form::Const, Form::Const, 1, 1},
      {Form::Var, Form::Var, 1, 1},
      {Form::Const, Form::Var, 1, 1},
      {Form::Var, Form::Const, 1, 1},
      {Form::Grouped, Form::Grouped, 3, 1}};
  for (const auto& [bf, cf, gB, gC] : forms) {
    Case c{2, 9, 70, 3, bf, cf, gB, gC};
    c.large_delta = bf == Form::Var;
    check_case(c, at::kDouble);
    c.D = c.z = c.bias = c.softplus = c.dlast = false;
    c.init = true;
    check_case(c, at::kDouble);
  }
}

// Odd lengths (one position, a partial chunk, 32 chunks and one position) and
// state sizes (1, 16, 64).
TEST(SelectiveScanEmulation, OddSeqlensAndStateSizes) {
  for (int64_t L : {1, 17, 64, 65}) {
    for (int64_t n : {1, 16})
      check_case(Case{1, 5, L, n, Form::Grouped, Form::Var, 1}, at::kDouble);
  }
  check_case(Case{1, 2, 17, 64, Form::Var, Form::Const}, at::kDouble);
  Case longer{1, 3, 2049, 16, Form::Var, Form::Var};
  longer.init = true;
  check_case(longer, at::kFloat);
}

// Groups of B and C that differ (their lcm splits the channel blocks) and
// groups smaller than a block: blocks never straddle a group.
TEST(SelectiveScanEmulation, Groups) {
  check_case(Case{2, 24, 40, 4, Form::Grouped, Form::Grouped, 4, 6}, at::kDouble);
  check_case(Case{1, 12, 33, 2, Form::Grouped, Form::Const, 12, 1}, at::kDouble);
  check_case(Case{1, 10, 33, 2, Form::Var, Form::Grouped, 1, 2}, at::kDouble);
}

// Packed sequences: boundaries inside a chunk, at a chunk edge, empty
// sequences at the start, middle and end, a one-position sequence.
TEST(SelectiveScanEmulation, PackedSequences) {
  Case c{1, 6, 150, 3, Form::Grouped, Form::Var, 2, 1};
  c.init = true;
  c.cu = {0, 0, 10, 64, 65, 65, 128, 150, 150};
  check_case(c, at::kDouble);
  c.init = false;
  c.dlast = false;
  c.cu = {0, 150};
  check_case(c, at::kDouble);
}

TEST(SelectiveScanEmulation, LowPrecision) {
  for (at::ScalarType dtype : {at::kFloat, at::kHalf, at::kBFloat16}) {
    check_case(Case{2, 6, 100, 4, Form::Var, Form::Grouped, 1, 2}, dtype);
    check_case(Case{1, 5, 40, 4, Form::Const, Form::Const}, dtype);
  }
}

// The backward shares memory between warps (variable dB/dC): every schedule.
TEST(SelectiveScanEmulation, EverySchedule) {
  Case c{1, 7, 90, 3, Form::Var, Form::Grouped, 1, 1};
  c.init = true;
  c.cu = {0, 30, 90};
  for (Schedule s :
       {Schedule::Forward, Schedule::Reverse, Schedule::Shuffled, Schedule::WarpByWarp}) {
    SCOPED_TRACE(static_cast<int>(s));
    check_case(c, at::kDouble, s);
  }
}

// Empty inputs: no launch, the last state of an empty sequence is its initial
// state, its initial state's gradient that of its last state.
TEST(SelectiveScanEmulation, EmptyInputs) {
  for (const Case& base :
       {Case{0, 4, 10, 2}, Case{2, 0, 10, 2}, Case{2, 4, 0, 2}, Case{2, 4, 10, 0}}) {
    Case c = base;
    c.init = true;
    std::vector<kernelzoo::harness::LaunchRecord> record;
    const Problem p = make_problem(c, at::kDouble);
    const auto [out, last, ckpt] = emulate_forward(p, harness(Schedule::Forward, 0, &record));
    const auto [out_c, last_c, ckpt_c] = cpu_forward(p);
    expect_close(out, out_c, describe(c) + ": out");
    expect_close(last, last_c, describe(c) + ": last_state");
    const at::Tensor dout = at::randn(p.u.sizes(), at::kDouble);
    const at::Tensor dlast = at::randn(last_c.sizes(), at::kDouble);
    expect_grads(emulate_backward(p, dout, dlast, ckpt, Path::Atomic, harness()),
                 cpu_backward(p, dout, dlast, ckpt_c), describe(c));
    if (c.batch == 0 || c.dim == 0 || c.seqlen == 0) EXPECT_TRUE(record.empty()) << describe(c);
  }
}

// The launch: one block of four warps per (batch, group, four channels).
TEST(SelectiveScanEmulation, LaunchPlan) {
  Case c{3, 10, 20, 2, Form::Grouped, Form::Grouped, 2, 5};  // groups 10: one channel per block
  std::vector<kernelzoo::harness::LaunchRecord> record;
  const Problem p = make_problem(c, at::kFloat);
  emulate_forward(p, harness(Schedule::Forward, 0, &record));
  ASSERT_EQ(record.size(), 1u);
  EXPECT_EQ(record[0].kernel,
            kernelzoo::harness::kernel_id(sd::selective_scan_forward_kernel<float>));
  EXPECT_EQ(record[0].grid.x, 3u * 10u);
  EXPECT_EQ(record[0].block.x, static_cast<unsigned>(sd::kScanThreads));
  Case wide{2, 9, 20, 2};
  record.clear();
  emulate_forward(make_problem(wide, at::kFloat), harness(Schedule::Forward, 0, &record));
  EXPECT_EQ(record[0].grid.x, 2u * 3u);  // ceil(9 / 4) blocks per row
}

// Checkpoints are interchangeable between devices: the CPU backward from the
// emulated forward's checkpoints equals the CPU backward from its own.
TEST(SelectiveScanEmulation, CheckpointsServeTheCpuBackward) {
  Case c{1, 5, 130, 4};
  c.init = true;
  c.cu = {0, 64, 100, 130};
  const Problem p = make_problem(c, at::kDouble);
  const auto [out, last, ckpt] = emulate_forward(p, harness());
  const auto [out_c, last_c, ckpt_c] = cpu_forward(p);
  const at::Tensor dout = at::randn(p.u.sizes(), at::kDouble);
  expect_grads(cpu_backward(p, dout, std::nullopt, ckpt),
               cpu_backward(p, dout, std::nullopt, ckpt_c),
               "cpu backward from emulated checkpoints");
}

// The deterministic path gives the same bits every run and under every schedule.
TEST(SelectiveScanEmulation, DeterministicPathIsReproducible) {
  Case c{2, 10, 70, 3, Form::Grouped, Form::Grouped, 2, 2};
  const Problem p = make_problem(c, at::kFloat);
  const auto [out, last, ckpt] = emulate_forward(p, harness());
  const at::Tensor dout = at::randn(p.u.sizes(), at::kDouble).to(at::kFloat);
  const Grads a = emulate_backward(p, dout, std::nullopt, ckpt, Path::Deterministic,
                                   harness(Schedule::Forward));
  const Grads b = emulate_backward(p, dout, std::nullopt, ckpt, Path::Deterministic,
                                   harness(Schedule::Shuffled));
  EXPECT_TRUE(at::equal(std::get<3>(a), std::get<3>(b)));
  EXPECT_TRUE(at::equal(std::get<4>(a), std::get<4>(b)));
  EXPECT_TRUE(at::equal(std::get<2>(a), std::get<2>(b)));
}

// --- the decoding step ---------------------------------------------------------------------

struct StepArgs {
  at::Tensor state, x, dt, A, B, C;
  Opt D, z, bias;
};

StepArgs make_step(bool heads, int64_t batch, int64_t H, int64_t P, int64_t N, int64_t G,
                   at::ScalarType xt, at::ScalarType st, bool strided) {
  at::manual_seed(5);
  StepArgs a;
  const std::vector<int64_t> s =
      heads ? std::vector<int64_t>{batch, H, P, N} : std::vector<int64_t>{batch, H * P, N};
  at::Tensor state = at::randn(s, at::kDouble).to(st);
  if (strided) {  // every other row of a taller tensor: not contiguous
    std::vector<int64_t> tall = s;
    tall[tall.size() - 2] *= 2;
    at::Tensor t = at::zeros(tall, st);
    state =
        t.slice(static_cast<int64_t>(tall.size()) - 2, 0, tall[tall.size() - 2], 2).copy_(state);
  }
  a.state = state;
  const std::vector<int64_t> xs =
      heads ? std::vector<int64_t>{batch, H, P} : std::vector<int64_t>{batch, H * P};
  a.x = at::randn(xs, at::kDouble).to(xt);
  a.dt = (at::rand(xs, at::kDouble) - 0.3).to(xt);
  a.z = at::randn(xs, at::kDouble).to(xt);
  const std::vector<int64_t> hp = heads ? std::vector<int64_t>{H, P} : std::vector<int64_t>{H * P};
  std::vector<int64_t> as = hp;
  as.push_back(N);
  a.A = -at::rand(as, at::kDouble).to(at::kFloat) * 2;
  const std::vector<int64_t> bs =
      heads ? std::vector<int64_t>{batch, G, N} : std::vector<int64_t>{batch, N};
  a.B = at::randn(bs, at::kFloat);
  a.C = at::randn(bs, at::kFloat);
  a.D = at::randn(hp, at::kFloat);
  a.bias = at::randn(hp, at::kFloat) * 0.1;
  return a;
}

TEST(SelectiveScanEmulation, StateUpdateMatchesCpu) {
  struct StepCase {
    bool heads;
    int64_t batch, H, P, N, G;
    at::ScalarType xt, st;
    bool strided, softplus;
    unsigned grid_cap;
    bool options = true;  // D, z, dt_bias
  };
  std::vector<StepCase> cases = {
      {false, 3, 1, 13, 16, 1, at::kFloat, at::kFloat, false, true, 0},
      {false, 2, 1, 9, 1, 1, at::kFloat, at::kFloat, true, false, 0},
      {true, 2, 4, 3, 40, 2, at::kFloat, at::kFloat, true, true, 2},  // 40 states: two per lane
      {true, 1, 2, 5, 64, 1, at::kBFloat16, at::kBFloat16, false, true, 0},
      {false, 2, 1, 6, 16, 1, at::kHalf, at::kFloat, false, true, 1},
      {false, 2, 1, 6, 8, 1, at::kDouble, at::kDouble, false, true, 0},
      {true, 2, 2, 3, 5, 1, at::kFloat, at::kFloat, false, false, 0, false},
  };
  // every (x, state) dtype pair the launcher can pick
  for (at::ScalarType xt : {at::kDouble, at::kFloat, at::kHalf, at::kBFloat16}) {
    for (at::ScalarType st : {at::kDouble, at::kFloat, at::kHalf, at::kBFloat16}) {
      cases.push_back({true, 1, 2, 3, 33, 2, xt, st, false, true, 0});
    }
  }
  for (const StepCase& k : cases) {
    const std::string what = std::string(k.heads ? "heads" : "flat") + " N " + std::to_string(k.N) +
                             " " + c10::toString(k.xt) + "/" + c10::toString(k.st);
    const StepArgs a = make_step(k.heads, k.batch, k.H, k.P, k.N, k.G, k.xt, k.st, k.strided);
    at::Tensor A = a.A, B = a.B, C = a.C, D = *a.D, bias = *a.bias;
    if (k.xt == at::kDouble) {
      A = A.to(at::kDouble), B = B.to(at::kDouble), C = C.to(at::kDouble);
      D = D.to(at::kDouble), bias = bias.to(at::kDouble);
    }
    // copies in the same (possibly strided) layout: clone() would make them contiguous
    auto same_layout = [](const at::Tensor& t) {
      return at::empty_strided(t.sizes(), t.strides(), t.options()).copy_(t);
    };
    at::Tensor s_cpu = same_layout(a.state), s_emu = same_layout(a.state);
    const Opt oD = k.options ? Opt(D) : std::nullopt, oz = k.options ? a.z : std::nullopt,
              obias = k.options ? Opt(bias) : std::nullopt;
    const at::Tensor y_cpu =
        kernelzoo::selective_state_update(s_cpu, a.x, a.dt, A, B, C, oD, oz, obias, k.softplus);
    const sd::StateUpdate su =
        sd::prepare_state_update(s_emu, a.x, a.dt, A, B, C, oD, oz, obias, k.softplus);
    at::Tensor y = sd::launch_state_update(su, harness(Schedule::Forward, k.grid_cap));
    y = y.to(a.x.scalar_type());
    if (!su.heads) y = y.squeeze(1);
    expect_close(y, y_cpu, what + ": out");
    expect_close(s_emu, s_cpu, what + ": state");
  }
}

}  // namespace
