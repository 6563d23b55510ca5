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

import os
from typing import Any

import torch

from kernelzoo.checkpoints import (CheckpointError, check_state_dict, config_from_dict,
                                   read_config, read_state_dict)
from kernelzoo.checkpoints import check_config as check_checkpoint_config
from kernelzoo.checkpoints import checkpoint_files as _files

from .model import BertConfig, BertModel

__all__ = ["CheckpointError", "read_config", "config_from_hf", "check_config",
           "read_state_dict", "convert_state_dict", "load_pretrained", "from_pretrained",
           "ARCHITECTURE_KEYS"]


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


def config_from_hf(hf: dict, **overrides) -> BertConfig:
    """A :class:`BertConfig` from a Hugging Face config dict (unknown keys are
    ignored; features this family lacks are refused), with ``overrides``."""
    return config_from_dict(BertConfig, hf, overrides, model_type="bert", family="bert",
                            unsupported=_UNSUPPORTED)


def check_config(config: BertConfig, hf: dict, what: str = "the model") -> None:
    """Raises :class:`CheckpointError` naming the first architecture key on
    which the checkpoint's config ``hf`` and ``config`` disagree."""
    check_checkpoint_config(config, config_from_hf(hf), ARCHITECTURE_KEYS, what)


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

    def hint(missing):
        if all(k.startswith("pooler.") for k in missing):
            return (" (the checkpoint has no pooler, e.g. saved from BertForMaskedLM: build "
                    "with add_pooling_layer=False)")
        return ""

    check_state_dict(model.state_dict(), state, where, hint)
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
