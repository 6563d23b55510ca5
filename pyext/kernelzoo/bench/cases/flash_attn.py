"""Flash attention against torch's scaled_dot_product_attention (SDPA).

kernelzoo takes flash-attn's layout (batch, seqlen, heads, headdim); SDPA gets
the same tensors as (batch, heads, seqlen, headdim) views, so neither side
copies its inputs. Masks that flash attention computes from indices (causal,
sliding window, padding of a varlen batch) are given to SDPA as the equivalent
boolean mask, or as ``is_causal``. Backward cases time only the backward pass
(``torch.autograd.grad`` on a graph built once); forward cases time the call.

The memory case runs each side once at S=16384 and reports, in the note, the
peak resident memory beyond inputs and output (Linux: /proc/self/status).
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from ... import ops
from ..registry import Bench, case

_DTYPES = ("float32", "bfloat16")


def _close(dtype):
    # The two sides sum in different orders; bfloat16 outputs differ by a few ulps.
    return {torch.float32: (2e-4, 2e-4), torch.float64: (1e-9, 1e-9)}.get(dtype, (3e-2, 3e-2))


def _qkv(b, s, h, d, device, dtype, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, s, h, d, generator=g).to(device, dtype).requires_grad_(requires_grad)
            for _ in range(3)]


def _dense_shape(quick):
    return (1, 128, 2, 64) if quick else (4, 1024, 8, 64)


def _flops(b, h, sq, sk, d, causal=False, window=None):
    pairs = sq * sk
    if window is not None:  # keys [i - left, i] for query i (causal sliding window)
        pairs = sum(min(i, window) + 1 for i in range(sq))
    elif causal:
        pairs = sq * (sq + 1) // 2
    return 4 * b * h * pairs * d


def _sdpa(q, k, v, **kw):
    """SDPA on flash-layout tensors, output back in flash layout (views, no copies)."""
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                          v.transpose(1, 2), **kw).transpose(1, 2)


def _forward(device, dtype, quick, causal):
    b, s, h, d = _dense_shape(quick)
    q, k, v = _qkv(b, s, h, d, device, dtype)
    rtol, atol = _close(dtype)
    return Bench(
        shape=f"B={b} H={h} S={s} D={d}" + (" causal" if causal else ""),
        ours=lambda: ops.flash_attn_func(q, k, v, causal=causal),
        peer=lambda: _sdpa(q, k, v, is_causal=causal),
        peer_name="torch sdpa",
        flops=_flops(b, h, s, s, d, causal=causal),
        compare="close", rtol=rtol, atol=atol,
    )


def _backward(device, dtype, quick, causal):
    b, s, h, d = _dense_shape(quick)
    q, k, v = _qkv(b, s, h, d, device, dtype, requires_grad=True)
    dout = torch.randn(b, s, h, d, generator=torch.Generator().manual_seed(1)).to(device, dtype)
    ours_out = ops.flash_attn_func(q, k, v, causal=causal)
    peer_out = _sdpa(q, k, v, is_causal=causal)
    rtol, atol = _close(dtype)
    if dtype == torch.float32:
        rtol, atol = 1e-3, 1e-3  # gradients sum over S keys or queries
    return Bench(
        shape=f"B={b} H={h} S={s} D={d}" + (" causal" if causal else "") + ", backward",
        ours=lambda: torch.autograd.grad(ours_out, (q, k, v), dout, retain_graph=True),
        peer=lambda: torch.autograd.grad(peer_out, (q, k, v), dout, retain_graph=True),
        peer_name="torch sdpa",
        flops=int(2.5 * _flops(b, h, s, s, d, causal=causal)),
        compare="close", rtol=rtol, atol=atol,
    )


@case("flash_attn_forward", dtypes=_DTYPES, devices=("cpu", "cuda"))
def flash_attn_forward_dense(device, dtype, quick):
    return _forward(device, dtype, quick, causal=False)


@case("flash_attn_forward", dtypes=_DTYPES, devices=("cpu", "cuda"))
def flash_attn_forward_causal(device, dtype, quick):
    return _forward(device, dtype, quick, causal=True)


@case("flash_attn_forward", dtypes=_DTYPES, devices=("cpu", "cuda"))
def flash_attn_backward_dense(device, dtype, quick):
    return _backward(device, dtype, quick, causal=False)


@case("flash_attn_forward", dtypes=_DTYPES, devices=("cpu", "cuda"))
def flash_attn_backward_causal(device, dtype, quick):
    return _backward(device, dtype, quick, causal=True)


@case("flash_attn_forward", dtypes=("float32",), devices=("cpu", "cuda"))
def flash_attn_varlen(device, dtype, quick):
    """32 sequences of lengths uniform in [16, 512], packed for kernelzoo; the
    padded batch with a key-padding mask for SDPA (whose padded query rows are
    computed and thrown away, as a padded model would)."""
    n, lo, hi, h, d = (4, 4, 32, 2, 32) if quick else (32, 16, 512, 8, 64)
    g = torch.Generator().manual_seed(0)
    lens = torch.randint(lo, hi + 1, (n,), generator=g)
    total, smax = int(lens.sum()), int(lens.max())
    cu = torch.zeros(n + 1, dtype=torch.int32)
    cu[1:] = torch.cumsum(lens, 0)
    cu = cu.to(device)
    q, k, v = [torch.randn(total, h, d, generator=g).to(device, dtype) for _ in range(3)]
    valid = torch.arange(smax)[None, :] < lens[:, None]            # (n, smax)
    valid = valid.to(device)

    def pad(x):
        out = x.new_zeros(n, smax, h, d)
        out[valid] = x
        return out

    qp, kp, vp = pad(q), pad(k), pad(v)
    mask = valid[:, None, None, :]                                   # keys only
    rtol, atol = _close(dtype)
    return Bench(
        shape=f"{n} seqs, lengths U[{lo},{hi}] (total {total}, padded {n}x{smax}), H={h} D={d}",
        ours=lambda: ops.flash_attn_varlen_func(q, k, v, cu, cu, smax, smax),
        peer=lambda: _sdpa(qp, kp, vp, attn_mask=mask)[valid],
        peer_name="torch sdpa (padded, mask)",
        flops=4 * h * d * int((lens * lens).sum()),
        compare="close", rtol=rtol, atol=atol,
    )


@case("flash_attn_forward", dtypes=("float32",), devices=("cpu", "cuda"))
def flash_attn_sliding_window(device, dtype, quick):
    """Causal sliding window: query i sees keys [i - 256, i]. SDPA gets the
    equivalent boolean mask and computes every score."""
    b, s, h, d, w = (1, 256, 2, 32, 32) if quick else (1, 4096, 8, 64, 256)
    q, k, v = _qkv(b, s, h, d, device, dtype)
    i = torch.arange(s, device=device)
    mask = (i[None, :] <= i[:, None]) & (i[None, :] >= i[:, None] - w)
    rtol, atol = _close(dtype)
    return Bench(
        shape=f"B={b} H={h} S={s} D={d} window ({w}, 0)",
        ours=lambda: ops.flash_attn_func(q, k, v, window_size=(w, 0)),
        peer=lambda: _sdpa(q, k, v, attn_mask=mask),
        peer_name="torch sdpa (mask)",
        flops=_flops(b, h, s, s, d, window=w),
        compare="close", rtol=rtol, atol=atol,
    )


def _rss_peak_mib(fn) -> float | None:
    """Peak resident memory while fn runs, beyond the resident memory before
    and beyond what fn returns (Linux only; None elsewhere)."""
    if not sys.platform.startswith("linux"):
        return None

    def status(key):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
        return None

    before = status("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # resets VmHWM to the current RSS
    except OSError:
        return None
    out = fn()
    out_bytes = sum(t.numel() * t.element_size()
                    for t in (out if isinstance(out, (tuple, list)) else (out,))
                    if isinstance(t, torch.Tensor))
    return max(0.0, (status("VmHWM") - before - out_bytes) / 2**20)


@case("flash_attn_forward", dtypes=("float32",), devices=("cpu",))
def flash_attn_long_sequence_memory(device, dtype, quick):
    """One long sequence. Besides the time, the note gives each side's peak
    memory beyond inputs and output: flash attention streams over key blocks,
    so it must not grow with S x S."""
    b, s, h, d = (1, 512, 2, 64) if quick else (1, 16384, 8, 64)
    q, k, v = _qkv(b, s, h, d, device, dtype)
    ours = lambda: ops.flash_attn_func(q, k, v)       # noqa: E731
    peer = lambda: _sdpa(q, k, v)                     # noqa: E731
    small = [t[:, :256] for t in (q, k, v)]  # warm up thread pools and allocator arenas
    ops.flash_attn_func(*small), _sdpa(*small)
    mem_ours, mem_peer = _rss_peak_mib(ours), _rss_peak_mib(peer)
    note = ("" if mem_ours is None else
            f"peak extra memory: kernelzoo {mem_ours:.1f} MiB, sdpa {mem_peer:.1f} MiB")
    rtol, atol = _close(dtype)
    return Bench(
        shape=f"B={b} H={h} S={s} D={d}",
        ours=ours, peer=peer, peer_name="torch sdpa",
        flops=_flops(b, h, s, s, d),
        compare="close", rtol=rtol, atol=atol,
        note=note, warmup=0, repeats=1 if not quick else None,
    )


@case("flash_attn_kvcache", dtypes=("float32", "bfloat16"), devices=("cpu", "cuda"))
def flash_attn_kvcache_decode(device, dtype, quick):
    """One decoding step: 1 new query token per sequence over caches of 4095
    tokens, the new key and value appended in place (kernelzoo) or
    concatenated (SDPA) first. GQA: 32 query heads on 8 kv heads."""
    b, n, hq, hk, d = (2, 63, 4, 2, 32) if quick else (8, 4095, 32, 8, 128)
    g = torch.Generator().manual_seed(0)
    kc, vc = [torch.randn(b, n + 1, hk, d, generator=g).to(device, dtype) for _ in range(2)]
    q = torch.randn(b, 1, hq, d, generator=g).to(device, dtype)
    knew, vnew = [torch.randn(b, 1, hk, d, generator=g).to(device, dtype) for _ in range(2)]
    seqlens = torch.full((b,), n, dtype=torch.int32, device=device)

    def peer():
        k = torch.cat([kc[:, :n], knew], 1)
        v = torch.cat([vc[:, :n], vnew], 1)
        return _sdpa(q, k, v, enable_gqa=True)

    rtol, atol = _close(dtype)
    return Bench(
        shape=f"B={b} Hq={hq} Hk={hk} D={d}, 1 new token over cache {n}",
        ours=lambda: ops.flash_attn_with_kvcache(q, kc, vc, knew, vnew, cache_seqlens=seqlens),
        peer=peer, peer_name="torch sdpa",
        bytes=2 * b * (n + 1) * hk * d * kc.element_size(),
        flops=4 * b * hq * (n + 1) * d,
        compare="close", rtol=rtol, atol=atol,
    )
