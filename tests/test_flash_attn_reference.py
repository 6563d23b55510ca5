"""The plain-PyTorch flash-attention reference (kernelzoo.reference.flash_attn)
against independent computations: torch's scaled_dot_product_attention with
masks built here (tril/triu, explicit ALiBi biases), hand-computed tiny cases,
a scalar pure-Python Philox, varlen against a loop of dense calls, the KV cache
against dense attention over the concatenated cache, float64 gradcheck, and
every documented bad input with its message."""

import math

import pytest
import torch
import torch.nn.functional as F

from kernelzoo import reference as R
from kernelzoo.reference import flash_attn as FA
from ophelpers import assert_raises

INF = float("inf")


def rand(*shape, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)


def visible_mask(sq, sk, causal=False, window=(-1, -1)):
    """Key j visible to row i, built with tril/triu (bottom-right aligned)."""
    left, right = window
    if causal:
        right = 0
    vis = torch.ones(sq, sk, dtype=torch.bool)
    if right >= 0:
        vis = torch.tril(vis, diagonal=sk - sq + right)
    if left >= 0:
        vis = torch.triu(vis, diagonal=sk - sq - left)
    return vis


def alibi_bias(slopes, batch, sq, sk):
    """(B, H, sq, sk) bias -slope * |i + sk - sq - j|, distances from a Python loop."""
    dist = torch.tensor([[abs(i + sk - sq - j) for j in range(sk)] for i in range(sq)],
                        dtype=torch.float64)
    s = slopes.double()
    s = s.expand(batch, -1) if s.dim() == 1 else s
    return -s[:, :, None, None] * dist


def sdpa(q, k, v, scale, vis=None, bias=None):
    """torch SDPA in (B, S, H, D) layout with a float mask (bias, -inf where hidden)."""
    mask = None
    if vis is not None or bias is not None:
        mask = torch.zeros(q.size(0), q.size(2), q.size(1), k.size(1), dtype=q.dtype)
        if bias is not None:
            mask = mask + bias.to(q.dtype)
        if vis is not None:
            mask = mask.masked_fill(~vis, -INF)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                         attn_mask=mask, scale=scale,
                                         enable_gqa=q.size(2) != k.size(2))
    return out.transpose(1, 2)


def lse_of(q, k, scale, vis=None, bias=None):
    """logsumexp over visible keys of the scaled (+bias) scores; +inf for empty rows."""
    k = k.repeat_interleave(q.size(2) // k.size(2), dim=2)
    s = torch.einsum("bihd,bjhd->bhij", q.double(), k.double()) * scale
    if bias is not None:
        s = s + bias
    if vis is not None:
        s = s.masked_fill(~vis, -INF)
    lse = torch.logsumexp(s, dim=-1)
    return torch.where(torch.isneginf(lse), torch.full_like(lse, INF), lse)


# --- dense against SDPA ------------------------------------------------------------

SHAPES = [(7, 7), (5, 11), (11, 5), (1, 9), (9, 1)]
MASKS = [
    dict(),
    dict(causal=True),
    dict(window=(2, 1)),
    dict(window=(0, -1)),
    dict(window=(-1, 3)),
    dict(causal=True, window=(3, 5)),   # causal keeps the left bound, right becomes 0
]


@pytest.mark.parametrize("sq,sk", SHAPES)
@pytest.mark.parametrize("mask", MASKS, ids=lambda m: "-".join(f"{k}{v}" for k, v in m.items())
                         or "dense")
def test_dense_matches_sdpa(sq, sk, mask):
    causal, window = mask.get("causal", False), mask.get("window", (-1, -1))
    batch, nheads, d, dv = 2, 4, 5, 3
    vis = visible_mask(sq, sk, causal, window)
    q = rand(batch, sq, nheads, d, seed=1)
    for nheads_k in (4, 2, 1):                       # MHA, GQA, MQA
        k = rand(batch, sk, nheads_k, d, seed=2)
        v = rand(batch, sk, nheads_k, dv, seed=3)
        for slopes in (None, rand(nheads, seed=4).abs().float(),
                       rand(batch, nheads, seed=5).abs().float()):
            bias = None if slopes is None else alibi_bias(slopes, batch, sq, sk)
            out, lse, s_dmask = R.flash_attn_func(q, k, v, causal=causal, window_size=window,
                                                  alibi_slopes=slopes, return_attn_probs=True)
            scale = d ** -0.5
            want = sdpa(q, k, v, scale, vis, bias)
            rows = vis.any(dim=1)                     # SDPA's empty rows are not the measure
            torch.testing.assert_close(out[:, rows], want[:, rows], rtol=1e-10, atol=1e-12)
            assert torch.equal(out[:, ~rows], torch.zeros_like(out[:, ~rows]))
            torch.testing.assert_close(lse, lse_of(q, k, scale, vis, bias).float())
            assert lse.dtype == torch.float32 and lse.shape == (batch, nheads, sq)
            assert out.shape == (batch, sq, nheads, dv) and out.dtype == q.dtype
            assert s_dmask.shape == (batch, nheads, sq, sk)
            assert torch.equal(s_dmask != 0, vis.expand_as(s_dmask))


def test_causal_equal_lengths_is_sdpa_is_causal():
    q, k, v = rand(2, 9, 3, 4, seed=1), rand(2, 9, 3, 4, seed=2), rand(2, 9, 3, 4, seed=3)
    want = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                          v.transpose(1, 2), is_causal=True).transpose(1, 2)
    torch.testing.assert_close(R.flash_attn_func(q, k, v, causal=True), want)


def test_causal_unequal_lengths_is_bottom_right_not_top_left():
    q, k, v = rand(1, 4, 2, 4, seed=1), rand(1, 9, 2, 4, seed=2), rand(1, 9, 2, 4, seed=3)
    out = R.flash_attn_func(q, k, v, causal=True)
    top_left = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                              v.transpose(1, 2), is_causal=True).transpose(1, 2)
    assert not torch.allclose(out, top_left)
    bottom_right = torch.ones(4, 9, dtype=torch.bool).tril(diagonal=5)
    torch.testing.assert_close(out, sdpa(q, k, v, 0.5, bottom_right))


@pytest.mark.parametrize("sq,sk,pattern", [
    (2, 5, [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]),
    (5, 2, [[0, 0], [0, 0], [0, 0], [1, 0], [1, 1]]),
])
def test_causal_mask_of_flash_attn_docstring(sq, sk, pattern):
    q, k, v = rand(1, sq, 1, 3, seed=1), rand(1, sk, 1, 3, seed=2), rand(1, sk, 1, 3, seed=3)
    _, _, p = R.flash_attn_func(q, k, v, causal=True, return_attn_probs=True)
    assert (p[0, 0] > 0).long().tolist() == pattern


def test_window_right_unbounded_when_seqlen_q_exceeds_seqlen_k():
    # window (0, -1) with sq = 10 > sk + 1 = 3: -1 is unbounded, so every row that
    # reaches key 0 from the left sees all keys (flash-attn's kernel would bound it).
    q, k, v = rand(1, 10, 1, 4, seed=1), rand(1, 2, 1, 4, seed=2), rand(1, 2, 1, 4, seed=3)
    _, _, p = R.flash_attn_func(q, k, v, window_size=(0, -1), return_attn_probs=True)
    assert (p[0, 0] > 0).long().tolist() == [[1, 1]] * 9 + [[0, 1]]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_low_precision_is_float32_math_cast_back(dtype):
    q, k, v = (rand(2, 6, 4, 8, dtype=dtype, seed=s) for s in (1, 2, 3))
    k, v = k[:, :, :2], v[:, :, :2]
    out, lse, s_dmask = R.flash_attn_func(q, k, v, causal=True, return_attn_probs=True)
    assert out.dtype == dtype and s_dmask.dtype == dtype and lse.dtype == torch.float32
    want, want_lse, _ = R.flash_attn_func(q.double(), k.double(), v.double(), causal=True,
                                          return_attn_probs=True)
    torch.testing.assert_close(out, want.to(dtype))
    torch.testing.assert_close(lse, want_lse.float(), rtol=1e-5, atol=1e-5)


def test_float32_inputs_are_computed_in_float32():
    q, k, v = (rand(1, 5, 2, 8, dtype=torch.float32, seed=s) for s in (1, 2, 3))
    want = sdpa(q, k, v, 8 ** -0.5)
    out = R.flash_attn_func(q, k, v)
    torch.testing.assert_close(out, want, rtol=1e-6, atol=1e-6)


def test_noncontiguous_inputs():
    q = rand(2, 4, 7, 3, seed=1).transpose(1, 2)            # (2, 7, 4, 3), strided
    kv = rand(2, 9, 2, 2, 3, seed=2)
    k, v = kv[:, :, 0], kv[:, :, 1]
    out = R.flash_attn_func(q, k, v, causal=True)
    torch.testing.assert_close(out, R.flash_attn_func(q.contiguous(), k.contiguous(),
                                                      v.contiguous(), causal=True))
    torch.testing.assert_close(out, sdpa(q, k, v, 3 ** -0.5, visible_mask(7, 9, True)))


def test_softmax_scale_argument():
    q, k, v = rand(1, 3, 2, 4, seed=1), rand(1, 5, 2, 4, seed=2), rand(1, 5, 2, 4, seed=3)
    out, lse, _ = R.flash_attn_func(q, k, v, softmax_scale=0.3, return_attn_probs=True)
    torch.testing.assert_close(out, sdpa(q, k, v, 0.3))
    torch.testing.assert_close(lse, lse_of(q, k, 0.3).float())


# --- hand-computed tiny cases -------------------------------------------------------


def _tiny():
    q = torch.tensor([[[[1.0, 2.0]]]], dtype=torch.float64)                 # (1, 1, 1, 2)
    k = torch.tensor([[[[3.0, -1.0]], [[0.5, 2.0]]]], dtype=torch.float64)  # (1, 2, 1, 2)
    v = torch.tensor([[[[1.0, -2.0]], [[4.0, 0.5]]]], dtype=torch.float64)
    return q, k, v


def test_softcap_by_hand():
    q, k, v = _tiny()
    scale, cap = 0.5, 0.7
    s = [scale * (1 * 3 + 2 * -1), scale * (1 * 0.5 + 2 * 2)]              # 0.5, 2.25
    c = [cap * math.tanh(x / cap) for x in s]
    z = math.exp(c[0]) + math.exp(c[1])
    p = [math.exp(x) / z for x in c]
    want = [p[0] * 1 + p[1] * 4, p[0] * -2 + p[1] * 0.5]
    out, lse, _ = R.flash_attn_func(q, k, v, softmax_scale=scale, softcap=cap,
                                    return_attn_probs=True)
    torch.testing.assert_close(out[0, 0, 0], torch.tensor(want, dtype=torch.float64))
    assert lse.item() == pytest.approx(math.log(z), rel=1e-6)


def test_softcap_then_alibi_by_hand():
    q, k, v = _tiny()
    scale, cap, slope = 0.5, 0.7, 0.25
    # one query, two keys: d = i + sk - sq = 1; distances |1 - j| = 1, 0
    s = [scale * 1.0, scale * 4.5]
    c = [cap * math.tanh(s[0] / cap) - slope * 1, cap * math.tanh(s[1] / cap) - slope * 0]
    z = math.exp(c[0]) + math.exp(c[1])
    p = [math.exp(x) / z for x in c]
    out, lse, _ = R.flash_attn_func(q, k, v, softmax_scale=scale, softcap=cap,
                                    alibi_slopes=torch.tensor([slope]), return_attn_probs=True)
    torch.testing.assert_close(out[0, 0, 0], torch.tensor(
        [p[0] * 1 + p[1] * 4, p[0] * -2 + p[1] * 0.5], dtype=torch.float64))
    assert lse.item() == pytest.approx(math.log(z), rel=1e-6)


def test_softcap_zero_or_negative_is_off():
    q, k, v = rand(1, 4, 2, 3, seed=1), rand(1, 6, 2, 3, seed=2), rand(1, 6, 2, 3, seed=3)
    plain = R.flash_attn_func(q, k, v)
    assert torch.equal(R.flash_attn_func(q, k, v, softcap=0.0), plain)
    assert torch.equal(R.flash_attn_func(q, k, v, softcap=-1.0), plain)
    assert not torch.allclose(R.flash_attn_func(q, k, v, softcap=0.5), plain)


def test_fully_masked_rows_are_zero_with_lse_inf():
    q, k, v = rand(1, 5, 2, 3, seed=1), rand(1, 2, 2, 3, seed=2), rand(1, 2, 2, 3, seed=3)
    out, lse, p = R.flash_attn_func(q, k, v, causal=True, return_attn_probs=True)
    assert torch.equal(out[0, :3], torch.zeros(3, 2, 3, dtype=torch.float64))
    assert torch.equal(lse[0, :, :3], torch.full((2, 3), INF))
    assert torch.equal(p[0, :, :3], torch.zeros(2, 3, 2, dtype=torch.float64))
    # row 3 sees key 0 only: out = v_0, lse = its score
    torch.testing.assert_close(out[0, 3], v[0, 0])
    s30 = (q[0, 3] * k[0, 0]).sum(-1) / math.sqrt(3)
    torch.testing.assert_close(lse[0, :, 3], s30.float())


def test_window_zero_zero_sees_only_the_diagonal():
    q, k, v = rand(1, 4, 1, 3, seed=1), rand(1, 4, 1, 3, seed=2), rand(1, 4, 1, 3, seed=3)
    out, lse, _ = R.flash_attn_func(q, k, v, window_size=(0, 0), return_attn_probs=True)
    torch.testing.assert_close(out, v)
    torch.testing.assert_close(lse[0, 0], ((q * k).sum(-1)[0, :, 0] / math.sqrt(3)).float())


@pytest.mark.parametrize("shape_q,shape_k", [
    ((2, 3, 2, 4), (2, 0, 2, 4)),     # no keys: zeros, lse +inf
    ((0, 3, 2, 4), (0, 5, 2, 4)),     # empty batch
    ((2, 0, 2, 4), (2, 5, 2, 4)),     # no queries
])
def test_empty_shapes(shape_q, shape_k):
    q, k = rand(*shape_q, seed=1).requires_grad_(), rand(*shape_k, seed=2)
    v = rand(*shape_k, seed=3)
    out, lse, p = R.flash_attn_func(q, k, v, causal=True, return_attn_probs=True)
    assert out.shape == shape_q and lse.shape == (shape_q[0], 2, shape_q[1])
    assert p.shape == (shape_q[0], 2, shape_q[1], shape_k[1])
    assert torch.equal(out, torch.zeros_like(out))
    assert torch.all(lse == INF)
    out.sum().backward()
    assert torch.equal(q.grad, torch.zeros_like(q))


# --- gradients ----------------------------------------------------------------------


def test_gradcheck_dense_all_features():
    # GQA, causal + left window, softcap, per-batch ALiBi and fully masked rows (sq > sk)
    q = rand(2, 5, 4, 3, seed=1).requires_grad_()
    k = rand(2, 3, 2, 3, seed=2).requires_grad_()
    v = rand(2, 3, 2, 2, seed=3).requires_grad_()
    slopes = rand(2, 4, seed=4).abs().float()

    def f(q, k, v):
        return R.flash_attn_func(q, k, v, causal=True, window_size=(1, -1), softcap=0.8,
                                 alibi_slopes=slopes)

    assert torch.autograd.gradcheck(f, (q, k, v))
    out = f(q, k, v)
    out.sum().backward()
    assert torch.equal(q.grad[:, :2], torch.zeros_like(q.grad[:, :2]))   # empty rows


def test_gradcheck_dense_window_and_dropout():
    q = rand(1, 4, 2, 3, seed=1).requires_grad_()
    k = rand(1, 6, 2, 3, seed=2).requires_grad_()
    v = rand(1, 6, 2, 3, seed=3).requires_grad_()

    def f(q, k, v):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(7)                      # the same mask on every call
            return R.flash_attn_func(q, k, v, dropout_p=0.3, window_size=(2, 1))

    assert torch.autograd.gradcheck(f, (q, k, v))


def test_gradcheck_varlen():
    cu_q = torch.tensor([0, 2, 2, 5], dtype=torch.int32)
    cu_k = torch.tensor([0, 3, 4, 6], dtype=torch.int32)
    q = rand(5, 2, 3, seed=1).requires_grad_()
    k = rand(6, 1, 3, seed=2).requires_grad_()
    v = rand(6, 1, 3, seed=3).requires_grad_()

    def f(q, k, v):
        return R.flash_attn_varlen_func(q, k, v, cu_q, cu_k, 3, 3, causal=True, softcap=1.5,
                                        alibi_slopes=torch.tensor([0.3, 0.1]))

    assert torch.autograd.gradcheck(f, (q, k, v))


def test_packed_gradients_flow_to_the_packed_tensor():
    qkv = rand(2, 5, 3, 2, 4, seed=1).requires_grad_()
    R.flash_attn_qkvpacked_func(qkv, causal=True).square().sum().backward()
    q, k, v = (t.detach().requires_grad_() for t in qkv.detach().unbind(2))
    R.flash_attn_func(q, k, v, causal=True).square().sum().backward()
    torch.testing.assert_close(qkv.grad, torch.stack([q.grad, k.grad, v.grad], dim=2))


# --- packed forms and varlen --------------------------------------------------------


def test_packed_forms_equal_unpacked():
    qkv = rand(2, 6, 3, 4, 5, seed=1)
    q, k, v = qkv.unbind(2)
    kw = dict(causal=True, window_size=(3, -1), softcap=2.0,
              alibi_slopes=torch.tensor([0.1, 0.2, 0.3, 0.4]))
    torch.testing.assert_close(R.flash_attn_qkvpacked_func(qkv, **kw),
                               R.flash_attn_func(q, k, v, **kw))
    kv = rand(2, 8, 2, 2, 5, seed=2)
    torch.testing.assert_close(R.flash_attn_kvpacked_func(q, kv, **kw),
                               R.flash_attn_func(q, kv[:, :, 0], kv[:, :, 1], **kw))
    cu = torch.tensor([0, 4, 4, 9], dtype=torch.int32)
    qkv_v = rand(9, 3, 4, 5, seed=3)
    torch.testing.assert_close(
        R.flash_attn_varlen_qkvpacked_func(qkv_v, cu, 5, **kw),
        R.flash_attn_varlen_func(*qkv_v.unbind(1), cu, cu, 5, 5, **kw))
    cu_k = torch.tensor([0, 1, 6, 7], dtype=torch.int32)
    kv_v = rand(7, 2, 2, 5, seed=4)
    qv = qkv_v[:, 0]
    torch.testing.assert_close(
        R.flash_attn_varlen_kvpacked_func(qv, kv_v, cu, cu_k, 5, 5, **kw),
        R.flash_attn_varlen_func(qv, kv_v[:, 0], kv_v[:, 1], cu, cu_k, 5, 5, **kw))


@pytest.mark.parametrize("causal,window", [(False, (-1, -1)), (True, (-1, -1)),
                                           (False, (2, 0)), (True, (1, 3))])
@pytest.mark.parametrize("alibi", [None, "heads", "batch"])
def test_varlen_equals_loop_of_dense(causal, window, alibi):
    lq, lk = [3, 0, 5, 1, 4], [6, 2, 0, 1, 3]      # zero-length, sq > sk and sq < sk
    cu_q = torch.tensor([0] + list(torch.tensor(lq).cumsum(0)), dtype=torch.int32)
    cu_k = torch.tensor([0] + list(torch.tensor(lk).cumsum(0)), dtype=torch.int32)
    nheads, nheads_k = 4, 2
    q, k, v = rand(sum(lq), nheads, 3, seed=1), rand(sum(lk), nheads_k, 3, seed=2), \
        rand(sum(lk), nheads_k, 2, seed=3)
    slopes = {None: None, "heads": rand(nheads, seed=4).abs().float(),
              "batch": rand(5, nheads, seed=5).abs().float()}[alibi]
    out, lse, s_dmask = R.flash_attn_varlen_func(q, k, v, cu_q, cu_k, 7, 8, causal=causal,
                                                 window_size=window, alibi_slopes=slopes,
                                                 return_attn_probs=True)
    assert out.shape == (sum(lq), nheads, 2) and lse.shape == (nheads, sum(lq))
    assert s_dmask.shape == (5, nheads, 7, 8)
    for b in range(5):
        qs, ks = slice(int(cu_q[b]), int(cu_q[b + 1])), slice(int(cu_k[b]), int(cu_k[b + 1]))
        sl = None if slopes is None else (slopes if slopes.dim() == 1 else slopes[b])
        o, l, p = R.flash_attn_func(q[None, qs], k[None, ks], v[None, ks], causal=causal,
                                    window_size=window, alibi_slopes=sl, return_attn_probs=True)
        torch.testing.assert_close(out[qs], o[0], rtol=0, atol=0)
        torch.testing.assert_close(lse[:, qs], l[0], rtol=0, atol=0)
        torch.testing.assert_close(s_dmask[b, :, :lq[b], :lk[b]], p[0], rtol=0, atol=0)
        assert not s_dmask[b, :, lq[b]:].any() and not s_dmask[b, :, :, lk[b]:].any()


def test_varlen_empty_batch():
    cu = torch.zeros(1, dtype=torch.int32)
    q, k = rand(0, 2, 4), rand(0, 1, 4)
    out, lse, p = R.flash_attn_varlen_func(q, k, k, cu, cu, 0, 0, return_attn_probs=True)
    assert out.shape == (0, 2, 4) and lse.shape == (2, 0) and p.shape == (0, 2, 0, 0)


def test_varlen_block_table_not_implemented():
    cu = torch.tensor([0, 2], dtype=torch.int32)
    q = rand(2, 1, 4)
    with pytest.raises(NotImplementedError, match="paged KV cache"):
        R.flash_attn_varlen_func(q, q, q, cu, cu, 2, 2,
                                 block_table=torch.zeros(1, 1, dtype=torch.int32))


# --- KV cache -------------------------------------------------------------------------


@pytest.mark.parametrize("causal,window", [(False, (-1, -1)), (True, (-1, -1)),
                                           (False, (3, 1)), (True, (2, -1))])
@pytest.mark.parametrize("seqlen_q", [1, 3])
def test_kvcache_appends_in_place_and_attends_to_the_concatenated_cache(causal, window,
                                                                        seqlen_q):
    batch, batch_cache, seqlen_cache, nheads, nheads_k, d, dv, new = 3, 4, 12, 4, 2, 5, 3, 2
    k_cache = rand(batch_cache, seqlen_cache, nheads_k, d, seed=1)
    v_cache = rand(batch_cache, seqlen_cache, nheads_k, dv, seed=2)
    k_old, v_old = k_cache.clone(), v_cache.clone()
    q = rand(batch, seqlen_q, nheads, d, seed=3)
    k, v = rand(batch, new, nheads_k, d, seed=4), rand(batch, new, nheads_k, dv, seed=5)
    lens = [3, 0, 10]
    idx = [2, 0, 3]
    slopes = rand(batch, nheads, seed=6).abs().float()
    out, lse = R.flash_attn_with_kvcache(
        q, k_cache, v_cache, k, v, cache_seqlens=torch.tensor(lens, dtype=torch.int32),
        cache_batch_idx=torch.tensor(idx, dtype=torch.int32), causal=causal, window_size=window,
        softcap=3.0, alibi_slopes=slopes, return_softmax_lse=True)
    assert out.shape == (batch, seqlen_q, nheads, dv) and lse.shape == (batch, nheads, seqlen_q)
    want_k, want_v = k_old.clone(), v_old.clone()
    for b in range(batch):
        want_k[idx[b], lens[b]:lens[b] + new] = k[b]
        want_v[idx[b], lens[b]:lens[b] + new] = v[b]
        # dense attention over the old cache rows followed by the new keys
        kb = torch.cat([k_old[idx[b], :lens[b]], k[b]])[None]
        vb = torch.cat([v_old[idx[b], :lens[b]], v[b]])[None]
        o, l, _ = R.flash_attn_func(q[b:b + 1], kb, vb, causal=causal, window_size=window,
                                    softcap=3.0, alibi_slopes=slopes[b], return_attn_probs=True)
        torch.testing.assert_close(out[b:b + 1], o, rtol=0, atol=0)
        torch.testing.assert_close(lse[b:b + 1], l, rtol=0, atol=0)
    assert torch.equal(k_cache, want_k) and torch.equal(v_cache, want_v)   # entry 1 untouched


def test_kvcache_without_new_keys():
    k_cache, v_cache = rand(2, 9, 1, 4, seed=1), rand(2, 9, 1, 4, seed=2)
    q = rand(2, 1, 3, 4, seed=3)
    before = k_cache.clone()
    out = R.flash_attn_with_kvcache(q, k_cache, v_cache, cache_seqlens=6)
    assert torch.equal(k_cache, before)
    torch.testing.assert_close(out, sdpa(q, k_cache[:, :6], v_cache[:, :6], 0.5))
    full = R.flash_attn_with_kvcache(q, k_cache, v_cache)          # no cache_seqlens: all rows
    torch.testing.assert_close(full, sdpa(q, k_cache, v_cache, 0.5))


def test_kvcache_decode_step_matches_sdpa():
    k_cache, v_cache = torch.zeros(2, 8, 2, 4, dtype=torch.float64), \
        torch.zeros(2, 8, 2, 4, dtype=torch.float64)
    prefix_k, prefix_v = rand(2, 5, 2, 4, seed=1), rand(2, 5, 2, 4, seed=2)
    k_cache[:, :5], v_cache[:, :5] = prefix_k, prefix_v
    q, k, v = rand(2, 1, 2, 4, seed=3), rand(2, 1, 2, 4, seed=4), rand(2, 1, 2, 4, seed=5)
    out = R.flash_attn_with_kvcache(q, k_cache, v_cache, k, v,
                                    cache_seqlens=torch.tensor([5, 5], dtype=torch.int32),
                                    causal=True)
    want = sdpa(q, torch.cat([prefix_k, k], 1), torch.cat([prefix_v, v], 1), 0.5)
    torch.testing.assert_close(out, want)


@pytest.mark.parametrize("kwarg,msg", [
    ("rotary_cos", "rotary embedding"), ("rotary_sin", "rotary embedding"),
    ("block_table", "paged KV cache"), ("cache_leftpad", "cache_leftpad"),
])
def test_kvcache_unsupported_arguments(kwarg, msg):
    q, cache = rand(1, 1, 1, 4), rand(1, 4, 1, 4)
    with pytest.raises(NotImplementedError, match=msg):
        R.flash_attn_with_kvcache(q, cache, cache.clone(), cache_seqlens=2,
                                  **{kwarg: torch.zeros(1, dtype=torch.int32)})


# --- Philox and dropout ------------------------------------------------------------


M = 0xFFFFFFFF


def philox_scalar(ctr, key):
    """Philox4x32-10 with Python ints (Random123's definition)."""
    c, (k0, k1) = list(ctr), key
    for rnd in range(10):
        if rnd:
            k0, k1 = (k0 + 0x9E3779B9) & M, (k1 + 0xBB67AE85) & M
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [(p1 >> 32) ^ c[1] ^ k0, p1 & M, (p0 >> 32) ^ c[3] ^ k1, p0 & M]
    return c


@pytest.mark.parametrize("ctr,key,want", [
    ((0, 0, 0, 0), (0, 0), (0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8)),
    ((M, M, M, M), (M, M), (0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd)),
    ((0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344), (0xa4093822, 0x299f31d0),
     (0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1)),
])
def test_philox_known_answers(ctr, key, want):
    got = FA.philox4x32_10(torch.tensor(ctr), torch.tensor(key))
    assert got.tolist() == list(want)
    assert philox_scalar(ctr, key) == list(want)


def test_philox_vectorised_equals_scalar_on_random_inputs():
    g = torch.Generator().manual_seed(0)
    ctr = torch.randint(0, 2**32, (200, 4), generator=g, dtype=torch.int64)
    key = torch.randint(0, 2**32, (200, 2), generator=g, dtype=torch.int64)
    got = FA.philox4x32_10(ctr, key)
    for n in range(200):
        assert got[n].tolist() == philox_scalar(ctr[n].tolist(), key[n].tolist())


@pytest.mark.parametrize("dropout_p", [0.1, 0.7])
def test_keep_mask_follows_the_counter_rule(dropout_p):
    seed, offset, batch, nheads, sq, sk = (0x1234_5678_9ABC_DEF0 >> 1), 2**33 + 5, 2, 3, 5, 11
    mask = FA.dropout_keep_mask(seed, offset, batch, nheads, sq, sk, dropout_p)
    assert mask.shape == (batch, nheads, sq, sk) and mask.dtype == torch.bool
    key = (seed & M, (seed >> 32) & M)
    for b in range(batch):
        for h in range(nheads):
            for i in range(sq):
                for j in range(sk):
                    r = philox_scalar((j >> 2, i, b * nheads + h, offset & M), key)[j & 3]
                    assert bool(mask[b, h, i, j]) == ((r >> 8) * 2.0**-24 >= dropout_p)


def test_keep_rule_boundary_is_exact_in_float64():
    # Take an element whose word r has r >> 8 = x >= 2**23 and put dropout_p on and
    # around u = x * 2**-24: kept iff u >= dropout_p, compared in float64 (a float32
    # dropout_p would round x + 0.25 down to x and keep the element).
    seed, sq, sk = 77, 4, 8
    words = [[philox_scalar((j >> 2, i, 0, 0), (seed, 0))[j & 3] for j in range(sk)]
             for i in range(sq)]
    i, j = next((i, j) for i in range(sq) for j in range(sk) if words[i][j] >= 2**31)
    x = words[i][j] >> 8
    for p, kept in [(x * 2.0**-24, True), ((x - 0.25) * 2.0**-24, True),
                    ((x + 0.25) * 2.0**-24, False)]:
        assert bool(FA.dropout_keep_mask(seed, 0, 1, 1, sq, sk, p)[0, 0, i, j]) is kept, p


@pytest.mark.parametrize("dropout_p", [0.1, 0.5, 0.9])
def test_kept_fraction_is_binomial(dropout_p):
    mask = FA.dropout_keep_mask(42, 0, 2, 3, 64, 100, dropout_p)
    n = mask.numel()
    sigma = math.sqrt(dropout_p * (1 - dropout_p) / n)
    assert abs(mask.double().mean().item() - (1 - dropout_p)) < 5 * sigma


def test_keep_mask_depends_on_every_coordinate():
    base = FA.dropout_keep_mask(5, 0, 2, 2, 8, 16, 0.5)
    assert not torch.equal(base[0, 0], base[0, 1]) and not torch.equal(base[0, 0], base[1, 0])
    assert not torch.equal(base, FA.dropout_keep_mask(6, 0, 2, 2, 8, 16, 0.5))
    assert not torch.equal(base, FA.dropout_keep_mask(5, 1, 2, 2, 8, 16, 0.5))
    assert not torch.equal(base, FA.dropout_keep_mask(5 + 2**32, 0, 2, 2, 8, 16, 0.5))
    # counters are per (b, h, i, j): a bigger problem contains the smaller one
    assert torch.equal(base, FA.dropout_keep_mask(5, 0, 2, 2, 9, 19, 0.5)[:, :, :8, :16])


def _explicit_attention(q, k, v, vis, keep, p):
    """softmax over visible keys, dropout by `keep`, in float64 (test's own formula)."""
    k = k.repeat_interleave(q.size(2) // k.size(2), dim=2)
    v = v.repeat_interleave(q.size(2) // v.size(2), dim=2)
    s = torch.einsum("bihd,bjhd->bhij", q, k) / math.sqrt(q.size(-1))
    probs = torch.softmax(s.masked_fill(~vis, -INF), dim=-1).nan_to_num(0.0)
    return torch.einsum("bhij,bjhd->bihd", probs * keep / (1 - p), v), probs


def test_dropout_output_and_s_dmask():
    p = 0.4
    q, k, v = rand(2, 6, 4, 3, seed=1), rand(2, 9, 2, 3, seed=2), rand(2, 9, 2, 3, seed=3)
    torch.manual_seed(123)
    out, lse, s_dmask = R.flash_attn_func(q, k, v, dropout_p=p, causal=True,
                                          return_attn_probs=True)
    torch.manual_seed(123)
    keep = FA.dropout_keep_mask(FA.draw_seed(), 0, 2, 4, 6, 9, p)
    vis = visible_mask(6, 9, causal=True)
    want, probs = _explicit_attention(q, k, v, vis, keep, p)
    torch.testing.assert_close(out, want)
    assert torch.equal(torch.signbit(s_dmask) & vis, ~keep & vis)       # negative = dropped
    torch.testing.assert_close(s_dmask.abs(), probs)
    assert torch.equal(s_dmask[..., ~vis], torch.zeros_like(s_dmask[..., ~vis]))
    _, lse0, _ = R.flash_attn_func(q, k, v, causal=True, return_attn_probs=True)
    assert torch.equal(lse, lse0)                                        # lse ignores dropout
    torch.manual_seed(123)
    assert torch.equal(R.flash_attn_func(q, k, v, dropout_p=p, causal=True), out)
    assert not torch.equal(R.flash_attn_func(q, k, v, dropout_p=p, causal=True), out)


def test_varlen_dropout_uses_the_sequence_index():
    p = 0.3
    cu_q = torch.tensor([0, 4, 5, 11], dtype=torch.int32)
    cu_k = torch.tensor([0, 7, 10, 12], dtype=torch.int32)
    q, k, v = rand(11, 2, 4, seed=1), rand(12, 2, 4, seed=2), rand(12, 2, 4, seed=3)
    torch.manual_seed(9)
    out, _, s_dmask = R.flash_attn_varlen_func(q, k, v, cu_q, cu_k, 6, 7, dropout_p=p,
                                               return_attn_probs=True)
    torch.manual_seed(9)
    keeps = FA.dropout_keep_mask_varlen(FA.draw_seed(), 0, cu_q, cu_k, 2, p)
    for b, keep in enumerate(keeps):
        qs, ks = slice(int(cu_q[b]), int(cu_q[b + 1])), slice(int(cu_k[b]), int(cu_k[b + 1]))
        sq, sk = keep.shape[1:]
        want, _ = _explicit_attention(q[None, qs], k[None, ks], v[None, ks],
                                      torch.ones(sq, sk, dtype=torch.bool), keep[None], p)
        torch.testing.assert_close(out[qs], want[0])
        assert torch.equal(torch.signbit(s_dmask[b, :, :sq, :sk]), ~keep)


def test_no_seed_is_drawn_without_dropout():
    q = rand(1, 3, 1, 4)
    state = torch.get_rng_state()
    R.flash_attn_func(q, q, q)
    R.flash_attn_varlen_func(q[0], q[0], q[0], torch.tensor([0, 3], dtype=torch.int32),
                             torch.tensor([0, 3], dtype=torch.int32), 3, 3)
    assert torch.equal(torch.get_rng_state(), state)
    R.flash_attn_func(q, q, q, dropout_p=0.5)
    assert not torch.equal(torch.get_rng_state(), state)


def test_deterministic_is_accepted():
    q, k, v = rand(1, 3, 2, 4, seed=1), rand(1, 3, 2, 4, seed=2), rand(1, 3, 2, 4, seed=3)
    assert torch.equal(R.flash_attn_func(q, k, v, deterministic=True), R.flash_attn_func(q, k, v))


# --- bad inputs ---------------------------------------------------------------------------


def _d(*shape, dtype=torch.float32):
    return torch.zeros(shape, dtype=dtype)


def _i32(*vals, dtype=torch.int32):
    return torch.tensor(vals, dtype=dtype)


Q, K, V = _d(2, 3, 4, 8), _d(2, 5, 2, 8), _d(2, 5, 2, 8)
VQ, VK = _d(6, 4, 8), _d(7, 2, 8)
CUQ, CUK = _i32(0, 2, 6), _i32(0, 3, 7)
KC = _d(2, 10, 2, 8)

BAD = [
    # (name, function, args, kwargs, exception, message)
    ("q rank", R.flash_attn_func, (Q[0], K, V), {}, RuntimeError,
     "flash_attn_func: expected q of shape (batch, seqlen_q, nheads, headdim), but got a "
     "tensor of shape (3, 4, 8)"),
    ("k rank", R.flash_attn_func, (Q, K[0], V), {}, RuntimeError,
     "expected k of shape (batch, seqlen_k, nheads_k, headdim)"),
    ("int dtype", R.flash_attn_func, (Q.long(), K.long(), V.long()), {}, RuntimeError,
     "expected q of dtype float16, bfloat16, float32 or float64, but got torch.int64"),
    ("mixed dtypes", R.flash_attn_func, (Q, K.half(), V), {}, RuntimeError,
     "q, k and v must have the same dtype, but got q torch.float32, k torch.float16 and "
     "v torch.float32"),
    ("devices", R.flash_attn_func, (Q, K.to("meta"), V), {}, RuntimeError,
     "q, k and v must be on the same device, but got q on cpu, k on meta and v on cpu"),
    ("batch", R.flash_attn_func, (Q, K[:1], V[:1]), {}, RuntimeError,
     "q, k and v must have the same batch size, but got q 2, k 1 and v 1"),
    ("seqlen k v", R.flash_attn_func, (Q, K, V[:, :4]), {}, RuntimeError,
     "k and v must have the same seqlen_k, but got k 5 and v 4"),
    ("heads k v", R.flash_attn_func, (Q, K, _d(2, 5, 1, 8)), {}, RuntimeError,
     "k and v must have the same number of heads, but got k 2 and v 1"),
    ("heads divisible", R.flash_attn_func, (Q, _d(2, 5, 3, 8), _d(2, 5, 3, 8)), {},
     RuntimeError, "the number of query heads must be a multiple of the number of key/value "
     "heads (nheads_k > 0), but got nheads=4 and nheads_k=3"),
    ("head dims", R.flash_attn_func, (Q, _d(2, 5, 2, 7), V), {}, RuntimeError,
     "q and k must have the same head dimension, but got q 8 and k 7"),
    ("head dim 0", R.flash_attn_func, (_d(2, 3, 4, 0), _d(2, 5, 2, 0), V), {}, RuntimeError,
     "the head dimension of q and k must be positive, but got 0"),
    ("dropout 1", R.flash_attn_func, (Q, K, V), dict(dropout_p=1.0), RuntimeError,
     "dropout_p must be in [0, 1), but got 1.0"),
    ("dropout <0", R.flash_attn_func, (Q, K, V), dict(dropout_p=-0.1), RuntimeError,
     "dropout_p must be in [0, 1), but got -0.1"),
    ("window", R.flash_attn_func, (Q, K, V), dict(window_size=(1, 2, 3)), RuntimeError,
     "window_size must be a pair (left, right) of ints, -1 meaning unbounded, but got "
     "(1, 2, 3)"),
    ("alibi dtype", R.flash_attn_func, (Q, K, V), dict(alibi_slopes=_d(4).double()),
     RuntimeError, "alibi_slopes must have dtype torch.float32, but got torch.float64"),
    ("alibi shape", R.flash_attn_func, (Q, K, V), dict(alibi_slopes=_d(3)), RuntimeError,
     "alibi_slopes must have shape (nheads,) = (4,) or (batch, nheads) = (2, 4), but got (3,)"),
    ("alibi device", R.flash_attn_func, (Q, K, V), dict(alibi_slopes=_d(4).to("meta")),
     RuntimeError, "alibi_slopes must be on q's device (cpu), but got meta"),
    ("qkv packed", R.flash_attn_qkvpacked_func, (_d(2, 3, 2, 4, 8),), {}, RuntimeError,
     "flash_attn_qkvpacked_func: expected qkv of shape (batch, seqlen, 3, nheads, headdim)"),
    ("kv packed", R.flash_attn_kvpacked_func, (Q, _d(2, 5, 3, 2, 8)), {}, RuntimeError,
     "flash_attn_kvpacked_func: expected kv of shape (batch, seqlen_k, 2, nheads_k, headdim)"),
    # varlen
    ("varlen q rank", R.flash_attn_varlen_func, (Q, VK, VK, CUQ, CUK, 4, 4), {}, RuntimeError,
     "flash_attn_varlen_func: expected q of shape (total_q, nheads, headdim), but got a "
     "tensor of shape (2, 3, 4, 8)"),
    ("varlen total_k", R.flash_attn_varlen_func, (VQ, VK, VK[:6], CUQ, CUK, 4, 4), {},
     RuntimeError, "k and v must have the same total_k, but got k 7 and v 6"),
    ("cu int64", R.flash_attn_varlen_func, (VQ, VK, VK, CUQ.long(), CUK, 4, 4), {},
     RuntimeError, "cu_seqlens_q must have dtype torch.int32, but got torch.int64"),
    ("cu device", R.flash_attn_varlen_func, (VQ, VK, VK, CUQ, CUK.to("meta"), 4, 4), {},
     RuntimeError, "cu_seqlens_k must be on q's device (cpu), but got meta"),
    ("cu rank", R.flash_attn_varlen_func, (VQ, VK, VK, CUQ[None], CUK, 4, 4), {},
     RuntimeError, "cu_seqlens_q must be a 1-D tensor of batch + 1 offsets, but got shape "
     "(1, 3)"),
    ("cu start", R.flash_attn_varlen_func, (VQ, VK, VK, _i32(1, 2, 6), CUK, 4, 4), {},
     RuntimeError, "cu_seqlens_q must start at 0, but cu_seqlens_q[0] = 1"),
    ("cu decreasing", R.flash_attn_varlen_func, (VQ, VK, VK, CUQ, _i32(0, 5, 3, 7), 4, 5), {},
     RuntimeError, "cu_seqlens_k must be non-decreasing (sequence lengths >= 0), but "
     "cu_seqlens_k[2] = 3 < cu_seqlens_k[1] = 5"),
    ("cu end", R.flash_attn_varlen_func, (VQ, VK, VK, _i32(0, 2, 5), CUK, 4, 4), {},
     RuntimeError, "cu_seqlens_q must end at total_q = q.size(0) = 6, but cu_seqlens_q[-1] = 5"),
    ("cu lengths", R.flash_attn_varlen_func, (VQ, VK, VK, CUQ, _i32(0, 3, 5, 7), 4, 4), {},
     RuntimeError, "cu_seqlens_q and cu_seqlens_k must have the same length (batch + 1), but "
     "got 3 and 4"),
    ("max_seqlen_q", R.flash_attn_varlen_func, (VQ, VK, VK, CUQ, CUK, 3, 4), {},
     RuntimeError, "max_seqlen_q (3) is smaller than the longest query sequence (4)"),
    ("max_seqlen_k", R.flash_attn_varlen_func, (VQ, VK, VK, CUQ, CUK, 4, 2), {},
     RuntimeError, "max_seqlen_k (2) is smaller than the longest key sequence (4)"),
    ("varlen alibi", R.flash_attn_varlen_func, (VQ, VK, VK, CUQ, CUK, 4, 4),
     dict(alibi_slopes=_d(3, 4)), RuntimeError,
     "alibi_slopes must have shape (nheads,) = (4,) or (batch, nheads) = (2, 4), but got (3, 4)"),
    ("varlen qkv packed", R.flash_attn_varlen_qkvpacked_func, (_d(6, 2, 4, 8), CUQ, 4), {},
     RuntimeError, "expected qkv of shape (total, 3, nheads, headdim)"),
    ("varlen kv packed", R.flash_attn_varlen_kvpacked_func, (VQ, _d(7, 3, 2, 8), CUQ, CUK, 4, 4),
     {}, RuntimeError, "expected kv of shape (total_k, 2, nheads_k, headdim)"),
    # kv cache
    ("cache rank", R.flash_attn_with_kvcache, (Q, KC[0], KC), {}, RuntimeError,
     "flash_attn_with_kvcache: expected k_cache of shape (batch_cache, seqlen_cache, nheads_k, "
     "headdim)"),
    ("cache dtype", R.flash_attn_with_kvcache, (Q, KC.double(), KC.double()), {}, RuntimeError,
     "q, k_cache and v_cache must have the same dtype"),
    ("cache heads", R.flash_attn_with_kvcache, (Q, _d(2, 10, 3, 8), _d(2, 10, 3, 8)), {},
     RuntimeError, "but got nheads=4 and nheads_k=3"),
    ("cache k v length", R.flash_attn_with_kvcache, (Q, KC, KC[:, :9]), {}, RuntimeError,
     "k_cache and v_cache must have the same seqlen_cache, but got k_cache 10 and v_cache 9"),
    ("k without v", R.flash_attn_with_kvcache, (Q, KC, KC, _d(2, 1, 2, 8)),
     dict(cache_seqlens=2), RuntimeError, "k and v must be given together, but got only k"),
    ("new k shape", R.flash_attn_with_kvcache, (Q, KC, KC, _d(2, 1, 4, 8), _d(2, 1, 4, 8)),
     dict(cache_seqlens=2), RuntimeError,
     "expected k of shape (batch, seqlen_new, nheads_k, headdim) = (2, 1, 2, 8)"),
    ("no cache_seqlens", R.flash_attn_with_kvcache, (Q, KC, KC, _d(2, 1, 2, 8), _d(2, 1, 2, 8)),
     {}, RuntimeError, "cache_seqlens is required when k and v are given"),
    ("cache_seqlens dtype", R.flash_attn_with_kvcache, (Q, KC, KC),
     dict(cache_seqlens=_i32(1, 2, dtype=torch.int64)), RuntimeError,
     "cache_seqlens must have dtype torch.int32, but got torch.int64"),
    ("cache_seqlens shape", R.flash_attn_with_kvcache, (Q, KC, KC),
     dict(cache_seqlens=_i32(1, 2, 3)), RuntimeError,
     "cache_seqlens must have shape (batch,) = (2,), but got (3,)"),
    ("cache too short", R.flash_attn_with_kvcache, (Q, KC, KC, _d(2, 3, 2, 8), _d(2, 3, 2, 8)),
     dict(cache_seqlens=_i32(1, 8)), RuntimeError,
     "the cache is too short: cache_seqlens[1] + seqlen_new = 8 + 3 exceeds seqlen_cache = 10"),
    ("negative cache_seqlens", R.flash_attn_with_kvcache, (Q, KC, KC),
     dict(cache_seqlens=_i32(1, -1)), RuntimeError,
     "cache_seqlens must be non-negative, but cache_seqlens[1] = -1"),
    ("small cache batch", R.flash_attn_with_kvcache, (Q, KC[:1], KC[:1]), {}, RuntimeError,
     "k_cache holds 1 sequences but q has batch 2; pass cache_batch_idx"),
    ("batch idx dtype", R.flash_attn_with_kvcache, (Q, KC, KC),
     dict(cache_batch_idx=_i32(0, 1, dtype=torch.int64)), RuntimeError,
     "cache_batch_idx must have dtype torch.int32, but got torch.int64"),
    ("batch idx range", R.flash_attn_with_kvcache, (Q, KC, KC),
     dict(cache_batch_idx=_i32(0, 2)), RuntimeError,
     "cache_batch_idx[1] = 2 is out of range [0, 2)"),
    ("batch idx repeat", R.flash_attn_with_kvcache, (Q, KC, KC, _d(2, 1, 2, 8), _d(2, 1, 2, 8)),
     dict(cache_seqlens=1, cache_batch_idx=_i32(1, 1)), RuntimeError,
     "cache_batch_idx must not repeat an entry when k and v are given"),
]


@pytest.mark.parametrize("name,fn,args,kwargs,exc,message", BAD, ids=[b[0] for b in BAD])
def test_bad_inputs(name, fn, args, kwargs, exc, message):
    assert_raises("eager", exc, message, fn, *args, **kwargs)


def test_bad_input_does_not_touch_the_cache_or_the_generator():
    k_cache = _d(2, 10, 2, 8)
    state = torch.get_rng_state()
    with pytest.raises(RuntimeError):
        R.flash_attn_with_kvcache(Q, k_cache, k_cache.clone(), torch.ones(2, 3, 2, 8),
                                  torch.ones(2, 3, 2, 8), cache_seqlens=_i32(1, 8))
    with pytest.raises(RuntimeError):
        R.flash_attn_func(Q, K, V[:, :4], dropout_p=0.5)
    assert not k_cache.any() and torch.equal(torch.get_rng_state(), state)
