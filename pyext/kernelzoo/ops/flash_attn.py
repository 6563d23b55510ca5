"""Flash attention with flash-attn 2.8's API and semantics, on every device kernelzoo
has kernels for (CPU today) and in every float dtype.

Functions: :func:`flash_attn_func`, :func:`flash_attn_varlen_func`, the packed
forms :func:`flash_attn_qkvpacked_func`, :func:`flash_attn_kvpacked_func`,
:func:`flash_attn_varlen_qkvpacked_func`, :func:`flash_attn_varlen_kvpacked_func`,
and :func:`flash_attn_with_kvcache`. They are thin wrappers over three
dispatcher ops, ``torch.ops.kernelzoo.flash_attn_forward``,
``_flash_attn_backward`` and ``flash_attn_kvcache``.

Semantics (as flash-attn >= 2.1; ``kernelzoo.reference.flash_attn`` is the
plain-PyTorch definition):

- q ``(batch, seqlen_q, nheads, headdim)``, k and v ``(batch, seqlen_k,
  nheads_k, headdim)`` (v may have another head dimension); varlen q
  ``(total_q, nheads, headdim)`` with int32 ``cu_seqlens_*`` of ``batch + 1``
  offsets. nheads must be a multiple of nheads_k (GQA/MQA): query heads
  ``[g*r, (g+1)*r)`` use key/value head g.
- scores ``softmax_scale * q.k`` (default ``1/sqrt(headdim)``), then
  ``softcap * tanh(s / softcap)`` when ``softcap > 0``, then ALiBi
  ``-slope * |i + sk - sq - j|`` (slopes float32 ``(nheads,)`` or ``(batch,
  nheads)``).
- ``causal`` and ``window_size=(left, right)`` are aligned to the bottom-right
  corner: query i sees keys ``[i + sk - sq - left, i + sk - sq + right]`` (-1:
  unbounded; causal means right = 0). A row that sees no key gives zeros and a
  log-sum-exp of +inf.
- ``dropout_p`` drops probabilities with a counter-based mask (Philox4x32-10
  keyed by a seed drawn from torch's default generator, so ``torch.manual_seed``
  fixes it), kept ones scaled by ``1 / (1 - dropout_p)``; the backward
  regenerates the mask instead of storing it.
- ``return_attn_probs=True`` returns ``(out, softmax_lse, S_dmask)``:
  softmax_lse float32 ``(batch, nheads, seqlen_q)`` (varlen ``(nheads,
  total_q)``; float64 for float64 inputs, so that their backward keeps float64
  precision), S_dmask the probabilities ``(batch, nheads, seqlen_q, seqlen_k)``
  (varlen: padded to the max_seqlens) with dropped entries negated (for tests).

Gradients flow to q, k and v (k and v summed over each GQA group); the CPU
backward is deterministic at any thread count, the CUDA one with
``deterministic=True``. Differences from flash-attn (float32/float64 accepted,
any head dimension on CPU and up to 256 on CUDA, dropout together with
softcap) are listed in the README.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

__all__ = [
    "flash_attn_func", "flash_attn_varlen_func", "flash_attn_qkvpacked_func",
    "flash_attn_kvpacked_func", "flash_attn_varlen_qkvpacked_func",
    "flash_attn_varlen_kvpacked_func", "flash_attn_with_kvcache",
]

_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)


def _window(causal: bool, window_size) -> tuple[int, int]:
    left, right = (int(w) for w in window_size)
    if causal:
        right = 0
    return left, right


def _scale(q: Tensor, softmax_scale) -> float:
    return float(softmax_scale) if softmax_scale is not None else 1.0 / math.sqrt(q.shape[-1])


def _seed(dropout_p: float) -> Optional[Tensor]:
    """The dropout mask's seed, an int64 tensor drawn from torch's default
    generator (None without dropout). A tensor, not an int: torch.compile then
    traces the draw instead of breaking the graph on it."""
    if dropout_p <= 0:
        return None
    return torch.randint(0, 2 ** 63 - 1, (), dtype=torch.int64)


def _forward(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p,
             softmax_scale, causal, window_size, softcap, alibi_slopes, return_attn_probs,
             deterministic=False):
    left, right = _window(causal, window_size)
    dropout_p = float(dropout_p)
    out, lse, s_dmask = torch.ops.kernelzoo.flash_attn_forward(
        q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p,
        _scale(q, softmax_scale), left, right, float(softcap), alibi_slopes,
        bool(return_attn_probs), _seed(dropout_p), 0, bool(deterministic))
    return (out, lse, s_dmask) if return_attn_probs else out


def flash_attn_func(q: Tensor, k: Tensor, v: Tensor, dropout_p: float = 0.0,
                    softmax_scale: Optional[float] = None, causal: bool = False,
                    window_size=(-1, -1), softcap: float = 0.0,
                    alibi_slopes: Optional[Tensor] = None, deterministic: bool = False,
                    return_attn_probs: bool = False):
    """Attention of q ``(batch, seqlen_q, nheads, headdim)`` over k, v ``(batch,
    seqlen_k, nheads_k, headdim)``, as ``flash_attn.flash_attn_func``; returns out
    ``(batch, seqlen_q, nheads, headdim_v)``, or ``(out, softmax_lse, S_dmask)``
    with ``return_attn_probs``. See the module docstring for the semantics.
    ``deterministic``: a bitwise reproducible backward on CUDA (dQ summed per key
    block in a fixed order instead of with atomics; slower and more memory, as
    ``torch.use_deterministic_algorithms(True)``); the CPU backward always is."""
    return _forward(q, k, v, None, None, q.shape[1], k.shape[1], dropout_p, softmax_scale,
                    causal, window_size, softcap, alibi_slopes, return_attn_probs, deterministic)


def flash_attn_varlen_func(q: Tensor, k: Tensor, v: Tensor, cu_seqlens_q: Tensor,
                           cu_seqlens_k: Tensor, max_seqlen_q: int, max_seqlen_k: int,
                           dropout_p: float = 0.0, softmax_scale: Optional[float] = None,
                           causal: bool = False, window_size=(-1, -1), softcap: float = 0.0,
                           alibi_slopes: Optional[Tensor] = None, deterministic: bool = False,
                           return_attn_probs: bool = False):
    """Attention over sequences packed along the first dimension, as
    ``flash_attn.flash_attn_varlen_func``: q ``(total_q, nheads, headdim)``, k and v
    ``(total_k, nheads_k, headdim)``, sequence b's rows ``cu_seqlens[b]`` to
    ``cu_seqlens[b + 1]`` (int32), ``max_seqlen_*`` at least every length. No
    computation is spent on padding; under ``torch.compile`` it runs without a
    graph break."""
    return _forward(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p,
                    softmax_scale, causal, window_size, softcap, alibi_slopes, return_attn_probs,
                    deterministic)


def flash_attn_qkvpacked_func(qkv: Tensor, dropout_p: float = 0.0,
                              softmax_scale: Optional[float] = None, causal: bool = False,
                              window_size=(-1, -1), softcap: float = 0.0,
                              alibi_slopes: Optional[Tensor] = None, deterministic: bool = False,
                              return_attn_probs: bool = False):
    """:func:`flash_attn_func` of ``qkv`` ``(batch, seqlen, 3, nheads, headdim)``."""
    return flash_attn_func(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], dropout_p, softmax_scale,
                           causal, window_size, softcap, alibi_slopes, deterministic,
                           return_attn_probs)


def flash_attn_kvpacked_func(q: Tensor, kv: Tensor, dropout_p: float = 0.0,
                             softmax_scale: Optional[float] = None, causal: bool = False,
                             window_size=(-1, -1), softcap: float = 0.0,
                             alibi_slopes: Optional[Tensor] = None, deterministic: bool = False,
                             return_attn_probs: bool = False):
    """:func:`flash_attn_func` with ``kv`` ``(batch, seqlen_k, 2, nheads_k, headdim)``."""
    return flash_attn_func(q, kv[:, :, 0], kv[:, :, 1], dropout_p, softmax_scale, causal,
                           window_size, softcap, alibi_slopes, deterministic, return_attn_probs)


def flash_attn_varlen_qkvpacked_func(qkv: Tensor, cu_seqlens: Tensor, max_seqlen: int,
                                     dropout_p: float = 0.0, softmax_scale: Optional[float] = None,
                                     causal: bool = False, window_size=(-1, -1),
                                     softcap: float = 0.0, alibi_slopes: Optional[Tensor] = None,
                                     deterministic: bool = False, return_attn_probs: bool = False):
    """:func:`flash_attn_varlen_func` of ``qkv`` ``(total, 3, nheads, headdim)``."""
    return flash_attn_varlen_func(qkv[:, 0], qkv[:, 1], qkv[:, 2], cu_seqlens, cu_seqlens,
                                  max_seqlen, max_seqlen, dropout_p, softmax_scale, causal,
                                  window_size, softcap, alibi_slopes, deterministic,
                                  return_attn_probs)


def flash_attn_varlen_kvpacked_func(q: Tensor, kv: Tensor, cu_seqlens_q: Tensor,
                                    cu_seqlens_k: Tensor, max_seqlen_q: int, max_seqlen_k: int,
                                    dropout_p: float = 0.0, softmax_scale: Optional[float] = None,
                                    causal: bool = False, window_size=(-1, -1),
                                    softcap: float = 0.0, alibi_slopes: Optional[Tensor] = None,
                                    deterministic: bool = False,
                                    return_attn_probs: bool = False):
    """:func:`flash_attn_varlen_func` with ``kv`` ``(total_k, 2, nheads_k, headdim)``."""
    return flash_attn_varlen_func(q, kv[:, 0], kv[:, 1], cu_seqlens_q, cu_seqlens_k,
                                  max_seqlen_q, max_seqlen_k, dropout_p, softmax_scale, causal,
                                  window_size, softcap, alibi_slopes, deterministic,
                                  return_attn_probs)


def flash_attn_with_kvcache(q: Tensor, k_cache: Tensor, v_cache: Tensor, k: Optional[Tensor] = None,
                            v: Optional[Tensor] = None, rotary_cos: Optional[Tensor] = None,
                            rotary_sin: Optional[Tensor] = None, cache_seqlens=None,
                            cache_batch_idx: Optional[Tensor] = None, cache_leftpad=None,
                            block_table: Optional[Tensor] = None,
                            softmax_scale: Optional[float] = None, causal: bool = False,
                            window_size=(-1, -1), softcap: float = 0.0, rotary_interleaved=True,
                            alibi_slopes: Optional[Tensor] = None, num_splits: int = 0,
                            return_softmax_lse: bool = False):
    """Decoding with a KV cache, as ``flash_attn.flash_attn_with_kvcache``: k and v
    ``(batch, seqlen_new, nheads_k, headdim)``, when given, are written into
    ``k_cache``/``v_cache`` ``(batch_cache, seqlen_cache, nheads_k, headdim)`` in
    place at ``cache_seqlens`` (int or int32 ``(batch,)``) of the cache rows
    ``cache_batch_idx``; q ``(batch, seqlen_q, nheads, headdim)`` then attends to
    the first ``cache_seqlens + seqlen_new`` keys of its row (every key without
    ``cache_seqlens``). Forward only. Rotary embeddings, left padding and paged
    caches (``rotary_cos``, ``rotary_sin``, ``cache_leftpad``, ``block_table``) are
    not supported yet."""
    for name, value in (("rotary_cos", rotary_cos), ("rotary_sin", rotary_sin),
                        ("cache_leftpad", cache_leftpad), ("block_table", block_table)):
        if value is not None:
            raise NotImplementedError(f"flash_attn_with_kvcache: {name} is not supported yet by "
                                      f"kernelzoo (apply rotary embeddings and paging outside)")
    if isinstance(cache_seqlens, int):
        cache_seqlens = torch.full((q.shape[0],), cache_seqlens, dtype=torch.int32,
                                   device=q.device)
    left, right = _window(causal, window_size)
    out, lse = torch.ops.kernelzoo.flash_attn_kvcache(
        q, k_cache, v_cache, k, v, cache_seqlens, cache_batch_idx, _scale(q, softmax_scale),
        left, right, float(softcap), alibi_slopes)
    return (out, lse) if return_softmax_lse else out


# --- fake kernels: shapes and the checks that do not need values -------------------------

def _lse_dtype(q):
    return torch.float64 if q.dtype == torch.float64 else torch.float32


def _check_common(q, k, v, varlen: bool, cache: bool = False):
    dims = 3 if varlen else 4
    shape = "(total, nheads, headdim)" if varlen else "(batch, seqlen, nheads, headdim)"
    for name, t in (("q", q), ("k", k), ("v", v)):
        torch._check(t.dim() == dims, lambda: (
            f"flash_attn: expected {name} of shape {shape}{' (cu_seqlens given)' if varlen else ''}"
            f", but got a tensor of shape {list(t.shape)}"))
    torch._check(q.dtype in _DTYPES, lambda: (
        "flash_attn: expected floating-point q, k and v (float64, float32, float16 or bfloat16), "
        f"but got q of dtype {str(q.dtype).replace('torch.', '')}"))
    torch._check(k.dtype == q.dtype and v.dtype == q.dtype, lambda: (
        "flash_attn: q, k and v must have the same dtype"))
    if not varlen and not cache:
        torch._check(k.shape[0] == q.shape[0] and v.shape[0] == q.shape[0], lambda: (
            f"flash_attn: q, k and v must have the same batch size, but got {q.shape[0]}, "
            f"{k.shape[0]} and {v.shape[0]}"))
    r = dims - 3
    torch._check(k.shape[r] == v.shape[r], lambda: "flash_attn: k and v must have the same number of keys")
    torch._check(k.shape[-2] == v.shape[-2], lambda: "flash_attn: k and v must have the same number of heads")
    torch._check(k.shape[-2] > 0 and q.shape[-2] % k.shape[-2] == 0, lambda: (
        f"flash_attn: the number of query heads ({q.shape[-2]}) must be a multiple of the number "
        f"of key/value heads ({k.shape[-2]})"))
    torch._check(q.shape[-1] == k.shape[-1], lambda: (
        f"flash_attn: q and k must have the same head dimension, but got {q.shape[-1]} and "
        f"{k.shape[-1]}"))


@torch.library.register_fake("kernelzoo::flash_attn_forward")
def _forward_fake(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p,
                  softmax_scale, window_left, window_right, softcap, alibi_slopes,
                  return_softmax, dropout_seed, offset, deterministic=False):
    varlen = cu_seqlens_q is not None
    _check_common(q, k, v, varlen)
    torch._check(0 <= dropout_p < 1, lambda: f"flash_attn: dropout_p must be in [0, 1), but got {dropout_p}")
    out = q.new_empty((*q.shape[:-1], v.shape[-1]))
    lse_dtype = _lse_dtype(q)
    if varlen:
        batch = cu_seqlens_q.shape[0] - 1
        lse = q.new_empty((q.shape[1], q.shape[0]), dtype=lse_dtype)
    else:
        batch, max_seqlen_q, max_seqlen_k = q.shape[0], q.shape[1], k.shape[1]
        lse = q.new_empty((batch, q.shape[2], q.shape[1]), dtype=lse_dtype)
    s_dmask = (q.new_empty((batch, q.shape[-2], max_seqlen_q, max_seqlen_k)) if return_softmax
               else q.new_empty((0,)))
    return out, lse, s_dmask


@torch.library.register_fake("kernelzoo::_flash_attn_backward")
def _backward_fake(dout, q, k, v, out, softmax_lse, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                   max_seqlen_k, dropout_p, softmax_scale, window_left, window_right, softcap,
                   alibi_slopes, deterministic, dropout_seed, offset):
    _check_common(q, k, v, cu_seqlens_q is not None)
    return torch.empty_like(q, memory_format=torch.contiguous_format), \
        torch.empty_like(k, memory_format=torch.contiguous_format), \
        torch.empty_like(v, memory_format=torch.contiguous_format)


@torch.library.register_fake("kernelzoo::flash_attn_kvcache")
def _kvcache_fake(q, k_cache, v_cache, k, v, cache_seqlens, cache_batch_idx, softmax_scale,
                  window_left, window_right, softcap, alibi_slopes):
    _check_common(q, k_cache, v_cache, False, cache=True)
    out = q.new_empty((*q.shape[:-1], v_cache.shape[-1]))
    lse = q.new_empty((q.shape[0], q.shape[2], q.shape[1]), dtype=_lse_dtype(q))
    return out, lse


# --- autograd -------------------------------------------------------------------------------

def _setup_context(ctx, inputs, output):
    (q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p, softmax_scale,
     window_left, window_right, softcap, alibi_slopes, return_softmax, dropout_seed,
     offset) = inputs[:16]
    deterministic = bool(inputs[16]) if len(inputs) > 16 else False
    out, lse, s_dmask = output
    ctx.save_for_backward(q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, alibi_slopes,
                          dropout_seed)
    ctx.args = (max_seqlen_q, max_seqlen_k, dropout_p, softmax_scale, window_left, window_right,
                softcap, offset, deterministic)
    ctx.mark_non_differentiable(lse, s_dmask)


def _backward(ctx, dout, _dlse, _ds_dmask):
    q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, alibi_slopes, dropout_seed = ctx.saved_tensors
    (max_seqlen_q, max_seqlen_k, dropout_p, softmax_scale, window_left, window_right, softcap,
     offset, deterministic) = ctx.args
    dq, dk, dv = torch.ops.kernelzoo._flash_attn_backward(
        dout, q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
        dropout_p, softmax_scale, window_left, window_right, softcap, alibi_slopes, deterministic,
        dropout_seed, offset)
    return (dq, dk, dv) + (None,) * 14


torch.library.register_autograd("kernelzoo::flash_attn_forward", _backward,
                                setup_context=_setup_context)
