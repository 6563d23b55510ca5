"""Checkpoint folders for the mamba family: folders written by transformers'
save_pretrained (random tiny models, no download) load through
create_model(..., pretrained=PATH) and kernelzoo.from_pretrained(PATH) and
reproduce transformers' logits; mismatches raise errors naming the key."""

from __future__ import annotations

import json
import os

import pytest
import torch

import kernelzoo
from kernelzoo.plugins.mamba.pretrained import CheckpointError, save_pretrained

transformers = pytest.importorskip("transformers", reason="transformers is not installed")
pytest.importorskip("safetensors", reason="safetensors is not installed")

TINY = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, state_size=8, expand=2,
            conv_kernel=4)


def hf_folder(tmp_path, seed=0, **kw):
    torch.manual_seed(seed)
    ref = transformers.MambaForCausalLM(transformers.MambaConfig(**{**TINY, **kw})).eval()
    path = tmp_path / f"ckpt{seed}"
    ref.save_pretrained(path)
    return ref, path


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


IDS = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(0))


def test_create_model_pretrained(tmp_path):
    ref, path = hf_folder(tmp_path)
    from safetensors.torch import load_file

    assert "lm_head.weight" not in load_file(path / "model.safetensors")   # tied, left out
    ours = kernelzoo.create_model("mamba-test", pretrained=path).eval()
    torch.testing.assert_close(logits(ours, IDS), logits(ref, IDS), rtol=1e-5, atol=1e-5)
    assert ours.lm_head.weight is ours.backbone.embeddings.weight


def test_from_pretrained_builds_from_config(tmp_path):
    ref, path = hf_folder(tmp_path, seed=1, hidden_size=40, num_hidden_layers=3,
                          time_step_rank=5)
    ours = kernelzoo.from_pretrained(path).eval()
    assert (ours.config.hidden_size, ours.config.num_hidden_layers, ours.config.dt_rank) == \
        (40, 3, 5)
    torch.testing.assert_close(logits(ours, IDS), logits(ref, IDS), rtol=1e-5, atol=1e-5)


def test_pytorch_model_bin(tmp_path):
    torch.manual_seed(2)
    ref = transformers.MambaForCausalLM(transformers.MambaConfig(**TINY)).eval()
    path = tmp_path / "bin"
    path.mkdir()
    ref.config.to_json_file(path / "config.json")
    torch.save(ref.state_dict(), path / "pytorch_model.bin")      # with lm_head.weight
    ours = kernelzoo.from_pretrained(path).eval()
    torch.testing.assert_close(logits(ours, IDS), logits(ref, IDS), rtol=1e-5, atol=1e-5)


def test_our_save_pretrained_loads_in_transformers(tmp_path):
    torch.manual_seed(3)
    ours = kernelzoo.create_model("mamba-test").eval()
    save_pretrained(ours, tmp_path / "ours")
    ref = transformers.MambaForCausalLM.from_pretrained(tmp_path / "ours").eval()
    torch.testing.assert_close(logits(ours, IDS), logits(ref, IDS), rtol=1e-5, atol=1e-5)
    again = kernelzoo.from_pretrained(tmp_path / "ours").eval()
    torch.testing.assert_close(logits(again, IDS), logits(ours, IDS), rtol=0, atol=0)


def test_old_embedding_key_name(tmp_path):
    from safetensors.torch import load_file, save_file

    ref, path = hf_folder(tmp_path, seed=4)
    state = load_file(path / "model.safetensors")
    state["backbone.embedding.weight"] = state.pop("backbone.embeddings.weight")
    save_file(state, path / "model.safetensors")
    ours = kernelzoo.from_pretrained(path).eval()
    torch.testing.assert_close(logits(ours, IDS), logits(ref, IDS), rtol=1e-5, atol=1e-5)


def _edit_weights(path, fn):
    from safetensors.torch import load_file, save_file

    state = load_file(path / "model.safetensors")
    fn(state)
    save_file(state, path / "model.safetensors")


def test_config_mismatch_names_key(tmp_path):
    _, path = hf_folder(tmp_path, state_size=16)
    with pytest.raises(CheckpointError, match="state_size is 16 in config.json but 8"):
        kernelzoo.create_model("mamba-test", pretrained=path)


def test_missing_key(tmp_path):
    _, path = hf_folder(tmp_path)
    _edit_weights(path, lambda s: s.pop("backbone.layers.1.mixer.D"))
    with pytest.raises(CheckpointError, match=r"missing key 'backbone\.layers\.1\.mixer\.D'"):
        kernelzoo.from_pretrained(path)


def test_unexpected_key(tmp_path):
    _, path = hf_folder(tmp_path)
    _edit_weights(path, lambda s: s.__setitem__("backbone.layers.2.mixer.D", torch.ones(64)))
    with pytest.raises(CheckpointError, match=r"unexpected key 'backbone\.layers\.2\.mixer\.D'"):
        kernelzoo.create_model("mamba-test", pretrained=path)


def test_shape_mismatch(tmp_path):
    _, path = hf_folder(tmp_path)
    _edit_weights(path, lambda s: s.__setitem__("backbone.layers.0.mixer.A_log",
                                                torch.zeros(64, 9)))
    with pytest.raises(CheckpointError, match=r"'backbone\.layers\.0\.mixer\.A_log' has shape "
                                              r"\(64, 9\) in the checkpoint but \(64, 8\)"):
        kernelzoo.from_pretrained(path)


def test_untied_head_refused(tmp_path):
    _, path = hf_folder(tmp_path)
    _edit_weights(path, lambda s: s.__setitem__("lm_head.weight", torch.zeros(64, 32)))
    with pytest.raises(CheckpointError, match="'lm_head.weight' differs"):
        kernelzoo.from_pretrained(path)


def test_wrong_model_type_and_missing_files(tmp_path):
    _, path = hf_folder(tmp_path)
    config = json.loads((path / "config.json").read_text())
    config["model_type"] = "mamba2"
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(Exception, match="mamba2"):
        kernelzoo.create_model("mamba-test", pretrained=path)
    os.remove(path / "model.safetensors")
    with pytest.raises(FileNotFoundError, match="neither model.safetensors"):
        kernelzoo.create_model("mamba-test", pretrained=path)
