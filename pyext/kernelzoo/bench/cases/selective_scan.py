"""selective_scan_fn / selective_state_update against the plain-PyTorch reference
loop on CPU (mamba_ssm, the peer, is CUDA-only); on CUDA against mamba_ssm when
it is installed (the `bench` extra cannot install it everywhere: it needs a CUDA
build), else the reference.

The scan case times forward + backward of one Mamba layer's scan at the
mamba-130m width (dim 1536, dstate 16, variable B and C, D, z, delta_bias,
softplus). GB/s counts the bytes the two passes must move at the least (the
(batch, dim, seqlen) tensors read and written); the `copy` baseline copies as
many bytes, so `x copy` says how far from this machine's memory bandwidth the
kernels are.
"""

import torch

from ... import ops, reference
from ..registry import Bench, case


def _cuda_peer(name):
    """mamba_ssm's function `name` ("selective_scan_fn" or
    "selective_state_update") when it is installed, else None."""
    try:
        if name == "selective_scan_fn":
            from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as fn
        else:
            from mamba_ssm.ops.triton.selective_state_update import selective_state_update as fn
    except ImportError:
        return None
    return fn


def _peer(device, name):
    fn = _cuda_peer(name) if device == "cuda" else None
    if fn is not None:
        return fn, "mamba_ssm"
    return getattr(reference, name), "reference loop" if name == "selective_scan_fn" else "reference"


def _scan_problem(device, dtype, quick):
    b, d, n, L = (1, 32, 4, 100) if quick else (2, 1536, 16, 1024)
    g = torch.Generator().manual_seed(0)

    def t(*shape, scale=1.0, positive=False, dt=dtype):
        x = torch.rand(shape, generator=g) if positive else torch.randn(shape, generator=g)
        return (x * scale).to(device, dt).requires_grad_()

    w = torch.float64 if dtype == torch.float64 else torch.float32
    ins = (t(b, d, L), t(b, d, L, scale=0.1, positive=True), (-t(d, n, positive=True, dt=w)).detach()
           .requires_grad_(), t(b, n, L), t(b, n, L), t(d, dt=w), t(b, d, L), t(d, scale=0.1, dt=w))
    dout = torch.randn(b, d, L, generator=g).to(device, dtype)
    return (b, d, n, L), ins, dout


@case("selective_scan_forward", dtypes=("float32",), devices=("cpu", "cuda"))
def selective_scan_forward_backward(device, dtype, quick):
    (b, d, n, L), ins, dout = _scan_problem(device, dtype, quick)

    def run(fn):
        def f():
            out = fn(*ins, True)
            return (out.detach(),) + torch.autograd.grad(out, ins, dout)
        return f

    plane = b * d * L * ins[0].element_size()
    moved = 4 * plane + 7 * plane  # forward: u, delta, z in, out; backward: u, delta, z, dout in, du, ddelta, dz out
    src = torch.empty(moved // 2 // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    peer, peer_name = _peer(device, "selective_scan_fn")
    return Bench(
        shape=f"batch {b}, dim {d}, dstate {n}, seqlen {L}, variable B/C, D, z, softplus; "
              f"forward + backward",
        ours=run(ops.selective_scan_fn), peer=run(peer), peer_name=peer_name,
        bytes=moved, compare="close", rtol=1e-3, atol=1e-3,
        baselines={"copy": lambda: dst.copy_(src)},
        warmup=1, repeats=3,
    )


@case("selective_state_update", dtypes=("float32",), devices=("cpu", "cuda"))
def selective_state_update_decode(device, dtype, quick):
    """One decoding step of a mamba-130m-wide layer (the state is read and written once)."""
    b, d, n = (2, 64, 4) if quick else (8, 1536, 16)
    g = torch.Generator().manual_seed(0)
    state = torch.randn(b, d, n, generator=g).to(device)
    args = [torch.randn(b, d, generator=g), torch.rand(b, d, generator=g), -torch.rand(d, n, generator=g),
            torch.randn(b, n, generator=g), torch.randn(b, n, generator=g), torch.randn(d, generator=g),
            torch.randn(b, d, generator=g), torch.randn(d, generator=g)]
    args = [a.to(device, dtype) for a in args]
    s_ours, s_peer = state.clone(), state.clone()

    def ours():
        s_ours.copy_(state)
        return ops.selective_state_update(s_ours, *args, dt_softplus=True), s_ours

    peer_fn, peer_name = _peer(device, "selective_state_update")

    def peer():
        s_peer.copy_(state)
        return peer_fn(s_peer, *args, dt_softplus=True), s_peer

    return Bench(
        shape=f"batch {b}, dim {d}, dstate {n} (state reset before each step)",
        ours=ours, peer=peer, peer_name=peer_name,
        bytes=2 * state.numel() * state.element_size(),
        compare="close", rtol=1e-5, atol=1e-5,
    )
