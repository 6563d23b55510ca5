"""kernelzoo.ops.selective_scan_fn / selective_state_update (the CPU kernels;
the CUDA kernels against them in the ``cuda``-marked tests, and in the CPU
harness in tests/cpp/test_selective_scan_emulation.cpp) against the plain-PyTorch reference (kernelzoo.reference.selective_scan, itself
checked against hand-computed cases in test_selective_scan_reference.py):
float64 to round-off, low precision under mamba_ssm's tolerances, gradients of
every input (from the output and from the last state), packed sequences,
carried state, decoding steps, odd shapes, determinism, bad inputs, opcheck and
torch.compile."""

import pytest
import torch

from kernelzoo import ops
from kernelzoo import reference as R
from ophelpers import check_compile, opcheck

F64 = torch.float64


def rand(*shape, dtype=F64, seed=0, scale=1.0, positive=False):
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(shape, generator=g, dtype=F64) if positive else torch.randn(shape, generator=g, dtype=F64)
    return (t * scale).to(dtype)


def problem(b, d, L, n, bform="var", cform="var", gB=1, gC=1, dtype=F64, seed=0, D=True, z=True,
            bias=True, init=False, nseq=None):
    """u, delta, A, B, C, D, z, delta_bias, initial_state of one problem; the weights
    (A, constant B/C, D, bias, state) in the weight dtype, the rest in `dtype`."""
    w = F64 if dtype == F64 else torch.float32

    def bc(form, g, s):
        if form == "const":
            return rand(d, n, dtype=w, seed=s)
        if form == "var":
            return rand(b, n, L, dtype=dtype, seed=s)
        return rand(b, g, n, L, dtype=dtype, seed=s)

    return dict(
        u=rand(b, d, L, dtype=dtype, seed=seed),
        delta=rand(b, d, L, dtype=dtype, seed=seed + 1, positive=True, scale=0.5),
        A=-rand(d, n, dtype=w, seed=seed + 2, positive=True, scale=2.0),
        B=bc(bform, gB, seed + 3), C=bc(cform, gC, seed + 4),
        D=rand(d, dtype=w, seed=seed + 5) if D else None,
        z=rand(b, d, L, dtype=dtype, seed=seed + 6) if z else None,
        delta_bias=rand(d, dtype=w, seed=seed + 7, scale=0.1) if bias else None,
        initial_state=rand(nseq or b, d, n, dtype=w, seed=seed + 8) if init else None,
    )


NAMES = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state"]


def call(fn, p, softplus=True, cu=None, grad=False, weights=None):
    """(out, last_state, gradients of a fixed linear loss of both, by input name)."""
    ins = {k: (v.detach().clone().requires_grad_(grad) if v is not None else None) for k, v in p.items()}
    out, last = fn(ins["u"], ins["delta"], ins["A"], ins["B"], ins["C"], ins["D"], ins["z"],
                   ins["delta_bias"], softplus, True, initial_state=ins["initial_state"],
                   cu_seqlens=cu)
    if not grad:
        return out, last, {}
    wo, wl = weights or (rand(*out.shape, seed=11).to(out.dtype), rand(*last.shape, seed=12).to(last.dtype))
    loss = (out * wo).sum() + (last * wl).sum()
    leaves = {k: v for k, v in ins.items() if v is not None}
    return out, last, dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values()))))


def assert_same(a, b, **tol):
    out_a, last_a, g_a = a
    out_b, last_b, g_b = b
    torch.testing.assert_close(out_a, out_b, **tol)
    torch.testing.assert_close(last_a, last_b, **tol)
    assert g_a.keys() == g_b.keys()
    for k in g_a:
        torch.testing.assert_close(g_a[k], g_b[k], **tol, msg=lambda m: f"d{k}: {m}")


FORMS = [("const", "const", 1, 1), ("var", "var", 1, 1), ("const", "var", 1, 1),
         ("grouped", "grouped", 4, 2), ("grouped", "const", 2, 1), ("var", "grouped", 1, 4)]


@pytest.mark.parametrize("bform,cform,gB,gC", FORMS)
@pytest.mark.parametrize("options", [dict(), dict(D=False, z=False, bias=False),
                                     dict(init=True, z=False)])
@pytest.mark.parametrize("softplus", [True, False])
def test_float64_matches_reference(bform, cform, gB, gC, options, softplus):
    # dim 40 (not a multiple of the 16-channel blocks), seqlen 150 (3 chunks of 64)
    p = problem(2, 40, 150, 5, bform, cform, gB, gC, **options)
    assert_same(call(ops.selective_scan_fn, p, softplus, grad=True),
                call(R.selective_scan_fn, p, softplus, grad=True), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("L", [1, 17, 63, 64, 65, 129, 300])
@pytest.mark.parametrize("n", [1, 16, 64])
def test_odd_shapes(L, n):
    p = problem(1, 19, L, n, "grouped", "var", 1, 1, init=True)
    assert_same(call(ops.selective_scan_fn, p, grad=True), call(R.selective_scan_fn, p, grad=True),
                rtol=1e-10, atol=1e-10)


# mamba_ssm's tolerances (its tests/ops/test_selective_scan.py), outputs and gradients
TOLERANCES = {torch.float32: (6e-4, 2e-3), torch.float16: (3e-3, 5e-3),
              torch.bfloat16: (3e-2, 5e-2)}


@pytest.mark.parametrize("dtype", list(TOLERANCES))
@pytest.mark.parametrize("bform,cform,gB,gC", [FORMS[1], FORMS[3], FORMS[0]])
def test_low_precision_within_mambas_tolerance(dtype, bform, cform, gB, gC):
    """The low-precision inputs, run by the kernels and by the float64 reference
    on the same values upcast: mamba_ssm's tolerances (gradients 2x, as its tests
    loosen them for the backward), relative to the reference's magnitude."""
    rtol, atol = TOLERANCES[dtype]
    p = problem(2, 24, 100, 8, bform, cform, gB, gC, dtype=dtype, init=True)
    p64 = {k: (v.double() if v is not None else None) for k, v in p.items()}
    out, last, grads = call(ops.selective_scan_fn, p, grad=True)
    wo = rand(*out.shape, seed=11)
    wl = rand(*last.shape, seed=12)
    rout, rlast, rgrads = call(R.selective_scan_fn, p64, grad=True, weights=(wo, wl))
    out, last, grads = call(ops.selective_scan_fn, p, grad=True, weights=(wo.to(dtype), wl.float()))
    assert out.dtype == dtype and last.dtype == torch.float32
    torch.testing.assert_close(out.double(), rout, rtol=rtol, atol=atol)
    torch.testing.assert_close(last.double(), rlast, rtol=rtol, atol=atol)
    for k, g in grads.items():
        assert g.dtype == p[k].dtype
        scale = rgrads[k].abs().max().clamp_min(1)
        torch.testing.assert_close(g.double() / scale, rgrads[k] / scale, rtol=2 * rtol,
                                   atol=2 * atol, msg=lambda m: f"d{k}: {m}")


def test_gradcheck():
    p = problem(2, 5, 9, 3, "grouped", "var", 1, 1, init=True)
    p["B"] = rand(2, 1, 3, 9, seed=3)
    ins = [p[k].requires_grad_() for k in NAMES]

    def f(u, delta, A, B, C, D, z, bias, h0):
        out, last = ops.selective_scan_fn(u, delta, A, B, C, D, z, bias, True, True,
                                          initial_state=h0)
        return out, last

    assert torch.autograd.gradcheck(f, ins)


def test_gradcheck_packed_sequences():
    cu = torch.tensor([0, 3, 3, 8], dtype=torch.int32)
    p = problem(1, 4, 8, 2, "const", "var", init=True, nseq=3)
    ins = [p[k].requires_grad_() for k in NAMES]

    def f(*a):
        return ops.selective_scan_fn(*a[:8], False, True, initial_state=a[8], cu_seqlens=cu)

    assert torch.autograd.gradcheck(f, ins)


def test_packed_sequences_equal_separate_runs():
    lens = [5, 0, 70, 1, 0, 64, 13]
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32)
    total, d, n = sum(lens), 21, 4
    p = problem(1, d, total, n, "grouped", "var", 3, 1, init=True, nseq=len(lens))
    out, last, grads = call(ops.selective_scan_fn, p, cu=cu, grad=True)
    assert last.shape == (len(lens), d, n)
    for i, (a, b) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
        q = {k: v for k, v in p.items()}
        for k in ("u", "delta", "z"):
            q[k] = p[k][:, :, a:b]
        q["B"] = p["B"][..., a:b]
        q["C"] = p["C"][..., a:b]
        q["initial_state"] = p["initial_state"][i:i + 1]
        o, l, _ = call(ops.selective_scan_fn, q)
        torch.testing.assert_close(out[:, :, a:b], o, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(last[i:i + 1], l, rtol=1e-12, atol=1e-12)
        if a == b:  # an empty sequence passes its initial state through
            assert torch.equal(last[i], p["initial_state"][i])
    # and the gradients equal the reference's
    _, _, rgrads = call(R.selective_scan_fn, p, cu=cu, grad=True)
    for k in grads:
        torch.testing.assert_close(grads[k], rgrads[k], rtol=1e-10, atol=1e-10)


def test_carried_state():
    """Scanning [x1; x2] equals scanning x2 from scan(x1)'s last state, and the
    gradients of x1's inputs flow through the carried state."""
    p = problem(2, 18, 100, 6, "var", "var", z=False)
    cut = 37

    def part(a, b):
        q = dict(p)
        for k in ("u", "delta"):
            q[k] = p[k][:, :, a:b]
        q["B"], q["C"] = p["B"][..., a:b], p["C"][..., a:b]
        return q

    whole, whole_last = ops.selective_scan_fn(p["u"], p["delta"], p["A"], p["B"], p["C"], p["D"],
                                              None, p["delta_bias"], True, True)
    q1, q2 = part(0, cut), part(cut, 100)
    u1 = q1["u"].clone().requires_grad_()
    o1, h1 = ops.selective_scan_fn(u1, q1["delta"], p["A"], q1["B"], q1["C"], p["D"], None,
                                   p["delta_bias"], True, True)
    o2, h2 = ops.selective_scan_fn(q2["u"], q2["delta"], p["A"], q2["B"], q2["C"], p["D"], None,
                                   p["delta_bias"], True, True, initial_state=h1)
    torch.testing.assert_close(torch.cat([o1, o2], -1), whole, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h2, whole_last, rtol=1e-12, atol=1e-12)
    u = p["u"].clone().requires_grad_()
    ow = ops.selective_scan_fn(u, p["delta"], p["A"], p["B"], p["C"], p["D"], None,
                               p["delta_bias"], True)
    (g_whole,) = torch.autograd.grad(ow[:, :, cut:].sum(), u)
    (g_split,) = torch.autograd.grad(o2.sum(), u1)
    torch.testing.assert_close(g_split, g_whole[:, :, :cut], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("heads", [False, True])
def test_state_update_steps_equal_one_scan(heads):
    b, d, L, n = 2, 12, 9, 4
    p = problem(b, d, L, n, "var", "var", init=True)
    out, last = ops.selective_scan_fn(p["u"], p["delta"], p["A"], p["B"], p["C"], p["D"], p["z"],
                                      p["delta_bias"], True, True, initial_state=p["initial_state"])
    state = p["initial_state"].clone()
    nh = 3 if heads else 1
    view = (lambda t: t.reshape(b, nh, d // nh, *t.shape[2:])) if heads else (lambda t: t)
    pview = (lambda t: t.reshape(nh, d // nh, *t.shape[1:])) if heads else (lambda t: t)
    st = view(state)
    for t in range(L):
        B_t, C_t = p["B"][:, :, t], p["C"][:, :, t]
        if heads:
            B_t, C_t = B_t[:, None], C_t[:, None]
        y = ops.selective_state_update(st, view(p["u"][:, :, t]), view(p["delta"][:, :, t]),
                                       pview(p["A"]), B_t, C_t, pview(p["D"]),
                                       view(p["z"][:, :, t]), pview(p["delta_bias"]), True)
        torch.testing.assert_close(y.reshape(b, d), out[:, :, t], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(state, last, rtol=1e-12, atol=1e-12)


def test_state_update_matches_reference_with_groups_and_low_precision_state():
    b, h, hd, n, g = 3, 4, 5, 6, 2
    state = rand(b, h, hd, n, seed=1).to(torch.bfloat16)
    args = [rand(b, h, hd, seed=2).float(), rand(b, h, hd, seed=3, positive=True).float(),
            -rand(h, hd, n, seed=4, positive=True).float(), rand(b, g, n, seed=5).float(),
            rand(b, g, n, seed=6).float(), rand(h, hd, seed=7).float(), rand(b, h, hd, seed=8).float(),
            rand(h, hd, seed=9).float()]
    ref_state = state.clone()
    y = ops.selective_state_update(state, *args, dt_softplus=True)
    ry = R.selective_state_update(ref_state, *args, dt_softplus=True)
    assert y.dtype == torch.float32 and state.dtype == torch.bfloat16
    torch.testing.assert_close(y, ry, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(state, ref_state, rtol=0, atol=0)


def test_empty_inputs():
    p = problem(2, 5, 0, 3, init=True)
    out, last, grads = call(ops.selective_scan_fn, p, grad=True)
    assert out.shape == (2, 5, 0)
    torch.testing.assert_close(last, p["initial_state"])  # nothing scanned: the initial state
    assert torch.equal(grads["A"], torch.zeros_like(p["A"]))
    torch.testing.assert_close(grads["initial_state"], rand(2, 5, 3, seed=12))  # dlast passes through
    p = problem(0, 5, 7, 3)
    out, last, _ = call(ops.selective_scan_fn, p, grad=True)
    assert out.shape == (0, 5, 7) and last.shape == (0, 5, 3)


def test_results_do_not_depend_on_the_thread_count():
    p = problem(2, 70, 200, 16, "grouped", "var", 2, 1, dtype=torch.float32, init=True)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, max(threads, 2)):
            torch.set_num_threads(n)
            results.append(call(ops.selective_scan_fn, p, grad=True))
    finally:
        torch.set_num_threads(threads)
    (o1, l1, g1), (o2, l2, g2) = results
    assert torch.equal(o1, o2) and torch.equal(l1, l2)
    assert all(torch.equal(g1[k], g2[k]) for k in g1)


# --- errors ---------------------------------------------------------------------------------

def _bad(**changes):
    p = problem(2, 8, 10, 4, "var", "var", dtype=torch.float32)
    p.update(changes)
    return p


ERRORS = [
    ("u rank", _bad(u=torch.zeros(8, 10)), "expected u of shape (batch, dim, seqlen)"),
    ("delta shape", _bad(delta=torch.zeros(2, 8, 9)), "delta must have u's shape"),
    ("delta dtype", _bad(delta=torch.zeros(2, 8, 10, dtype=F64)), "delta must have u's dtype"),
    ("A shape", _bad(A=torch.zeros(7, 4)), "A must have shape (dim, dstate)"),
    ("A dtype", _bad(A=torch.zeros(8, 4, dtype=F64)), "A must be float32"),
    ("B dstate", _bad(B=torch.zeros(2, 5, 10)), "a variable B must have shape (batch, dstate, seqlen)"),
    ("C constant", _bad(C=torch.zeros(8, 3)), "a constant C must have shape (dim, dstate)"),
    ("groups", _bad(B=torch.zeros(2, 3, 4, 10)), "the number of groups of B (3) must divide dim (8)"),
    ("B dtype", _bad(B=torch.zeros(2, 4, 10, dtype=torch.bfloat16)), "a variable B must have u's dtype"),
    ("D shape", _bad(D=torch.zeros(7)), "D must have shape (dim,)"),
    ("z shape", _bad(z=torch.zeros(2, 8, 11)), "z must have u's shape"),
    ("init shape", _bad(initial_state=torch.zeros(2, 8, 5)), "initial_state must have shape"),
]


@pytest.mark.parametrize("name,p,message", ERRORS, ids=[e[0] for e in ERRORS])
def test_errors(name, p, message):
    with pytest.raises(RuntimeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call(ops.selective_scan_fn, p)


def test_complex_A_is_not_implemented():
    p = _bad(A=torch.zeros(8, 4, dtype=torch.complex64))
    with pytest.raises(NotImplementedError, match="complex A is not supported"):
        call(ops.selective_scan_fn, p)


@pytest.mark.parametrize("cu,message", [
    (torch.tensor([0, 4, 10]), "cu_seqlens must be int32"),
    (torch.tensor([1, 4, 10], dtype=torch.int32), "cu_seqlens must start at 0"),
    (torch.tensor([0, 6, 4, 10], dtype=torch.int32), "cu_seqlens must be non-decreasing"),
    (torch.tensor([0, 4, 9], dtype=torch.int32), r"cu_seqlens must end at seqlen \(10\)"),
])
def test_cu_seqlens_errors(cu, message):
    p = problem(1, 8, 10, 4, dtype=torch.float32)
    with pytest.raises(RuntimeError, match=message):
        call(ops.selective_scan_fn, p, cu=cu)
    p = problem(2, 8, 10, 4, dtype=torch.float32)
    with pytest.raises(RuntimeError, match="batch must be 1"):
        call(ops.selective_scan_fn, p, cu=torch.tensor([0, 10], dtype=torch.int32))


def test_state_update_errors():
    state = torch.zeros(2, 8, 4)
    x = torch.zeros(2, 8)
    A, B = torch.zeros(8, 4), torch.zeros(2, 4)
    with pytest.raises(RuntimeError, match="expected x of shape"):
        ops.selective_state_update(state, torch.zeros(2, 7), x, A, B, B)
    with pytest.raises(RuntimeError, match="expected A of shape"):
        ops.selective_state_update(state, x, x, torch.zeros(8, 5), B, B)
    with pytest.raises(RuntimeError, match="C must have B's shape"):
        ops.selective_state_update(state, x, x, A, B, torch.zeros(2, 1, 3))
    with pytest.raises(RuntimeError, match="x, dt and z must have the same dtype"):
        ops.selective_state_update(state, x, x.double(), A, B, B)


# --- registration, opcheck, compile ----------------------------------------------------------

def test_opcheck():
    p = problem(2, 6, 70, 3, "grouped", "var", 2, 1, dtype=torch.float32, init=True)
    args = [p[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    for t in args:
        t.requires_grad_()
    opcheck(torch.ops.kernelzoo.selective_scan_forward.default,
            (*args, True, p["initial_state"], None))
    cu = torch.tensor([0, 20, 70], dtype=torch.int32)
    q = problem(1, 6, 70, 3, "const", "var", dtype=torch.float32)
    opcheck(torch.ops.kernelzoo.selective_scan_forward.default,
            (q["u"], q["delta"], q["A"], q["B"], q["C"], None, None, None, False, None, cu))
    state = torch.randn(2, 6, 3)
    opcheck(torch.ops.kernelzoo.selective_state_update.default,
            (state, torch.randn(2, 6), torch.rand(2, 6), -torch.rand(6, 3), torch.randn(2, 3),
             torch.randn(2, 3), None, None, None, True))


class _Mixer(torch.nn.Module):
    def forward(self, u, delta, A, B, C, D, h0):
        out, last = ops.selective_scan_fn(u, delta, A, B, C, D, None, None, True, True,
                                          initial_state=h0)
        return out * 2 + last.sum()


def test_compile_fullgraph():
    p = problem(2, 6, 40, 3, "var", "var", dtype=torch.float32, init=True)
    args = [p[k].requires_grad_() for k in ("u", "delta", "A", "B", "C", "D", "initial_state")]
    check_compile(_Mixer(), *args, tol=dict(rtol=1e-5, atol=1e-5))


def test_meta_tensors_give_shapes():
    p = problem(1, 4, 5, 2, dtype=torch.float32)
    meta = {k: (v.to("meta") if v is not None else None) for k, v in p.items()}
    out, last, _ = call(ops.selective_scan_fn, meta)  # shapes only, through the fake kernel
    assert out.shape == (1, 4, 5) and last.shape == (1, 4, 2)


def _to(p, device):
    return {k: (v.to(device) if v is not None else None) for k, v in p.items()}


def _cpu(result):
    out, last, g = result
    return out.cpu(), last.cpu(), {k: v.cpu() for k, v in g.items()}


CUDA_CASES = [  # (batch, dim, seqlen, dstate, B form, C form, groups B, C, options)
    (2, 40, 150, 5, "var", "var", 1, 1, dict()),
    (2, 40, 150, 5, "const", "const", 1, 1, dict(init=True)),
    (1, 24, 1, 16, "grouped", "grouped", 4, 2, dict(z=False)),
    (1, 19, 2049, 16, "grouped", "var", 1, 1, dict(init=True)),
    (3, 64, 300, 64, "var", "const", 1, 1, dict(D=False, bias=False)),
]


@pytest.mark.cuda
@pytest.mark.parametrize("case", CUDA_CASES)
@pytest.mark.parametrize("dtype", [F64, torch.float32, torch.bfloat16])
def test_cuda_matches_cpu(case, dtype):
    """The CUDA kernels against the CPU kernels on the same inputs: outputs, last
    states and every gradient (float64 to round-off, the rest under mamba_ssm's
    tolerances)."""
    b, d, L, n, bf, cf, gB, gC, options = case
    p = problem(b, d, L, n, bf, cf, gB, gC, dtype=dtype, **options)
    tol = dict(rtol=1e-9, atol=1e-9) if dtype == F64 else dict(zip(("rtol", "atol"), TOLERANCES[dtype]))
    expected = call(ops.selective_scan_fn, p, grad=True)
    got = _cpu(call(ops.selective_scan_fn, _to(p, "cuda"), grad=True,
                    weights=tuple(w.cuda() for w in (rand(*expected[0].shape, seed=11).to(expected[0].dtype),
                                                     rand(*expected[1].shape, seed=12).to(expected[1].dtype)))))
    assert_same(got, expected, **tol)


@pytest.mark.cuda
def test_cuda_packed_sequences_match_cpu():
    p = problem(1, 20, 300, 8, "grouped", "var", 2, 1, init=True, nseq=5)
    cu = torch.tensor([0, 0, 64, 65, 200, 300], dtype=torch.int32)
    expected = call(ops.selective_scan_fn, p, cu=cu, grad=True)
    w = (rand(*expected[0].shape, seed=11), rand(*expected[1].shape, seed=12))
    got = _cpu(call(ops.selective_scan_fn, _to(p, "cuda"), cu=cu.cuda(), grad=True,
                    weights=tuple(t.cuda() for t in w)))
    assert_same(got, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.cuda
def test_cuda_deterministic_backward_is_bitwise_reproducible():
    p = _to(problem(2, 48, 500, 16, "grouped", "grouped", 2, 4, dtype=torch.float32), "cuda")
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        first = call(ops.selective_scan_fn, p, grad=True)
        second = call(ops.selective_scan_fn, p, grad=True)
    finally:
        torch.use_deterministic_algorithms(previous)
    for k in first[2]:
        assert torch.equal(first[2][k], second[2][k]), k
    assert_same(first, call(ops.selective_scan_fn, p, grad=True), rtol=1e-4, atol=1e-4)


@pytest.mark.cuda
@pytest.mark.parametrize("heads", [False, True])
@pytest.mark.parametrize("state_dtype", [torch.float32, torch.bfloat16])
def test_cuda_state_update_matches_cpu(heads, state_dtype):
    g = torch.Generator().manual_seed(3)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    if heads:
        state, x, dt, z = r(2, 4, 3, 40), r(2, 4, 3), r(2, 4, 3).abs(), r(2, 4, 3)
        A, B, C, D, bias = -r(4, 3, 40).abs(), r(2, 2, 40), r(2, 2, 40), r(4, 3), r(4, 3)
    else:
        state, x, dt, z = r(3, 24, 16), r(3, 24), r(3, 24).abs(), r(3, 24)
        A, B, C, D, bias = -r(24, 16).abs(), r(3, 16), r(3, 16), r(24), r(24)
    state = state.to(state_dtype)
    args = (x, dt, A, B, C, D, z, bias, True)
    s_cpu, s_cuda = state.clone(), state.cuda()
    y_cpu = ops.selective_state_update(s_cpu, *args)
    y_cuda = ops.selective_state_update(s_cuda, *(a.cuda() if torch.is_tensor(a) else a for a in args))
    tol = dict(rtol=1e-5, atol=1e-5) if state_dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(y_cuda.cpu(), y_cpu, **tol)
    torch.testing.assert_close(s_cuda.cpu(), s_cpu, **tol)


class _ScriptedScan(torch.nn.Module):
    def forward(self, u, delta, A, B, C):
        return torch.ops.kernelzoo.selective_scan_forward(u, delta, A, B, C, None, None, None,
                                                          True, None, None)[0]


def test_torchscript_through_the_dispatcher_op():
    """selective_scan_fn itself, like mamba_ssm's (an autograd.Function), is not
    scriptable (it has keyword-only arguments); the dispatcher op is."""
    from ophelpers import script

    p = problem(2, 6, 20, 3, dtype=torch.float32)
    args = [p[k] for k in ("u", "delta", "A", "B", "C")]
    assert torch.equal(script(_ScriptedScan())(*args), ops.selective_scan_fn(*args, delta_softplus=True))
