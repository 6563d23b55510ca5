r"""Reference flash attention: flash-attn 2.8's Python API (``flash_attn_func``,
``flash_attn_varlen_func``, the qkv/kv packed forms, ``flash_attn_with_kvcache``)
written the obvious way in plain PyTorch: an explicit ``(seqlen_q, seqlen_k)``
score matrix and an explicit mask. Slow and clear; the ground truth that
kernelzoo's flash-attention kernels are tested against.

Semantics (flash-attn >= 2.1, as its docstrings state them)
-----------------------------------------------------------
Layouts. ``q`` is ``(batch, seqlen_q, nheads, headdim)``, ``k`` is
``(batch, seqlen_k, nheads_k, headdim)``, ``v`` is
``(batch, seqlen_k, nheads_k, headdim_v)``; varlen packs the sequences along
dim 0: ``q`` ``(total_q, nheads, headdim)``, ``k``/``v`` ``(total_k, nheads_k, ...)``,
with ``cu_seqlens_q``/``cu_seqlens_k`` int32 ``(batch + 1,)`` offsets (0, ...,
total; non-decreasing, so sequences of length 0 are allowed). The output has
q's layout with ``headdim_v`` last, and q's dtype.

Scores. For query row ``i`` and key column ``j`` of one sequence, with ``sq``,
``sk`` that sequence's lengths and ``d = i + sk - sq`` (the bottom-right
aligned diagonal)::

    s = softmax_scale * <q_i, k_j>          softmax_scale default 1/sqrt(headdim)
    s = softcap * tanh(s / softcap)         only when softcap > 0
    s = s - slope * |d - j|                 only with alibi_slopes

``alibi_slopes`` is float32 ``(nheads,)`` or ``(batch, nheads)``. Key ``j`` is
visible to row ``i`` iff ``d - left <= j <= d + right`` for
``window_size=(left, right)``, a negative bound meaning unbounded on that side;
``causal=True`` sets ``right = 0`` (keeping ``left``). Masked scores are
``-inf``. GQA/MQA: ``nheads`` is a multiple of ``nheads_k`` and query heads
``[g*r, (g+1)*r)`` (``r = nheads // nheads_k``) use key/value head ``g``.

Softmax. ``P = softmax_j(s)`` over the visible keys, ``out = P @ v``.
``softmax_lse`` (float32, ``(batch, nheads, seqlen_q)``; varlen
``(nheads, total_q)``) is ``logsumexp_j(s)`` over the visible keys. A row
with no visible key (possible only with ``seqlen_q > seqlen_k`` under causal or
a window, or with ``seqlen_k == 0``) has output zeros and ``softmax_lse =
+inf``, as flash-attn (its kernels write ``INFINITY`` for an empty row, and
fill the lse with ``+inf`` when ``seqlen_k == 0``); it gets zero gradients.

Dropout (whenever ``dropout_p > 0``, ``0 <= dropout_p < 1``): ``P`` is
multiplied by a keep mask and kept entries by ``1 / (1 - dropout_p)``. The mask
is counter based, so kernels can regenerate it anywhere:

* Philox4x32-10 (Salmon et al. 2011, Random123 convention), see
  :func:`philox4x32_10`.
* For batch ``b`` (for varlen: the sequence index), query head ``h`` of ``H``,
  row ``i`` and column ``j`` (both counted within the sequence)::

      counter = (j >> 2, i, (b * H + h) mod 2**32, offset mod 2**32)
      key     = (seed mod 2**32, (seed >> 32) mod 2**32)
      r       = philox4x32_10(counter, key)[j & 3]
      keep    = (r >> 8) >= ceil(dropout_p * 2**24)

  i.e. ``u = (r >> 8) * 2**-24`` is kept iff ``u >= dropout_p`` compared exactly
  (``dropout_p`` as a float64; in float32 the comparison would differ for
  some ``dropout_p``). See :func:`dropout_keep_mask`. A varlen sequence's mask
  is the dense mask of ``(batch, H, max_seqlen_q, max_seqlen_k)`` cropped to
  ``[b, :, :sq_b, :sk_b]`` (:func:`dropout_keep_mask_varlen`).
* ``seed`` and ``offset`` are non-negative ints. The public functions draw
  ``seed = int(torch.randint(0, 2**63 - 1, (), dtype=torch.int64))`` from
  torch's default CPU generator (so ``torch.manual_seed`` fixes them) and use
  ``offset = 0``, drawing only when ``dropout_p > 0`` (:func:`draw_seed`).

``return_attn_probs=True`` returns ``(out, softmax_lse, S_dmask)``. ``S_dmask``
(q's dtype, ``(batch, nheads, seqlen_q, seqlen_k)``; varlen ``(batch, nheads,
max_seqlen_q, max_seqlen_k)`` zero-padded) holds ``P`` before the
``1/(1 - p)`` scaling, dropped entries negated (the sign marks them, as
flash-attn's "negative means that location was dropped"), masked entries 0.
flash-attn returns an empty tensor when ``dropout_p == 0`` and un-normalised,
128-padded blocks otherwise; this reference always returns the normalised
probabilities at the exact shape. ``softmax_lse`` and ``S_dmask`` are detached;
``out`` is differentiable with respect to q, k and v (autograd through the
explicit computation). ``deterministic`` is accepted and ignored.

``flash_attn_with_kvcache`` writes ``k``/``v`` (``(batch, seqlen_new, nheads_k,
...)``) in place into ``k_cache``/``v_cache`` at rows ``cache_seqlens[b] ...
cache_seqlens[b] + seqlen_new - 1`` of cache entry ``cache_batch_idx[b]`` (or
``b``), then attends to the first ``cache_seqlens[b] + seqlen_new`` cache rows
(``sk`` of the rules above), forward only. ``rotary_cos``/``rotary_sin``,
``cache_leftpad`` and ``block_table`` (paged cache) raise NotImplementedError.

Differences from flash-attn's kernels (not from its documented semantics)
-------------------------------------------------------------------------
* flash-attn replaces a window bound ``>= seqlen_k`` by -1 and a -1 bound by
  ``seqlen_k`` (``max_seqlen_k`` for varlen) when the other bound is set; that
  changes the result only when ``seqlen_q > seqlen_k + 1``. This reference
  applies the documented rule (negative = unbounded, bounds literal).
* With ``causal=True`` flash-attn adds ``slope * j`` instead of
  ``-slope * |d - j|`` (equal up to a per-row constant: same output, but its
  ``softmax_lse`` is larger by ``slope * d``). This reference's lse is the
  logsumexp of the scores as defined above.
* All float dtypes are accepted (float64 is computed in float64, the others in
  float32), any head dimension, empty batches; ``headdim_v`` may differ from
  ``headdim``; dropout with softcap is allowed.

Computation is in float64 for float64 inputs and float32 otherwise; results are
cast back to the input dtype (``softmax_lse`` is float32).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "flash_attn_func",
    "flash_attn_kvpacked_func",
    "flash_attn_qkvpacked_func",
    "flash_attn_varlen_func",
    "flash_attn_varlen_kvpacked_func",
    "flash_attn_varlen_qkvpacked_func",
    "flash_attn_with_kvcache",
    "philox4x32_10",
    "dropout_keep_mask",
    "dropout_keep_mask_varlen",
    "draw_seed",
]

_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_MASK32 = 0xFFFFFFFF

# --- Philox4x32-10 ---------------------------------------------------------------

PHILOX_M0 = 0xD2511F53
PHILOX_M1 = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9
PHILOX_W1 = 0xBB67AE85


def _mulhilo32(a: int, b: Tensor):
    """(hi, lo) 32-bit halves of the 64-bit product of the constant ``a`` and
    ``b`` (int64 tensor of uint32 values), with 16-bit partial products so that
    nothing overflows int64."""
    a_lo, a_hi = a & 0xFFFF, a >> 16
    b_lo, b_hi = b & 0xFFFF, b >> 16
    lo_lo = b_lo * a_lo
    mid = b_hi * a_lo + b_lo * a_hi            # < 2**33
    t = lo_lo + ((mid & 0xFFFF) << 16)          # < 2**33
    lo = t & _MASK32
    hi = (b_hi * a_hi + (mid >> 16) + (t >> 32)) & _MASK32
    return hi, lo


def philox4x32_10(counter: Tensor, key: Tensor) -> Tensor:
    """Philox4x32-10 (Random123) of ``counter`` (int64 tensor ``(..., 4)`` of
    uint32 values) under ``key`` (int64 tensor ``(..., 2)``, broadcast against
    the counter): an int64 tensor ``(..., 4)`` of uint32 values.

    One round maps ``(c0, c1, c2, c3)`` with key ``(k0, k1)`` to
    ``(hi(M1*c2) ^ c1 ^ k0, lo(M1*c2), hi(M0*c0) ^ c3 ^ k1, lo(M0*c0)``; ten
    rounds, the key bumped by ``(W0, W1)`` (mod 2**32) between rounds."""
    counter = torch.as_tensor(counter, dtype=torch.int64)
    key = torch.as_tensor(key, dtype=torch.int64, device=counter.device)
    if counter.shape[-1:] != (4,) or key.shape[-1:] != (2,):
        raise ValueError("philox4x32_10: expected counter (..., 4) and key (..., 2), but got "
                         f"{tuple(counter.shape)} and {tuple(key.shape)}")
    c0, c1, c2, c3 = (counter[..., n] & _MASK32 for n in range(4))
    k0, k1 = key[..., 0] & _MASK32, key[..., 1] & _MASK32
    for rnd in range(10):
        if rnd > 0:
            k0 = (k0 + PHILOX_W0) & _MASK32
            k1 = (k1 + PHILOX_W1) & _MASK32
        hi0, lo0 = _mulhilo32(PHILOX_M0, c0)
        hi1, lo1 = _mulhilo32(PHILOX_M1, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    shape = torch.broadcast_shapes(c0.shape, c1.shape, c2.shape, c3.shape)
    return torch.stack([c.expand(shape) for c in (c0, c1, c2, c3)], dim=-1)


def _keep_threshold(dropout_p: float) -> int:
    # (r >> 8) * 2**-24 >= p  <=>  (r >> 8) >= p * 2**24 (exact in float64)
    return math.ceil(float(dropout_p) * 16777216.0)


def dropout_keep_mask(seed: int, offset: int, batch: int, nheads: int, seqlen_q: int,
                      seqlen_k: int, dropout_p: float, device=None) -> Tensor:
    """The dropout keep mask (bool ``(batch, nheads, seqlen_q, seqlen_k)``, True =
    kept) of the rule in this module's docstring."""
    seed, offset = int(seed), int(offset)
    if seed < 0 or offset < 0:
        raise ValueError(f"dropout_keep_mask: seed and offset must be non-negative, but got "
                         f"{seed} and {offset}")
    groups = (seqlen_k + 3) // 4
    dev = torch.device("cpu") if device is None else torch.device(device)
    c0 = torch.arange(groups, dtype=torch.int64, device=dev).view(1, 1, 1, groups)
    c1 = torch.arange(seqlen_q, dtype=torch.int64, device=dev).view(1, 1, seqlen_q, 1)
    bh = torch.arange(batch * nheads, dtype=torch.int64, device=dev) & _MASK32
    c2 = bh.view(batch, nheads, 1, 1)
    c3 = torch.tensor(offset & _MASK32, dtype=torch.int64, device=dev)
    shape = (batch, nheads, seqlen_q, groups)
    counter = torch.stack([c.expand(shape) for c in (c0, c1, c2, c3)], dim=-1)
    key = torch.tensor([seed & _MASK32, (seed >> 32) & _MASK32], dtype=torch.int64, device=dev)
    words = philox4x32_10(counter, key)                       # (B, H, Sq, G, 4)
    words = words.reshape(batch, nheads, seqlen_q, groups * 4)[..., :seqlen_k]
    return (words >> 8) >= _keep_threshold(dropout_p)


def dropout_keep_mask_varlen(seed: int, offset: int, cu_seqlens_q: Tensor,
                             cu_seqlens_k: Tensor, nheads: int, dropout_p: float,
                             device=None) -> list:
    """The keep masks of a varlen batch: one bool ``(nheads, sq_b, sk_b)`` per
    sequence ``b`` (the dense rule with ``b`` the sequence index)."""
    cq = [int(x) for x in cu_seqlens_q.tolist()]
    ck = [int(x) for x in cu_seqlens_k.tolist()]
    batch = len(cq) - 1
    lq = [cq[b + 1] - cq[b] for b in range(batch)]
    lk = [ck[b + 1] - ck[b] for b in range(batch)]
    full = dropout_keep_mask(seed, offset, batch, nheads, max(lq, default=0),
                             max(lk, default=0), dropout_p, device)
    return [full[b, :, :lq[b], :lk[b]] for b in range(batch)]


def draw_seed() -> int:
    """The dropout seed as the public functions (and kernelzoo's ops) draw it:
    one int64 from torch's default CPU generator."""
    return int(torch.randint(0, 2**63 - 1, (), dtype=torch.int64))


# --- argument checks -------------------------------------------------------------


def _fail(op: str, msg: str):
    raise RuntimeError(f"{op}: {msg}")


def _dt(t: Tensor) -> str:
    return str(t.dtype)


def _check_tensor(op, name, t, dims, layout):
    if not isinstance(t, Tensor):
        _fail(op, f"expected {name} to be a Tensor, but got {type(t).__name__}")
    if t.dim() != dims:
        _fail(op, f"expected {name} of shape {layout}, but got a tensor of shape "
                  f"{tuple(t.shape)}")


def _check_qkv(op, q, k, v, *, varlen, seq_name="seqlen_k", kn="k", vn="v"):
    """Common checks of q, k, v (already of the right rank; ``kn``/``vn`` name k
    and v in messages); returns (nheads, nheads_k, headdim, headdim_v)."""
    if q.dtype not in _DTYPES:
        _fail(op, f"expected q of dtype float16, bfloat16, float32 or float64, but got {_dt(q)}")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        _fail(op, f"q, {kn} and {vn} must have the same dtype, but got q {_dt(q)}, "
                  f"{kn} {_dt(k)} and {vn} {_dt(v)}")
    if k.device != q.device or v.device != q.device:
        _fail(op, f"q, {kn} and {vn} must be on the same device, but got q on {q.device}, "
                  f"{kn} on {k.device} and {vn} on {v.device}")
    if not varlen and not (q.size(0) == k.size(0) == v.size(0)):
        _fail(op, f"q, {kn} and {vn} must have the same batch size, but got q {q.size(0)}, "
                  f"{kn} {k.size(0)} and {vn} {v.size(0)}")
    if k.size(-3) != v.size(-3):
        _fail(op, f"{kn} and {vn} must have the same {seq_name}, but got {kn} {k.size(-3)} and "
                  f"{vn} {v.size(-3)}")
    nheads, nheads_k = q.size(-2), k.size(-2)
    if v.size(-2) != nheads_k:
        _fail(op, f"{kn} and {vn} must have the same number of heads, but got {kn} {nheads_k} "
                  f"and {vn} {v.size(-2)}")
    if nheads_k == 0 or nheads % nheads_k != 0:
        _fail(op, f"the number of query heads must be a multiple of the number of key/value "
                  f"heads (nheads_k > 0), but got nheads={nheads} and nheads_k={nheads_k}")
    if k.size(-1) != q.size(-1):
        _fail(op, f"q and {kn} must have the same head dimension, but got q {q.size(-1)} and "
                  f"{kn} {k.size(-1)}")
    if q.size(-1) == 0:
        _fail(op, "the head dimension of q and k must be positive, but got 0")
    return nheads, nheads_k, q.size(-1), v.size(-1)


def _check_options(op, q, batch, nheads, dropout_p, window_size, alibi_slopes):
    p = float(dropout_p)
    if not (0.0 <= p < 1.0):
        _fail(op, f"dropout_p must be in [0, 1), but got {dropout_p}")
    try:
        left, right = (int(w) for w in window_size)
    except (TypeError, ValueError):
        _fail(op, "window_size must be a pair (left, right) of ints, -1 meaning unbounded, "
                  f"but got {window_size!r}")
    if alibi_slopes is not None:
        a = alibi_slopes
        if not isinstance(a, Tensor):
            _fail(op, f"expected alibi_slopes to be a Tensor, but got {type(a).__name__}")
        if a.dtype != torch.float32:
            _fail(op, f"alibi_slopes must have dtype torch.float32, but got {_dt(a)}")
        if a.device != q.device:
            _fail(op, f"alibi_slopes must be on q's device ({q.device}), but got {a.device}")
        if tuple(a.shape) not in ((nheads,), (batch, nheads)):
            _fail(op, f"alibi_slopes must have shape (nheads,) = ({nheads},) or "
                      f"(batch, nheads) = ({batch}, {nheads}), but got {tuple(a.shape)}")
    return p, left, right


def _check_cu_seqlens(op, name, cu, total, other_name, dev):
    if not isinstance(cu, Tensor):
        _fail(op, f"expected {name} to be a Tensor, but got {type(cu).__name__}")
    if cu.dtype != torch.int32:
        _fail(op, f"{name} must have dtype torch.int32, but got {_dt(cu)}")
    if cu.device != dev:
        _fail(op, f"{name} must be on q's device ({dev}), but got {cu.device}")
    if cu.dim() != 1 or cu.numel() < 1:
        _fail(op, f"{name} must be a 1-D tensor of batch + 1 offsets, but got shape "
                  f"{tuple(cu.shape)}")
    vals = [int(x) for x in cu.tolist()]
    if vals[0] != 0:
        _fail(op, f"{name} must start at 0, but {name}[0] = {vals[0]}")
    for b in range(1, len(vals)):
        if vals[b] < vals[b - 1]:
            _fail(op, f"{name} must be non-decreasing (sequence lengths >= 0), but "
                      f"{name}[{b}] = {vals[b]} < {name}[{b - 1}] = {vals[b - 1]}")
    if vals[-1] != total:
        _fail(op, f"{name} must end at {other_name} = {total}, but {name}[-1] = {vals[-1]}")
    return vals


def _check_max_seqlen(op, name, value, lengths, which):
    longest = max(lengths, default=0)
    if int(value) < longest:
        _fail(op, f"{name} ({int(value)}) is smaller than the longest {which} sequence "
                  f"({longest})")


# --- the computation ---------------------------------------------------------------


def _compute_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def _visible(sq, sk, causal, left, right, device):
    """Bool (sq, sk): key j visible to query row i."""
    if causal:
        right = 0
    i = torch.arange(sq, device=device).view(sq, 1)
    j = torch.arange(sk, device=device).view(1, sk)
    d = i + (sk - sq)
    vis = torch.ones(sq, sk, dtype=torch.bool, device=device)
    if left >= 0:
        vis = vis & (j >= d - left)
    if right >= 0:
        vis = vis & (j <= d + right)
    return vis


def _attend(q, k, v, scale, causal, left, right, softcap, slopes, dropout_p, keep):
    """Attention of one group of equal-length sequences, in q's dtype (the
    compute dtype). q (B, sq, H, D), k (B, sk, Hk, D), v (B, sk, Hk, Dv),
    slopes None or (B, H), keep None or bool (B, H, sq, sk).
    Returns out (B, sq, H, Dv), lse (B, H, sq), P (B, H, sq, sk) and the
    visibility mask (sq, sk)."""
    sq, sk, nheads, nheads_k = q.size(1), k.size(1), q.size(2), k.size(2)
    if nheads != nheads_k:
        k = k.repeat_interleave(nheads // nheads_k, dim=2)
        v = v.repeat_interleave(nheads // nheads_k, dim=2)
    s = torch.einsum("bihd,bjhd->bhij", q, k) * scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    if slopes is not None:
        i = torch.arange(sq, device=q.device).view(sq, 1)
        j = torch.arange(sk, device=q.device).view(1, sk)
        dist = (i + (sk - sq) - j).abs().to(s.dtype)                     # (sq, sk)
        s = s - slopes.to(s.dtype)[:, :, None, None] * dist
    vis = _visible(sq, sk, causal, left, right, q.device)
    s = s.masked_fill(~vis, float("-inf"))
    if sk > 0:
        m = s.detach().amax(dim=-1, keepdim=True)
    else:
        m = s.new_full(s.shape[:-1] + (1,), float("-inf"))
    m = torch.where(torch.isneginf(m), torch.zeros_like(m), m)          # empty row: 0
    e = torch.exp(s - m)                                                # masked: 0
    total = e.sum(dim=-1, keepdim=True)
    empty = total == 0
    p = e / torch.where(empty, torch.ones_like(total), total)
    with torch.no_grad():
        lse = torch.where(empty, torch.full_like(total, float("inf")), m + torch.log(total))
    weights = p
    if keep is not None:
        weights = p * (keep.to(p.dtype) * (1.0 / (1.0 - dropout_p)))
    out = torch.einsum("bhij,bjhd->bihd", weights, v)
    return out, lse.squeeze(-1), p, vis


def _s_dmask(p, vis, keep):
    """P before dropout scaling, dropped entries negated, masked entries 0."""
    p = p.detach()
    if keep is not None:
        p = torch.where(keep, p, -p)
    return torch.where(vis, p, torch.zeros_like(p))


def _slopes_for(alibi_slopes, batch, nheads, cd):
    if alibi_slopes is None:
        return None
    a = alibi_slopes.to(cd)
    return a.expand(batch, nheads) if a.dim() == 1 else a


def _default_scale(softmax_scale, headdim):
    return headdim ** -0.5 if softmax_scale is None else float(softmax_scale)


def _dense(op, q, k, v, dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes,
           return_attn_probs):
    _check_tensor(op, "q", q, 4, "(batch, seqlen_q, nheads, headdim)")
    _check_tensor(op, "k", k, 4, "(batch, seqlen_k, nheads_k, headdim)")
    _check_tensor(op, "v", v, 4, "(batch, seqlen_k, nheads_k, headdim_v)")
    nheads, _, headdim, _ = _check_qkv(op, q, k, v, varlen=False)
    batch, seqlen_q, seqlen_k = q.size(0), q.size(1), k.size(1)
    p, left, right = _check_options(op, q, batch, nheads, dropout_p, window_size, alibi_slopes)
    keep = None
    if p > 0:
        keep = dropout_keep_mask(draw_seed(), 0, batch, nheads, seqlen_q, seqlen_k, p, q.device)
    cd = _compute_dtype(q.dtype)
    out, lse, probs, vis = _attend(
        q.to(cd), k.to(cd), v.to(cd), _default_scale(softmax_scale, headdim), bool(causal),
        left, right, float(softcap), _slopes_for(alibi_slopes, batch, nheads, cd), p, keep)
    out = out.to(q.dtype)
    if not return_attn_probs:
        return out
    return out, lse.detach().float(), _s_dmask(probs, vis, keep).to(q.dtype)


def _varlen(op, q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p,
            softmax_scale, causal, window_size, softcap, alibi_slopes, return_attn_probs,
            block_table):
    if block_table is not None:
        raise NotImplementedError(
            f"{op}: a paged KV cache (block_table) is not supported yet; pass k and v packed "
            "as (total_k, nheads_k, headdim) with cu_seqlens_k")
    _check_tensor(op, "q", q, 3, "(total_q, nheads, headdim)")
    _check_tensor(op, "k", k, 3, "(total_k, nheads_k, headdim)")
    _check_tensor(op, "v", v, 3, "(total_k, nheads_k, headdim_v)")
    nheads, _, headdim, headdim_v = _check_qkv(op, q, k, v, varlen=True, seq_name="total_k")
    cq = _check_cu_seqlens(op, "cu_seqlens_q", cu_seqlens_q, q.size(0),
                           "total_q = q.size(0)", q.device)
    ck = _check_cu_seqlens(op, "cu_seqlens_k", cu_seqlens_k, k.size(0),
                           "total_k = k.size(0)", q.device)
    if len(cq) != len(ck):
        _fail(op, f"cu_seqlens_q and cu_seqlens_k must have the same length (batch + 1), "
                  f"but got {len(cq)} and {len(ck)}")
    batch = len(cq) - 1
    lq = [cq[b + 1] - cq[b] for b in range(batch)]
    lk = [ck[b + 1] - ck[b] for b in range(batch)]
    _check_max_seqlen(op, "max_seqlen_q", max_seqlen_q, lq, "query")
    _check_max_seqlen(op, "max_seqlen_k", max_seqlen_k, lk, "key")
    max_q, max_k = int(max_seqlen_q), int(max_seqlen_k)
    p, left, right = _check_options(op, q, batch, nheads, dropout_p, window_size, alibi_slopes)
    keep_all = None
    if p > 0:
        keep_all = dropout_keep_mask(draw_seed(), 0, batch, nheads, max(lq, default=0),
                                     max(lk, default=0), p, q.device)
    cd = _compute_dtype(q.dtype)
    scale = _default_scale(softmax_scale, headdim)
    slopes = _slopes_for(alibi_slopes, batch, nheads, cd)
    outs, lses = [], []
    s_dmask = q.new_zeros((batch, nheads, max_q, max_k), dtype=cd) if return_attn_probs else None
    for b in range(batch):
        qb = q[cq[b]:cq[b + 1]].to(cd).unsqueeze(0)
        kb = k[ck[b]:ck[b + 1]].to(cd).unsqueeze(0)
        vb = v[ck[b]:ck[b + 1]].to(cd).unsqueeze(0)
        keep = None if keep_all is None else keep_all[b:b + 1, :, :lq[b], :lk[b]]
        out, lse, probs, vis = _attend(qb, kb, vb, scale, bool(causal), left, right,
                                       float(softcap), None if slopes is None else slopes[b:b + 1],
                                       p, keep)
        outs.append(out[0])
        lses.append(lse[0])
        if s_dmask is not None:
            s_dmask[b, :, :lq[b], :lk[b]] = _s_dmask(probs, vis, keep)[0]
    if outs:
        out = torch.cat(outs, dim=0).to(q.dtype)
        lse = torch.cat(lses, dim=1).detach().float()
    else:
        out = q.new_zeros((0, nheads, headdim_v))
        lse = q.new_zeros((nheads, 0), dtype=torch.float32)
    if not return_attn_probs:
        return out
    return out, lse, s_dmask.to(q.dtype)


# --- the public functions (flash-attn 2.8's signatures) ----------------------------


def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False,
                    window_size=(-1, -1), softcap=0.0, alibi_slopes=None, deterministic=False,
                    return_attn_probs=False):
    """Reference ``flash_attn.flash_attn_func``; see the module docstring.

    q ``(batch, seqlen_q, nheads, headdim)``, k/v ``(batch, seqlen_k, nheads_k,
    headdim[_v])``. Returns ``out`` ``(batch, seqlen_q, nheads, headdim_v)``, or
    ``(out, softmax_lse, S_dmask)`` when ``return_attn_probs``."""
    return _dense("flash_attn_func", q, k, v, dropout_p, softmax_scale, causal, window_size,
                  softcap, alibi_slopes, return_attn_probs)


def flash_attn_qkvpacked_func(qkv, dropout_p=0.0, softmax_scale=None, causal=False,
                              window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                              deterministic=False, return_attn_probs=False):
    """Reference ``flash_attn.flash_attn_qkvpacked_func``: qkv ``(batch, seqlen, 3,
    nheads, headdim)``; as :func:`flash_attn_func` on ``qkv.unbind(2)``."""
    op = "flash_attn_qkvpacked_func"
    _check_tensor(op, "qkv", qkv, 5, "(batch, seqlen, 3, nheads, headdim)")
    if qkv.size(2) != 3:
        _fail(op, f"expected qkv of shape (batch, seqlen, 3, nheads, headdim), but got a tensor "
                  f"of shape {tuple(qkv.shape)}")
    q, k, v = qkv.unbind(2)
    return _dense(op, q, k, v, dropout_p, softmax_scale, causal, window_size, softcap,
                  alibi_slopes, return_attn_probs)


def flash_attn_kvpacked_func(q, kv, dropout_p=0.0, softmax_scale=None, causal=False,
                             window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                             deterministic=False, return_attn_probs=False):
    """Reference ``flash_attn.flash_attn_kvpacked_func``: kv ``(batch, seqlen_k, 2,
    nheads_k, headdim)``; as :func:`flash_attn_func` on ``(q, *kv.unbind(2))``."""
    op = "flash_attn_kvpacked_func"
    _check_tensor(op, "kv", kv, 5, "(batch, seqlen_k, 2, nheads_k, headdim)")
    if kv.size(2) != 2:
        _fail(op, f"expected kv of shape (batch, seqlen_k, 2, nheads_k, headdim), but got a "
                  f"tensor of shape {tuple(kv.shape)}")
    k, v = kv.unbind(2)
    return _dense(op, q, k, v, dropout_p, softmax_scale, causal, window_size, softcap,
                  alibi_slopes, return_attn_probs)


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                           dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                           softcap=0.0, alibi_slopes=None, deterministic=False,
                           return_attn_probs=False, block_table=None):
    """Reference ``flash_attn.flash_attn_varlen_func``; see the module docstring.

    q ``(total_q, nheads, headdim)``, k/v ``(total_k, nheads_k, headdim[_v])``,
    ``cu_seqlens_*`` int32 ``(batch + 1,)``. Returns ``out`` ``(total_q, nheads,
    headdim_v)``, or ``(out, softmax_lse (nheads, total_q), S_dmask (batch,
    nheads, max_seqlen_q, max_seqlen_k))``. ``block_table`` (paged KV) raises
    NotImplementedError."""
    return _varlen("flash_attn_varlen_func", q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                   max_seqlen_k, dropout_p, softmax_scale, causal, window_size, softcap,
                   alibi_slopes, return_attn_probs, block_table)


def flash_attn_varlen_qkvpacked_func(qkv, cu_seqlens, max_seqlen, dropout_p=0.0,
                                     softmax_scale=None, causal=False, window_size=(-1, -1),
                                     softcap=0.0, alibi_slopes=None, deterministic=False,
                                     return_attn_probs=False):
    """Reference ``flash_attn.flash_attn_varlen_qkvpacked_func``: qkv ``(total, 3,
    nheads, headdim)``, one ``cu_seqlens`` and ``max_seqlen`` for q and k."""
    op = "flash_attn_varlen_qkvpacked_func"
    _check_tensor(op, "qkv", qkv, 4, "(total, 3, nheads, headdim)")
    if qkv.size(1) != 3:
        _fail(op, f"expected qkv of shape (total, 3, nheads, headdim), but got a tensor of "
                  f"shape {tuple(qkv.shape)}")
    q, k, v = qkv.unbind(1)
    return _varlen(op, q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen, dropout_p,
                   softmax_scale, causal, window_size, softcap, alibi_slopes, return_attn_probs,
                   None)


def flash_attn_varlen_kvpacked_func(q, kv, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                                    max_seqlen_k, dropout_p=0.0, softmax_scale=None, causal=False,
                                    window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                                    deterministic=False, return_attn_probs=False):
    """Reference ``flash_attn.flash_attn_varlen_kvpacked_func``: kv ``(total_k, 2,
    nheads_k, headdim)``."""
    op = "flash_attn_varlen_kvpacked_func"
    _check_tensor(op, "kv", kv, 4, "(total_k, 2, nheads_k, headdim)")
    if kv.size(1) != 2:
        _fail(op, f"expected kv of shape (total_k, 2, nheads_k, headdim), but got a tensor of "
                  f"shape {tuple(kv.shape)}")
    k, v = kv.unbind(1)
    return _varlen(op, q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                   dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes,
                   return_attn_probs, None)


def flash_attn_with_kvcache(q, k_cache, v_cache, k=None, v=None, rotary_cos=None,
                            rotary_sin=None, cache_seqlens=None, cache_batch_idx=None,
                            cache_leftpad=None, block_table=None, softmax_scale=None,
                            causal=False, window_size=(-1, -1), softcap=0.0,
                            rotary_interleaved=True, alibi_slopes=None, num_splits=0,
                            return_softmax_lse=False):
    """Reference ``flash_attn.flash_attn_with_kvcache`` (flash-attn 2.8's argument
    order); see the module docstring. Forward only (no autograd).

    q ``(batch, seqlen_q, nheads, headdim)``; k_cache/v_cache ``(batch_cache,
    seqlen_cache, nheads_k, headdim[_v])``, updated in place when ``k``/``v``
    ``(batch, seqlen_new, nheads_k, headdim[_v])`` are given; ``cache_seqlens``
    an int or int32 ``(batch,)`` (required with k/v; default: the whole cache);
    ``cache_batch_idx`` int32 ``(batch,)`` (default ``arange(batch)``).
    ``rotary_cos``/``rotary_sin``, ``cache_leftpad`` and ``block_table`` raise
    NotImplementedError; ``rotary_interleaved`` and ``num_splits`` are ignored.
    Returns ``out`` or ``(out, softmax_lse (batch, nheads, seqlen_q))``."""
    op = "flash_attn_with_kvcache"
    if rotary_cos is not None or rotary_sin is not None:
        raise NotImplementedError(
            f"{op}: rotary embedding (rotary_cos, rotary_sin) is not supported yet; apply the "
            "rotary embedding to q and k before the call")
    if block_table is not None:
        raise NotImplementedError(
            f"{op}: a paged KV cache (block_table) is not supported yet; pass k_cache and "
            "v_cache as (batch_cache, seqlen_cache, nheads_k, headdim)")
    if cache_leftpad is not None:
        raise NotImplementedError(
            f"{op}: cache_leftpad is not supported yet; store each sequence from row 0 of its "
            "cache entry")
    _check_tensor(op, "q", q, 4, "(batch, seqlen_q, nheads, headdim)")
    _check_tensor(op, "k_cache", k_cache, 4, "(batch_cache, seqlen_cache, nheads_k, headdim)")
    _check_tensor(op, "v_cache", v_cache, 4,
                  "(batch_cache, seqlen_cache, nheads_k, headdim_v)")
    if k_cache.size(0) != v_cache.size(0):
        _fail(op, f"k_cache and v_cache must have the same batch_cache, but got "
                  f"k_cache {k_cache.size(0)} and v_cache {v_cache.size(0)}")
    nheads, nheads_k, headdim, headdim_v = _check_qkv(op, q, k_cache, v_cache, varlen=True,
                                                      seq_name="seqlen_cache", kn="k_cache",
                                                      vn="v_cache")
    batch, seqlen_q = q.size(0), q.size(1)
    batch_cache, seqlen_cache = k_cache.size(0), k_cache.size(1)
    if (k is None) != (v is None):
        _fail(op, f"k and v must be given together, but got only {'k' if v is None else 'v'}")
    seqlen_new = 0
    if k is not None:
        _check_tensor(op, "k", k, 4, "(batch, seqlen_new, nheads_k, headdim)")
        _check_tensor(op, "v", v, 4, "(batch, seqlen_new, nheads_k, headdim_v)")
        if k.dtype != q.dtype or v.dtype != q.dtype:
            _fail(op, f"k and v must have q's dtype ({_dt(q)}), but got k {_dt(k)} and "
                      f"v {_dt(v)}")
        if k.device != q.device or v.device != q.device:
            _fail(op, f"k and v must be on q's device ({q.device}), but got k on {k.device} and "
                      f"v on {v.device}")
        seqlen_new = k.size(1)
        want_k = (batch, seqlen_new, nheads_k, headdim)
        want_v = (batch, seqlen_new, nheads_k, headdim_v)
        if tuple(k.shape) != want_k or tuple(v.shape) != want_v:
            _fail(op, f"expected k of shape (batch, seqlen_new, nheads_k, headdim) = {want_k} "
                      f"and v of shape {want_v}, but got k {tuple(k.shape)} and "
                      f"v {tuple(v.shape)}")
        if cache_seqlens is None:
            _fail(op, "cache_seqlens is required when k and v are given (it says where to "
                      "append them in the cache)")
    if cache_seqlens is None:
        lens = [seqlen_cache] * batch
    elif isinstance(cache_seqlens, int):
        lens = [int(cache_seqlens)] * batch
    else:
        cs = cache_seqlens
        if not isinstance(cs, Tensor):
            _fail(op, f"expected cache_seqlens to be an int or a Tensor, but got "
                      f"{type(cs).__name__}")
        if cs.dtype != torch.int32:
            _fail(op, f"cache_seqlens must have dtype torch.int32, but got {_dt(cs)}")
        if cs.device != q.device:
            _fail(op, f"cache_seqlens must be on q's device ({q.device}), but got {cs.device}")
        if tuple(cs.shape) != (batch,):
            _fail(op, f"cache_seqlens must have shape (batch,) = ({batch},), but got "
                      f"{tuple(cs.shape)}")
        lens = [int(x) for x in cs.tolist()]
    for b, n in enumerate(lens):
        if n < 0:
            _fail(op, f"cache_seqlens must be non-negative, but cache_seqlens[{b}] = {n}")
        if n + seqlen_new > seqlen_cache:
            _fail(op, f"the cache is too short: cache_seqlens[{b}] + seqlen_new = {n} + "
                      f"{seqlen_new} exceeds seqlen_cache = {seqlen_cache}")
    if cache_batch_idx is None:
        if batch_cache < batch:
            _fail(op, f"k_cache holds {batch_cache} sequences but q has batch {batch}; pass "
                      "cache_batch_idx to choose the cache entries")
        idx = list(range(batch))
    else:
        ci = cache_batch_idx
        if not isinstance(ci, Tensor):
            _fail(op, f"expected cache_batch_idx to be a Tensor, but got {type(ci).__name__}")
        if ci.dtype != torch.int32:
            _fail(op, f"cache_batch_idx must have dtype torch.int32, but got {_dt(ci)}")
        if ci.device != q.device:
            _fail(op, f"cache_batch_idx must be on q's device ({q.device}), but got {ci.device}")
        if tuple(ci.shape) != (batch,):
            _fail(op, f"cache_batch_idx must have shape (batch,) = ({batch},), but got "
                      f"{tuple(ci.shape)}")
        idx = [int(x) for x in ci.tolist()]
        for b, n in enumerate(idx):
            if not 0 <= n < batch_cache:
                _fail(op, f"cache_batch_idx[{b}] = {n} is out of range [0, {batch_cache})")
        if k is not None and len(set(idx)) != len(idx):
            _fail(op, "cache_batch_idx must not repeat an entry when k and v are given (two "
                      "sequences would append to the same cache entry)")
    _, left, right = _check_options(op, q, batch, nheads, 0.0, window_size, alibi_slopes)
    cd = _compute_dtype(q.dtype)
    scale = _default_scale(softmax_scale, headdim)
    slopes = _slopes_for(alibi_slopes, batch, nheads, cd)
    with torch.no_grad():
        if k is not None:
            for b in range(batch):
                rows = slice(lens[b], lens[b] + seqlen_new)
                k_cache[idx[b], rows] = k[b]
                v_cache[idx[b], rows] = v[b]
        outs, lses = [], []
        for b in range(batch):
            n = lens[b] + seqlen_new
            out, lse, _, _ = _attend(
                q[b:b + 1].to(cd), k_cache[idx[b]:idx[b] + 1, :n].to(cd),
                v_cache[idx[b]:idx[b] + 1, :n].to(cd), scale, bool(causal), left, right,
                float(softcap), None if slopes is None else slopes[b:b + 1], 0.0, None)
            outs.append(out)
            lses.append(lse)
        if outs:
            out = torch.cat(outs, dim=0).to(q.dtype)
            lse = torch.cat(lses, dim=0).float()
        else:
            out = q.new_zeros((0, seqlen_q, nheads, headdim_v))
            lse = q.new_zeros((0, nheads, seqlen_q), dtype=torch.float32)
    return (out, lse) if return_softmax_lse else out
