"""Loading Hugging Face BERT checkpoint folders into :class:`BertModel`.

A folder holds ``config.json`` (Hugging Face's ``BertConfig``) and the weights,
``model.safetensors`` (read with ``safetensors``) or else ``pytorch_model.bin``
(``torch.load(weights_only=True)``). A sentence-transformers folder is one too.

Key names. The state dict is ``BertModel``'s. A checkpoint of a model with a
head (``BertForMaskedLM``, ``BertForSequenceClassification``, ...) stores the
encoder under the prefix ``bert.``: then only the ``bert.*`` keys are read and
the heads (``cls.*``, ``classifier.*``, ``qa_outputs.*``, ...) are ignored.
Unprefixed checkpoints may carry ``cls.*`` pre-training heads, also ignored.
The buffers ``embeddings.position_ids`` and ``embeddings.token_type_ids``
(saved by older transformers; constants) are ignored, and the TensorFlow-era
names ``LayerNorm.gamma``/``LayerNorm.beta`` read as ``weight``/``bias``. Any
other key the model does not have is an error, as is a key it has but the
checkpoint lacks, or a shape that differs: each names the key.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import torch

from .model import BertConfig, BertModel

__all__ = ["CheckpointError", "read_config", "config_from_hf", "check_config",
           "read_state_dict", "convert_state_dict", "load_pretrained", "from_pretrained",
           "ARCHITECTURE_KEYS"]


class CheckpointError(ValueError):
    """A checkpoint folder does not fit the model (a ``ValueError``)."""


#: Config fields that change the architecture (shapes or computation): a
#: checkpoint's config must agree with the preset on these. Dropout rates and
#: the initialiser range do not matter for loading.
ARCHITECTURE_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "hidden_act", "max_position_embeddings",
                     "type_vocab_size", "layer_norm_eps", "pad_token_id")

#: Hugging Face config keys that select something this family does not implement,
#: with the only value it supports.
_UNSUPPORTED = {"is_decoder": False, "add_cross_attention": False,
                "position_embedding_type": "absolute"}

#: Checkpoint buffers that are constants and are not in the state dict.
_IGNORED_KEYS = ("embeddings.position_ids", "embeddings.token_type_ids")


def _files(path: str) -> tuple[str, str]:
    """(config.json, weights file) of a checkpoint folder."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path!r} is not a folder (a checkpoint folder holds "
                                f"config.json and model.safetensors or pytorch_model.bin)")
    config = os.path.join(path, "config.json")
    if not os.path.isfile(config):
        raise FileNotFoundError(f"{path!r} has no config.json")
    for name in ("model.safetensors", "pytorch_model.bin"):
        weights = os.path.join(path, name)
        if os.path.isfile(weights):
            return config, weights
    raise FileNotFoundError(f"{path!r} has neither model.safetensors nor pytorch_model.bin")


def read_config(path: str) -> dict:
    """The folder's ``config.json`` as a dict."""
    config_path = os.path.join(os.fspath(path), "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{os.fspath(path)!r} has no config.json")
    with open(config_path, encoding="utf-8") as f:
        try:
            config = json.load(f)
        except ValueError as e:
            raise CheckpointError(f"{config_path}: not valid JSON: {e}") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_path}: expected a JSON object")
    return config


def config_from_hf(hf: dict, **overrides) -> BertConfig:
    """A :class:`BertConfig` from a Hugging Face config dict (unknown keys are
    ignored; features this family lacks are refused), with ``overrides``."""
    model_type = hf.get("model_type", "bert")
    if model_type != "bert":
        raise CheckpointError(f"config.json: model_type is {model_type!r}; the bert family "
                              f"loads model_type 'bert'")
    for key, supported in _UNSUPPORTED.items():
        if key in hf and hf[key] is not None and hf[key] != supported:
            raise CheckpointError(f"config.json: {key} is {hf[key]!r}; the bert family "
                                  f"supports only {supported!r}")
    fields = {f.name for f in dataclasses.fields(BertConfig)}
    kwargs = {k: v for k, v in hf.items() if k in fields and v is not None}
    unknown = [k for k in overrides if k not in fields]
    if unknown:
        raise TypeError(f"unknown override(s) {', '.join(map(repr, unknown))}; valid keys: "
                        f"{', '.join(sorted(fields))}")
    kwargs.update(overrides)
    return BertConfig(**kwargs)


def check_config(config: BertConfig, hf: dict, what: str = "the model") -> None:
    """Raises :class:`CheckpointError` naming the first architecture key on
    which the checkpoint's config ``hf`` and ``config`` disagree."""
    checkpoint = config_from_hf(hf)
    for key in ARCHITECTURE_KEYS:
        ours, theirs = getattr(config, key), getattr(checkpoint, key)
        if ours != theirs:
            raise CheckpointError(
                f"config.json does not match {what}: {key} is {theirs!r} in config.json but "
                f"{ours!r} in {what} (use kernelzoo.from_pretrained(path) to build the model "
                f"from the checkpoint's own config)")


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """The tensors of the folder's ``model.safetensors`` (else ``pytorch_model.bin``)."""
    _, weights = _files(path)
    if weights.endswith(".safetensors"):
        from safetensors.torch import load_file  # a dependency of this plugin only

        return load_file(weights, device="cpu")
    state = torch.load(weights, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise CheckpointError(f"{weights}: expected a state dict, got {type(state).__name__}")
    return state


def convert_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with ``BertModel``'s key names: the ``bert.`` prefix removed
    (keys outside it dropped), ``cls.*`` heads and constant buffers dropped,
    ``LayerNorm.gamma``/``beta`` renamed. See the module docstring."""
    if any(k.startswith("bert.") for k in state):
        state = {k[len("bert."):]: v for k, v in state.items() if k.startswith("bert.")}
    out = {}
    for k, v in state.items():
        if k.startswith("cls.") or k in _IGNORED_KEYS:
            continue
        if k.endswith(".gamma") and "LayerNorm" in k:
            k = k[:-len("gamma")] + "weight"
        elif k.endswith(".beta") and "LayerNorm" in k:
            k = k[:-len("beta")] + "bias"
        out[k] = v
    return out


def load_state_dict(model: BertModel, state: dict[str, torch.Tensor], where: str) -> None:
    """Copies ``state`` (converted) into ``model``, with an error naming the key
    for a missing or unexpected key or a wrong shape."""
    state = convert_state_dict(state)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if unexpected:
        raise CheckpointError(
            f"{where}: unexpected key {unexpected[0]!r} (not in the model" +
            (f"; {len(unexpected)} unexpected keys in all" if len(unexpected) > 1 else "") +
            "); does config.json describe these weights?")
    if missing:
        hint = ""
        if all(k.startswith("pooler.") for k in missing):
            hint = (" (the checkpoint has no pooler, e.g. saved from BertForMaskedLM: build "
                    "with add_pooling_layer=False)")
        raise CheckpointError(
            f"{where}: missing key {missing[0]!r}" +
            (f" ({len(missing)} missing keys in all)" if len(missing) > 1 else "") + hint)
    for k, t in own.items():
        if tuple(state[k].shape) != tuple(t.shape):
            raise CheckpointError(f"{where}: key {k!r} has shape {tuple(state[k].shape)} in the "
                                  f"checkpoint but {tuple(t.shape)} in the model")
        if not state[k].is_floating_point():
            raise CheckpointError(f"{where}: key {k!r} has dtype {state[k].dtype}, expected a "
                                  f"floating-point tensor")
    model.load_state_dict(state, strict=True)


def load_pretrained(model: BertModel, path: Any) -> BertModel:
    """Loads the checkpoint folder ``path`` into ``model`` (the family's
    ``load_pretrained`` hook): its config must match ``model.config`` on
    :data:`ARCHITECTURE_KEYS`, its keys and shapes the model's."""
    path = os.fspath(path)
    if not isinstance(model, BertModel):
        raise TypeError(f"load_pretrained expects a bert BertModel, got {type(model).__name__}")
    _, weights = _files(path)
    check_config(model.config, read_config(path), what="the model's preset")
    load_state_dict(model, read_state_dict(path), weights)
    return model


def from_pretrained(path: Any, **overrides) -> BertModel:
    """A :class:`BertModel` built from the folder's ``config.json`` (with
    ``overrides``, e.g. dropout rates) holding its weights."""
    path = os.fspath(path)
    _, weights = _files(path)
    model = BertModel(config_from_hf(read_config(path), **overrides))
    load_state_dict(model, read_state_dict(path), weights)
    return model
