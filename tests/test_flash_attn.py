"""kernelzoo.ops.flash_attn_* (the C++ CPU kernels) against the plain-PyTorch
reference kernelzoo.reference.flash_attn (itself tested against torch SDPA in
test_flash_attn_reference.py): every feature over odd and unequal shapes, the
low-precision tolerance policy, gradients, dropout bit for bit, varlen and the
KV cache, opcheck and torch.compile, and the errors."""

import math

import pytest
import torch

import kernelzoo

from kernelzoo import ops
from kernelzoo import reference as R
from kernelzoo.reference import flash_attn as FA
from ophelpers import CallFn, assert_raises, check_compile, check_low_precision, opcheck

LOW = [torch.float16, torch.bfloat16]


def rand(*shape, dtype=torch.float64, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype).requires_grad_(requires_grad)


def qkv(b, sq, sk, h, hk, d, dv=None, dtype=torch.float64, seed=0, grad=False):
    return (rand(b, sq, h, d, dtype=dtype, seed=seed, requires_grad=grad),
            rand(b, sk, hk, d, dtype=dtype, seed=seed + 1, requires_grad=grad),
            rand(b, sk, hk, dv or d, dtype=dtype, seed=seed + 2, requires_grad=grad))


def same_cast(ts, dtype):
    return [t.detach().to(dtype).requires_grad_(t.requires_grad) for t in ts]


# (b, sq, sk, h, hk, d): unequal lengths both ways, one-row and one-key cases,
# MHA / GQA / MQA, head dims that are no multiple of anything.
SHAPES = [
    (2, 113, 203, 4, 2, 59),
    (1, 203, 113, 2, 2, 32),
    (1, 1, 257, 3, 1, 64),
    (2, 257, 1, 2, 1, 16),
    (1, 67, 67, 6, 3, 111),
    (3, 5, 9, 2, 2, 1),
]

# (causal, window, softcap, alibi)
FEATURES = [
    (False, (-1, -1), 0.0, None),
    (True, (-1, -1), 0.0, None),
    (False, (17, 4), 0.0, None),
    (True, (30, -1), 0.0, "heads"),
    (False, (-1, -1), 7.5, "batch"),
    (True, (-1, -1), 3.0, "heads"),
]


def slopes(kind, b, h):
    if kind is None:
        return None
    g = torch.Generator().manual_seed(7)
    return torch.rand((h,) if kind == "heads" else (b, h), generator=g) * 0.5


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("causal,window,softcap,alibi", FEATURES)
def test_float64_matches_reference(shape, causal, window, softcap, alibi):
    b, sq, sk, h, hk, d = shape
    q, k, v = qkv(b, sq, sk, h, hk, d, grad=True)
    kw = dict(causal=causal, window_size=window, softcap=softcap, alibi_slopes=slopes(alibi, b, h))
    out, lse, _ = ops.flash_attn_func(q, k, v, return_attn_probs=True, **kw)
    ref, ref_lse, _ = R.flash_attn_func(q, k, v, return_attn_probs=True, **kw)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    assert lse.dtype == torch.float64 and torch.equal(torch.isinf(lse), torch.isinf(ref_lse))
    # the reference's lse is float32, as flash-attn's (kernelzoo's is float64 for float64 inputs)
    torch.testing.assert_close(lse[~torch.isinf(lse)], ref_lse[~torch.isinf(ref_lse)].double(),
                               rtol=2e-7, atol=1e-6)
    g = rand(*out.shape, seed=9)
    for got, want in zip(torch.autograd.grad(out, (q, k, v), g),
                         torch.autograd.grad(ref, (q, k, v), g)):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("dtype", [torch.float32] + LOW)
@pytest.mark.parametrize("shape", SHAPES[:3] + SHAPES[4:5])
@pytest.mark.parametrize("causal,window,softcap,alibi", FEATURES[:2] + FEATURES[3:5])
def test_low_precision_policy(dtype, shape, causal, window, softcap, alibi):
    """flash-attn's policy: error against float64 at most 2x (output) and 3x
    (gradients) the error of the same-precision reference."""
    b, sq, sk, h, hk, d = shape
    gold_in = qkv(b, sq, sk, h, hk, d, grad=True)
    ours_in, ref_in = same_cast(gold_in, dtype), same_cast(gold_in, dtype)
    kw = dict(causal=causal, window_size=window, softcap=softcap, alibi_slopes=slopes(alibi, b, h))
    gold = R.flash_attn_func(*gold_in, **kw)
    ours = ops.flash_attn_func(*ours_in, **kw)
    ref = R.flash_attn_func(*ref_in, **kw)
    assert ours.dtype == dtype
    check_low_precision(ours, ref, gold, f"{dtype} output", factor=2.0)
    g = rand(*gold.shape, seed=9)
    for name, a, r, o in zip("qkv", torch.autograd.grad(gold, gold_in, g),
                             torch.autograd.grad(ref, ref_in, g.to(dtype)),
                             torch.autograd.grad(ours, ours_in, g.to(dtype))):
        check_low_precision(o, r, a, f"{dtype} d{name}", factor=3.0)


def test_different_value_head_dim():
    q, k, v = qkv(2, 11, 13, 4, 2, 24, dv=40, grad=True)
    out = ops.flash_attn_func(q, k, v, causal=True)
    ref = R.flash_attn_func(q, k, v, causal=True)
    assert out.shape == (2, 11, 4, 40)
    torch.testing.assert_close(out, ref)


def test_gradcheck_every_feature():
    q, k, v = qkv(2, 7, 11, 4, 2, 5, grad=True)
    al = slopes("batch", 2, 4)
    f = lambda q, k, v: ops.flash_attn_func(q, k, v, causal=True, window_size=(5, -1),  # noqa: E731
                                            softcap=2.0, alibi_slopes=al)
    assert torch.autograd.gradcheck(f, (q, k, v))


@pytest.mark.parametrize("d", [1, 2, 8, 59, 64, 96, 111, 128, 160, 256])
def test_head_dims(d):
    q, k, v = qkv(1, 19, 23, 2, 1, d, dtype=torch.float32)
    torch.testing.assert_close(ops.flash_attn_func(q, k, v, causal=True),
                               R.flash_attn_func(q, k, v, causal=True), rtol=2e-5, atol=2e-6)


def test_non_contiguous_inputs():
    """Any strides whose last dimension is contiguous are read in place (and
    others are made contiguous)."""
    q, k, v = qkv(2, 13, 17, 4, 2, 8)
    wide = rand(2, 13, 4, 16)
    qs = wide[..., ::2]                     # last dim strided: copied
    ks = rand(2, 4, 17, 8).transpose(1, 2)[:, :, :2]  # heads and rows swapped in memory
    vs = rand(2, 17, 2, 8)
    for a, bb, c in [(qs, k, v), (q, ks, vs), (qs.transpose(0, 0), ks, vs)]:
        torch.testing.assert_close(ops.flash_attn_func(a, bb, c, causal=True),
                                   R.flash_attn_func(a.contiguous(), bb.contiguous(), c.contiguous(),
                                                     causal=True))


@pytest.mark.parametrize("varlen", [False, True])
def test_gradients_of_views_of_one_packed_tensor(varlen):
    """q, k and v as views of one fused QKV projection (row strides 3x a head
    row): the gradients, written contiguous, equal the reference's (a bug
    wrote dq with q's strides, past the end of the buffer)."""
    if varlen:
        cu = torch.tensor([0, 13, 20], dtype=torch.int32)
        qkv_ = rand(20, 3, 4, 8, requires_grad=True)
        parts = qkv_.unbind(1)
        run = lambda f, q, k, v: f(q, k, v, cu, cu, 13, 13, causal=True)  # noqa: E731
        fns = (ops.flash_attn_varlen_func, R.flash_attn_varlen_func)
    else:
        qkv_ = rand(2, 13, 3, 4, 8, requires_grad=True)
        parts = qkv_.unbind(2)
        run = lambda f, q, k, v: f(q, k, v, causal=True)  # noqa: E731
        fns = (ops.flash_attn_func, R.flash_attn_func)
    grads = []
    for f in fns:
        out = run(f, *parts)
        grads.append(torch.autograd.grad(out, qkv_, torch.ones_like(out))[0])
    torch.testing.assert_close(grads[0], grads[1])


# --- dropout -----------------------------------------------------------------------------

def test_dropout_mask_is_the_reference_mask_bit_for_bit():
    q, k, v = qkv(2, 37, 45, 4, 2, 8, dtype=torch.float32)
    torch.manual_seed(123)
    out, _, s = ops.flash_attn_func(q, k, v, dropout_p=0.17, return_attn_probs=True)
    torch.manual_seed(123)
    ref, _, rs = R.flash_attn_func(q, k, v, dropout_p=0.17, return_attn_probs=True)
    assert torch.equal(torch.signbit(s), torch.signbit(rs))
    torch.testing.assert_close(out, ref)
    # the mask itself, from the seed the wrapper draws
    torch.manual_seed(123)
    seed = FA.draw_seed()
    keep = FA.dropout_keep_mask(seed, 0, 2, 4, 37, 45, 0.17)
    assert torch.equal(~torch.signbit(s), keep)


def test_gradients_with_a_non_contiguous_output_gradient():
    """The output gradient (and a saved output) with other strides than a
    contiguous tensor's: here the (batch, heads, seqlen, dim) layout a model
    transposing the output back produces."""
    q, k, v = qkv(2, 9, 11, 3, 3, 8, grad=True)
    out = ops.flash_attn_func(q, k, v, causal=True).transpose(1, 2)
    ref = R.flash_attn_func(q, k, v, causal=True).transpose(1, 2)
    g = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(4))
    for a, b in zip(torch.autograd.grad(out, (q, k, v), g), torch.autograd.grad(ref, (q, k, v), g)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_dropout_kept_fraction_and_gradients_follow_the_mask():
    q, k, v = qkv(2, 64, 80, 2, 2, 16, dtype=torch.float64, grad=True)
    p = 0.3
    torch.manual_seed(5)
    out, _, s = ops.flash_attn_func(q, k, v, dropout_p=p, return_attn_probs=True)
    kept = (~torch.signbit(s)).double().mean().item()
    n = s.numel()
    assert abs(kept - (1 - p)) < 5 * math.sqrt(p * (1 - p) / n)
    torch.manual_seed(5)
    ref = R.flash_attn_func(q, k, v, dropout_p=p)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    g = rand(*out.shape, seed=3)
    for a, b in zip(torch.autograd.grad(out, (q, k, v), g), torch.autograd.grad(ref, (q, k, v), g)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)
    # the same seed gives the same mask; another seed another
    torch.manual_seed(5)
    assert torch.equal(ops.flash_attn_func(q, k, v, dropout_p=p), out)
    assert not torch.equal(ops.flash_attn_func(q, k, v, dropout_p=p), out)


def test_dropout_with_softcap_and_varlen():
    lens = [5, 12, 1]
    cu = torch.tensor([0, 5, 17, 18], dtype=torch.int32)
    q, k, v = (rand(18, 2, 8, seed=s, requires_grad=True) for s in range(3))
    torch.manual_seed(1)
    out = ops.flash_attn_varlen_func(q, k, v, cu, cu, 12, 12, dropout_p=0.2, softcap=4.0, causal=True)
    torch.manual_seed(1)
    ref = R.flash_attn_varlen_func(q, k, v, cu, cu, 12, 12, dropout_p=0.2, softcap=4.0, causal=True)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    assert len(lens) == 3


# --- varlen, packed forms, kvcache --------------------------------------------------------

@pytest.mark.parametrize("causal,window", [(False, (-1, -1)), (True, (-1, -1)), (False, (3, 2))])
def test_varlen_equals_a_loop_over_sequences(causal, window):
    lq, lk = [7, 0, 33, 1, 16], [9, 4, 33, 0, 20]
    cq = torch.tensor([0] + torch.tensor(lq).cumsum(0).tolist(), dtype=torch.int32)
    ck = torch.tensor([0] + torch.tensor(lk).cumsum(0).tolist(), dtype=torch.int32)
    q = rand(int(cq[-1]), 4, 12, requires_grad=True)
    k, v = rand(int(ck[-1]), 2, 12, seed=1), rand(int(ck[-1]), 2, 12, seed=2)
    out, lse, _ = ops.flash_attn_varlen_func(q, k, v, cq, ck, 40, 40, causal=causal,
                                             window_size=window, return_attn_probs=True)
    assert lse.shape == (4, int(cq[-1]))
    for b in range(len(lq)):
        a, e, ka, ke = int(cq[b]), int(cq[b + 1]), int(ck[b]), int(ck[b + 1])
        if a == e:
            continue
        want, wlse, _ = ops.flash_attn_func(q[a:e][None], k[ka:ke][None], v[ka:ke][None],
                                            causal=causal, window_size=window,
                                            return_attn_probs=True)
        assert torch.equal(out[a:e], want[0])
        assert torch.equal(lse[:, a:e], wlse[0])
    ref = R.flash_attn_varlen_func(q, k, v, cq, ck, 40, 40, causal=causal, window_size=window)
    torch.testing.assert_close(out, ref)
    out.sum().backward()
    assert q.grad.shape == q.shape


def test_packed_forms():
    qkv_ = rand(2, 9, 3, 4, 8)
    torch.testing.assert_close(ops.flash_attn_qkvpacked_func(qkv_, causal=True),
                               R.flash_attn_qkvpacked_func(qkv_, causal=True))
    q, kv = rand(2, 9, 4, 8), rand(2, 11, 2, 2, 8)
    torch.testing.assert_close(ops.flash_attn_kvpacked_func(q, kv), R.flash_attn_kvpacked_func(q, kv))
    cu = torch.tensor([0, 4, 9], dtype=torch.int32)
    qkv_v, q_v, kv_v = rand(9, 3, 4, 8), rand(9, 4, 8), rand(9, 2, 2, 8)
    torch.testing.assert_close(ops.flash_attn_varlen_qkvpacked_func(qkv_v, cu, 5, causal=True),
                               R.flash_attn_varlen_qkvpacked_func(qkv_v, cu, 5, causal=True))
    torch.testing.assert_close(ops.flash_attn_varlen_kvpacked_func(q_v, kv_v, cu, cu, 5, 5),
                               R.flash_attn_varlen_kvpacked_func(q_v, kv_v, cu, cu, 5, 5))


@pytest.mark.parametrize("batch_idx", [False, True])
@pytest.mark.parametrize("seqlen_q,causal", [(1, True), (1, False), (3, True)])
def test_kvcache_decode(batch_idx, seqlen_q, causal):
    b, cap, hk, h, d = 3, 40, 2, 4, 16
    k_cache, v_cache = rand(4, cap, hk, d, seed=1), rand(4, cap, hk, d, seed=2)
    ref_k, ref_v = k_cache.clone(), v_cache.clone()
    q = rand(b, seqlen_q, h, d, seed=3)
    kn, vn = rand(b, seqlen_q, hk, d, seed=4), rand(b, seqlen_q, hk, d, seed=5)
    seqlens = torch.tensor([0, 17, 30], dtype=torch.int32)
    idx = torch.tensor([3, 0, 1], dtype=torch.int32) if batch_idx else None
    out, lse = ops.flash_attn_with_kvcache(q, k_cache, v_cache, kn, vn, cache_seqlens=seqlens,
                                           cache_batch_idx=idx, causal=causal,
                                           return_softmax_lse=True)
    want, wlse = R.flash_attn_with_kvcache(q, ref_k, ref_v, kn, vn, cache_seqlens=seqlens,
                                           cache_batch_idx=idx, causal=causal,
                                           return_softmax_lse=True)
    assert torch.equal(k_cache, ref_k) and torch.equal(v_cache, ref_v)  # appended in place alike
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(lse, wlse.to(lse.dtype))


def test_kvcache_without_new_keys_attends_the_whole_cache():
    k_cache, v_cache = rand(2, 10, 1, 8, seed=1), rand(2, 10, 1, 8, seed=2)
    q = rand(2, 1, 2, 8)
    torch.testing.assert_close(ops.flash_attn_with_kvcache(q, k_cache, v_cache),
                               ops.flash_attn_func(q, k_cache, v_cache))


def test_kvcache_rejects_what_it_does_not_support():
    q, kc, vc = rand(1, 1, 2, 8), rand(1, 4, 2, 8), rand(1, 4, 2, 8)
    for name in ("rotary_cos", "rotary_sin", "block_table", "cache_leftpad"):
        with pytest.raises(NotImplementedError, match=f"{name} is not supported yet"):
            ops.flash_attn_with_kvcache(q, kc, vc, **{name: torch.zeros(1)})


# --- edges --------------------------------------------------------------------------------

def test_empty_batch_and_zero_length_sequences():
    q, k, v = qkv(0, 5, 7, 2, 1, 8, grad=True)
    out = ops.flash_attn_func(q, k, v)
    assert out.shape == (0, 5, 2, 8)
    out.sum().backward()
    q, k, v = qkv(2, 0, 7, 2, 1, 8)
    assert ops.flash_attn_func(q, k, v).shape == (2, 0, 2, 8)
    q, k, v = qkv(2, 4, 0, 2, 1, 8, grad=True)  # no keys: zeros, lse +inf
    out, lse, _ = ops.flash_attn_func(q, k, v, return_attn_probs=True)
    assert torch.equal(out, torch.zeros_like(out)) and torch.isinf(lse).all()
    out.sum().backward()
    assert torch.equal(q.grad, torch.zeros_like(q))


def test_rows_without_visible_keys_give_zeros():
    q, k, v = qkv(1, 9, 3, 2, 2, 4, grad=True)
    out, lse, _ = ops.flash_attn_func(q, k, v, causal=True, return_attn_probs=True)
    # sq > sk, bottom-right causal: rows 0..5 see no key
    assert torch.equal(out[:, :6], torch.zeros_like(out[:, :6]))
    assert torch.isinf(lse[:, :, :6]).all() and torch.isfinite(lse[:, :, 6:]).all()
    g = torch.autograd.grad(out.sum(), q)[0]
    assert torch.equal(g[:, :6], torch.zeros_like(g[:, :6]))


def test_results_do_not_depend_on_the_thread_count():
    q, k, v = qkv(2, 150, 300, 4, 2, 32, dtype=torch.float32, grad=True)
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 2):
            torch.set_num_threads(n)
            out = ops.flash_attn_func(q, k, v, causal=True)
            results.append((out, *torch.autograd.grad(out.sum(), (q, k, v))))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results):
        assert torch.equal(a, b)


# --- registration, opcheck, compile ------------------------------------------------------

def test_opcheck_forward_backward_kvcache():
    q, k, v = qkv(2, 7, 9, 4, 2, 8, dtype=torch.float32, grad=True)
    opcheck(torch.ops.kernelzoo.flash_attn_forward.default,
            (q, k, v, None, None, 7, 9, 0.0, 0.3, -1, 0, 0.0, None, False, None, 0))
    cu = torch.tensor([0, 3, 7], dtype=torch.int32)
    qv, kvv = rand(7, 2, 8, dtype=torch.float32, requires_grad=True), rand(7, 2, 8, dtype=torch.float32)
    opcheck(torch.ops.kernelzoo.flash_attn_forward.default,
            (qv, kvv, kvv, cu, cu, 4, 4, 0.1, 0.3, -1, -1, 2.0, None, False, torch.tensor(5), 0))


class _Attention(torch.nn.Module):
    def __init__(self, **kw):
        super().__init__()
        self.kw = kw

    def forward(self, q, k, v):
        return ops.flash_attn_func(q, k, v, **self.kw) * 2


class _VarlenAttention(torch.nn.Module):
    def forward(self, q, k, v, cu, max_seqlen: int):
        return ops.flash_attn_varlen_func(q, k, v, cu, cu, max_seqlen, max_seqlen, causal=True)


def test_compile_fullgraph():
    q, k, v = qkv(2, 9, 11, 4, 2, 8, dtype=torch.float32, grad=True)
    check_compile(_Attention(causal=True, softcap=3.0), q, k, v, tol=dict(rtol=1e-6, atol=1e-6))
    check_compile(CallFn(ops.flash_attn_func, causal=True), q, k, v)


def test_compile_varlen_dynamic_without_graph_break():
    torch._dynamo.reset()
    compiled = torch.compile(_VarlenAttention(), fullgraph=True, dynamic=True)
    for lens in ([3, 5], [7, 1, 4], [2, 9, 9, 1]):
        cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32)
        q = rand(int(cu[-1]), 2, 8, dtype=torch.float32)
        torch.testing.assert_close(compiled(q, q, q, cu, max(lens)),
                                   _VarlenAttention()(q, q, q, cu, max(lens)))


class _EveryForm(torch.nn.Module):
    """Calls every function of the API once (the packed forms, varlen, dropout,
    and a decode step that appends to a KV cache in place)."""

    def forward(self, qkv, cu, max_seqlen: int, k_cache, v_cache, seqlens):
        q, k, v = qkv.unbind(2)
        a = ops.flash_attn_qkvpacked_func(qkv, causal=True)
        b = ops.flash_attn_kvpacked_func(q, qkv[:, :, 1:], window_size=(2, 1))
        c = ops.flash_attn_func(q, k, v, dropout_p=0.25)
        flat = qkv.flatten(0, 1)
        d = ops.flash_attn_varlen_qkvpacked_func(flat, cu, max_seqlen, softcap=2.0)
        e = ops.flash_attn_varlen_kvpacked_func(flat[:, 0], flat[:, 1:], cu, cu, max_seqlen,
                                                max_seqlen)
        f = ops.flash_attn_with_kvcache(q[:, -1:], k_cache, v_cache, k[:, -1:], v[:, -1:],
                                        cache_seqlens=seqlens, causal=True)
        return a.sum() + b.sum() + c.sum() + d.sum() + e.sum() + f.sum(), k_cache.clone()


def test_compile_every_function_fullgraph():
    """torch.compile(fullgraph=True) of a module calling each function: the
    values, the cache appended in place and (with the same seed) the dropout
    mask are eager's. The mask's seed is drawn with torch.randint, which
    inductor replaces by its own generator unless fallback_random is set (as
    for every random op under torch.compile)."""
    qkv = rand(2, 6, 3, 2, 8, dtype=torch.float32)
    cu = torch.tensor([0, 6, 12], dtype=torch.int32)
    seqlens = torch.tensor([3, 5], dtype=torch.int32)
    caches = [rand(2, 8, 2, 8, seed=s, dtype=torch.float32) for s in (1, 2)]
    torch._dynamo.reset()
    compiled = torch.compile(_EveryForm(), fullgraph=True)
    results = []
    with torch._inductor.config.patch(fallback_random=True):
        for fn in (compiled, _EveryForm()):
            kc, vc = (c.clone() for c in caches)
            torch.manual_seed(0)
            results.append(fn(qkv, cu, 6, kc, vc, seqlens) + (vc,))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert not torch.equal(results[0][1], caches[0])  # the new keys were written


# --- errors -------------------------------------------------------------------------------

Q, K, V = qkv(2, 3, 5, 4, 2, 8, dtype=torch.float32)
CU = torch.tensor([0, 2, 5], dtype=torch.int32)
QV, KV = rand(5, 4, 8, dtype=torch.float32), rand(5, 2, 8, dtype=torch.float32)

ERRORS = [
    ("q rank", ops.flash_attn_func, (Q[0], K, V), {}, "flash_attn: expected q of shape (batch, "
     "seqlen, nheads, headdim), but got a tensor of shape [3, 4, 8]"),
    ("int dtype", ops.flash_attn_func, (Q.long(), K.long(), V.long()), {},
     "flash_attn: expected floating-point q, k and v (float64, float32, float16 or bfloat16), "
     "but got q of dtype int64"),
    ("mixed dtypes", ops.flash_attn_func, (Q, K.double(), V), {},
     "flash_attn: q, k and v must have the same dtype"),
    ("batch", ops.flash_attn_func, (Q, K[:1], V[:1]), {},
     "flash_attn: q, k and v must have the same batch size, but got 2, 1 and 1"),
    ("keys k v", ops.flash_attn_func, (Q, K, V[:, :4]), {},
     "flash_attn: k and v must have the same number of keys"),
    ("heads k v", ops.flash_attn_func, (Q, K, V[:, :, :1]), {},
     "flash_attn: k and v must have the same number of heads"),
    ("heads divisible", ops.flash_attn_func, (Q, rand(2, 5, 3, 8, dtype=torch.float32),
                                              rand(2, 5, 3, 8, dtype=torch.float32)), {},
     "flash_attn: the number of query heads (4) must be a multiple of the number of key/value "
     "heads (3)"),
    ("head dims", ops.flash_attn_func, (Q, K[..., :7], V), {},
     "flash_attn: q and k must have the same head dimension, but got 8 and 7"),
    ("dropout 1", ops.flash_attn_func, (Q, K, V), dict(dropout_p=1.0),
     "flash_attn: dropout_p must be in [0, 1), but got 1"),
]

EAGER_ERRORS = [
    ("softcap", ops.flash_attn_func, (Q, K, V), dict(softcap=-1.0),
     "flash_attn: softcap must be 0 (off) or positive, but got -1"),
    ("window", ops.flash_attn_func, (Q, K, V), dict(window_size=(-2, 0)),
     "flash_attn: window_size entries must be -1 (unbounded) or non-negative, but got (-2, 0)"),
    ("alibi shape", ops.flash_attn_func, (Q, K, V), dict(alibi_slopes=torch.ones(3)),
     "flash_attn: alibi_slopes must have shape (nheads,) = (4,) or (batch, nheads) = (2, 4), "
     "but got [3]"),
    ("alibi dtype", ops.flash_attn_func, (Q, K, V), dict(alibi_slopes=torch.ones(4).double()),
     "flash_attn: alibi_slopes must be float32, but got float64"),
    ("cu int64", ops.flash_attn_varlen_func, (QV, KV, KV, CU.long(), CU, 3, 3), {},
     "flash_attn: cu_seqlens_q must be int32, but got int64"),
    ("cu decreasing", ops.flash_attn_varlen_func,
     (QV, KV, KV, torch.tensor([0, 3, 2, 5], dtype=torch.int32), CU, 3, 3), {},
     "flash_attn: cu_seqlens_q must be non-decreasing, but cu_seqlens_q[2] = 2 < cu_seqlens_q[1] = 3"),
    ("cu end", ops.flash_attn_varlen_func, (QV, KV, KV, torch.tensor([0, 2, 4], dtype=torch.int32),
                                            CU, 3, 3), {},
     "flash_attn: cu_seqlens_q must end at the number of tokens (5), but ends at 4"),
    ("cu start", ops.flash_attn_varlen_func, (QV, KV, KV, torch.tensor([1, 2, 5], dtype=torch.int32),
                                              CU, 3, 3), {},
     "flash_attn: cu_seqlens_q must start at 0, but starts at 1"),
    ("max_seqlen", ops.flash_attn_varlen_func, (QV, KV, KV, CU, CU, 2, 3), {},
     "flash_attn: max_seqlen (2) is smaller than sequence 1's length 3 in cu_seqlens_q"),
    ("cu counts", ops.flash_attn_varlen_func,
     (QV, KV, KV, CU, torch.tensor([0, 5], dtype=torch.int32), 3, 5), {},
     "flash_attn: cu_seqlens_q and cu_seqlens_k must describe the same number of sequences, "
     "but got 2 and 1"),
    ("kvcache no seqlens", ops.flash_attn_with_kvcache,
     (Q, K, V, K[:, :1], V[:, :1]), {},
     "flash_attn_with_kvcache: appending k and v needs cache_seqlens"),
    ("kvcache overflow", ops.flash_attn_with_kvcache,
     (Q, K, V, K[:, :2], V[:, :2]), dict(cache_seqlens=torch.tensor([4, 0], dtype=torch.int32)),
     "flash_attn_with_kvcache: cache_seqlens[0] = 4 plus the 2 new keys does not fit a cache of "
     "5 positions"),
    ("kvcache row", ops.flash_attn_with_kvcache, (Q, K, V), dict(
        cache_batch_idx=torch.tensor([0, 2], dtype=torch.int32)),
     "flash_attn_with_kvcache: cache_batch_idx[1] = 2 is not a row of the cache (batch_cache = 2)"),
]


@pytest.mark.parametrize("name,fn,args,kwargs,message", ERRORS, ids=[e[0] for e in ERRORS])
@pytest.mark.parametrize("mode", ["eager", "meta", "fake"])
def test_errors(name, fn, args, kwargs, message, mode):
    assert_raises(mode, RuntimeError, message, fn, *args, **kwargs)


@pytest.mark.parametrize("name,fn,args,kwargs,message", EAGER_ERRORS, ids=[e[0] for e in EAGER_ERRORS])
def test_errors_that_need_values(name, fn, args, kwargs, message):
    assert_raises("eager", RuntimeError, message, fn, *args, **kwargs)


def test_no_double_backward():
    q, k, v = qkv(1, 3, 4, 2, 2, 4, grad=True)
    out = ops.flash_attn_func(q, k, v)
    (g,) = torch.autograd.grad(out.sum(), q, create_graph=True)
    with pytest.raises(RuntimeError, match="derivative for .*_flash_attn_backward.* is not implemented"):
        g.sum().backward()


def test_cuda_kernels_are_registered():
    """CUDA kernels in a FORCE_CUDA build, the rebuild-with-CUDA stub otherwise
    (tests/test_flash_attn_cuda.py runs them on a GPU)."""
    from kernelzoo._dispatch import op_backends
    expected = "kernel" if kernelzoo.build_info()["cuda"] else "stub"
    for name in ("flash_attn_forward", "_flash_attn_backward", "flash_attn_kvcache"):
        assert op_backends(name)["CUDA"] == expected


class _ScriptedAttention(torch.nn.Module):
    def forward(self, q, k, v):
        return torch.ops.kernelzoo.flash_attn_forward(q, k, v, None, None, q.size(1), k.size(1),
                                                      0.0, 0.25, -1, 0, 0.0, None, False, None,
                                                      0)[0]


def test_torchscript_through_the_dispatcher_op():
    """flash_attn_func itself, like flash-attn's (an autograd.Function), is not
    scriptable; the dispatcher op is."""
    from ophelpers import script

    q, k, v = qkv(2, 9, 11, 4, 2, 16, dtype=torch.float32)
    assert torch.equal(script(_ScriptedAttention())(q, k, v),
                       ops.flash_attn_func(q, k, v, causal=True, softmax_scale=0.25))
