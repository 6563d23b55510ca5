"""The mamba family against transformers' MambaForCausalLM (the independent
reference): state dicts both ways, logits with and without padding, gradients,
and generation (greedy tokens equal transformers', sampling reproducible,
top-k/top-p filters). check_family("mamba") runs here too; checkpoint folders
in test_mamba_pretrained.py, the training example in test_mamba_train.py."""

from __future__ import annotations

import pytest
import torch

import kernelzoo
from kernelzoo.plugins.mamba import MambaConfig, family
from kernelzoo.plugins.mamba.model import sample_next

transformers = pytest.importorskip(
    "transformers", reason="transformers is not installed (pip install -r tests/requirements.txt)")


def hf_config(config: MambaConfig):
    d = config.to_hf_dict()
    for k in ("architectures", "model_type", "intermediate_size"):
        d.pop(k)
    return transformers.MambaConfig(**d)


def pair(seed=0, name="mamba-test", **overrides):
    """A kernelzoo model (random init, seed) and transformers' MambaForCausalLM holding its weights."""
    torch.manual_seed(seed)
    ours = kernelzoo.create_model(name, **overrides)
    ref = transformers.MambaForCausalLM(hf_config(ours.config))
    ref.load_state_dict(ours.state_dict(), strict=True)
    return ours.eval(), ref.eval()


def test_presets():
    assert kernelzoo.list_models("mamba-*") == ["mamba-1.4b", "mamba-2.8b", "mamba-130m",
                                                "mamba-370m", "mamba-790m", "mamba-test"]
    assert family.small_presets == ["test"]
    published = {"130m": (768, 24, 48), "370m": (1024, 48, 64), "790m": (1536, 48, 96),
                 "1.4b": (2048, 48, 128), "2.8b": (2560, 64, 160)}
    for preset, (d, n, r) in published.items():
        c = kernelzoo.registry.model_config(f"mamba-{preset}")
        assert (c.hidden_size, c.num_hidden_layers, c.dt_rank, c.vocab_size, c.state_size,
                c.expand, c.conv_kernel, c.intermediate_size) == (d, n, r, 50280, 16, 2, 4, 2 * d)
        # transformers derives the same sizes from the same config.json
        hc = hf_config(c)
        assert (hc.time_step_rank, hc.intermediate_size) == (r, 2 * d)


def test_parameter_count_130m():
    # mamba-130m has 129.1 M parameters (embeddings tied): built on the meta device.
    with torch.device("meta"):
        model = kernelzoo.create_model("mamba-130m")
    n = sum(p.numel() for p in model.parameters())
    assert n == 129_135_360


def test_state_dict_both_ways():
    ours, ref = pair(1)
    assert list(ours.state_dict()) == list(ref.state_dict())
    for k, v in ref.state_dict().items():
        assert ours.state_dict()[k].shape == v.shape, k
    # transformers -> kernelzoo: a freshly initialised HF model loads into ours
    torch.manual_seed(5)
    ref2 = transformers.MambaForCausalLM(hf_config(ours.config)).eval()
    ours.load_state_dict(ref2.state_dict(), strict=True)
    assert ours.lm_head.weight is ours.backbone.embeddings.weight
    ids = torch.randint(0, 64, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, ref2(ids).logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("left", [False, True])
def test_logits_padded_batch(left):
    ours, ref = pair(2)
    g = torch.Generator().manual_seed(3)
    lengths, seqlen = [17, 5, 11, 1], 17
    ids = torch.randint(1, 64, (len(lengths), seqlen), generator=g)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        mask[i, seqlen - n:] = 1 if left else 0
        if not left:
            mask[i, :n] = 1
    ids = ids * mask
    with torch.no_grad():
        got = ours(ids, attention_mask=mask)
        want = ref(ids, attention_mask=mask).logits
    assert got.logits.dtype == torch.float32 and got[0] is got.logits
    torch.testing.assert_close(got.logits, want, rtol=1e-5, atol=1e-5)
    if left:
        # left padding: the real tokens' logits are those of the unpadded sequence
        i, n = 1, lengths[1]
        with torch.no_grad():
            alone = ours(ids[i:i + 1, seqlen - n:]).logits
        torch.testing.assert_close(got.logits[i:i + 1, seqlen - n:], alone, rtol=1e-5, atol=1e-5)


def test_logits_longer_sequence_bigger_model():
    # several layers, a sequence longer than the scan's 64-step chunks
    ours, ref = pair(4, hidden_size=48, num_hidden_layers=3, state_size=16, vocab_size=100)
    ids = torch.randint(0, 100, (2, 150))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, ref(ids).logits, rtol=1e-4, atol=1e-5)


def test_gradients_match_transformers():
    ours, ref = pair(6)
    ours.train()
    ref.train()
    ids = torch.randint(0, 64, (2, 21))
    w = torch.randn(2, 21, 64)
    (ours(ids).logits * w).sum().backward()
    (ref(ids).logits * w).sum().backward()
    theirs = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, theirs[name].grad, rtol=1e-4, atol=1e-5,
                                   msg=lambda m: f"{name}: {m}")


def test_bfloat16_forward_close():
    ours, ref = pair(7)
    ids = torch.randint(0, 64, (2, 20))
    with torch.no_grad():
        want = ref(ids).logits
        low = ours.to(torch.bfloat16)(ids).logits
        ref_low = ref.to(torch.bfloat16)(ids).logits
    err = (low - want).abs().max()
    ref_err = (ref_low - want).abs().max()
    assert err <= 3 * ref_err + 1e-3, (err, ref_err)


def test_bad_mask_shape():
    ours, _ = pair(0)
    with pytest.raises(ValueError, match="attention_mask has shape"):
        ours(torch.zeros(2, 5, dtype=torch.long), torch.ones(2, 4, dtype=torch.long))


def test_check_family():
    assert kernelzoo.testing.check_family("mamba") == ["mamba-test"]


# --------------------------------------------------------------------------- generation


def test_greedy_generation_equals_transformers():
    ours, ref = pair(8, vocab_size=200)
    ids = torch.randint(1, 200, (3, 9))
    got = ours.generate(ids, max_new_tokens=40)
    want = ref.generate(ids, max_new_tokens=40, min_new_tokens=40, do_sample=False,
                        use_cache=True, pad_token_id=0, eos_token_id=None)
    assert got.shape == (3, 49)
    assert torch.equal(got, want)


def test_generation_states_match_full_forward():
    # the O(1) decoding steps give the logits of a full forward over the sequence so far
    ours, _ = pair(9)
    ids = torch.randint(1, 64, (2, 3))          # shorter than conv_kernel - 1 + 1
    logits, states = ours.prefill(ids)
    seq = ids
    for _ in range(6):
        with torch.no_grad():
            full = ours(seq).logits[:, -1]
        torch.testing.assert_close(logits, full, rtol=1e-5, atol=1e-5)
        tok = torch.randint(1, 64, (2,))
        seq = torch.cat([seq, tok[:, None]], 1)
        logits = ours.step(tok, states)
    assert [tuple(c.shape) for c, _ in states] == [(2, 64, 3)] * 2
    assert [tuple(s.shape) for _, s in states] == [(2, 64, 8)] * 2


def test_sampling_reproducible_and_seeded():
    ours, _ = pair(10)
    ids = torch.randint(1, 64, (2, 5))
    a = ours.generate(ids, 20, do_sample=True, seed=123, top_k=10, top_p=0.9, temperature=0.8)
    b = ours.generate(ids, 20, do_sample=True, seed=123, top_k=10, top_p=0.9, temperature=0.8)
    c = ours.generate(ids, 20, do_sample=True, seed=124, top_k=10, top_p=0.9, temperature=0.8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.equal(a[:, :5], ids)
    out = ours.generate(ids[0], 4, return_dict=True)
    assert out.sequences.shape == (9,) and out.new_tokens.shape == (4,)


def test_top_k_top_p_restrict():
    logits = torch.log(torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05]]))
    g = torch.Generator().manual_seed(0)
    draws = lambda **kw: {int(sample_next(logits, generator=g, **kw)) for _ in range(400)}
    assert draws(top_k=1) == {0}
    assert draws(top_k=2) == {0, 1}
    # top_p 0.6: 0.5 alone does not reach it, 0.5 + 0.2 does
    assert draws(top_p=0.6) == {0, 1}
    assert draws(top_p=0.5) == {0}
    assert draws(top_p=0.86) == {0, 1, 2, 3}
    assert draws() == {0, 1, 2, 3, 4}
    assert draws(top_k=3, top_p=0.99) == {0, 1, 2}
    # a low temperature concentrates on the most likely token
    assert draws(temperature=0.01) == {0}


def test_generate_bad_arguments():
    ours, _ = pair(0)
    ids = torch.ones(1, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="max_new_tokens"):
        ours.generate(ids, -1)
    with pytest.raises(ValueError, match="temperature"):
        ours.generate(ids, 2, do_sample=True, temperature=0)
    with pytest.raises(ValueError, match="top_p"):
        ours.generate(ids, 2, do_sample=True, top_p=1.5)
    with pytest.raises(ValueError, match="input_ids"):
        ours.generate(torch.ones(1, 0, dtype=torch.long), 2)


# --------------------------------------------------------------------------- kernelzoo generate


def test_cli_generate_greedy_equals_model(capsys, tmp_path):
    import json

    from kernelzoo.cli import main
    from kernelzoo.plugins.mamba.pretrained import save_pretrained

    torch.manual_seed(11)
    model = kernelzoo.create_model("mamba-test").eval()
    save_pretrained(model, tmp_path / "ckpt")
    want = model.generate(torch.tensor([[5, 6, 7]]), 12)[0, 3:].tolist()
    assert main(["generate", "mamba-test", "--pretrained", str(tmp_path / "ckpt"),
                 "--prompt-ids", "5", "6", "7", "--max-new-tokens", "12", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["new_tokens"] == want
    assert out["tokens_per_second"] > 0
    assert main(["generate", "mamba-test", "--pretrained", str(tmp_path / "ckpt"),
                 "--prompt-ids", "5", "6", "7", "--max-new-tokens", "12"]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0] == " ".join(map(str, want))
    assert "tokens/s" in text[1]


def test_cli_generate_errors(capsys):
    from kernelzoo.cli import main

    assert main(["generate", "mamba-test", "--prompt-ids", "1", "64"]) == 2
    assert "vocab_size 64" in capsys.readouterr().err
    assert main(["generate", "mamba-test", "--prompt-ids", "1", "--top-p", "0"]) == 2
    assert "--top-p" in capsys.readouterr().err
    assert main(["generate", "bert-test", "--prompt-ids", "1"]) == 2
    assert "not a generative model" in capsys.readouterr().err
    assert main(["generate", "mamba-test", "--prompt-ids", "1", "--pretrained", "/nonexistent"]) == 2
    assert "not a checkpoint folder" in capsys.readouterr().err


def test_bfloat16_generation_float32_states():
    ours, _ = pair(12)
    ours = ours.to(torch.bfloat16)
    ids = torch.randint(1, 64, (2, 6))
    logits, states = ours.prefill(ids)
    assert all(s.dtype == torch.float32 for _, s in states)
    with torch.no_grad():
        full = ours(ids).logits[:, -1]
    torch.testing.assert_close(logits, full, rtol=0.02, atol=0.02)
    out = ours.generate(ids, 10)
    assert out.shape == (2, 16) and torch.equal(out[:, :6], ids)
    assert torch.equal(out[:, 6], full.argmax(-1))


def test_generate_eos_and_zero_tokens():
    ours, _ = pair(13)
    ids = torch.randint(1, 64, (2, 4))
    assert torch.equal(ours.generate(ids, 0), ids)
    full = ours.generate(ids, 12)
    eos = int(full[0, 6])                      # sequence 0's third new token
    out = ours.generate(ids, 12, eos_token_id=eos)
    row = full[0].tolist()
    first = row.index(eos, 4)                  # where sequence 0 first produces it
    assert torch.equal(out[0, :first + 1], full[0, :first + 1])
    assert (out[0, first:] == eos).all()       # then only eos
    one = ours.generate(ids[:1], 12, eos_token_id=eos)
    assert one.shape[1] == first + 1           # stops once every sequence is done
