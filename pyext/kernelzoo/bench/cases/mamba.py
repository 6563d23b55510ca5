"""The mamba family against transformers' MambaForCausalLM, at the mamba-130m
configuration with random weights (no download): the same state dict in both.

* ``mamba_130m_forward``: logits of one sequence of 512 tokens (batch 1).
  transformers on CPU without mamba_ssm / causal_conv1d runs its reference
  path (a Python loop over the sequence per layer); kernelzoo runs the
  selective scan op. Compared: the logits (float32: summation order only).
* ``mamba_130m_generate``: greedy generation, 8-token prompt then 32 new
  tokens, batch 1, float32. transformers' ``generate`` (use_cache: a
  ``selective_state_update`` per token in its reference path) against
  kernelzoo's ``generate`` (one scan per layer over the prompt, then one conv
  step and one ``selective_state_update`` op per token). Compared: the tokens,
  exactly. ``bytes`` counts the float32 weights read once per new token, so the
  GB/s column is the weight bandwidth of decoding; the baseline "kz bf16" is
  kernelzoo with bfloat16 weights (float32 SSM state).

Both cases are skipped when transformers is not installed. Each call takes up
to seconds, so the repeats are capped.
"""

from __future__ import annotations

import torch

from ..registry import Bench, case, skip

_PROMPT, _NEW = 8, 32


def _models(device):
    try:
        import transformers
    except ImportError:
        skip("transformers is not installed (pip install transformers, or "
             "pip install 'kernelzoo[bench]')")
    from kernelzoo.registry import PluginError, UnknownModelError, create_model, get_family

    try:
        get_family("mamba")
    except (PluginError, UnknownModelError) as e:
        skip(f"the mamba family is not available: {e}")
    torch.manual_seed(0)
    ours = create_model("mamba-130m").eval()
    d = ours.config.to_hf_dict()
    for k in ("architectures", "model_type", "intermediate_size"):
        d.pop(k)
    peer = transformers.MambaForCausalLM(transformers.MambaConfig(**d)).eval()
    peer.load_state_dict(ours.state_dict(), strict=True)
    return ours.to(device), peer.to(device)


def _quiet_transformers():
    try:
        from transformers.utils import logging

        logging.set_verbosity_error()     # the "falling back to the reference" notices
    except Exception:
        pass


@case("mamba", dtypes=("float32",), devices=("cpu",))
def mamba_130m_forward(device, dtype, quick):
    _quiet_transformers()
    ours, peer = _models(device)
    seqlen = 64 if quick else 512
    ids = torch.randint(0, ours.config.vocab_size, (1, seqlen),
                        generator=torch.Generator().manual_seed(1)).to(device)

    def run_ours():
        with torch.inference_mode():
            return ours(ids).logits

    def run_peer():
        with torch.inference_mode():
            return peer(ids, use_cache=False).logits

    return Bench(shape=f"mamba-130m (24 layers, d 768), batch 1, {seqlen} tokens",
                 ours=run_ours, peer=run_peer,
                 peer_name="transformers MambaForCausalLM (reference path)",
                 compare="close", rtol=1e-3, atol=1e-3,
                 note="random weights; logits compared", warmup=0, repeats=2)


@case("mamba", dtypes=("float32",), devices=("cpu",))
def mamba_130m_generate(device, dtype, quick):
    _quiet_transformers()
    ours, peer = _models(device)
    new = 8 if quick else _NEW
    ids = torch.randint(0, ours.config.vocab_size, (1, _PROMPT),
                        generator=torch.Generator().manual_seed(2)).to(device)
    low = None

    def run_ours():
        return ours.generate(ids, new)[:, _PROMPT:]

    def run_peer():
        with torch.inference_mode():
            out = peer.generate(ids, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                                use_cache=True, pad_token_id=0, eos_token_id=None)
        return out[:, _PROMPT:]

    def run_bf16():
        nonlocal low
        if low is None:
            import copy

            low = copy.deepcopy(ours).to(torch.bfloat16)
        return low.generate(ids, new)

    weight_bytes = sum(p.numel() * p.element_size() for p in ours.parameters())
    return Bench(shape=f"mamba-130m, batch 1, {_PROMPT}-token prompt + {new} greedy tokens",
                 ours=run_ours, peer=run_peer,
                 peer_name="transformers MambaForCausalLM.generate (use_cache)",
                 compare="exact", bytes=new * weight_bytes,
                 baselines={"kz bf16": run_bf16},
                 note=f"random weights; tokens compared; bytes: {weight_bytes / 1e6:.0f} MB of "
                      f"weights per new token (prefill included in the time)",
                 warmup=1, repeats=3)
