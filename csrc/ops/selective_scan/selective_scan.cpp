// selective scan (Mamba's S6): the schemas of the scan, its backward and the
// decoding step, the argument checks and layout preparation shared by the
// entry points (prepare_scan, prepare_scan_backward, finish_grads), and the
// C++ API. Kernels: selective_scan_cpu.cpp, selective_scan_cuda.cu.
#include "selective_scan.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/csrc/autograd/autograd_not_implemented_fallback.h>
#include <torch/library.h>

#include <numeric>
#include <string>
#include <tuple>
#include <vector>

#include "../../common/dtype_names.h"
#include "../../common/library.h"
#include "selective_scan_args.h"

TORCH_LIBRARY_FRAGMENT(kernelzoo, m) {
  kernelzoo::define_ops(
      m,
      {
          "selective_scan_forward(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, "
          "Tensor? D, Tensor? z, Tensor? delta_bias, bool delta_softplus, "
          "Tensor? initial_state, Tensor? cu_seqlens) "
          "-> (Tensor out, Tensor last_state, Tensor checkpoints)",
          "_selective_scan_backward(Tensor dout, Tensor? dlast_state, Tensor u, Tensor delta, "
          "Tensor A, Tensor B, Tensor C, Tensor? D, Tensor? z, Tensor? delta_bias, "
          "bool delta_softplus, Tensor? initial_state, Tensor? cu_seqlens, Tensor checkpoints) "
          "-> (Tensor du, Tensor ddelta, Tensor dA, Tensor dB, Tensor dC, Tensor dD, Tensor dz, "
          "Tensor ddelta_bias, Tensor dinitial_state)",
          "selective_state_update(Tensor(a!) state, Tensor x, Tensor dt, Tensor A, Tensor B, "
          "Tensor C, Tensor? D, Tensor? z, Tensor? dt_bias, bool dt_softplus) -> Tensor",
      });
}

// The scan's autograd formula is registered from Python (ops/selective_scan.py);
// the backward op (no double backward) and the in-place decoding step are not
// differentiable.
TORCH_LIBRARY_IMPL(kernelzoo, Autograd, m) {
  m.impl("_selective_scan_backward", torch::autograd::autogradNotImplementedFallback());
  m.impl("selective_state_update", torch::autograd::autogradNotImplementedFallback());
}

namespace kernelzoo {
namespace selective_scan_detail {
namespace {

constexpr const char* kWho = "selective_scan: ";

void check_device(const at::Tensor& t, const at::Tensor& u, const char* name) {
  TORCH_CHECK(t.device() == u.device(), kWho, name, " must be on u's device (", u.device(),
              "), but is on ", t.device());
}

// A, a constant B/C, D, delta_bias, initial_state: the weight dtype, float32
// (float64 when u is float64), as mamba_ssm's kernel.
at::Tensor parameter(const at::Tensor& t, const at::Tensor& u, const char* name,
                     at::ScalarType acc) {
  check_device(t, u, name);
  TORCH_CHECK(t.scalar_type() == acc, kWho, name, " must be ", dtype_name(acc),
              acc == at::kDouble ? " (u is float64)" : " (float64 only with float64 u)",
              ", but got ", dtype_name(t.scalar_type()));
  return t.contiguous();
}

// B or C: constant (dim, dstate) in the weight dtype, variable (batch, dstate,
// seqlen) or grouped (batch, groups, dstate, seqlen) in u's dtype. Returns the
// groups (0 when constant).
int64_t check_BC(const at::Tensor& t, const at::Tensor& u, int64_t dstate, const char* name,
                 at::ScalarType acc) {
  check_device(t, u, name);
  TORCH_CHECK_NOT_IMPLEMENTED(!t.is_complex(), kWho, "complex ", name, " is not supported");
  const int64_t batch = u.size(0), dim = u.size(1), seqlen = u.size(2);
  if (t.dim() == 2) {
    TORCH_CHECK(t.size(0) == dim && t.size(1) == dstate, kWho, "a constant ", name,
                " must have shape (dim, dstate) = (", dim, ", ", dstate, "), but got ", t.sizes());
    parameter(t, u, name, acc);
    return 0;
  }
  TORCH_CHECK(t.dim() == 3 || t.dim() == 4, kWho, name,
              " must be (dim, dstate), (batch, dstate, "
              "seqlen) or (batch, groups, dstate, seqlen), but got shape ",
              t.sizes());
  const int64_t groups = t.dim() == 4 ? t.size(1) : 1;
  TORCH_CHECK(t.size(0) == batch && t.size(-1) == seqlen && t.size(-2) == dstate, kWho,
              "a variable ", name, " must have shape ",
              t.dim() == 4 ? "(batch, groups, dstate, seqlen) = (" : "(batch, dstate, seqlen) = (",
              batch, ", ", t.dim() == 4 ? std::to_string(groups) + ", " : std::string(), dstate,
              ", ", seqlen, "), but got ", t.sizes());
  TORCH_CHECK(groups > 0 && dim % groups == 0, kWho, "the number of groups of ", name, " (", groups,
              ") must divide dim (", dim, ")");
  TORCH_CHECK(t.scalar_type() == u.scalar_type(), kWho, "a variable ", name,
              " must have u's dtype (", dtype_name(u.scalar_type()), "), but got ",
              dtype_name(t.scalar_type()));
  return groups;
}

// Variable B/C to (batch, groups, seqlen, dstate), acc dtype.
at::Tensor transposed_BC(const at::Tensor& t, at::ScalarType acc) {
  const at::Tensor g = t.dim() == 3 ? t.unsqueeze(1) : t;
  return g.transpose(-1, -2).to(acc).contiguous();
}

}  // namespace

Scan prepare_scan(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                  const at::Tensor& B, const at::Tensor& C, const std::optional<at::Tensor>& D,
                  const std::optional<at::Tensor>& z, const std::optional<at::Tensor>& delta_bias,
                  bool delta_softplus, const std::optional<at::Tensor>& initial_state,
                  const std::optional<at::Tensor>& cu_seqlens) {
  TORCH_CHECK(u.dim() == 3, kWho, "expected u of shape (batch, dim, seqlen), but got shape ",
              u.sizes());
  TORCH_CHECK(is_float_dtype(u.scalar_type()), kWho,
              "expected floating-point u (float64, float32, "
              "float16 or bfloat16), but got ",
              dtype_name(u.scalar_type()));
  TORCH_CHECK(delta.sizes() == u.sizes(), kWho, "delta must have u's shape ", u.sizes(),
              ", but got ", delta.sizes());
  TORCH_CHECK(delta.scalar_type() == u.scalar_type(), kWho, "delta must have u's dtype (",
              dtype_name(u.scalar_type()), "), but got ", dtype_name(delta.scalar_type()));
  check_device(delta, u, "delta");
  TORCH_CHECK_NOT_IMPLEMENTED(!A.is_complex(), kWho,
                              "complex A is not supported (only real "
                              "A: Mamba's A = -exp(A_log))");
  TORCH_CHECK(A.dim() == 2 && A.size(0) == u.size(1), kWho,
              "A must have shape (dim, dstate) "
              "with dim = ",
              u.size(1), ", but got ", A.sizes());
  const at::ScalarType acc = u.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;

  Scan s;
  s.batch = u.size(0);
  s.dim = u.size(1);
  s.seqlen = u.size(2);
  s.dstate = A.size(1);
  s.softplus = delta_softplus;
  s.A = parameter(A, u, "A", acc);
  const int64_t gB = check_BC(B, u, s.dstate, "B", acc), gC = check_BC(C, u, s.dstate, "C", acc);
  s.var_B = gB > 0;
  s.var_C = gC > 0;
  s.groups_B = std::max<int64_t>(gB, 1);
  s.groups_C = std::max<int64_t>(gC, 1);
  s.groups = std::lcm(s.groups_B, s.groups_C);
  s.B_ungrouped = B.dim() == 3;
  s.C_ungrouped = C.dim() == 3;
  s.B = s.var_B ? transposed_BC(B, acc) : B.to(acc).contiguous();
  s.C = s.var_C ? transposed_BC(C, acc) : C.to(acc).contiguous();
  for (const auto& [t, name] : {std::pair{&D, "D"}, std::pair{&delta_bias, "delta_bias"}}) {
    if (!t->has_value()) continue;
    TORCH_CHECK((*t)->dim() == 1 && (*t)->size(0) == s.dim, kWho, name,
                " must have shape (dim,) "
                "= (",
                s.dim, ",), but got ", (*t)->sizes());
  }
  if (D.has_value()) s.D = parameter(*D, u, "D", acc);
  if (delta_bias.has_value()) s.delta_bias = parameter(*delta_bias, u, "delta_bias", acc);
  if (z.has_value()) {
    TORCH_CHECK(z->sizes() == u.sizes(), kWho, "z must have u's shape ", u.sizes(), ", but got ",
                z->sizes());
    TORCH_CHECK(z->scalar_type() == u.scalar_type(), kWho, "z must have u's dtype (",
                dtype_name(u.scalar_type()), "), but got ", dtype_name(z->scalar_type()));
    check_device(*z, u, "z");
    s.z = z->contiguous();
  }
  s.nseq = s.batch;
  if (cu_seqlens.has_value()) {
    const at::Tensor& cu = *cu_seqlens;
    check_device(cu, u, "cu_seqlens");
    TORCH_CHECK(cu.scalar_type() == at::kInt, kWho, "cu_seqlens must be int32, but got ",
                c10::toString(cu.scalar_type()));
    TORCH_CHECK(cu.dim() == 1 && cu.size(0) >= 1, kWho,
                "cu_seqlens must be a 1-D tensor of "
                "nseq + 1 offsets, but got shape ",
                cu.sizes());
    TORCH_CHECK(s.batch == 1, kWho,
                "with cu_seqlens the sequences are packed along seqlen: "
                "batch must be 1, but got ",
                s.batch);
    s.cu_seqlens = cu.cpu().contiguous();
    const int32_t* p = s.cu_seqlens.const_data_ptr<int32_t>();
    const int64_t n = cu.size(0);
    TORCH_CHECK(p[0] == 0, kWho, "cu_seqlens must start at 0, but starts at ", p[0]);
    for (int64_t i = 1; i < n; ++i) {
      TORCH_CHECK(p[i] >= p[i - 1], kWho, "cu_seqlens must be non-decreasing, but cu_seqlens[", i,
                  "] = ", p[i], " < cu_seqlens[", i - 1, "] = ", p[i - 1]);
    }
    TORCH_CHECK(p[n - 1] == s.seqlen, kWho, "cu_seqlens must end at seqlen (", s.seqlen,
                "), but ends at ", p[n - 1]);
    s.nseq = n - 1;
  }
  if (initial_state.has_value()) {
    const at::Tensor& h = *initial_state;
    TORCH_CHECK(h.dim() == 3 && h.size(0) == s.nseq && h.size(1) == s.dim && h.size(2) == s.dstate,
                kWho, "initial_state must have shape (", cu_seqlens.has_value() ? "nseq" : "batch",
                ", dim, dstate) = (", s.nseq, ", ", s.dim, ", ", s.dstate, "), but got ",
                h.sizes());
    s.initial_state = parameter(h, u, "initial_state", acc);
  }
  s.u = u.contiguous();
  s.delta = delta.contiguous();
  return s;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> allocate_outputs(const Scan& s) {
  const auto acc = s.A.options();
  return {at::empty(s.u.sizes(), s.u.options()), at::empty({s.nseq, s.dim, s.dstate}, acc),
          at::empty({s.batch, s.dim, s.chunks(), s.dstate}, acc)};
}

ScanBackward prepare_scan_backward(
    const at::Tensor& dout, const std::optional<at::Tensor>& dlast_state, const at::Tensor& u,
    const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
    const std::optional<at::Tensor>& D, const std::optional<at::Tensor>& z,
    const std::optional<at::Tensor>& delta_bias, bool delta_softplus,
    const std::optional<at::Tensor>& initial_state, const std::optional<at::Tensor>& cu_seqlens,
    const at::Tensor& checkpoints) {
  ScanBackward b;
  b.s = prepare_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state,
                     cu_seqlens);
  const Scan& s = b.s;
  TORCH_CHECK(dout.sizes() == u.sizes() && dout.scalar_type() == u.scalar_type(),
              "selective_scan backward: dout must have u's shape and dtype");
  check_device(dout, u, "dout");
  TORCH_CHECK(checkpoints.sizes() == at::IntArrayRef({s.batch, s.dim, s.chunks(), s.dstate}) &&
                  checkpoints.scalar_type() == s.A.scalar_type(),
              "selective_scan backward: checkpoints do not match the problem (pass the forward's)");
  check_device(checkpoints, u, "checkpoints");
  if (dlast_state.has_value() && dlast_state->defined()) {
    TORCH_CHECK(dlast_state->sizes() == at::IntArrayRef({s.nseq, s.dim, s.dstate}),
                "selective_scan backward: dlast_state must have shape (", s.nseq, ", ", s.dim, ", ",
                s.dstate, "), but got ", dlast_state->sizes());
    check_device(*dlast_state, u, "dlast_state");
    b.dlast = dlast_state->to(s.A.scalar_type()).contiguous();
  }
  b.dout = dout.contiguous();
  b.checkpoints = checkpoints.contiguous();
  return b;
}

ScanGrads allocate_grads(const Scan& s, int64_t blocks_per_group) {
  const auto acc = s.A.options();
  const auto like_u = s.u.options().memory_format(at::MemoryFormat::Contiguous);
  ScanGrads g;
  g.du = at::empty(s.u.sizes(), like_u);
  g.ddelta = at::empty(s.u.sizes(), like_u);
  if (s.z.defined()) g.dz = at::empty(s.u.sizes(), like_u);
  g.dinit = at::empty({s.nseq, s.dim, s.dstate}, acc);
  g.dA_part = at::zeros({s.batch, s.dim, s.dstate}, acc);
  g.dD_part = at::zeros({s.batch, s.dim}, acc);
  g.dbias_part = at::zeros({s.batch, s.dim}, acc);
  auto bc = [&](bool var, int64_t groups) {
    if (!var) return at::zeros({s.batch, s.dim, s.dstate}, acc);
    if (blocks_per_group > 0) {
      return at::zeros({s.batch, s.groups, blocks_per_group, s.seqlen, s.dstate}, acc);
    }
    return at::zeros({s.batch, groups, s.seqlen, s.dstate}, acc);
  };
  g.dB = bc(s.var_B, s.groups_B);
  g.dC = bc(s.var_C, s.groups_C);
  return g;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor, at::Tensor>
finish_grads(const Scan& s, const ScanGrads& g) {
  // B/C's gradient in the input's layout and dtype (u's when variable).
  auto bc_grad = [&](const at::Tensor& part, bool var, bool ungrouped, int64_t groups) {
    at::Tensor r;
    if (!var) return sum_leading(part);
    if (part.dim() == 5) {
      // (batch, task groups, blocks, L, N) summed over the task groups inside
      // each of B's (or C's) groups and over the blocks -> (batch, groups, L, N)
      const int64_t per = part.size(1) / groups * part.size(2);
      r = part.reshape({s.batch, groups, per, s.seqlen, s.dstate});
      r = sum_leading(r.permute({2, 0, 1, 3, 4}));
    } else {
      r = part;
    }
    r = r.transpose(-1, -2);
    if (ungrouped) r = r.squeeze(1);
    return r.to(s.u.scalar_type()).contiguous();
  };
  const at::Tensor empty = at::empty({0}, s.u.options());
  return {g.du,
          g.ddelta,
          sum_leading(g.dA_part),
          bc_grad(g.dB, s.var_B, s.B_ungrouped, s.groups_B),
          bc_grad(g.dC, s.var_C, s.C_ungrouped, s.groups_C),
          s.D.defined() ? sum_leading(g.dD_part) : empty,
          s.z.defined() ? g.dz : empty,
          s.delta_bias.defined() ? sum_leading(g.dbias_part) : empty,
          s.initial_state.defined() ? g.dinit : empty};
}

Sequences sequences(const Scan& s) {
  Sequences q;
  if (s.cu_seqlens.defined()) {
    const int32_t* cu = s.cu_seqlens.const_data_ptr<int32_t>();
    for (int64_t i = 0; i < s.nseq; ++i) {
      q.start.push_back(cu[i]);
      q.end.push_back(cu[i + 1]);
    }
  } else {
    q.start.push_back(0);
    q.end.push_back(s.seqlen);
  }
  return q;
}

void empty_sequences(const Scan& s, const at::Tensor& from, at::Tensor& to) {
  const Sequences q = sequences(s);
  for (size_t i = 0; i < q.start.size(); ++i) {
    if (q.end[i] > q.start[i]) continue;
    for (int64_t b = 0; b < (s.cu_seqlens.defined() ? 1 : s.batch); ++b) {
      const int64_t gs = s.cu_seqlens.defined() ? static_cast<int64_t>(i) : b;
      if (from.defined())
        to[gs].copy_(from[gs]);
      else
        to[gs].zero_();
    }
  }
}

at::Tensor sum_leading(const at::Tensor& part) {
  if (part.size(0) == 0) return at::zeros(part.sizes().slice(1), part.options());
  at::Tensor out = part[0].clone();
  for (int64_t i = 1; i < part.size(0); ++i) out.add_(part[i]);
  return out;
}

StateUpdate prepare_state_update(const at::Tensor& state, const at::Tensor& x, const at::Tensor& dt,
                                 const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                                 const std::optional<at::Tensor>& D,
                                 const std::optional<at::Tensor>& z,
                                 const std::optional<at::Tensor>& dt_bias, bool dt_softplus) {
  constexpr const char* who = "selective_state_update: ";
  TORCH_CHECK(state.dim() == 3 || state.dim() == 4, who,
              "expected state of shape (batch, dim, "
              "dstate) or (batch, nheads, headdim, dstate), but got shape ",
              state.sizes());
  std::vector<std::pair<const at::Tensor*, const char*>> all = {
      {&state, "state"}, {&x, "x"}, {&dt, "dt"}, {&A, "A"}, {&B, "B"}, {&C, "C"}};
  if (D.has_value()) all.emplace_back(&*D, "D");
  if (z.has_value()) all.emplace_back(&*z, "z");
  if (dt_bias.has_value()) all.emplace_back(&*dt_bias, "dt_bias");
  bool any_double = false;
  for (const auto& [t, name] : all) {
    TORCH_CHECK_NOT_IMPLEMENTED(!t->is_complex(), who, "complex ", name, " is not supported");
    TORCH_CHECK(is_float_dtype(t->scalar_type()), who, "expected ", name,
                " of a floating-point "
                "dtype, but got ",
                dtype_name(t->scalar_type()));
    check_device(*t, state, name);
    any_double |= t->scalar_type() == at::kDouble;
  }
  TORCH_CHECK(dt.scalar_type() == x.scalar_type() &&
                  (!z.has_value() || z->scalar_type() == x.scalar_type()),
              who, "x, dt and z must have the same dtype");
  TORCH_CHECK(B.scalar_type() == C.scalar_type(), who, "B and C must have the same dtype");
  // Flat arguments are the heads form with nheads 1, as in mamba_ssm.
  auto up = [](const at::Tensor& t, int64_t rank, int64_t at_dim) {
    return t.dim() == rank - 1 ? t.unsqueeze(at_dim) : t;
  };
  StateUpdate s;
  s.heads = state.dim() == 4;
  s.softplus = dt_softplus;
  s.state = up(state, 4, 1);
  const int64_t batch = s.state.size(0), nheads = s.state.size(1), hdim = s.state.size(2),
                dstate = s.state.size(3);
  TORCH_CHECK(s.state.stride(-1) == 1 || dstate <= 1, who,
              "state's last dimension must be "
              "contiguous (it is updated in place)");
  const at::ScalarType acc = any_double ? at::kDouble : at::kFloat;
  // x, dt, z keep their dtype (float64 when anything is): the kernel reads them as they are.
  const at::ScalarType xt = any_double ? at::kDouble : x.scalar_type();
  auto expect = [&](const at::Tensor& t, const char* name, c10::IntArrayRef want) {
    TORCH_CHECK(t.sizes() == want, who, "expected ", name, " of shape ", want,
                " (from state's shape ", state.sizes(), "), but got ", t.sizes());
  };
  s.x = up(x, 3, 1);
  s.dt = up(dt, 3, 1);
  expect(s.x, "x", {batch, nheads, hdim});
  expect(s.dt, "dt", {batch, nheads, hdim});
  s.x = s.x.to(xt).contiguous();
  s.dt = s.dt.to(xt).contiguous();
  if (z.has_value()) {
    s.z = up(*z, 3, 1);
    expect(s.z, "z", {batch, nheads, hdim});
    s.z = s.z.to(xt).contiguous();
  }
  s.A = up(A, 3, 0);
  expect(s.A, "A", {nheads, hdim, dstate});
  s.A = s.A.to(acc).contiguous();
  s.B = up(B, 3, 1);
  s.C = up(C, 3, 1);
  TORCH_CHECK(
      s.B.dim() == 3 && s.B.size(0) == batch && s.B.size(2) == dstate && s.B.size(1) > 0 &&
          nheads % s.B.size(1) == 0,
      who, "expected B of shape (batch, dstate) or (batch, ngroups, dstate) with batch = ", batch,
      ", dstate = ", dstate, " and ngroups dividing nheads (", nheads, "), but got ", B.sizes());
  TORCH_CHECK(s.C.sizes() == s.B.sizes(), who, "C must have B's shape ", s.B.sizes(), ", but got ",
              C.sizes());
  s.B = s.B.to(acc).contiguous();
  s.C = s.C.to(acc).contiguous();
  for (const auto& [t, out, name] :
       {std::tuple{&D, &s.D, "D"}, std::tuple{&dt_bias, &s.dt_bias, "dt_bias"}}) {
    if (!t->has_value()) continue;
    *out = up(**t, 2, 0);
    expect(*out, name, {nheads, hdim});
    *out = out->to(acc).contiguous();
  }
  return s;
}

}  // namespace selective_scan_detail

// --- C++ API -----------------------------------------------------------------------------

std::tuple<at::Tensor, at::Tensor, at::Tensor> selective_scan_forward(
    const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
    const at::Tensor& C, const std::optional<at::Tensor>& D, const std::optional<at::Tensor>& z,
    const std::optional<at::Tensor>& delta_bias, bool delta_softplus,
    const std::optional<at::Tensor>& initial_state, const std::optional<at::Tensor>& cu_seqlens) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("kernelzoo::selective_scan_forward", "")
                       .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
                           const at::Tensor&, const at::Tensor&, const at::Tensor&,
                           const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                           const std::optional<at::Tensor>&, const std::optional<at::Tensor>&, bool,
                           const std::optional<at::Tensor>&, const std::optional<at::Tensor>&)>();
  return op.call(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, cu_seqlens);
}

at::Tensor selective_state_update(const at::Tensor& state, const at::Tensor& x,
                                  const at::Tensor& dt, const at::Tensor& A, const at::Tensor& B,
                                  const at::Tensor& C, const std::optional<at::Tensor>& D,
                                  const std::optional<at::Tensor>& z,
                                  const std::optional<at::Tensor>& dt_bias, bool dt_softplus) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("kernelzoo::selective_state_update", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                            const at::Tensor&, const at::Tensor&, const at::Tensor&,
                            const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
                            const std::optional<at::Tensor>&, bool)>();
  return op.call(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus);
}

}  // namespace kernelzoo
