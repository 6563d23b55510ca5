"""The plain-PyTorch selective-scan reference (kernelzoo.reference.selective_scan)
against independent computations: hand-computed tiny cases, the closed form of
a scan with constant inputs (a geometric series), a scalar pure-Python loop
written straight from the recurrence (every B/C form, with and without z, D,
delta_bias and softplus, packed sequences, initial states), the softplus
threshold, packed sequences against separate runs, carried state, decode steps
(selective_state_update) against one scan, float64 gradcheck, the dtype rules,
and every documented bad input with its message."""

import math

import pytest
import torch
import torch.nn.functional as F

from kernelzoo import reference as R
from ophelpers import assert_raises

scan = R.selective_scan_fn
step = R.selective_state_update
F64 = torch.float64


def rand(*shape, dtype=F64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=F64).to(dtype)


def urand(*shape, lo=0.0, hi=1.0, dtype=F64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (lo + (hi - lo) * torch.rand(shape, generator=g, dtype=F64)).to(dtype)


def make_BC(form, batch, dim, dstate, seqlen, seed, dtype=F64, groups=2):
    if form == "constant":
        return rand(dim, dstate, seed=seed, dtype=F64 if dtype == F64 else torch.float32)
    if form == "variable":
        return rand(batch, dstate, seqlen, seed=seed, dtype=dtype)
    return rand(batch, groups, dstate, seqlen, seed=seed, dtype=dtype)


def inputs(batch=2, dim=4, dstate=3, seqlen=5, B_form="variable", C_form="variable",
           dtype=F64, seed=0):
    """Random scan inputs of Mamba's ranges: delta > 0, A < 0."""
    w = F64 if dtype == F64 else torch.float32
    return dict(
        u=rand(batch, dim, seqlen, seed=seed + 1, dtype=dtype),
        delta=urand(batch, dim, seqlen, lo=0.05, hi=1.0, seed=seed + 2, dtype=dtype),
        A=-urand(dim, dstate, lo=0.2, hi=2.0, seed=seed + 3, dtype=w),
        B=make_BC(B_form, batch, dim, dstate, seqlen, seed + 4, dtype),
        C=make_BC(C_form, batch, dim, dstate, seqlen, seed + 5, dtype),
    )


def naive_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
               initial_state=None, cu_seqlens=None):
    """Scalar float64 loops straight from the recurrence (Python floats, no
    tensor ops): returns (out, last_state) as float64 tensors."""
    batch, dim, L = u.shape
    N = A.shape[1]
    u_, dl, A_, B_, C_ = (t.double().tolist() for t in (u, delta, A, B, C))
    D_ = None if D is None else D.double().tolist()
    z_ = None if z is None else z.double().tolist()
    db = None if delta_bias is None else delta_bias.double().tolist()
    h0 = None if initial_state is None else initial_state.double().tolist()
    bounds = [0, L] if cu_seqlens is None else [int(c) for c in cu_seqlens.tolist()]
    nseq = len(bounds) - 1

    def coef(M, rank, b, d, n, t):
        if rank == 2:
            return M[d][n]
        if rank == 3:
            return M[b][n][t]
        return M[b][d // (dim // len(M[b]))][n][t]

    y = [[[0.0] * L for _ in range(dim)] for _ in range(batch)]
    rows = batch if cu_seqlens is None else nseq
    last = [[[0.0] * N for _ in range(dim)] for _ in range(rows)]
    for b in range(batch):
        for d in range(dim):
            for k in range(nseq):
                r = b if cu_seqlens is None else k
                for n in range(N):
                    h = 0.0 if h0 is None else h0[r][d][n]
                    for t in range(bounds[k], bounds[k + 1]):
                        dt = dl[b][d][t] + (0.0 if db is None else db[d])
                        if delta_softplus:
                            dt = dt if dt > 20.0 else math.log1p(math.exp(dt))
                        h = (math.exp(dt * A_[d][n]) * h
                             + dt * coef(B_, B.dim(), b, d, n, t) * u_[b][d][t])
                        y[b][d][t] += h * coef(C_, C.dim(), b, d, n, t)
                    last[r][d][n] = h
            for t in range(L):
                o = y[b][d][t] + (0.0 if D_ is None else D_[d] * u_[b][d][t])
                if z_ is not None:
                    zz = z_[b][d][t]
                    o *= zz / (1.0 + math.exp(-zz))
                y[b][d][t] = o
    return (torch.tensor(y, dtype=F64).reshape(batch, dim, L),
            torch.tensor(last, dtype=F64).reshape(rows, dim, N))


# --- hand-computed cases -------------------------------------------------------------------


def test_hand_computed_dstate1_seqlen3():
    # exp(delta * A) = 1/2, B = 1, C = 3: h = 2, 5, 10.5; y = 3h; D u = 1, 2, 4
    u = torch.tensor([[[2.0, 4.0, 8.0]]], dtype=F64)
    delta = torch.ones(1, 1, 3, dtype=F64)
    A = torch.tensor([[-math.log(2.0)]], dtype=F64)
    B = torch.ones(1, 1, dtype=F64)
    C = torch.full((1, 1), 3.0, dtype=F64)
    out, last = scan(u, delta, A, B, C, return_last_state=True)
    torch.testing.assert_close(out, torch.tensor([[[6.0, 15.0, 31.5]]], dtype=F64),
                               rtol=0, atol=1e-13)
    torch.testing.assert_close(last, torch.tensor([[[10.5]]], dtype=F64), rtol=0, atol=1e-13)
    out = scan(u, delta, A, B, C, D=torch.tensor([0.5], dtype=F64))
    torch.testing.assert_close(out, torch.tensor([[[7.0, 17.0, 35.5]]], dtype=F64),
                               rtol=0, atol=1e-13)


def test_hand_computed_variable_B_C_and_delta():
    # dstate 1, delta = 1, 2, 0.5, A = -ln 2: decay 1/2, 1/4, 1/sqrt 2
    u = torch.tensor([[[1.0, 1.0, 2.0]]], dtype=F64)
    delta = torch.tensor([[[1.0, 2.0, 0.5]]], dtype=F64)
    A = torch.tensor([[-math.log(2.0)]], dtype=F64)
    B = torch.tensor([[[1.0, -1.0, 4.0]]], dtype=F64)       # (batch, dstate, seqlen)
    C = torch.tensor([[[2.0, 1.0, -1.0]]], dtype=F64)
    h1 = 1.0 * 1.0 * 1.0
    h2 = 0.25 * h1 + 2.0 * -1.0 * 1.0
    h3 = 2 ** -0.5 * h2 + 0.5 * 4.0 * 2.0
    out, last = scan(u, delta, A, B, C, return_last_state=True)
    torch.testing.assert_close(out, torch.tensor([[[2 * h1, h2, -h3]]], dtype=F64))
    torch.testing.assert_close(last, torch.tensor([[[h3]]], dtype=F64))


def test_z_gating_is_silu():
    x = inputs(batch=1, dim=3, dstate=2, seqlen=4)
    z = torch.tensor([[0.0, 1.0, -2.0, 30.0]] * 3, dtype=F64)[None]
    plain = scan(**x)
    gated = scan(**x, z=z)
    torch.testing.assert_close(gated, plain * z * torch.sigmoid(z))
    assert torch.equal(gated[..., 0], torch.zeros_like(gated[..., 0]))   # silu(0) = 0


def test_closed_form_for_constant_inputs():
    # constant u, delta, B, C over time: h_t = delta B u (1 - q^t) / (1 - q), q = exp(delta A)
    batch, dim, dstate, L = 2, 3, 4, 9
    uc = rand(batch, dim, 1, seed=1)
    dc = urand(batch, dim, 1, lo=0.1, hi=1.0, seed=2)
    A = -urand(dim, dstate, lo=0.2, hi=2.0, seed=3)
    Bc, Cc = rand(dim, dstate, seed=4), rand(dim, dstate, seed=5)
    D, z = rand(dim, seed=6), rand(batch, dim, 1, seed=7)
    out, last = scan(uc.expand(-1, -1, L), dc.expand(-1, -1, L), A, Bc, Cc, D=D,
                     z=z.expand(-1, -1, L), return_last_state=True)
    t = torch.arange(1, L + 1, dtype=F64)
    q = torch.exp(dc[..., None] * A[:, None, :])                          # (b, d, 1, n)
    h = (dc * uc)[..., None] * Bc[:, None, :] * (1 - q ** t[:, None]) / (1 - q)   # (b, d, L, n)
    want = (h * Cc[:, None, :]).sum(-1) + D[:, None] * uc
    want = want * F.silu(z)
    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(last, h[:, :, -1], rtol=1e-12, atol=1e-12)


# --- against the scalar loop, every B/C form and option ----------------------------------

FORMS = ["constant", "variable", "grouped"]
OPTIONS = [
    dict(),
    dict(D=True),
    dict(z=True),
    dict(delta_bias=True),
    dict(delta_softplus=True),
    dict(D=True, z=True, delta_bias=True, delta_softplus=True),
]


def options(opts, batch, dim, seqlen, seed=10):
    kw = {}
    if opts.get("D"):
        kw["D"] = rand(dim, seed=seed)
    if opts.get("z"):
        kw["z"] = rand(batch, dim, seqlen, seed=seed + 1)
    if opts.get("delta_bias"):
        kw["delta_bias"] = rand(dim, seed=seed + 2)
    if opts.get("delta_softplus"):
        kw["delta_softplus"] = True
    return kw


@pytest.mark.parametrize("B_form", FORMS)
@pytest.mark.parametrize("C_form", FORMS)
@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: "-".join(o) or "plain")
def test_matches_scalar_loop(B_form, C_form, opts):
    batch, dim, dstate, L = 2, 4, 3, 5
    x = inputs(batch, dim, dstate, L, B_form, C_form)
    if opts.get("delta_softplus"):
        x["delta"] = rand(batch, dim, L, seed=20)           # softplus sees negative values too
    kw = options(opts, batch, dim, L)
    out, last = scan(**x, **kw, return_last_state=True)
    want_out, want_last = naive_scan(**x, **kw)
    assert out.dtype == F64 and last.dtype == F64
    assert out.shape == (batch, dim, L) and last.shape == (batch, dim, dstate)
    torch.testing.assert_close(out, want_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(last, want_last, rtol=1e-12, atol=1e-12)
    assert torch.equal(scan(**x, **kw), out)                # return_last_state=False: out only


def test_grouped_with_four_groups_and_independent_group_counts():
    batch, dim, dstate, L = 2, 8, 3, 4
    x = inputs(batch, dim, dstate, L)
    x["B"] = rand(batch, 4, dstate, L, seed=30)
    x["C"] = rand(batch, 2, dstate, L, seed=31)
    out, last = scan(**x, return_last_state=True)
    want_out, want_last = naive_scan(**x)
    torch.testing.assert_close(out, want_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(last, want_last, rtol=1e-12, atol=1e-12)


def test_grouped_with_one_group_equals_variable():
    x = inputs(B_form="variable", C_form="variable")
    want = scan(**x, return_last_state=True)
    got = scan(**{**x, "B": x["B"][:, None], "C": x["C"][:, None]}, return_last_state=True)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_constant_and_variable_equal_their_grouped_broadcast():
    batch, dim, dstate, L = 2, 4, 3, 5
    x = inputs(batch, dim, dstate, L, B_form="constant", C_form="variable")
    want = scan(**x)
    # constant (dim, dstate) == grouped with groups = dim, B[b, d, n, t] = B[d, n]
    Bg = x["B"][None, :, :, None].expand(batch, dim, dstate, L)
    # variable (batch, dstate, seqlen) == grouped with groups = dim, every channel the same
    Cg = x["C"][:, None].expand(batch, dim, dstate, L)
    torch.testing.assert_close(scan(**{**x, "B": Bg, "C": Cg}), want, rtol=1e-14, atol=1e-14)


def test_non_contiguous_inputs():
    batch, dim, dstate, L = 2, 4, 3, 5
    x = inputs(batch, dim, dstate, L, "grouped", "constant")
    kw = options(dict(D=True, z=True, delta_bias=True), batch, dim, L)
    want = scan(**x, **kw, return_last_state=True)
    nc = {k: v.transpose(-1, -2).contiguous().transpose(-1, -2) for k, v in x.items()}
    nc["u"] = torch.cat([x["u"], x["u"]], dim=-1)[..., ::2]          # strided last dim
    nc["u"].copy_(x["u"])
    kwn = dict(kw, z=kw["z"].transpose(0, 1).contiguous().transpose(0, 1))
    assert not nc["u"].is_contiguous() and not nc["A"].is_contiguous()
    got = scan(**nc, **kwn, return_last_state=True)
    # (strides may change the order of the reduction over dstate, so not bit-equal)
    torch.testing.assert_close(got[0], want[0], rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(got[1], want[1], rtol=1e-14, atol=1e-14)


# --- softplus ----------------------------------------------------------------------------


def _identity_scan_inputs(delta):
    """A = 0, B = C = u = 1, dstate 1, seqlen 1: out = the effective dt."""
    dim = delta.numel()
    return dict(u=torch.ones(1, dim, 1, dtype=F64), delta=delta.reshape(1, dim, 1),
                A=torch.zeros(dim, 1, dtype=F64), B=torch.ones(dim, 1, dtype=F64),
                C=torch.ones(dim, 1, dtype=F64))


def test_softplus_threshold_is_20():
    vals = torch.tensor([-3.0, 0.0, 19.5, 20.0, 20.0 + 1e-9, 20.5, 25.0], dtype=F64)
    x = _identity_scan_inputs(vals.clone().requires_grad_())
    out = scan(**x, delta_softplus=True).flatten()
    want = torch.tensor([math.log1p(math.exp(-3.0)), math.log(2.0), math.log1p(math.exp(19.5)),
                         math.log1p(math.exp(20.0)), 20.0 + 1e-9, 20.5, 25.0], dtype=F64)
    assert torch.equal(out, want)
    # the threshold matters in float64: log1p(exp(x)) > x by exp(-x) ~ 1e-11 at 25
    assert math.log1p(math.exp(25.0)) != 25.0 and math.log1p(math.exp(20.0)) != 20.0
    (g,) = torch.autograd.grad(out.sum(), x["delta"])
    gw = torch.sigmoid(vals)
    gw[vals > 20] = 1.0
    torch.testing.assert_close(g.flatten(), gw, rtol=1e-15, atol=0)
    assert torch.equal(g.flatten()[-3:], torch.ones(3, dtype=F64))


def test_delta_bias_is_added_before_softplus():
    x = _identity_scan_inputs(torch.tensor([15.0, -4.0], dtype=F64))
    bias = torch.tensor([10.0, 3.0], dtype=F64)
    out = scan(**x, delta_bias=bias, delta_softplus=True).flatten()
    assert torch.equal(out, torch.tensor([25.0, math.log1p(math.exp(-1.0))], dtype=F64))
    out = scan(**x, delta_bias=bias).flatten()              # no softplus: dt used as is
    assert torch.equal(out, torch.tensor([25.0, -1.0], dtype=F64))


# --- packed sequences (cu_seqlens) -------------------------------------------------------


def cu(*offsets):
    return torch.tensor(offsets, dtype=torch.int32)


def _slice(x, form, a, b):
    return x if form == "constant" else x[..., a:b]


@pytest.mark.parametrize("forms", [("variable", "variable"), ("constant", "grouped"),
                                   ("grouped", "constant")])
@pytest.mark.parametrize("with_h0", [False, True])
def test_packed_equals_separate_runs(forms, with_h0):
    lengths = [0, 3, 0, 4, 1, 0]
    offsets = [0]
    for n in lengths:
        offsets.append(offsets[-1] + n)
    L, nseq, dim, dstate = offsets[-1], len(lengths), 4, 3
    x = inputs(1, dim, dstate, L, *forms)
    kw = options(dict(D=True, z=True, delta_bias=True, delta_softplus=True), 1, dim, L)
    h0 = rand(nseq, dim, dstate, seed=40) if with_h0 else None
    leaves = {k: v.clone().requires_grad_() for k, v in {**x, **kw, "h0": h0}.items()
              if isinstance(v, torch.Tensor)}
    args = {k: leaves.get(k, v) for k, v in {**x, **kw}.items()}
    out, last = scan(**args, return_last_state=True, initial_state=leaves.get("h0"),
                     cu_seqlens=cu(*offsets))
    assert out.shape == (1, dim, L) and last.shape == (nseq, dim, dstate)
    want_out, want_last = naive_scan(**x, **kw, initial_state=h0, cu_seqlens=cu(*offsets))
    torch.testing.assert_close(out, want_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(last, want_last, rtol=1e-12, atol=1e-12)
    outs, lasts = [], []
    for i in range(nseq):
        a, b = offsets[i], offsets[i + 1]
        part = {k: (v if k in ("A", "D", "delta_bias", "delta_softplus") else
                    _slice(v, forms[0] if k == "B" else forms[1] if k == "C" else "", a, b))
                for k, v in args.items()}
        o, h = scan(**part, return_last_state=True,
                    initial_state=None if h0 is None else leaves["h0"][i:i + 1])
        outs.append(o)
        lasts.append(h)
    sep_out, sep_last = torch.cat(outs, dim=-1), torch.cat(lasts, dim=0)
    torch.testing.assert_close(out, sep_out, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(last, sep_last, rtol=1e-13, atol=1e-13)
    # empty sequences end where they start: their initial state, or zero
    for i in (0, 2, 5):
        want = h0[i] if with_h0 else torch.zeros(dim, dstate, dtype=F64)
        assert torch.equal(last[i].detach(), want)
    # gradients of the packed call equal those of the separate runs
    wo, wl = rand(*out.shape, seed=41), rand(*last.shape, seed=42)
    names = list(leaves)
    g1 = torch.autograd.grad((out * wo).sum() + (last * wl).sum(), [leaves[k] for k in names])
    g2 = torch.autograd.grad((sep_out * wo).sum() + (sep_last * wl).sum(),
                             [leaves[k] for k in names])
    for k, a, b in zip(names, g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=k)


def test_packed_state_restarts_at_each_boundary():
    # two sequences of the same inputs give the same outputs, not a continued state
    x = inputs(1, 3, 2, 4)
    doubled = {k: (v if k == "A" else torch.cat([v, v], dim=-1)) for k, v in x.items()}
    out, last = scan(**doubled, return_last_state=True, cu_seqlens=cu(0, 4, 8))
    assert torch.equal(out[..., :4], out[..., 4:]) and torch.equal(last[0], last[1])
    cont = scan(**doubled)                                  # without cu_seqlens: one sequence
    assert not torch.allclose(cont[..., 4:], out[..., 4:])


def test_packed_edge_cases():
    dim, dstate = 3, 2
    x = inputs(1, dim, dstate, 0)
    out, last = scan(**x, return_last_state=True, cu_seqlens=cu(0))          # nseq 0
    assert out.shape == (1, dim, 0) and last.shape == (0, dim, dstate)
    out, last = scan(**x, return_last_state=True, cu_seqlens=cu(0, 0, 0))    # two empty
    assert out.shape == (1, dim, 0) and torch.equal(last, torch.zeros(2, dim, dstate, dtype=F64))
    h0 = rand(2, dim, dstate, seed=3)
    _, last = scan(**x, return_last_state=True, cu_seqlens=cu(0, 0, 0), initial_state=h0)
    assert torch.equal(last, h0)
    y = inputs(1, dim, dstate, 5)
    one = scan(**y, return_last_state=True, cu_seqlens=cu(0, 5))             # one sequence
    plain = scan(**y, return_last_state=True)
    assert torch.equal(one[0], plain[0]) and torch.equal(one[1], plain[1])


# --- carried state -----------------------------------------------------------------------


@pytest.mark.parametrize("forms", [("variable", "grouped"), ("constant", "constant")])
def test_carried_state_outputs_and_gradients(forms):
    batch, dim, dstate, L, cut = 2, 4, 3, 7, 3
    x = inputs(batch, dim, dstate, L, *forms)
    kw = options(dict(D=True, z=True, delta_bias=True, delta_softplus=True), batch, dim, L)
    h0 = rand(batch, dim, dstate, seed=50)
    leaves = {k: v.clone().requires_grad_() for k, v in {**x, **kw, "h0": h0}.items()
              if isinstance(v, torch.Tensor)}
    args = {k: leaves.get(k, v) for k, v in {**x, **kw}.items()}
    full_out, full_last = scan(**args, initial_state=leaves["h0"], return_last_state=True)

    def part(a, b):
        return {k: (v if k in ("A", "D", "delta_bias", "delta_softplus") else
                    _slice(v, forms[0] if k == "B" else forms[1] if k == "C" else "", a, b))
                for k, v in args.items()}
    o1, h1 = scan(**part(0, cut), initial_state=leaves["h0"], return_last_state=True)
    o2, h2 = scan(**part(cut, L), initial_state=h1, return_last_state=True)
    torch.testing.assert_close(torch.cat([o1, o2], -1), full_out, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(h2, full_last, rtol=1e-13, atol=1e-13)
    wo, wl = rand(*full_out.shape, seed=51), rand(*full_last.shape, seed=52)
    names = list(leaves)
    g_full = torch.autograd.grad((full_out * wo).sum() + (full_last * wl).sum(),
                                 [leaves[k] for k in names])
    g_split = torch.autograd.grad((torch.cat([o1, o2], -1) * wo).sum() + (h2 * wl).sum(),
                                  [leaves[k] for k in names])
    for k, a, b in zip(names, g_full, g_split):
        assert a.abs().sum() > 0, k
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=k)


def test_initial_state_against_scalar_loop_and_seqlen_zero():
    x = inputs(2, 4, 3, 5, "grouped", "variable")
    h0 = rand(2, 4, 3, seed=60)
    out, last = scan(**x, initial_state=h0, return_last_state=True)
    want_out, want_last = naive_scan(**x, initial_state=h0)
    torch.testing.assert_close(out, want_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(last, want_last, rtol=1e-12, atol=1e-12)
    e = inputs(2, 4, 3, 0, "grouped", "variable")
    out, last = scan(**e, initial_state=h0, return_last_state=True)
    assert out.shape == (2, 4, 0) and torch.equal(last, h0)
    _, last = scan(**e, return_last_state=True)
    assert torch.equal(last, torch.zeros(2, 4, 3, dtype=F64))


def test_empty_batch_and_dim():
    for batch, dim in ((0, 4), (2, 0)):
        x = inputs(batch, dim, 3, 5, "variable", "constant")
        out, last = scan(**x, D=rand(dim), z=rand(batch, dim, 5), return_last_state=True)
        assert out.shape == (batch, dim, 5) and last.shape == (batch, dim, 3)


# --- selective_state_update --------------------------------------------------------------


@pytest.mark.parametrize("opts", [dict(), dict(D=True, z=True, delta_bias=True,
                                                delta_softplus=True)],
                         ids=["plain", "all"])
def test_decode_steps_equal_one_scan_flat(opts):
    batch, dim, dstate, L = 2, 4, 3, 6
    x = inputs(batch, dim, dstate, L)
    kw = options(opts, batch, dim, L)
    h0 = rand(batch, dim, dstate, seed=70)
    want_out, want_last = scan(**x, **kw, initial_state=h0, return_last_state=True)
    state = h0.clone()
    outs = []
    for t in range(L):
        o = step(state, x["u"][..., t], x["delta"][..., t], x["A"], x["B"][..., t],
                 x["C"][..., t], D=kw.get("D"), z=None if "z" not in kw else kw["z"][..., t],
                 dt_bias=kw.get("delta_bias"), dt_softplus=kw.get("delta_softplus", False))
        assert o.shape == (batch, dim) and o.dtype == F64
        outs.append(o)
    torch.testing.assert_close(torch.stack(outs, -1), want_out, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(state, want_last, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("ngroups", [1, 2, 4])
def test_decode_steps_equal_one_scan_heads(ngroups):
    batch, nheads, headdim, dstate, L = 2, 4, 3, 5, 4
    dim = nheads * headdim
    x = inputs(batch, dim, dstate, L)
    B = rand(batch, ngroups, dstate, L, seed=80)
    C = rand(batch, ngroups, dstate, L, seed=81)
    kw = options(dict(D=True, z=True, delta_bias=True, delta_softplus=True), batch, dim, L)
    h0 = rand(batch, dim, dstate, seed=82)
    want_out, want_last = scan(x["u"], x["delta"], x["A"], B, C, **kw, initial_state=h0,
                               return_last_state=True)

    def heads(t):                       # (batch, dim, ...) -> (batch, nheads, headdim, ...)
        return t.reshape(batch, nheads, headdim, *t.shape[2:])
    state = heads(h0).clone()
    A4 = x["A"].reshape(nheads, headdim, dstate)
    D2, db2 = kw["D"].reshape(nheads, headdim), kw["delta_bias"].reshape(nheads, headdim)
    outs = []
    for t in range(L):
        o = step(state, heads(x["u"][..., t]), heads(x["delta"][..., t]), A4, B[..., t],
                 C[..., t], D=D2, z=heads(kw["z"][..., t]), dt_bias=db2, dt_softplus=True)
        assert o.shape == (batch, nheads, headdim)
        outs.append(o.reshape(batch, dim))
    torch.testing.assert_close(torch.stack(outs, -1), want_out, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(state.reshape(batch, dim, dstate), want_last, rtol=1e-13,
                               atol=1e-13)


def test_decode_step_hand_computed_and_in_place():
    state = torch.tensor([[[1.0, -2.0]]], dtype=F64)            # (batch 1, dim 1, dstate 2)
    ptr = state.data_ptr()
    out = step(state, torch.tensor([[3.0]], dtype=F64), torch.tensor([[1.0]], dtype=F64),
               torch.tensor([[-math.log(2.0), -math.log(4.0)]], dtype=F64),
               torch.tensor([[1.0, 2.0]], dtype=F64), torch.tensor([[1.0, 1.0]], dtype=F64),
               D=torch.tensor([10.0], dtype=F64))
    # new = (1/2, 1/4) * (1, -2) + 1 * (1, 2) * 3 = (3.5, 5.5); out = 9 + 10 * 3
    torch.testing.assert_close(state, torch.tensor([[[3.5, 5.5]]], dtype=F64))
    torch.testing.assert_close(out, torch.tensor([[39.0]], dtype=F64))
    assert state.data_ptr() == ptr


def test_decode_step_mixed_ranks_as_mamba():
    # flat state with (batch, 1, dstate) B/C and (batch, 1, dim) x: the heads form with nheads 1
    batch, dim, dstate = 2, 3, 4
    s = rand(batch, dim, dstate, seed=1)
    x, dt, z = rand(batch, dim, seed=2), urand(batch, dim, seed=3), rand(batch, dim, seed=4)
    A, B, C = -urand(dim, dstate, seed=5), rand(batch, dstate, seed=6), rand(batch, dstate, seed=7)
    s1, s2 = s.clone(), s.clone()
    o1 = step(s1, x, dt, A, B, C, z=z)
    o2 = step(s2, x[:, None], dt[:, None], A[None], B[:, None], C[:, None], z=z[:, None])
    assert o1.shape == o2.shape == (batch, dim)
    assert torch.equal(o1, o2) and torch.equal(s1, s2)
    s3 = s.clone()                                  # B and C in different ranks, as mamba
    o3 = step(s3, x, dt, A, B, C[:, None], z=z)
    assert torch.equal(o1, o3) and torch.equal(s1, s3)


def test_decode_step_gradients_equal_scan_gradients():
    batch, dim, dstate, L = 2, 3, 2, 4
    x = inputs(batch, dim, dstate, L)
    kw = options(dict(D=True, z=True, delta_bias=True, delta_softplus=True), batch, dim, L)
    h0 = rand(batch, dim, dstate, seed=90)
    leaves = {k: v.clone().requires_grad_() for k, v in {**x, **kw, "h0": h0}.items()
              if isinstance(v, torch.Tensor)}
    lv = leaves
    out, last = scan(lv["u"], lv["delta"], lv["A"], lv["B"], lv["C"], D=lv["D"], z=lv["z"],
                     delta_bias=lv["delta_bias"], delta_softplus=True, initial_state=lv["h0"],
                     return_last_state=True)
    state = lv["h0"].clone()                                 # a non-leaf: updated in place
    outs = [step(state, lv["u"][..., t], lv["delta"][..., t], lv["A"], lv["B"][..., t],
                 lv["C"][..., t], D=lv["D"], z=lv["z"][..., t], dt_bias=lv["delta_bias"],
                 dt_softplus=True) for t in range(L)]
    wo, wl = rand(*out.shape, seed=91), rand(*last.shape, seed=92)
    names = list(leaves)
    g1 = torch.autograd.grad((out * wo).sum() + (last * wl).sum(), [lv[k] for k in names])
    g2 = torch.autograd.grad((torch.stack(outs, -1) * wo).sum() + (state * wl).sum(),
                             [lv[k] for k in names])
    for k, a, b in zip(names, g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=k)


@pytest.mark.parametrize("state_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("x_dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_decode_step_dtypes(state_dtype, x_dtype):
    batch, nheads, headdim, dstate = 2, 2, 3, 4
    s = rand(batch, nheads, headdim, dstate, seed=1, dtype=state_dtype)
    x = rand(batch, nheads, headdim, seed=2, dtype=x_dtype)
    dt = urand(batch, nheads, headdim, seed=3, dtype=x_dtype)
    A = -urand(nheads, headdim, dstate, seed=4, dtype=torch.float32)
    B, C = rand(batch, 1, dstate, seed=5, dtype=x_dtype), rand(batch, 1, dstate, seed=6,
                                                               dtype=x_dtype)
    z, D = rand(batch, nheads, headdim, seed=7, dtype=x_dtype), rand(nheads, headdim, seed=8)
    s_ref = s.clone()
    out = step(s, x, dt, A, B, C, D=D.float(), z=z)
    assert out.dtype == x_dtype and s.dtype == state_dtype
    # float32 computation of the upcast inputs; out from the new state before rounding it
    s32 = s_ref.float()
    out32 = step(s32, x.float(), dt.float(), A, B.float(), C.float(), D=D.float(), z=z.float())
    assert torch.equal(out, out32.to(x_dtype))
    assert torch.equal(s, s32.to(state_dtype))


# --- gradcheck -------------------------------------------------------------------------


@pytest.mark.parametrize("forms", [("constant", "variable"), ("variable", "constant"),
                                   ("grouped", "grouped")])
def test_gradcheck_every_input(forms):
    batch, dim, dstate, L = 2, 2, 2, 3
    x = inputs(batch, dim, dstate, L, *forms)
    kw = options(dict(D=True, z=True, delta_bias=True), batch, dim, L)
    h0 = rand(batch, dim, dstate, seed=100)
    names = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias", "h0"]
    vals = [{**x, **kw, "h0": h0}[k].clone().requires_grad_() for k in names]

    def f(u, delta, A, B, C, D, z, delta_bias, h0):
        return scan(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=True,
                    initial_state=h0, return_last_state=True)
    assert torch.autograd.gradcheck(f, vals)


def test_gradcheck_last_state_only_and_packed():
    dim, dstate = 2, 2
    offsets = cu(0, 2, 2, 5)
    x = inputs(1, dim, dstate, 5, "variable", "grouped")
    h0 = rand(3, dim, dstate, seed=110)
    names = ["u", "delta", "A", "B", "C", "h0"]
    vals = [{**x, "h0": h0}[k].clone().requires_grad_() for k in names]

    def f(u, delta, A, B, C, h0):
        return scan(u, delta, A, B, C, delta_softplus=True, initial_state=h0,
                    return_last_state=True, cu_seqlens=offsets)[1]
    assert torch.autograd.gradcheck(f, vals)


def test_gradcheck_state_update():
    batch, nheads, headdim, dstate = 2, 2, 2, 2
    t = {"state": rand(batch, nheads, headdim, dstate, seed=1),
         "x": rand(batch, nheads, headdim, seed=2),
         "dt": rand(batch, nheads, headdim, seed=3),
         "A": -urand(nheads, headdim, dstate, seed=4),
         "B": rand(batch, 1, dstate, seed=5), "C": rand(batch, 1, dstate, seed=6),
         "D": rand(nheads, headdim, seed=7), "z": rand(batch, nheads, headdim, seed=8),
         "dt_bias": rand(nheads, headdim, seed=9)}
    names = list(t)
    vals = [t[k].clone().requires_grad_() for k in names]

    def f(state, x, dt, A, B, C, D, z, dt_bias):
        s = state.clone()
        out = step(s, x, dt, A, B, C, D=D, z=z, dt_bias=dt_bias, dt_softplus=True)
        return out, s
    assert torch.autograd.gradcheck(f, vals)


# --- dtype rules -----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("forms", [("variable", "grouped"), ("constant", "constant")])
def test_low_precision_dtypes(dtype, forms):
    batch, dim, dstate, L = 2, 4, 3, 6
    x = inputs(batch, dim, dstate, L, *forms, dtype=dtype)
    for k in ("A",):
        assert x[k].dtype == torch.float32
    kw = dict(D=rand(dim, seed=1, dtype=torch.float32), z=rand(batch, dim, L, seed=2,
              dtype=dtype), delta_bias=rand(dim, seed=3, dtype=torch.float32),
              delta_softplus=True, initial_state=rand(batch, dim, dstate, seed=4,
                                                      dtype=torch.float32))
    out, last = scan(**x, **kw, return_last_state=True)
    assert out.dtype == dtype and last.dtype == torch.float32
    # computed in float32 on the inputs upcast once: equal to the float32 run, rounded
    up = {k: v.float() for k, v in x.items()}
    out32, last32 = scan(**up, **dict(kw, z=kw["z"].float()), return_last_state=True)
    assert torch.equal(out, out32.to(dtype)) and torch.equal(last, last32)
    # and close to the float64 scalar loop
    want_out, want_last = naive_scan(**x, **kw)
    tol = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2, torch.float32: 1e-5}[dtype]
    torch.testing.assert_close(out.double(), want_out, rtol=tol, atol=tol)
    torch.testing.assert_close(last.double(), want_last, rtol=1e-5, atol=1e-5)


def test_float64_is_computed_in_float64():
    x = inputs(2, 4, 3, 30, "variable", "variable")
    out = scan(**x, delta_softplus=True)
    want, _ = naive_scan(**x, delta_softplus=True)
    err64 = (out - want).abs().max().item()
    x32 = {k: v.float() for k, v in x.items()}
    err32 = (scan(**x32, delta_softplus=True).double() - want).abs().max().item()
    assert err64 < 1e-12 < err32


# --- bad inputs ---------------------------------------------------------------------------


def _d(*shape, dtype=torch.float32):
    return torch.zeros(shape, dtype=dtype)


U, DL, A_, BV, CV = _d(2, 4, 5), _d(2, 4, 5), _d(4, 3), _d(2, 3, 5), _d(2, 3, 5)
BK, BG = _d(4, 3), _d(2, 2, 3, 5)
U1 = _d(1, 4, 5)
S = scan

BAD = [
    # (name, function, args, kwargs, exception, message)
    ("u rank", S, (U[0], DL, A_, BV, CV), {}, RuntimeError,
     "selective_scan_fn: expected u of shape (batch, dim, seqlen), but got a tensor of shape "
     "(4, 5)"),
    ("u type", S, ([1.0], DL, A_, BV, CV), {}, RuntimeError,
     "expected u to be a Tensor, but got list"),
    ("u int", S, (U.long(), DL.long(), A_, BV, CV), {}, RuntimeError,
     "expected u of dtype float16, bfloat16, float32 or float64, but got torch.int64"),
    ("delta shape", S, (U, DL[:, :, :4], A_, BV, CV), {}, RuntimeError,
     "delta must have u's shape (batch, dim, seqlen) = (2, 4, 5), but got (2, 4, 4)"),
    ("delta dtype", S, (U, DL.half(), A_, BV, CV), {}, RuntimeError,
     "delta must have dtype torch.float32 (u's dtype), but got torch.float16"),
    ("delta device", S, (U, DL.to("meta"), A_, BV, CV), {}, RuntimeError,
     "delta must be on u's device (cpu), but got meta"),
    ("A rank", S, (U, DL, A_[0], BV, CV), {}, RuntimeError,
     "expected A of shape (dim, dstate), but got a tensor of shape (3,)"),
    ("A dim", S, (U, DL, _d(5, 3), BV, CV), {}, RuntimeError,
     "expected A of shape (dim, dstate) with dim = u.size(1) = 4, but got (5, 3)"),
    ("A dtype", S, (U.half(), DL.half(), A_.half(), BV.half(), CV.half()), {}, RuntimeError,
     "A must have dtype torch.float32 (float32, or float64 when u is float64), but got "
     "torch.float16"),
    ("A float64 with float32 u", S, (U, DL, A_.double(), BV, CV), {}, RuntimeError,
     "A must have dtype torch.float32 (float32, or float64 when u is float64), but got "
     "torch.float64"),
    ("A float32 with float64 u", S, (U.double(), DL.double(), A_, BV.double(), CV.double()), {},
     RuntimeError, "A must have dtype torch.float64 (float32, or float64 when u is float64), "
     "but got torch.float32"),
    ("B rank", S, (U, DL, A_, _d(3), CV), {}, RuntimeError,
     "expected B of shape (dim, dstate) (constant), (batch, dstate, seqlen) (variable) or "
     "(batch, groups, dstate, seqlen) (grouped), but got a tensor of shape (3,)"),
    ("dstate constant B", S, (U, DL, A_, _d(4, 2), CV), {}, RuntimeError,
     "dstate mismatch: A has dstate = A.size(1) = 3, but constant B of shape (4, 2) has "
     "dstate 2"),
    ("dstate variable C", S, (U, DL, A_, BV, _d(2, 4, 5)), {}, RuntimeError,
     "dstate mismatch: A has dstate = A.size(1) = 3, but variable C of shape (2, 4, 5) has "
     "dstate 4"),
    ("dstate grouped B", S, (U, DL, A_, _d(2, 2, 2, 5), CV), {}, RuntimeError,
     "dstate mismatch: A has dstate = A.size(1) = 3, but grouped B of shape (2, 2, 2, 5) has "
     "dstate 2"),
    ("constant B dim", S, (U, DL, A_, _d(5, 3), CV), {}, RuntimeError,
     "expected constant B of shape (dim, dstate) = (4, 3), but got (5, 3)"),
    ("variable B batch", S, (U, DL, A_, _d(1, 3, 5), CV), {}, RuntimeError,
     "expected variable B of shape (batch, dstate, seqlen) = (2, 3, 5), but got (1, 3, 5)"),
    ("variable C seqlen", S, (U, DL, A_, BV, _d(2, 3, 4)), {}, RuntimeError,
     "expected variable C of shape (batch, dstate, seqlen) = (2, 3, 5), but got (2, 3, 4)"),
    ("grouped B seqlen", S, (U, DL, A_, _d(2, 2, 3, 6), CV), {}, RuntimeError,
     "expected grouped B of shape (batch, groups, dstate, seqlen) = (2, 2, 3, 5), but got "
     "(2, 2, 3, 6)"),
    ("groups divide dim", S, (U, DL, A_, _d(2, 3, 3, 5), CV), {}, RuntimeError,
     "dim must be a multiple of the number of groups of B (groups >= 1), but got dim = 4 and "
     "groups = 3"),
    ("zero groups", S, (U, DL, A_, BV, _d(2, 0, 3, 5)), {}, RuntimeError,
     "dim must be a multiple of the number of groups of C (groups >= 1), but got dim = 4 and "
     "groups = 0"),
    ("constant B dtype", S, (U.half(), DL.half(), A_, BK.half(), CV.half()), {}, RuntimeError,
     "constant B must have dtype torch.float32 (A's dtype), but got torch.float16"),
    ("variable B dtype", S, (U.half(), DL.half(), A_, BV, CV.half()), {}, RuntimeError,
     "variable B must have dtype torch.float16 (u's dtype), but got torch.float32"),
    ("grouped C dtype", S, (U, DL, A_, BV, BG.bfloat16()), {}, RuntimeError,
     "grouped C must have dtype torch.float32 (u's dtype), but got torch.bfloat16"),
    ("B device", S, (U, DL, A_, BV.to("meta"), CV), {}, RuntimeError,
     "B must be on u's device (cpu), but got meta"),
    ("D shape", S, (U, DL, A_, BV, CV), dict(D=_d(3)), RuntimeError,
     "expected D of shape (dim,) = (4,), but got (3,)"),
    ("D rank", S, (U, DL, A_, BV, CV), dict(D=_d(1, 4)), RuntimeError,
     "expected D of shape (dim,), but got a tensor of shape (1, 4)"),
    ("D dtype", S, (U.bfloat16(), DL.bfloat16(), A_, BV.bfloat16(), CV.bfloat16()),
     dict(D=_d(4).bfloat16()), RuntimeError,
     "D must have dtype torch.float32 (float32, or float64 when u is float64), but got "
     "torch.bfloat16"),
    ("delta_bias shape", S, (U, DL, A_, BV, CV), dict(delta_bias=_d(5)), RuntimeError,
     "expected delta_bias of shape (dim,) = (4,), but got (5,)"),
    ("delta_bias dtype", S, (U, DL, A_, BV, CV), dict(delta_bias=_d(4).double()), RuntimeError,
     "delta_bias must have dtype torch.float32 (float32, or float64 when u is float64), but "
     "got torch.float64"),
    ("z shape", S, (U, DL, A_, BV, CV), dict(z=_d(2, 4, 4)), RuntimeError,
     "z must have u's shape (batch, dim, seqlen) = (2, 4, 5), but got (2, 4, 4)"),
    ("z dtype", S, (U, DL, A_, BV, CV), dict(z=_d(2, 4, 5).half()), RuntimeError,
     "z must have dtype torch.float32 (u's dtype), but got torch.float16"),
    ("complex A", S, (U, DL, A_.to(torch.complex64), BV, CV), {}, NotImplementedError,
     "selective_scan_fn: complex A is not supported (got torch.complex64)"),
    ("complex B", S, (U, DL, A_, BK.to(torch.complex64), CV), {}, NotImplementedError,
     "complex B is not supported"),
    ("initial_state shape", S, (U, DL, A_, BV, CV), dict(initial_state=_d(1, 4, 3)),
     RuntimeError, "expected initial_state of shape (batch, dim, dstate) = (2, 4, 3), but got "
     "(1, 4, 3)"),
    ("initial_state dtype", S, (U.half(), DL.half(), A_, BV.half(), CV.half()),
     dict(initial_state=_d(2, 4, 3).half()), RuntimeError,
     "initial_state must have dtype torch.float32 (float32, or float64 when u is float64), "
     "but got torch.float16"),
    ("initial_state device", S, (U, DL, A_, BV, CV), dict(initial_state=_d(2, 4, 3).to("meta")),
     RuntimeError, "initial_state must be on u's device (cpu), but got meta"),
    # packed sequences
    ("cu batch", S, (U, DL, A_, BV, CV), dict(cu_seqlens=cu(0, 5)), RuntimeError,
     "packed sequences (cu_seqlens) need batch = u.size(0) = 1, but got batch = 2"),
    ("cu int64", S, (U1, U1, A_, BK, BK), dict(cu_seqlens=cu(0, 5).long()), RuntimeError,
     "cu_seqlens must have dtype torch.int32, but got torch.int64"),
    ("cu device", S, (U1, U1, A_, BK, BK), dict(cu_seqlens=cu(0, 5).to("meta")), RuntimeError,
     "cu_seqlens must be on u's device (cpu), but got meta"),
    ("cu rank", S, (U1, U1, A_, BK, BK), dict(cu_seqlens=cu(0, 5)[None]), RuntimeError,
     "cu_seqlens must be a 1-D tensor of nseq + 1 offsets, but got shape (1, 2)"),
    ("cu empty", S, (U1, U1, A_, BK, BK), dict(cu_seqlens=cu()), RuntimeError,
     "cu_seqlens must be a 1-D tensor of nseq + 1 offsets, but got shape (0,)"),
    ("cu start", S, (U1, U1, A_, BK, BK), dict(cu_seqlens=cu(1, 5)), RuntimeError,
     "cu_seqlens must start at 0, but cu_seqlens[0] = 1"),
    ("cu decreasing", S, (U1, U1, A_, BK, BK), dict(cu_seqlens=cu(0, 3, 2, 5)), RuntimeError,
     "cu_seqlens must be non-decreasing (sequence lengths >= 0), but cu_seqlens[2] = 2 < "
     "cu_seqlens[1] = 3"),
    ("cu end short", S, (U1, U1, A_, BK, BK), dict(cu_seqlens=cu(0, 2, 4)), RuntimeError,
     "cu_seqlens must end at seqlen = u.size(2) = 5, but cu_seqlens[-1] = 4"),
    ("cu end long", S, (U1, U1, A_, BK, BK), dict(cu_seqlens=cu(0, 2, 6)), RuntimeError,
     "cu_seqlens must end at seqlen = u.size(2) = 5, but cu_seqlens[-1] = 6"),
    ("cu initial_state", S, (U1, U1, A_, BK, BK),
     dict(cu_seqlens=cu(0, 2, 5), initial_state=_d(1, 4, 3)), RuntimeError,
     "expected initial_state of shape (nseq, dim, dstate) = (2, 4, 3), but got (1, 4, 3)"),
]

ST, X2, A2, B2 = _d(2, 4, 3), _d(2, 4), _d(4, 3), _d(2, 3)
ST4, X3, A3, B3 = _d(2, 4, 2, 3), _d(2, 4, 2), _d(4, 2, 3), _d(2, 2, 3)
P = step

BAD += [
    ("state rank", P, (ST[0], X2, X2, A2, B2, B2), {}, RuntimeError,
     "selective_state_update: expected state of shape (batch, dim, dstate) or (batch, nheads, "
     "headdim, dstate), but got a tensor of shape (4, 3)"),
    ("x rank", P, (ST, X2[0], X2, A2, B2, B2), {}, RuntimeError,
     "expected x of shape (batch, dim) or (batch, nheads, headdim), but got a tensor of shape "
     "(4,)"),
    ("x shape flat", P, (ST, _d(2, 5), _d(2, 5), A2, B2, B2), {}, RuntimeError,
     "expected x of shape (batch, dim) = (2, 4) (from state's shape (2, 4, 3)), but got (2, 5)"),
    ("dt shape heads", P, (ST4, X3, _d(2, 4, 3), A3, B3, B3), {}, RuntimeError,
     "expected dt of shape (batch, nheads, headdim) = (2, 4, 2) (from state's shape "
     "(2, 4, 2, 3)), but got (2, 4, 3)"),
    ("z shape", P, (ST, X2, X2, A2, B2, B2), dict(z=_d(1, 4)), RuntimeError,
     "expected z of shape (batch, dim) = (2, 4) (from state's shape (2, 4, 3)), but got (1, 4)"),
    ("A dstate", P, (ST, X2, X2, _d(4, 2), B2, B2), {}, RuntimeError,
     "dstate mismatch: state has dstate 3, but A of shape (4, 2) has dstate 2"),
    ("A shape heads", P, (ST4, X3, X3, _d(2, 2, 3), B3, B3), {}, RuntimeError,
     "expected A of shape (nheads, headdim, dstate) = (4, 2, 3), but got (2, 2, 3)"),
    ("B dstate", P, (ST, X2, X2, A2, _d(2, 4), B2), {}, RuntimeError,
     "dstate mismatch: state has dstate 3, but B of shape (2, 4) has dstate 4"),
    ("C dstate", P, (ST4, X3, X3, A3, B3, _d(2, 2, 2)), {}, RuntimeError,
     "dstate mismatch: state has dstate 3, but C of shape (2, 2, 2) has dstate 2"),
    ("ngroups", P, (ST4, X3, X3, A3, _d(2, 3, 3), _d(2, 3, 3)), {}, RuntimeError,
     "nheads must be a multiple of ngroups = B.size(1) >= 1 (nheads is 1 for a flat state), "
     "but got nheads = 4 and B of shape (2, 3, 3)"),
    ("zero groups", P, (ST4, X3, X3, A3, _d(2, 0, 3), _d(2, 0, 3)), {}, RuntimeError,
     "but got nheads = 4 and B of shape (2, 0, 3)"),
    ("flat with groups", P, (ST, X2, X2, A2, B3, B3), {}, RuntimeError,
     "but got nheads = 1 and B of shape (2, 2, 3)"),
    ("C not B's shape", P, (ST4, X3, X3, A3, B3, _d(2, 1, 3)), {}, RuntimeError,
     "C must have B's shape (2, 2, 3), but got (2, 1, 3)"),
    ("C batch", P, (ST, X2, X2, A2, B2, _d(1, 3)), {}, RuntimeError,
     "C must have B's shape (2, 3), but got (1, 3)"),
    ("B batch", P, (ST, X2, X2, A2, _d(1, 3), _d(1, 3)), {}, RuntimeError,
     "expected B of shape (batch, dstate) with batch = state.size(0) = 2, but got (1, 3)"),
    ("D shape", P, (ST, X2, X2, A2, B2, B2), dict(D=_d(3)), RuntimeError,
     "expected D of shape (dim,) = (4,), but got (3,)"),
    ("dt_bias shape heads", P, (ST4, X3, X3, A3, B3, B3), dict(dt_bias=_d(4, 3)), RuntimeError,
     "expected dt_bias of shape (nheads, headdim) = (4, 2), but got (4, 3)"),
    ("x dt dtypes", P, (ST, X2, X2.half(), A2, B2, B2), {}, RuntimeError,
     "x, dt and z must have the same dtype, but got x torch.float32, dt torch.float16"),
    ("z dtype", P, (ST, X2, X2, A2, B2, B2), dict(z=X2.bfloat16()), RuntimeError,
     "x, dt and z must have the same dtype, but got x torch.float32, dt torch.float32 and z "
     "torch.bfloat16"),
    ("B C dtypes", P, (ST, X2, X2, A2, B2, B2.half()), {}, RuntimeError,
     "B and C must have the same dtype, but got B torch.float32 and C torch.float16"),
    ("int state", P, (ST.long(), X2, X2, A2, B2, B2), {}, RuntimeError,
     "expected state of a floating-point dtype, but got torch.int64"),
    ("complex A step", P, (ST, X2, X2, A2.to(torch.complex64), B2, B2), {}, NotImplementedError,
     "selective_state_update: complex A is not supported"),
    ("device", P, (ST, X2, X2, A2, B2.to("meta"), B2), {}, RuntimeError,
     "B must be on state's device (cpu), but got meta"),
]


@pytest.mark.parametrize("name,fn,args,kwargs,exc,message", BAD, ids=[b[0] for b in BAD])
def test_bad_inputs(name, fn, args, kwargs, exc, message):
    assert_raises("eager", exc, message, fn, *args, **kwargs)


def test_complex_A_error_is_also_a_runtime_error():
    with pytest.raises(RuntimeError, match="complex A is not supported"):
        scan(U, DL, A_.to(torch.complex64), BV, CV)


def test_bad_step_leaves_state_untouched():
    state = torch.ones(2, 4, 3)
    with pytest.raises(RuntimeError):
        step(state, X2, X2, A2, B2, _d(2, 2))
    assert torch.equal(state, torch.ones(2, 4, 3))


# --- optional: transformers' Mamba (mamba_ssm's reference math) ------------------------


def _hf_mamba():
    transformers = pytest.importorskip("transformers")
    modeling = pytest.importorskip("transformers.models.mamba.modeling_mamba")
    return transformers, modeling


def test_matches_transformers_mamba_mixer():
    """A transformers MambaMixer (its torch path: mamba_ssm's reference math) equals
    in_proj, conv, x_proj, this scan and out_proj, in float64."""
    transformers, modeling = _hf_mamba()
    torch.manual_seed(0)
    cfg = transformers.MambaConfig(hidden_size=8, state_size=4, expand=2, conv_kernel=3,
                                   time_step_rank=2, use_conv_bias=True, use_bias=False)
    mixer = modeling.MambaMixer(cfg, layer_idx=0).double().eval()
    with torch.no_grad():
        mixer.dt_proj.bias.normal_()
        mixer.D.normal_()
    hs = rand(2, 7, 8, seed=1)
    with torch.no_grad():
        want = mixer(hs)
        xx, z = mixer.in_proj(hs).transpose(1, 2).chunk(2, dim=1)
        L = xx.shape[-1]
        xx = F.silu(mixer.conv1d(xx)[..., :L])
        r, n = cfg.time_step_rank, cfg.state_size
        dt, B, C = torch.split(mixer.x_proj(xx.transpose(1, 2)), [r, n, n], dim=-1)
        delta = mixer.dt_proj.weight @ dt.transpose(1, 2)
        # transformers rounds A, D and the dt bias to float32 (as mamba_ssm's kernel takes them)
        y = scan(xx, delta, -torch.exp(mixer.A_log.float()).double(), B.transpose(1, 2),
                 C.transpose(1, 2), D=mixer.D.float().double(), z=z,
                 delta_bias=mixer.dt_proj.bias.float().double(), delta_softplus=True)
        got = mixer.out_proj(y.transpose(1, 2))
    # transformers' torch path rounds u and B to float32 inside delta * B * u (mamba_ssm's
    # kernel has no float64): float32-level relative error, far below any wrong semantics
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-8)


def test_matches_transformers_scan_and_state_update_functions():
    _, modeling = _hf_mamba()
    hf_scan = getattr(modeling, "mamba_selective_scan", None)
    hf_step = getattr(modeling, "mamba_selective_state_update", None)
    if hf_scan is None or hf_step is None:
        pytest.skip("this transformers has no mamba_selective_scan / _state_update functions")
    batch, dim, dstate, L = 2, 4, 3, 6
    x = inputs(batch, dim, dstate, L)
    x["delta"] = rand(batch, dim, L, seed=9)
    kw = options(dict(D=True, z=True, delta_bias=True, delta_softplus=True), batch, dim, L)
    # float64 values that float32 holds exactly: transformers' torch path rounds u and B to
    # float32 (mamba_ssm's kernel has no float64), which is then lossless
    x = {k: v.float().double() for k, v in x.items()}
    kw = {k: v.float().double() if isinstance(v, torch.Tensor) else v for k, v in kw.items()}
    out, last = scan(**x, **kw, return_last_state=True)
    want_out, want_last = hf_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], D=kw["D"],
                                  z=kw["z"], delta_bias=kw["delta_bias"], delta_softplus=True,
                                  return_last_state=True)
    torch.testing.assert_close(out, want_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(last, want_last, rtol=1e-12, atol=1e-12)
    # transformers' state update computes in float32 whatever the dtype: compare in float32
    x = {k: v.float() for k, v in x.items()}
    kw = {k: v.float() if isinstance(v, torch.Tensor) else v for k, v in kw.items()}
    s1 = rand(batch, dim, dstate, seed=10, dtype=torch.float32)
    s2 = s1.clone()
    args = (x["u"][..., 0], x["delta"][..., 0], x["A"], x["B"][..., 0], x["C"][..., 0])
    o1 = step(s1, *args, D=kw["D"], z=kw["z"][..., 0], dt_bias=kw["delta_bias"],
              dt_softplus=True)
    o2 = hf_step(s2, *args, D=kw["D"], z=kw["z"][..., 0], dt_bias=kw["delta_bias"],
                 dt_softplus=True)
    torch.testing.assert_close(o1, o2, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(s1, s2, rtol=1e-6, atol=1e-6)
