"""The bert family against transformers' BertModel (the independent reference):
state dicts both ways, outputs, gradients, unpadded and packed execution,
attention dropout, the training example. check_family("bert") runs in
test_families.py; real weights and the embed command in test_bert_pretrained.py."""

from __future__ import annotations

import pytest
import torch

import kernelzoo
from kernelzoo.plugins.bert import BertConfig, BertModel, family

transformers = pytest.importorskip(
    "transformers", reason="transformers is not installed (pip install -r tests/requirements.txt)")

TEST = BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=37, max_position_embeddings=64)


def hf_config(config: BertConfig, **kw):
    fields = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
              "intermediate_size", "hidden_act", "hidden_dropout_prob",
              "attention_probs_dropout_prob", "max_position_embeddings", "type_vocab_size",
              "layer_norm_eps", "pad_token_id")
    return transformers.BertConfig(**{f: getattr(config, f) for f in fields}, **kw)


def pair(seed=0, dtype=torch.float32, **overrides):
    """bert-test (random init, seed) and a transformers BertModel holding its weights."""
    torch.manual_seed(seed)
    ours = kernelzoo.create_model("bert-test", **overrides).to(dtype)
    ref = transformers.BertModel(hf_config(ours.config)).to(dtype)
    ref.load_state_dict(ours.state_dict(), strict=True)
    return ours.eval(), ref.eval()


def batch(lengths, seqlen=None, vocab=99, seed=0, left=False):
    """Padded (ids, mask, token types) with the given lengths."""
    g = torch.Generator().manual_seed(seed)
    seqlen = seqlen or max(lengths)
    ids = torch.randint(1, vocab, (len(lengths), seqlen), generator=g)
    mask = torch.zeros(len(lengths), seqlen, dtype=torch.long)
    types = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        cols = slice(seqlen - n, seqlen) if left else slice(0, n)
        mask[i, cols] = 1
        types[i, cols][n // 2:] = 1
    return ids * mask, mask, types


def test_presets():
    assert kernelzoo.list_models("bert-*") == ["bert-base", "bert-large", "bert-minilm-l6",
                                               "bert-test"]
    assert family.small_presets == ["test"]
    base = kernelzoo.registry.model_config("bert-base")
    assert (base.hidden_size, base.num_hidden_layers, base.num_attention_heads,
            base.intermediate_size, base.vocab_size) == (768, 12, 12, 3072, 30522)
    large = kernelzoo.registry.model_config("bert-large")
    assert (large.hidden_size, large.num_hidden_layers, large.num_attention_heads,
            large.intermediate_size) == (1024, 24, 16, 4096)
    mini = kernelzoo.registry.model_config("bert-minilm-l6")
    assert (mini.hidden_size, mini.num_hidden_layers, mini.num_attention_heads,
            mini.intermediate_size, mini.vocab_size) == (384, 6, 12, 1536, 30522)
    assert family.model_types == ("bert",)


@pytest.mark.parametrize("preset", ["test", "minilm-l6"])
def test_state_dict_is_hf_bertmodels(preset):
    torch.manual_seed(0)
    ours = kernelzoo.create_model(f"bert-{preset}")
    ref = transformers.BertModel(hf_config(ours.config))
    a, b = ours.state_dict(), ref.state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape for k in a)
    assert dict(ours.named_modules()).keys() >= {
        "embeddings.word_embeddings", "encoder.layer.0.attention.self.query",
        "encoder.layer.0.attention.output.LayerNorm", "encoder.layer.0.intermediate.dense",
        "encoder.layer.0.output.dense", "pooler.dense"}


def assert_same_outputs(ours, ref, ids, mask, types, atol=1e-5, pooler=True):
    with torch.no_grad():
        a = ours(ids, mask, types)
        b = ref(input_ids=ids, attention_mask=mask, token_type_ids=types)
    keep = mask.bool()
    torch.testing.assert_close(a.last_hidden_state[keep], b.last_hidden_state[keep],
                               rtol=1e-5, atol=atol)
    if pooler:
        torch.testing.assert_close(a.pooler_output, b.pooler_output, rtol=1e-5, atol=atol)
    assert a[0] is a.last_hidden_state and a["pooler_output"] is a.pooler_output
    return a


def test_ours_to_hf_round_trip():
    ours, ref = pair(seed=1)
    ids, mask, types = batch([13, 1, 7, 13, 4])
    out = assert_same_outputs(ours, ref, ids, mask, types)
    # Padding positions are zeros (never computed).
    assert out.last_hidden_state.shape == (5, 13, 32)
    assert (out.last_hidden_state[~mask.bool()] == 0).all()


def test_hf_to_ours_round_trip():
    torch.manual_seed(3)
    ref = transformers.BertModel(hf_config(TEST)).eval()
    with torch.no_grad():          # a non-trivial state: HF's init has zero biases
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ours = kernelzoo.create_model("bert-test").eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    ids, mask, types = batch([9, 12, 3], seed=4)
    assert_same_outputs(ours, ref, ids, mask, types)
    # And back: the state dicts are identical.
    assert all(torch.equal(v, ref.state_dict()[k]) for k, v in ours.state_dict().items())


def test_no_mask_and_left_padding_match_hf():
    ours, ref = pair(seed=2)
    ids, mask, types = batch([10, 10, 10], seed=5)
    with torch.no_grad():
        a, b = ours(ids, token_type_ids=types), ref(input_ids=ids, token_type_ids=types)
    torch.testing.assert_close(a.last_hidden_state, b.last_hidden_state, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a.pooler_output, b.pooler_output, rtol=1e-5, atol=1e-5)
    # Left padding: positions are indices in the padded row, as BertModel's. The
    # pooler differs by design (ours reads the first real token), so only hidden states.
    ids, mask, types = batch([10, 4, 7], seed=6, left=True)
    assert_same_outputs(ours, ref, ids, mask, types, pooler=False)


def test_padded_batch_equals_each_sequence_alone():
    ours, _ = pair(seed=4)
    lengths = [5, 13, 1, 8]
    ids, mask, types = batch(lengths, seqlen=17, seed=7)
    with torch.no_grad():
        full = ours(ids, mask, types)
        for i, n in enumerate(lengths):
            alone = ours(ids[i:i + 1, :n], token_type_ids=types[i:i + 1, :n])
            torch.testing.assert_close(full.last_hidden_state[i, :n], alone.last_hidden_state[0],
                                       rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(full.pooler_output[i], alone.pooler_output[0],
                                       rtol=1e-5, atol=1e-6)


def test_packed_input_equals_padded():
    ours, _ = pair(seed=5)
    lengths = [6, 11, 2]
    ids, mask, types = batch(lengths, seed=8)
    keep = mask.bool()
    cu = torch.tensor([0, 6, 17, 19], dtype=torch.int32)
    with torch.no_grad():
        padded = ours(ids, mask, types)
        packed = ours(ids[keep], token_type_ids=types[keep], cu_seqlens=cu)
        packed_max = ours(ids[keep], token_type_ids=types[keep], cu_seqlens=cu, max_seqlen=11)
    assert packed.last_hidden_state.shape == (19, 32)
    assert torch.equal(packed.cu_seqlens, cu)
    torch.testing.assert_close(packed.last_hidden_state, padded.last_hidden_state[keep],
                               rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(packed.pooler_output, padded.pooler_output, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(packed_max.last_hidden_state, packed.last_hidden_state,
                               rtol=0, atol=0)


def test_empty_sequence_in_a_packed_batch():
    ours, _ = pair(seed=6)
    ids = torch.randint(1, 99, (7,))
    with torch.no_grad():
        out = ours(ids, cu_seqlens=torch.tensor([0, 3, 3, 7], dtype=torch.int32))
        first = ours(ids[:3], cu_seqlens=torch.tensor([0, 3], dtype=torch.int32))
    torch.testing.assert_close(out.last_hidden_state[:3], first.last_hidden_state)
    # The empty sequence's pooler input is zeros: tanh of the pooler's bias.
    torch.testing.assert_close(out.pooler_output[1], torch.tanh(ours.pooler.dense.bias))


def test_gradients_match_hf():
    """Backward through every parameter, in float64, against transformers' autograd."""
    ours, ref = pair(seed=7, dtype=torch.float64)
    ours.train()
    ref.train()
    for m in (ours, ref):          # dropout off so that both are deterministic
        for mod in m.modules():
            if isinstance(mod, torch.nn.Dropout):
                mod.p = 0.0
    ours.encoder.layer[0].attention.self.dropout_p = 0.0
    ours.encoder.layer[1].attention.self.dropout_p = 0.0
    ids, mask, types = batch([9, 4, 12], seed=9)
    keep = mask.bool()
    g = torch.Generator().manual_seed(1)
    w_h = torch.randn(int(keep.sum()), 32, generator=g, dtype=torch.float64)
    w_p = torch.randn(3, 32, generator=g, dtype=torch.float64)
    for m, kw in ((ours, {}), (ref, {})):
        out = m(input_ids=ids, attention_mask=mask, token_type_ids=types)
        loss = (out.last_hidden_state[keep] * w_h).sum() + (out.pooler_output * w_p).sum()
        loss.backward()
    grads = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, grads[name].grad, rtol=1e-7, atol=1e-9,
                                   msg=lambda m: f"{name}: {m}")


def test_attention_dropout_is_the_ops_dropout():
    torch.manual_seed(0)
    model = kernelzoo.create_model("bert-test", hidden_dropout_prob=0.0,
                                   attention_probs_dropout_prob=0.3)
    ids, mask, types = batch([12, 7], seed=10)
    model.eval()
    with torch.no_grad():
        ref = model(ids, mask, types).last_hidden_state
    model.train()
    with torch.no_grad():
        torch.manual_seed(5)
        a = model(ids, mask, types).last_hidden_state
        torch.manual_seed(5)
        b = model(ids, mask, types).last_hidden_state
        torch.manual_seed(6)
        c = model(ids, mask, types).last_hidden_state
    keep = mask.bool()
    assert torch.equal(a, b)                              # seeded: reproducible
    assert not torch.allclose(a[keep], c[keep])           # another seed: another mask
    assert not torch.allclose(a[keep], ref[keep])         # dropout is on in training
    # Without dropout, training mode gives the eval output.
    model2 = kernelzoo.create_model("bert-test", hidden_dropout_prob=0.0,
                                    attention_probs_dropout_prob=0.0)
    model2.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(model2.train()(ids, mask, types).last_hidden_state, ref)


def test_bad_inputs():
    model = kernelzoo.create_model("bert-test")
    ids, mask, _ = batch([3, 2])
    with pytest.raises(ValueError, match="input_ids must be \\(batch, seqlen\\)"):
        model(ids[0])
    with pytest.raises(ValueError, match="attention_mask must have input_ids' shape"):
        model(ids, mask[:, :2])
    cu = torch.tensor([0, 5], dtype=torch.int32)
    with pytest.raises(ValueError, match="not both"):
        model(ids[mask.bool()], mask, cu_seqlens=cu)
    with pytest.raises(ValueError, match="cu_seqlens must be int32"):
        model(ids[mask.bool()], cu_seqlens=cu.long())
    with pytest.raises(ValueError, match="must be a multiple of num_attention_heads"):
        kernelzoo.create_model("bert-test", num_attention_heads=5)
    with pytest.raises(ValueError, match="unsupported hidden_act 'tanh'"):
        kernelzoo.create_model("bert-test", hidden_act="tanh")


def test_training_loss_falls():
    from kernelzoo.plugins.bert.train import chain_batch, fit, successor_table

    # The task's data: the rule holds, and labels are the masked tokens.
    ids, mask, types, labels = chain_batch(4, 99, generator=torch.Generator().manual_seed(0))
    table = successor_table(99)
    for i in range(4):
        n = int(mask[i].sum()) - 2
        seq = torch.where(labels[i] >= 0, labels[i], ids[i])[1:n + 1]
        assert torch.equal(table[seq[:-1]], seq[1:])
        assert (ids[i][labels[i] >= 0] == 3).all()
    _, result = fit("bert-test", steps=200, batch_size=32, progress=False, eval_sequences=64)
    assert result["attention_dropout"] == 0.1
    assert result["final_loss"] < result["first_loss"] - 0.5, result
    assert result["eval_loss"] < result["initial_eval_loss"] - 0.5, result


def test_train_cli(tmp_path):
    import json
    import subprocess
    import sys

    save = tmp_path / "bert.pt"
    p = subprocess.run([sys.executable, "-m", "kernelzoo", "train", "bert-test", "--steps", "5",
                        "--batch-size", "4", "--json", "--no-progress", "--save", str(save)],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["steps"] == 5 and len(r["losses"]) == 5
    state = torch.load(save, weights_only=True)
    ref = transformers.BertModel(hf_config(TEST))
    ref.load_state_dict(state, strict=True)           # the encoder's state, HF's keys


def test_inference_path_equals_autograd_path():
    """CPU inference runs the linear layers through oneDNN with fused bias and
    GELU; with autograd on, plain F.linear. Same results (float32)."""
    from kernelzoo.nn.inference import onednn_linear_ok
    from kernelzoo.plugins.bert import model as bert_model

    ours, _ = pair(seed=8)
    ids, mask, types = batch([12, 3, 9], seed=11)
    x = torch.randn(5, 32)
    with torch.no_grad():
        assert onednn_linear_ok(x, ours.pooler.dense.weight) == \
            torch.backends.mkldnn.is_available()
        fast = ours(ids, mask, types)
    assert not onednn_linear_ok(x, ours.pooler.dense.weight)   # grad enabled
    slow = ours(ids, mask, types)
    assert slow.last_hidden_state.requires_grad
    torch.testing.assert_close(fast.last_hidden_state, slow.last_hidden_state.detach(),
                               rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast.pooler_output, slow.pooler_output.detach(),
                               rtol=1e-5, atol=1e-6)
    for act in ("gelu", "gelu_new", "relu", "silu"):
        layer = torch.nn.Linear(32, 40)
        with torch.no_grad():
            got = bert_model._linear(x, layer, act)
            want = bert_model.ACTIVATIONS[act](torch.nn.functional.linear(x, layer.weight,
                                                                           layer.bias))
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=act)


def test_pooler_reads_the_first_real_token():
    ours, _ = pair(seed=9)
    ids, mask, types = batch([4, 9, 6], seed=12, left=True)
    with torch.no_grad():
        out = ours(ids, mask, types)
        first = mask.argmax(1)                       # the first real column of each row
        cls = out.last_hidden_state[torch.arange(3), first]
        want = torch.tanh(cls @ ours.pooler.dense.weight.T + ours.pooler.dense.bias)
    torch.testing.assert_close(out.pooler_output, want, rtol=1e-5, atol=1e-6)


def test_kernelzoo_and_the_family_import_no_checkpoint_libraries():
    import subprocess
    import sys

    code = ("import sys, kernelzoo; m = kernelzoo.create_model('bert-test'); "
            "import kernelzoo.plugins.bert; "
            "print(sorted(n for n in ('safetensors', 'tokenizers', 'transformers') "
            "if n in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"
