"""The CUDA flash-attention kernels against the CPU kernels (the reference: they
are tested against kernelzoo.reference in test_flash_attn.py), on the same
inputs moved to the GPU. Every test is marked ``cuda`` and skipped where no GPU
is visible (tests/conftest.py).

Tolerances (DESIGN.md, "Testing rules"):

- float16 / bfloat16: the error of the CUDA result against the CPU kernel run in
  float64 on the same (rounded) inputs is at most 3x the error of the CPU kernel
  run in the same low precision, plus a floor of 1e-5 of the result's magnitude
  (for results the CPU happens to get exactly). The CPU kernels compute in
  float32 and round once, so this is the stricter reading of the policy.
- float32 / float64: the CUDA result within a small multiple of the rounding of
  its dtype of the CPU result (no tensor cores, only the summation order differs).
- softmax_lse: +inf at the same rows, the finite values to float32 (float64)
  rounding of the scores.

The dropout mask is the same Philox stream on both devices: the same seed gives
the same S_dmask sign pattern, which is also checked against
``kernelzoo.reference.flash_attn.dropout_keep_mask``.

Shapes are small (the CPU reference dominates the run time) and deliberately
no multiple of any tile: seqlens 1, 17, 113, 203, 1000, head dims 17 and 72.
"""

import contextlib
import functools

import pytest
import torch

from kernelzoo import ops
from kernelzoo.reference import flash_attn as FA

pytestmark = pytest.mark.cuda

DEVICE = "cuda"  # the device under test; the CPU kernels are the reference
F16, BF16, F32, F64 = torch.float16, torch.bfloat16, torch.float32, torch.float64
LOW = (F16, BF16)
ALL_DTYPES = [F16, BF16, F32, F64]
FLOOR = 1e-5               # of max(1, |result|), the floor of the low-precision policy
TIGHT = {F32: (1e-5, 5e-5), F64: (1e-11, 1e-10)}  # (output, gradient), of max(1, |result|)


def rand(*shape, seed=0, scale=1.0):
    """float64 normal values on the CPU, the same for every dtype and device.
    Cached (the caches of the KV-cache tests are large): never modify one in
    place; :func:`to` copies."""
    return _randn(shape, seed, scale)


@functools.lru_cache(maxsize=24)
def _randn(shape, seed, scale):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64) * scale


def to(t, dtype, device, round_to=None):
    """A copy of ``t`` rounded to ``round_to`` (default ``dtype``), then in
    ``dtype`` on ``device``."""
    return t.detach().to(round_to or dtype).to(device=device, dtype=dtype, copy=True)


def qkv_leaves(b, sq, sk, h, hk, d, dv=None, seed=0):
    return [rand(b, sq, h, d, seed=seed), rand(b, sk, hk, d, seed=seed + 1),
            rand(b, sk, hk, dv or d, seed=seed + 2)]


def slopes(kind, b, h):
    """ALiBi slopes (float32, as the API requires, whatever the inputs' dtype)."""
    if kind is None:
        return None
    g = torch.Generator().manual_seed(7)
    return torch.rand((h,) if kind == "heads" else (b, h), generator=g) * 0.5


def cu_seqlens(lengths):
    return torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist(), dtype=torch.int32)


def dtype_id(dtype):
    return str(dtype).replace("torch.", "")


# --- running a case on a device --------------------------------------------------------------

def run(fn, leaves, aux=None, *, device, dtype, round_to=None, backward=True, probs=True,
        seed=None, dout_seed=99):
    """``fn(*xs, **aux)`` where xs are ``leaves`` (float64 CPU tensors) rounded to
    ``round_to`` (default ``dtype``), cast to ``dtype`` and moved to ``device``
    (they may be packed buffers that ``fn`` slices: views stay views), and aux's
    tensors are moved to ``device`` uncast (cu_seqlens, ALiBi slopes). Returns
    CPU tensors: ``out``; the gradients of xs (``grads``) for a fixed random
    dout; and, from a second call with ``return_attn_probs=True``, ``out2``,
    ``lse`` and ``probs`` (S_dmask). ``seed`` (dropout) seeds torch's generator
    before each call, so both calls and both devices draw the same mask seed."""
    xs = [to(t, dtype, device, round_to).requires_grad_(backward) for t in leaves]
    ax = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in (aux or {}).items()}
    res = {}
    if seed is not None:
        torch.manual_seed(seed)
    out = fn(*xs, **ax)
    res["out"] = out.detach().cpu()
    if backward:
        dout = to(rand(*out.shape, seed=dout_seed), dtype, device, round_to)
        res["grads"] = [g.cpu() for g in torch.autograd.grad(out, xs, dout)]
    if probs:
        if seed is not None:
            torch.manual_seed(seed)
        with torch.no_grad():
            out2, lse, s_dmask = fn(*xs, return_attn_probs=True, **ax)
        res.update(out2=out2.cpu(), lse=lse.cpu(), probs=s_dmask.cpu())
    return res


def max_err(a, b):
    assert a.shape == b.shape, f"shapes {tuple(a.shape)} and {tuple(b.shape)}"
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


def magnitude(t):
    return max(1.0, t.double().abs().max().item()) if t.numel() else 1.0


def check_value(got, same, gold, dtype, what, grad=False):
    """``got`` (CUDA) against ``same`` (CPU, same dtype) and ``gold`` (CPU, float64
    on the same rounded inputs; low precision only), by the policy above."""
    assert got.dtype == dtype and got.shape == same.shape, (
        f"{what}: {got.dtype} {tuple(got.shape)}, expected {dtype} {tuple(same.shape)}")
    assert not got.isnan().any(), f"{what}: NaN in the CUDA result"
    if dtype in LOW:
        e_got, e_ref = max_err(got, gold), max_err(same, gold)
        bound = 3.0 * e_ref + FLOOR * magnitude(gold)
        assert e_got <= bound, (f"{dtype_id(dtype)} {what}: CUDA error {e_got:.3g} > 3 x the CPU "
                                f"kernel's {e_ref:.3g} (+ floor)")
    else:
        tol = TIGHT[dtype][1 if grad else 0] * magnitude(same)
        e = max_err(got, same)
        assert e <= tol, f"{dtype_id(dtype)} {what}: CUDA differs from the CPU by {e:.3g} > {tol:.3g}"


def check_lse(got, want, what="softmax_lse"):
    assert got.dtype == want.dtype and got.shape == want.shape, (
        f"{what}: {got.dtype} {tuple(got.shape)}, expected {want.dtype} {tuple(want.shape)}")
    inf = torch.isinf(want)
    assert torch.equal(torch.isinf(got), inf), f"{what}: +inf at other rows than the CPU's"
    assert not (got[inf] < 0).any(), f"{what}: -inf where the CPU has +inf"
    finite = ~inf
    if finite.any():
        tol = (1e-10 if want.dtype == F64 else 1e-4) * magnitude(want[finite])
        e = max_err(got[finite], want[finite])
        assert e <= tol, f"{what}: CUDA differs from the CPU by {e:.3g} > {tol:.3g}"


def check_results(dev, fn, leaves, aux=None, *, dtype, backward=True, probs=True, seed=None,
                  what=""):
    """``dev`` (a :func:`run` on the device) against the CPU kernels."""
    kw = dict(backward=backward, probs=probs, seed=seed)
    same = run(fn, leaves, aux, device="cpu", dtype=dtype, **kw)
    gold = run(fn, leaves, aux, device="cpu", dtype=F64, round_to=dtype, **kw) if dtype in LOW \
        else {}
    for key in ("out", "out2", "probs"):
        if key in same:
            check_value(dev[key], same[key], gold.get(key), dtype, f"{what} {key}")
    for i, g in enumerate(same.get("grads", ())):
        check_value(dev["grads"][i], g, gold["grads"][i] if gold else None, dtype,
                    f"{what} grad {i}", grad=True)
    if "lse" in same:
        check_lse(dev["lse"], same["lse"], f"{what} softmax_lse")
    return same


def compare(fn, leaves, aux=None, *, dtype, backward=True, probs=True, seed=None, what=""):
    """Runs ``fn`` on the device and on the CPU and checks the device's results;
    returns (device results, CPU results in the same dtype)."""
    dev = run(fn, leaves, aux, device=DEVICE, dtype=dtype, backward=backward, probs=probs,
              seed=seed)
    return dev, check_results(dev, fn, leaves, aux, dtype=dtype, backward=backward, probs=probs,
                              seed=seed, what=what)


def dense(**options):
    """flash_attn_func with fixed options; further keywords (alibi_slopes,
    return_attn_probs) come from the caller."""
    return lambda q, k, v, **kw: ops.flash_attn_func(q, k, v, **options, **kw)


# --- dense: features, shapes, dtypes --------------------------------------------------------

# (id, (b, sq, sk, h, hk, d), options, alibi): seqlens no multiple of a tile, sq != sk both
# ways, MHA / GQA / MQA, and every masking and score feature.
CASES = [
    ("mha", (2, 113, 203, 4, 4, 64), {}, None),
    ("gqa-causal-sq>sk", (1, 203, 113, 4, 2, 128), dict(causal=True), None),  # 90 rows see no key
    ("mqa-window", (2, 17, 1000, 8, 1, 64), dict(window_size=(100, 50)), None),
    ("causal-softcap-1000", (1, 1000, 1000, 4, 2, 64), dict(causal=True, softcap=2.0), None),
    ("alibi-batch-q1", (3, 1, 203, 6, 3, 96), {}, "batch"),
    ("window-alibi", (2, 203, 17, 4, 1, 32), dict(window_size=(3, 0)), "heads"),
    ("causal-alibi-softcap", (1, 113, 1000, 4, 2, 128), dict(causal=True, softcap=5.0), "heads"),
    ("peaky-scores", (2, 113, 113, 2, 2, 256), dict(softmax_scale=0.5), None),
    ("left-window-only", (1, 1000, 203, 2, 1, 72), dict(window_size=(64, -1)), None),
    ("one-key-one-query", (2, 1, 1, 2, 1, 64), dict(causal=True), None),
    ("seqlen-17", (3, 17, 17, 3, 1, 17), dict(causal=True, window_size=(5, -1)), "batch"),
]


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("name,shape,options,alibi", CASES, ids=[c[0] for c in CASES])
def test_cuda_forward_backward_matches_cpu(name, shape, options, alibi, dtype):
    """Output, softmax_lse, S_dmask (return_attn_probs) and the gradients of q,
    k and v."""
    b, sq, sk, h, hk, d = shape
    aux = {"alibi_slopes": slopes(alibi, b, h)} if alibi else {}
    compare(dense(**options), qkv_leaves(b, sq, sk, h, hk, d), aux, dtype=dtype, what=name)


HEAD_DIMS = [32, 64, 96, 128, 160, 192, 224, 256, 72, 17]


@pytest.mark.parametrize("dtype", [F16, BF16], ids=dtype_id)
@pytest.mark.parametrize("d", HEAD_DIMS)
def test_cuda_head_dims_tensor_cores(d, dtype):
    """Every head-dim bucket of the tensor-core kernels, and dims padded into one."""
    compare(dense(causal=True), qkv_leaves(2, 113, 203, 4, 2, d), dtype=dtype, what=f"d={d}")


@pytest.mark.parametrize("dtype", [F32, F64], ids=dtype_id)
@pytest.mark.parametrize("d", [17, 64, 72, 128, 256])
def test_cuda_head_dims_float32_float64(d, dtype):
    compare(dense(window_size=(40, 7)), qkv_leaves(2, 113, 203, 4, 2, d), dtype=dtype,
            what=f"d={d}")


@pytest.mark.parametrize("dtype", [BF16, F32], ids=dtype_id)
def test_cuda_value_head_dim_differs_from_query_head_dim(dtype):
    """kernelzoo (unlike flash-attn 2) takes v with its own head dimension."""
    compare(dense(causal=True), qkv_leaves(2, 113, 203, 4, 2, 128, dv=64), dtype=dtype)


@pytest.mark.parametrize("dtype", [F16, BF16, F32], ids=dtype_id)
def test_cuda_rows_that_see_no_key(dtype):
    """A window that hides every key from some rows: their output is exactly 0,
    their lse +inf, their dq 0, like the CPU's. With sq = 40 > sk = 20 and
    window (5, 0), rows 0..19 see no key; with seqlen_k = 0 no row does."""
    leaves = qkv_leaves(2, 40, 20, 4, 2, 64)
    dev, _ = compare(dense(window_size=(5, 0)), leaves, dtype=dtype, what="window")
    assert torch.equal(dev["out"][:, :20], torch.zeros_like(dev["out"][:, :20]))
    assert (dev["lse"][:, :, :20] == float("inf")).all()
    assert torch.isfinite(dev["lse"][:, :, 20:]).all()
    assert torch.equal(dev["grads"][0][:, :20], torch.zeros_like(dev["grads"][0][:, :20]))
    dev, _ = compare(dense(causal=True), qkv_leaves(2, 7, 0, 4, 2, 64), dtype=dtype,
                     what="no keys")
    assert torch.equal(dev["out"], torch.zeros_like(dev["out"]))
    assert (dev["lse"] == float("inf")).all()
    assert torch.equal(dev["grads"][0], torch.zeros_like(dev["grads"][0]))


# --- dropout ---------------------------------------------------------------------------------

def check_mask(dev_probs, cpu_probs, keep):
    """The same entries dropped on both devices, and as the reference's rule
    says: sign bits equal where both probabilities are non-zero (a zero is a
    masked key, or an underflow in low precision), and zeros at the same places
    up to underflow."""
    nz = (dev_probs != 0) & (cpu_probs != 0)
    assert nz.any(), "no non-zero probabilities to compare the masks on"
    assert torch.equal(torch.signbit(dev_probs)[nz], torch.signbit(cpu_probs)[nz]), \
        "the CUDA dropout mask is not the CPU's"
    assert torch.equal(~torch.signbit(dev_probs)[nz], keep[nz]), \
        "the CUDA dropout mask is not the reference's Philox rule"
    either = (dev_probs != 0) ^ (cpu_probs != 0)
    assert (dev_probs[either].double().abs() < 1e-6).all() and \
        (cpu_probs[either].double().abs() < 1e-6).all(), "probabilities zero on one device only"


@pytest.mark.parametrize("dtype", [F16, BF16, F32], ids=dtype_id)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_cuda_dropout_matches_cpu(dtype, causal):
    """The same seed (torch.manual_seed) gives the same mask on both devices;
    output, lse, S_dmask and gradients (the backward regenerates the mask) then
    agree within tolerance."""
    b, sq, sk, h, hk, d, p, seed = 2, 113, 203, 4, 2, 64, 0.17, 1234
    dev, cpu = compare(dense(dropout_p=p, causal=causal), qkv_leaves(b, sq, sk, h, hk, d),
                       dtype=dtype, seed=seed)
    torch.manual_seed(seed)
    keep = FA.dropout_keep_mask(FA.draw_seed(), 0, b, h, sq, sk, p)
    check_mask(dev["probs"], cpu["probs"], keep)
    kept = keep.double().mean().item()
    assert abs(kept - (1 - p)) < 0.02
    # another seed, another mask
    other = run(dense(dropout_p=p, causal=causal), qkv_leaves(b, sq, sk, h, hk, d),
                device=DEVICE, dtype=dtype, backward=False, seed=seed + 1)
    assert not torch.equal(torch.signbit(other["probs"]), torch.signbit(dev["probs"]))


@pytest.mark.parametrize("dtype", [BF16, F32], ids=dtype_id)
def test_cuda_dropout_varlen_softcap_matches_cpu(dtype):
    """Varlen: each sequence's mask is the dense one of (batch, nheads,
    max_seqlen_q, max_seqlen_k) cropped; with softcap and GQA."""
    lq, lk = [17, 0, 113, 1], [203, 5, 113, 0]
    cq, ck = cu_seqlens(lq), cu_seqlens(lk)
    leaves = [rand(sum(lq), 4, 64, seed=0), rand(sum(lk), 2, 64, seed=1), rand(sum(lk), 2, 64, seed=2)]
    fn = lambda q, k, v, cq, ck, **kw: ops.flash_attn_varlen_func(  # noqa: E731
        q, k, v, cq, ck, 113, 203, dropout_p=0.25, softcap=3.0, causal=True, **kw)
    dev, cpu = compare(fn, leaves, dict(cq=cq, ck=ck), dtype=dtype, seed=77)
    torch.manual_seed(77)
    keep = FA.dropout_keep_mask(FA.draw_seed(), 0, 4, 4, 113, 203, 0.25)
    check_mask(dev["probs"], cpu["probs"], keep)


def test_cuda_dispatcher_ops_match_cpu():
    """torch.ops.kernelzoo.flash_attn_forward / _flash_attn_backward called
    directly: an explicit seed and a non-zero Philox offset, a window, softcap,
    return_softmax; then the backward op on both devices."""
    q, k, v = (t.float() for t in qkv_leaves(2, 113, 203, 4, 2, 64))
    seed, offset, p = torch.tensor(987654321123, dtype=torch.int64), 5, 0.2
    args = (None, None, 113, 203, p, 0.3, 40, 7, 1.5, None, True, seed, offset)
    fwd, bwd = torch.ops.kernelzoo.flash_attn_forward, torch.ops.kernelzoo._flash_attn_backward
    cpu = fwd(q, k, v, *args)
    dev = [t.cpu() for t in fwd(q.to(DEVICE), k.to(DEVICE), v.to(DEVICE), *args)]
    check_value(dev[0], cpu[0], None, F32, "out")
    check_lse(dev[1], cpu[1])
    check_value(dev[2], cpu[2], None, F32, "S_dmask")
    keep = FA.dropout_keep_mask(int(seed), offset, 2, 4, 113, 203, p)
    check_mask(dev[2], cpu[2], keep)
    dout = rand(2, 113, 4, 64, seed=9).float()
    bargs = (None, None, 113, 203, p, 0.3, 40, 7, 1.5, None)
    want = bwd(dout, q, k, v, cpu[0], cpu[1], *bargs, False, seed, offset)
    for deterministic in (False, True):
        got = bwd(*(t.to(DEVICE) for t in (dout, q, k, v, cpu[0], cpu[1])), *bargs, deterministic,
                  seed, offset)
        for name, g, w in zip(("dq", "dk", "dv"), got, want):
            check_value(g.cpu(), w, None, F32, f"{name} (deterministic={deterministic})", grad=True)


# --- deterministic backward -------------------------------------------------------------------

@contextlib.contextmanager
def deterministic_algorithms():
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


@pytest.mark.parametrize("dtype", [F16, BF16, F32], ids=dtype_id)
@pytest.mark.parametrize("how", ["argument", "global"])
def test_cuda_deterministic_backward_is_bitwise_reproducible(dtype, how):
    """deterministic=True, or torch.use_deterministic_algorithms(True): the same
    gradients bit for bit on every run (many key blocks add into each dq row,
    so the atomic path would not be), and the CPU's within tolerance."""
    fn = dense(deterministic=True) if how == "argument" else dense()
    context = deterministic_algorithms if how == "global" else contextlib.nullcontext
    leaves = qkv_leaves(2, 1000, 1000, 4, 2, 64)
    with context():
        runs = [run(fn, leaves, device=DEVICE, dtype=dtype, probs=False) for _ in range(3)]
    for other in runs[1:]:
        for name, a, b in zip("qkv", runs[0]["grads"], other["grads"]):
            assert torch.equal(a, b), f"d{name} differs between two deterministic runs"
    check_results(runs[0], fn, leaves, dtype=dtype, probs=False, what=how)


@pytest.mark.parametrize("dtype", [F16, BF16, F32], ids=dtype_id)
def test_cuda_deterministic_backward_op_is_bitwise_reproducible(dtype):
    """The backward op with deterministic=True (the kernels alone, whatever the
    Python wrapper passes): bit for bit the same on every run, and the atomic
    path's result up to the rounding of a different summation order."""
    fwd, bwd = torch.ops.kernelzoo.flash_attn_forward, torch.ops.kernelzoo._flash_attn_backward
    q, k, v = (to(t, dtype, DEVICE) for t in qkv_leaves(2, 1000, 1000, 4, 2, 64))
    dout = to(rand(2, 1000, 4, 64, seed=99), dtype, DEVICE)
    args = (None, None, 1000, 1000, 0.0, 0.125, -1, -1, 0.0, None)
    out, lse, _ = fwd(q, k, v, *args, False, None, 0)
    runs = [[g.cpu() for g in bwd(dout, q, k, v, out, lse, *args, True, None, 0)] for _ in range(3)]
    for other in runs[1:]:
        for name, a, b in zip("qkv", runs[0], other):
            assert torch.equal(a, b), f"d{name} differs between two deterministic runs"
    atomic = [g.cpu() for g in bwd(dout, q, k, v, out, lse, *args, False, None, 0)]
    tol = {F16: 2e-3, BF16: 1.6e-2, F32: 1e-5}[dtype]
    for name, a, b in zip("qkv", runs[0], atomic):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol * magnitude(b), msg=f"d{name}")


@pytest.mark.parametrize("dtype", [BF16, F32], ids=dtype_id)
def test_cuda_deterministic_varlen_backward(dtype):
    lens = [1000, 0, 517, 3]
    cu = cu_seqlens(lens)
    leaves = [rand(sum(lens), 3, 4, 64, seed=0)]
    fn = lambda qkv, cu, **kw: ops.flash_attn_varlen_qkvpacked_func(  # noqa: E731
        qkv, cu, 1000, causal=True, deterministic=True, **kw)
    runs = [run(fn, leaves, dict(cu=cu), device=DEVICE, dtype=dtype, probs=False) for _ in range(2)]
    assert torch.equal(runs[0]["grads"][0], runs[1]["grads"][0])
    check_results(runs[0], fn, leaves, dict(cu=cu), dtype=dtype, probs=False)


# --- varlen, packed forms, layouts ----------------------------------------------------------

@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("options,alibi", [
    (dict(), None), (dict(causal=True), "batch"), (dict(window_size=(30, 2), softcap=4.0), None),
], ids=["full", "causal-alibi", "window-softcap"])
def test_cuda_varlen_matches_cpu(dtype, options, alibi):
    """Sequences of lengths 0 (q, k or both), 1, 17, 113, 203 packed together,
    unequal q and k lengths, GQA."""
    lq, lk = [17, 0, 113, 1, 0, 203, 64], [203, 9, 113, 1, 0, 17, 0]
    cq, ck = cu_seqlens(lq), cu_seqlens(lk)
    leaves = [rand(sum(lq), 6, 64, seed=0), rand(sum(lk), 2, 64, seed=1), rand(sum(lk), 2, 64, seed=2)]
    aux = dict(cq=cq, ck=ck)
    if alibi:
        aux["alibi_slopes"] = slopes(alibi, len(lq), 6)
    fn = lambda q, k, v, cq, ck, **kw: ops.flash_attn_varlen_func(  # noqa: E731
        q, k, v, cq, ck, max(lq), max(lk), **options, **kw)
    dev, _ = compare(fn, leaves, aux, dtype=dtype)
    assert dev["lse"].shape == (6, sum(lq))


PACKED = {
    # name: (leaf shapes, function of the leaves, aux)
    "qkvpacked": ([(2, 113, 3, 4, 64)],
                  lambda qkv, **kw: ops.flash_attn_qkvpacked_func(qkv, causal=True, **kw), {}),
    "kvpacked": ([(2, 113, 8, 96), (2, 203, 2, 2, 96)],
                 lambda q, kv, **kw: ops.flash_attn_kvpacked_func(q, kv, window_size=(50, 50), **kw),
                 {}),
    "varlen_qkvpacked": ([(333, 3, 4, 64)],
                         lambda qkv, cu, **kw: ops.flash_attn_varlen_qkvpacked_func(
                             qkv, cu, 203, causal=True, **kw),
                         dict(cu=cu_seqlens([113, 17, 203, 0]))),
    "varlen_kvpacked": ([(131, 4, 128), (221, 2, 1, 128)],
                        lambda q, kv, cq, ck, **kw: ops.flash_attn_varlen_kvpacked_func(
                            q, kv, cq, ck, 113, 203, softcap=3.0, **kw),
                        dict(cq=cu_seqlens([113, 1, 17]), ck=cu_seqlens([203, 1, 17]))),
}


@pytest.mark.parametrize("dtype", [F16, BF16, F32], ids=dtype_id)
@pytest.mark.parametrize("form", list(PACKED))
def test_cuda_packed_forms_match_cpu(form, dtype):
    """The packed forms read q, k and v as strided views of one buffer and give
    its gradient as one tensor."""
    shapes, fn, aux = PACKED[form]
    compare(fn, [rand(*s, seed=i) for i, s in enumerate(shapes)], aux, dtype=dtype)


LAYOUTS = {
    # name: (leaf shapes, function of the leaves giving q, k, v)
    "heads-major": ([(2, 4, 113, 64), (2, 2, 203, 64), (2, 2, 203, 64)],
                    lambda q, k, v: (q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))),
    "qkv-buffer-slices": ([(2, 113, 3, 4, 64)], lambda qkv: qkv.unbind(2)),
    "gqa-fused-projection": ([(2, 113, 4 * 64 + 2 * 2 * 64)],  # one Linear's output, split
                             lambda x: (x[..., :256].unflatten(-1, (4, 64)),
                                        x[..., 256:384].unflatten(-1, (2, 64)),
                                        x[..., 384:].unflatten(-1, (2, 64)))),
    "last-dim-strided": ([(2, 113, 4, 128), (2, 203, 2, 64), (2, 203, 2, 64)],
                         lambda q, k, v: (q[..., ::2], k, v)),
    "batch-stride-only": ([(4, 113, 4, 64), (2, 203, 2, 64), (2, 203, 2, 64)],
                          lambda q, k, v: (q[::2], k, v)),
}


@pytest.mark.parametrize("dtype", [BF16, F32], ids=dtype_id)
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_cuda_non_contiguous_inputs(layout, dtype):
    """Views (transposed heads, slices of a packed buffer, strided last dim) give
    the CPU's results and gradients (written into the buffer's layout by
    autograd)."""
    shapes, split = LAYOUTS[layout]

    def fn(*xs, **kw):
        q, k, v = split(*xs)
        assert not q.is_contiguous()
        return ops.flash_attn_func(q, k, v, causal=True, **kw)

    compare(fn, [rand(*s, seed=i) for i, s in enumerate(shapes)], dtype=dtype, what=layout)


# --- empty inputs ------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [F16, F32], ids=dtype_id)
def test_cuda_empty_inputs(dtype):
    """An empty batch, no queries, no keys (zeros, lse +inf), an all-empty varlen
    batch: the CPU's shapes and values, forward and backward."""
    for shape in [(0, 5, 7, 2, 1, 64), (2, 0, 7, 2, 1, 64), (2, 4, 0, 2, 1, 64), (0, 0, 0, 2, 2, 32)]:
        dev, _ = compare(dense(causal=True), qkv_leaves(*shape), dtype=dtype, what=f"shape {shape}")
        assert dev["out"].shape == (shape[0], shape[1], shape[3], shape[5])
    cu = cu_seqlens([0, 0, 0])
    fn = lambda q, k, v, cu, **kw: ops.flash_attn_varlen_func(q, k, v, cu, cu, 0, 0, **kw)  # noqa: E731
    dev, _ = compare(fn, [rand(0, 2, 64), rand(0, 1, 64), rand(0, 1, 64)], dict(cu=cu), dtype=dtype)
    assert dev["lse"].shape == (2, 0)


# --- KV cache ----------------------------------------------------------------------------------

# (id, batch, cache rows, capacity, cache_seqlens (before appending), nheads, nheads_k, headdim,
#  cache_batch_idx, append new k/v, options, alibi)
KV_CASES = [
    ("gqa-idx-append-8k", 3, 4, 8192, [0, 3001, 8180], 8, 2, 128, [2, 0, 3], True,
     dict(causal=True), None),
    ("mqa-16k", 2, 2, 16384, [16379, 9000], 16, 1, 64, None, True, dict(causal=True), None),
    ("window-softcap-alibi-4k", 2, 3, 4096, [4000, 1234], 8, 8, 128, [1, 2], True,
     dict(causal=True, window_size=(512, 0), softcap=10.0), "batch"),
    ("no-append-d256", 3, 3, 4096, [4096, 1, 2500], 4, 2, 256, None, False, {}, None),
    ("odd-dim-12k", 2, 2, 12288, [12000, 77], 6, 2, 72, [1, 0], True, dict(causal=True), "heads"),
]


def kv_run(case, seqlen_q, *, device, dtype, round_to=None):
    (_, b, rows, cap, seqlens, h, hk, d, idx, append, options, alibi) = case
    cast = lambda t: to(t, dtype, device, round_to)  # noqa: E731
    q = cast(rand(b, seqlen_q, h, d, seed=3))
    k_cache, v_cache = cast(rand(rows, cap, hk, d, seed=1)), cast(rand(rows, cap, hk, d, seed=2))
    new = [cast(rand(b, seqlen_q, hk, d, seed=s)) for s in (4, 5)] if append else [None, None]
    kw = dict(options, cache_seqlens=torch.tensor(seqlens, dtype=torch.int32, device=device))
    if idx is not None:
        kw["cache_batch_idx"] = torch.tensor(idx, dtype=torch.int32, device=device)
    if alibi:
        kw["alibi_slopes"] = slopes(alibi, b, h).to(device)
    out, lse = ops.flash_attn_with_kvcache(q, k_cache, v_cache, *new, return_softmax_lse=True, **kw)
    return out.cpu(), lse.cpu(), k_cache.cpu(), v_cache.cpu()


@pytest.mark.parametrize("dtype", [F16, BF16, F32], ids=dtype_id)
@pytest.mark.parametrize("seqlen_q", [1, 4])
@pytest.mark.parametrize("case", KV_CASES, ids=[c[0] for c in KV_CASES])
def test_cuda_kvcache_decode_matches_cpu(case, seqlen_q, dtype):
    """Decoding over long caches (split-KV territory): per-row cache lengths,
    cache_batch_idx, new keys appended in place, GQA/MQA, window, softcap,
    ALiBi, odd head dims; the caches after the call equal the CPU's bit for bit."""
    out, lse, kc, vc = kv_run(case, seqlen_q, device=DEVICE, dtype=dtype)
    s_out, s_lse, s_kc, s_vc = kv_run(case, seqlen_q, device="cpu", dtype=dtype)
    gold = kv_run(case, seqlen_q, device="cpu", dtype=F64, round_to=dtype)[0] if dtype in LOW else None
    assert torch.equal(kc, s_kc) and torch.equal(vc, s_vc), "the caches differ after appending"
    check_value(out, s_out, gold, dtype, "kvcache out")
    check_lse(lse, s_lse, "kvcache softmax_lse")


@pytest.mark.parametrize("dtype", [BF16, F32], ids=dtype_id)
def test_cuda_kvcache_whole_cache_and_int_seqlens(dtype):
    """Without cache_seqlens q attends to the whole cache (= flash_attn_func on
    the cache); an int cache_seqlens is every row's length; an empty query
    batch gives an empty result."""
    q, kc, vc = (t.to(dtype) for t in (rand(2, 1, 8, 128, seed=3), rand(2, 5000, 2, 128, seed=1),
                                     rand(2, 5000, 2, 128, seed=2)))
    want = ops.flash_attn_with_kvcache(q, kc, vc)
    got = ops.flash_attn_with_kvcache(q.to(DEVICE), kc.to(DEVICE), vc.to(DEVICE)).cpu()
    gold = ops.flash_attn_with_kvcache(q.double(), kc.double(), vc.double()) if dtype in LOW else None
    check_value(got, want, gold, dtype, "whole cache")
    want = ops.flash_attn_with_kvcache(q, kc, vc, cache_seqlens=4321, causal=True)
    got = ops.flash_attn_with_kvcache(q.to(DEVICE), kc.to(DEVICE), vc.to(DEVICE), cache_seqlens=4321,
                                      causal=True).cpu()
    gold = (ops.flash_attn_with_kvcache(q.double(), kc.double(), vc.double(), cache_seqlens=4321,
                                        causal=True) if dtype in LOW else None)
    check_value(got, want, gold, dtype, "int cache_seqlens")
    empty = ops.flash_attn_with_kvcache(q[:0].to(DEVICE), kc.to(DEVICE), vc.to(DEVICE))
    assert empty.shape == (0, 1, 8, 128) and empty.device.type == torch.device(DEVICE).type
