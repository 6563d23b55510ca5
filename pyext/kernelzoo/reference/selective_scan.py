r"""Reference selective scan (Mamba's S6): mamba_ssm's ``selective_scan_fn`` and
``selective_state_update`` written the obvious way in plain PyTorch, a Python
loop over the sequence, vectorised over batch, channels and states. Slow and
clear; the ground truth that kernelzoo's scan kernels are tested against.

Semantics of ``selective_scan_fn`` (mamba_ssm's, plus two extensions)
---------------------------------------------------------------------
Shapes. ``u``, ``delta`` and ``z`` are ``(batch, dim, seqlen)``; ``A`` is
``(dim, dstate)``; ``D`` and ``delta_bias`` are ``(dim,)``. ``B`` and ``C``
each take one of three forms, independently of each other:

* constant ``(dim, dstate)``: ``B[d, n]`` at every step of every batch;
* variable ``(batch, dstate, seqlen)``: ``B[b, n, t]``, shared by every channel;
* grouped ``(batch, groups, dstate, seqlen)`` with ``dim % groups == 0``:
  channel ``d`` uses group ``d // (dim // groups)`` (channels
  ``[g*r, (g+1)*r)``, ``r = dim // groups``, share group ``g``). The variable
  form is the grouped form with ``groups == 1``.

B and C may have different forms, and grouped B and C different group counts,
as in mamba_ssm's Python reference (its CUDA kernel takes the group count from
B and requires a variable C to have it too).

Math. For batch ``b``, channel ``d``, state ``n`` and step ``t``::

    dt[b,d,t]  = delta[b,d,t] + delta_bias[d]                 (delta_bias optional)
    dt[b,d,t]  = softplus(dt[b,d,t])                          only if delta_softplus
    h[b,d,n]   = exp(dt[b,d,t] * A[d,n]) * h[b,d,n]
                 + dt[b,d,t] * B[., n, t] * u[b,d,t]           (h starts at h0, see below)
    y[b,d,t]   = sum_n h[b,d,n] * C[., n, t]
    out[b,d,t] = y[b,d,t] + D[d] * u[b,d,t]                   (D optional)
    out[b,d,t] = out[b,d,t] * silu(z[b,d,t])                  (z optional)

``softplus`` is ``torch.nn.functional.softplus`` with its defaults (beta 1,
threshold 20): ``x`` itself where ``x > 20``, else ``log1p(exp(x))``; this is
the rule of mamba_ssm's reference and of its CUDA kernel (``x <= 20 ?
log1pf(expf(x)) : x``), and the gradient is 1 above the threshold. ``h0`` is
zero unless ``initial_state`` is given. ``last_state`` is ``h`` after the last
step.

Dtypes (mamba_ssm's CUDA-kernel rules; float64 is this reference's extension).
``u`` is float16, bfloat16, float32 or float64; ``delta``, ``z`` and a variable
or grouped ``B``/``C`` have ``u``'s dtype. The *weight dtype* ``w`` is float32,
or float64 when ``u`` is float64: ``A``, a constant ``B``/``C``, ``D``,
``delta_bias`` and ``initial_state`` must have dtype ``w``. Everything is
computed in ``w`` (low-precision inputs are upcast once, before any
arithmetic, as mamba's kernel loads them; ``silu(z)`` too, which mamba's Python
reference computes in ``z``'s dtype). ``out`` has ``u``'s dtype (which is
``delta``'s: mamba_ssm's kernel allocates ``out`` like ``delta`` and its
reference casts to ``u``'s dtype); ``last_state`` has dtype ``w``. A complex
``A`` (mamba_ssm's complex S4D-style variant) raises NotImplementedError.

Extensions (keyword-only).

* ``initial_state``: ``h0``, shape ``(batch, dim, dstate)``, dtype ``w``,
  differentiable. Scanning ``[x1; x2]`` equals scanning ``x2`` from the last
  state of scanning ``x1``.
* ``cu_seqlens``: int32 ``(nseq + 1,)`` offsets ``0 = c[0] <= c[1] <= ... <=
  c[nseq] = seqlen`` (empty sequences allowed) of ``nseq`` sequences packed
  along ``seqlen``; requires ``batch == 1``. Sequence ``i`` is steps
  ``[c[i], c[i+1])``; the state restarts at ``c[i]`` from zero, or from
  ``initial_state[i]`` when ``initial_state`` is given, in which case it must
  have shape ``(nseq, dim, dstate)`` (one state per *sequence*, the same shape
  as the returned last states, so the states of one call feed the next).
  ``last_state`` is ``(nseq, dim, dstate)``: row ``i`` is sequence ``i``'s state
  after its last step, which for an empty sequence is its initial state (zero
  by default). mamba_ssm's own ``cu_seqlens`` (in recent versions) returns
  only the state after the last packed step, ``(1, dim, dstate)``, and takes no
  initial state.

With ``seqlen == 0`` (and no ``cu_seqlens``) the output is empty and
``last_state`` is ``h0``. Gradients flow to every floating-point input
(``u``, ``delta``, ``A``, ``B``, ``C``, ``D``, ``z``, ``delta_bias``,
``initial_state``) from ``out`` and from ``last_state`` (mamba_ssm's backward
ignores the gradient of ``last_state``; this reference does not).

Semantics of ``selective_state_update`` (mamba_ssm's Triton op)
--------------------------------------------------------------
One decode step: the recurrence above for a single ``t``, updating ``state``
in place and returning ``out``. Two forms:

* flat: ``state (batch, dim, dstate)``, ``x``, ``dt``, ``z`` ``(batch, dim)``,
  ``A (dim, dstate)``, ``B``, ``C`` ``(batch, dstate)``, ``D``, ``dt_bias``
  ``(dim,)``; ``out (batch, dim)``;
* heads (Mamba-2 style): ``state (batch, nheads, headdim, dstate)``, ``x``,
  ``dt``, ``z`` ``(batch, nheads, headdim)``, ``A (nheads, headdim, dstate)``,
  ``B``, ``C`` ``(batch, ngroups, dstate)`` with ``nheads % ngroups == 0``
  (head ``h`` uses group ``h // (nheads // ngroups)``), ``D``, ``dt_bias``
  ``(nheads, headdim)``; ``out (batch, nheads, headdim)``.

As in mamba_ssm, the flat form is the heads form with ``nheads == 1`` (and
``ngroups == 1``): every argument given in its flat rank is unsqueezed to the
heads rank (x, dt, z, B, C at dim 1; A, D, dt_bias at dim 0) and then must
match, and ``out`` is flat exactly when ``state`` is. Per step::

    dt    = dt + dt_bias;  dt = softplus(dt) if dt_softplus     (threshold 20)
    new   = exp(dt * A) * state + dt * B * x
    out   = sum_n new * C  (+ D * x)  (* silu(z))
    state <- new (cast to state's dtype)

Dtypes, as mamba_ssm's kernel (which loads everything as float32): every
tensor is a real floating-point tensor; ``x``, ``dt`` and ``z`` share a dtype,
``B`` and ``C`` share a dtype; other combinations are free. The computation is
in float64 if any argument is float64, else in float32; ``out`` has ``x``'s
dtype; ``state`` keeps its dtype. ``out`` is computed from the new state
before it is rounded to ``state``'s dtype (as mamba_ssm's kernel does; its
Python reference rounds first, which differs only for a low-precision state).
The in-place update is recorded by autograd: gradients flow through ``out``
and through the updated ``state`` to the previous state and every input, as
long as ``state`` is not a leaf that requires grad (pass ``h.clone()``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["selective_scan_fn", "selective_state_update"]

_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_DTYPE_NAMES = "float16, bfloat16, float32 or float64"


# --- argument checks -------------------------------------------------------------


def _fail(op: str, msg: str):
    raise RuntimeError(f"{op}: {msg}")


def _shape(t: Tensor):
    return tuple(t.shape)


def _check_tensor(op, name, t):
    if not isinstance(t, Tensor):
        _fail(op, f"expected {name} to be a Tensor, but got {type(t).__name__}")


def _check_rank(op, name, t, dims, layout):
    _check_tensor(op, name, t)
    if t.dim() not in dims:
        _fail(op, f"expected {name} of shape {layout}, but got a tensor of shape {_shape(t)}")


def _check_device(op, name, t, dev, ref="u"):
    if t.device != dev:
        _fail(op, f"{name} must be on {ref}'s device ({dev}), but got {t.device}")


def _check_dtype(op, name, t, want, why):
    if t.dtype != want:
        _fail(op, f"{name} must have dtype {want} ({why}), but got {t.dtype}")


def _no_complex(op, name, t):
    if t.is_complex():
        raise NotImplementedError(
            f"{op}: complex {name} is not supported (got {t.dtype}); kernelzoo's selective "
            f"scan is real-valued: pass a real float {name}")


def _check_cu_seqlens(op, cu, seqlen, dev):
    _check_tensor(op, "cu_seqlens", cu)
    if cu.dtype != torch.int32:
        _fail(op, f"cu_seqlens must have dtype torch.int32, but got {cu.dtype}")
    _check_device(op, "cu_seqlens", cu, dev)
    if cu.dim() != 1 or cu.numel() < 1:
        _fail(op, f"cu_seqlens must be a 1-D tensor of nseq + 1 offsets, but got shape "
                  f"{_shape(cu)}")
    vals = [int(x) for x in cu.tolist()]
    if vals[0] != 0:
        _fail(op, f"cu_seqlens must start at 0, but cu_seqlens[0] = {vals[0]}")
    for i in range(1, len(vals)):
        if vals[i] < vals[i - 1]:
            _fail(op, f"cu_seqlens must be non-decreasing (sequence lengths >= 0), but "
                      f"cu_seqlens[{i}] = {vals[i]} < cu_seqlens[{i - 1}] = {vals[i - 1]}")
    if vals[-1] != seqlen:
        _fail(op, f"cu_seqlens must end at seqlen = u.size(2) = {seqlen}, but "
                  f"cu_seqlens[-1] = {vals[-1]}")
    return vals


def _check_BC(op, name, t, batch, dim, dstate, seqlen, u_dtype, w, dev):
    """Checks B or C; returns its form: 'constant', 'variable' or 'grouped'."""
    _check_rank(op, name, t, (2, 3, 4), "(dim, dstate) (constant), (batch, dstate, seqlen) "
                "(variable) or (batch, groups, dstate, seqlen) (grouped)")
    _no_complex(op, name, t)
    form = {2: "constant", 3: "variable", 4: "grouped"}[t.dim()]
    n = t.size(1) if form == "constant" else t.size(-2)
    if n != dstate:
        _fail(op, f"dstate mismatch: A has dstate = A.size(1) = {dstate}, but {form} {name} of "
                  f"shape {_shape(t)} has dstate {n}")
    if form == "constant":
        want, layout = (dim, dstate), "(dim, dstate)"
    elif form == "variable":
        want, layout = (batch, dstate, seqlen), "(batch, dstate, seqlen)"
    else:
        groups = t.size(1)
        want, layout = (batch, groups, dstate, seqlen), "(batch, groups, dstate, seqlen)"
    if _shape(t) != want:
        _fail(op, f"expected {form} {name} of shape {layout} = {want}, but got {_shape(t)}")
    if form == "grouped":
        groups = t.size(1)
        if groups < 1 or dim % groups != 0:
            _fail(op, f"dim must be a multiple of the number of groups of {name} (groups >= 1), "
                      f"but got dim = {dim} and groups = {groups}")
    if form == "constant":
        _check_dtype(op, f"constant {name}", t, w, "A's dtype")
    else:
        _check_dtype(op, f"{form} {name}", t, u_dtype, "u's dtype")
    _check_device(op, name, t, dev)
    return form


# --- selective_scan_fn --------------------------------------------------------------


def _per_channel(t, form, dim):
    """B or C in a form whose step ``t`` slice broadcasts against (batch, dim, dstate):
    constant (dim, dstate); variable/grouped (batch, dim or 1, dstate, seqlen)."""
    if form == "constant":
        return t
    if form == "variable":
        return t.unsqueeze(1)                               # (batch, 1, dstate, seqlen)
    groups = t.size(1)
    return t.repeat_interleave(dim // groups, dim=1)       # (batch, dim, dstate, seqlen)


def _at(t, form, i):
    return t if form == "constant" else t[..., i]


def selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                      return_last_state=False, *, initial_state=None, cu_seqlens=None):
    """Reference ``mamba_ssm.ops.selective_scan_interface.selective_scan_fn``; see the
    module docstring for the exact semantics.

    u, delta, z ``(batch, dim, seqlen)``; A ``(dim, dstate)``; B, C ``(dim, dstate)``,
    ``(batch, dstate, seqlen)`` or ``(batch, groups, dstate, seqlen)``; D, delta_bias
    ``(dim,)``; initial_state ``(batch, dim, dstate)`` (``(nseq, dim, dstate)`` with
    cu_seqlens); cu_seqlens int32 ``(nseq + 1,)`` with batch 1.
    Returns ``out`` (u's dtype, ``(batch, dim, seqlen)``) or ``(out, last_state)``
    (``(batch, dim, dstate)``, or ``(nseq, dim, dstate)`` with cu_seqlens; float32, float64
    for float64 inputs)."""
    op = "selective_scan_fn"
    # -- checks
    _check_rank(op, "u", u, (3,), "(batch, dim, seqlen)")
    if u.dtype not in _DTYPES:
        _fail(op, f"expected u of dtype {_DTYPE_NAMES}, but got {u.dtype}")
    batch, dim, seqlen = _shape(u)
    dev = u.device
    w = torch.float64 if u.dtype == torch.float64 else torch.float32
    why_w = "float32, or float64 when u is float64"
    _check_rank(op, "delta", delta, (3,), "(batch, dim, seqlen)")
    if _shape(delta) != _shape(u):
        _fail(op, f"delta must have u's shape (batch, dim, seqlen) = {_shape(u)}, but got "
                  f"{_shape(delta)}")
    _check_dtype(op, "delta", delta, u.dtype, "u's dtype")
    _check_device(op, "delta", delta, dev)
    _check_rank(op, "A", A, (2,), "(dim, dstate)")
    _no_complex(op, "A", A)
    dstate = A.size(1)
    if A.size(0) != dim:
        _fail(op, f"expected A of shape (dim, dstate) with dim = u.size(1) = {dim}, but got "
                  f"{_shape(A)}")
    _check_dtype(op, "A", A, w, why_w)
    _check_device(op, "A", A, dev)
    form_B = _check_BC(op, "B", B, batch, dim, dstate, seqlen, u.dtype, w, dev)
    form_C = _check_BC(op, "C", C, batch, dim, dstate, seqlen, u.dtype, w, dev)
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is None:
            continue
        _check_rank(op, name, t, (1,), "(dim,)")
        if _shape(t) != (dim,):
            _fail(op, f"expected {name} of shape (dim,) = ({dim},), but got {_shape(t)}")
        _check_dtype(op, name, t, w, why_w)
        _check_device(op, name, t, dev)
    if z is not None:
        _check_rank(op, "z", z, (3,), "(batch, dim, seqlen)")
        if _shape(z) != _shape(u):
            _fail(op, f"z must have u's shape (batch, dim, seqlen) = {_shape(u)}, but got "
                      f"{_shape(z)}")
        _check_dtype(op, "z", z, u.dtype, "u's dtype")
        _check_device(op, "z", z, dev)
    if cu_seqlens is not None:
        if batch != 1:
            _fail(op, f"packed sequences (cu_seqlens) need batch = u.size(0) = 1, but got "
                      f"batch = {batch}")
        offsets = _check_cu_seqlens(op, cu_seqlens, seqlen, dev)
        segments = list(zip(offsets[:-1], offsets[1:]))
        want_h0, h0_layout = (len(segments), dim, dstate), "(nseq, dim, dstate)"
    else:
        segments = [(0, seqlen)]
        want_h0, h0_layout = (batch, dim, dstate), "(batch, dim, dstate)"
    if initial_state is not None:
        _check_rank(op, "initial_state", initial_state, (3,), h0_layout)
        if _shape(initial_state) != want_h0:
            _fail(op, f"expected initial_state of shape {h0_layout} = {want_h0}, but got "
                      f"{_shape(initial_state)}")
        _check_dtype(op, "initial_state", initial_state, w, why_w)
        _check_device(op, "initial_state", initial_state, dev)

    # -- the computation, in w
    dt = delta.to(w)
    if delta_bias is not None:
        dt = dt + delta_bias.to(w)[:, None]
    if delta_softplus:
        dt = F.softplus(dt)                                 # beta 1, threshold 20
    uw = u.to(w)
    Bw = _per_channel(B.to(w), form_B, dim)
    Cw = _per_channel(C.to(w), form_C, dim)
    rows = batch if cu_seqlens is None else 1
    ys, last = [], []
    for s, (start, end) in enumerate(segments):
        if initial_state is None:
            h = uw.new_zeros((rows, dim, dstate))
        elif cu_seqlens is None:
            h = initial_state
        else:
            h = initial_state[s:s + 1]
        for i in range(start, end):
            dt_i = dt[:, :, i, None]                        # (batch, dim, 1)
            h = torch.exp(dt_i * A) * h + dt_i * _at(Bw, form_B, i) * uw[:, :, i, None]
            ys.append((h * _at(Cw, form_C, i)).sum(dim=-1))  # (batch, dim)
        last.append(h)
    y = torch.stack(ys, dim=2) if ys else uw.new_zeros((batch, dim, 0))
    out = y
    if D is not None:
        out = out + D.to(w)[:, None] * uw
    if z is not None:
        out = out * F.silu(z.to(w))
    out = out.to(u.dtype)
    if not return_last_state:
        return out
    return out, torch.cat(last, dim=0) if last else uw.new_zeros((0, dim, dstate))


# --- selective_state_update ----------------------------------------------------------


def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None,
                           dt_softplus=False):
    """Reference ``mamba_ssm.ops.triton.selective_state_update.selective_state_update``:
    one decode step of the scan, updating ``state`` in place; see the module docstring.

    Flat: state ``(batch, dim, dstate)``, x/dt/z ``(batch, dim)``, A ``(dim, dstate)``,
    B/C ``(batch, dstate)``, D/dt_bias ``(dim,)``. Heads: state ``(batch, nheads, headdim,
    dstate)``, x/dt/z ``(batch, nheads, headdim)``, A ``(nheads, headdim, dstate)``, B/C
    ``(batch, ngroups, dstate)``, D/dt_bias ``(nheads, headdim)``.
    Returns ``out`` of x's dtype, ``(batch, dim)`` or ``(batch, nheads, headdim)``."""
    op = "selective_state_update"
    _check_rank(op, "state", state, (3, 4),
                "(batch, dim, dstate) or (batch, nheads, headdim, dstate)")
    heads = state.dim() == 4
    dev = state.device
    named = [("state", state), ("x", x), ("dt", dt), ("A", A), ("B", B), ("C", C), ("D", D),
             ("z", z), ("dt_bias", dt_bias)]
    # ranks: (flat rank, heads rank, flat layout, heads layout)
    ranks = {"x": (2, 3, "(batch, dim)", "(batch, nheads, headdim)"),
             "dt": (2, 3, "(batch, dim)", "(batch, nheads, headdim)"),
             "z": (2, 3, "(batch, dim)", "(batch, nheads, headdim)"),
             "A": (2, 3, "(dim, dstate)", "(nheads, headdim, dstate)"),
             "B": (2, 3, "(batch, dstate)", "(batch, ngroups, dstate)"),
             "C": (2, 3, "(batch, dstate)", "(batch, ngroups, dstate)"),
             "D": (1, 2, "(dim,)", "(nheads, headdim)"),
             "dt_bias": (1, 2, "(dim,)", "(nheads, headdim)")}
    for name, t in named:
        if t is None:
            continue
        if name != "state":
            lo, hi, flat, full = ranks[name]
            _check_rank(op, name, t, (lo, hi), f"{flat} or {full}")
        _no_complex(op, name, t)
        if not t.is_floating_point():
            _fail(op, f"expected {name} of a floating-point dtype, but got {t.dtype}")
        _check_device(op, name, t, dev, ref="state")
    if dt.dtype != x.dtype or (z is not None and z.dtype != x.dtype):
        zs = "" if z is None else f" and z {z.dtype}"
        _fail(op, f"x, dt and z must have the same dtype, but got x {x.dtype}, dt {dt.dtype}"
                  f"{zs}")
    if C.dtype != B.dtype:
        _fail(op, f"B and C must have the same dtype, but got B {B.dtype} and C {C.dtype}")

    # flat arguments are the heads form with nheads = 1 (ngroups = 1), as in mamba_ssm
    s4 = state if heads else state.unsqueeze(1)
    batch, nheads, headdim, dstate = _shape(s4)
    lift = {"x": 1, "dt": 1, "z": 1, "B": 1, "C": 1, "A": 0, "D": 0, "dt_bias": 0}
    v = {}
    for name, t in named[1:]:
        if t is not None and t.dim() == ranks[name][0]:
            t = t.unsqueeze(lift[name])
        v[name] = t
    given = dict(named)                                     # as passed, for messages
    dims = "(batch, nheads, headdim)" if heads else "(batch, dim)"
    want = (batch, nheads, headdim) if heads else (batch, headdim)
    for name in ("x", "dt", "z"):
        if v[name] is not None and _shape(v[name]) != (batch, nheads, headdim):
            _fail(op, f"expected {name} of shape {dims} = {want} (from state's shape "
                      f"{_shape(state)}), but got {_shape(given[name])}")
    if _shape(v["A"]) != (nheads, headdim, dstate):
        layout = "(nheads, headdim, dstate)" if heads else "(dim, dstate)"
        wa = (nheads, headdim, dstate) if heads else (headdim, dstate)
        if v["A"].size(-1) != dstate:
            _fail(op, f"dstate mismatch: state has dstate {dstate}, but A of shape "
                      f"{_shape(A)} has dstate {A.size(-1)}")
        _fail(op, f"expected A of shape {layout} = {wa}, but got {_shape(A)}")
    for name in ("B", "C"):
        t = v[name]
        if t.size(-1) != dstate:
            _fail(op, f"dstate mismatch: state has dstate {dstate}, but {name} of shape "
                      f"{_shape(given[name])} has dstate {t.size(-1)}")
    ngroups = v["B"].size(1)
    if v["B"].size(0) != batch:
        layout = "(batch, ngroups, dstate)" if heads else "(batch, dstate)"
        _fail(op, f"expected B of shape {layout} with batch = state.size(0) = {batch}, but got "
                  f"{_shape(B)}")
    if ngroups < 1 or nheads % ngroups != 0:
        _fail(op, f"nheads must be a multiple of ngroups = B.size(1) >= 1 (nheads is 1 for a "
                  f"flat state), but got nheads = {nheads} and B of shape {_shape(B)}")
    if _shape(v["C"]) != _shape(v["B"]):
        _fail(op, f"C must have B's shape {_shape(B)}, but got {_shape(C)}")
    for name in ("D", "dt_bias"):
        if v[name] is not None and _shape(v[name]) != (nheads, headdim):
            layout = "(nheads, headdim)" if heads else "(dim,)"
            wd = (nheads, headdim) if heads else (headdim,)
            _fail(op, f"expected {name} of shape {layout} = {wd}, but got "
                      f"{_shape(given[name])}")

    cd = torch.float64 if any(t is not None and t.dtype == torch.float64
                              for _, t in named) else torch.float32
    d = v["dt"].to(cd)
    if dt_bias is not None:
        d = d + v["dt_bias"].to(cd)
    if dt_softplus:
        d = F.softplus(d)                                   # beta 1, threshold 20
    d = d[..., None]                                        # (batch, nheads, headdim, 1)
    rep = nheads // ngroups
    Bh = v["B"].to(cd).repeat_interleave(rep, dim=1)[:, :, None, :]   # (batch, nheads, 1, dstate)
    Ch = v["C"].to(cd).repeat_interleave(rep, dim=1)[:, :, None, :]
    xc = v["x"].to(cd)
    # copy=True: the old state is saved for the backward, then overwritten in place
    new = torch.exp(d * v["A"].to(cd)) * s4.to(cd, copy=True) + d * Bh * xc[..., None]
    out = (new * Ch).sum(dim=-1)                            # (batch, nheads, headdim)
    if D is not None:
        out = out + v["D"].to(cd) * xc
    if z is not None:
        out = out * F.silu(v["z"].to(cd))
    s4.copy_(new)                                           # writes through to state
    out = out.to(x.dtype)
    return out if heads else out.squeeze(1)
