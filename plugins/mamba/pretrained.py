"""Loading Hugging Face Mamba checkpoint folders into :class:`MambaForCausalLM`.

A folder holds ``config.json`` (Hugging Face's ``MambaConfig``, ``model_type``
``"mamba"``) and the weights, ``model.safetensors`` (read with
``safetensors``) or else ``pytorch_model.bin`` (``torch.load(weights_only=True)``).

Key names are ``MambaForCausalLM``'s. ``lm_head.weight`` is tied to
``backbone.embeddings.weight``: a checkpoint may leave it out (transformers'
``save_pretrained`` does); if present it must equal the embeddings. The key
``backbone.embedding.weight`` of older checkpoints reads as
``backbone.embeddings.weight`` (as transformers' load hook does). Any other key
the model does not have is an error, as is a key it has but the checkpoint
lacks, or a shape that differs: each names the key.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch

from kernelzoo.checkpoints import (CheckpointError, check_state_dict, config_from_dict,
                                   read_config, read_state_dict)
from kernelzoo.checkpoints import check_config as check_checkpoint_config
from kernelzoo.checkpoints import checkpoint_files as _files

from .model import MambaConfig, MambaForCausalLM

__all__ = ["CheckpointError", "read_config", "config_from_hf", "check_config",
           "read_state_dict", "convert_state_dict", "load_pretrained", "from_pretrained",
           "save_pretrained", "ARCHITECTURE_KEYS"]


#: Config fields that change the architecture: a checkpoint's config must agree
#: with the preset on these (``time_step_rank`` compared once resolved).
ARCHITECTURE_KEYS = ("vocab_size", "hidden_size", "state_size", "num_hidden_layers",
                     "expand", "conv_kernel", "time_step_rank", "use_bias", "use_conv_bias",
                     "hidden_act", "residual_in_fp32", "layer_norm_epsilon")

_TIED = "lm_head.weight"
_EMBED = "backbone.embeddings.weight"


def config_from_hf(hf: dict, **overrides) -> MambaConfig:
    """A :class:`MambaConfig` from a Hugging Face config dict (unknown keys are
    ignored), with ``overrides``."""
    return config_from_dict(MambaConfig, hf, overrides, model_type="mamba", family="mamba")


def check_config(config: MambaConfig, hf: dict, what: str = "the model") -> None:
    """Raises :class:`CheckpointError` naming the first architecture key on
    which the checkpoint's config ``hf`` and ``config`` disagree
    (``time_step_rank`` compared once resolved)."""
    check_checkpoint_config(
        config, config_from_hf(hf), ARCHITECTURE_KEYS, what,
        get=lambda c, key: c.dt_rank if key == "time_step_rank" else getattr(c, key))


def convert_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with ``MambaForCausalLM``'s key names (``embedding.`` ->
    ``embeddings.``) and ``lm_head.weight`` filled in from the embeddings when absent."""
    out = {}
    for k, v in state.items():
        if k == "backbone.embedding.weight":
            k = _EMBED
        out[k] = v
    if _TIED not in out and _EMBED in out:
        out[_TIED] = out[_EMBED]
    return out


def load_state_dict(model: MambaForCausalLM, state: dict[str, torch.Tensor], where: str) -> None:
    """Copies ``state`` (converted) into ``model``, with an error naming the key
    for a missing or unexpected key, a wrong shape or untied head."""
    state = convert_state_dict(state)
    check_state_dict(model.state_dict(), state, where)
    if state[_TIED] is not state[_EMBED] and not torch.equal(state[_TIED], state[_EMBED]):
        raise CheckpointError(f"{where}: key {_TIED!r} differs from {_EMBED!r}; the mamba "
                              f"family ties the output head to the embeddings")
    state = dict(state)
    del state[_TIED]
    result = model.load_state_dict(state, strict=False)
    assert list(result.missing_keys) in ([], [_TIED]) and not result.unexpected_keys, result


def load_pretrained(model: MambaForCausalLM, path: Any) -> MambaForCausalLM:
    """Loads the checkpoint folder ``path`` into ``model`` (the family's
    ``load_pretrained`` hook): its config must match ``model.config`` on
    :data:`ARCHITECTURE_KEYS`, its keys and shapes the model's."""
    path = os.fspath(path)
    if not isinstance(model, MambaForCausalLM):
        raise TypeError(f"load_pretrained expects a mamba MambaForCausalLM, got "
                        f"{type(model).__name__}")
    _, weights = _files(path)
    check_config(model.config, read_config(path), what="the model's preset")
    load_state_dict(model, read_state_dict(path), weights)
    return model


def from_pretrained(path: Any, **overrides) -> MambaForCausalLM:
    """A :class:`MambaForCausalLM` built from the folder's ``config.json`` (with
    ``overrides``) holding its weights."""
    path = os.fspath(path)
    _, weights = _files(path)
    model = MambaForCausalLM(config_from_hf(read_config(path), **overrides))
    load_state_dict(model, read_state_dict(path), weights)
    return model


def save_pretrained(model: MambaForCausalLM, path: Any) -> None:
    """Writes ``config.json`` and ``model.safetensors`` (without the tied
    ``lm_head.weight``, as transformers does) into the folder ``path``."""
    from safetensors.torch import save_file

    path = os.fspath(path)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w", encoding="utf-8") as f:
        json.dump(model.config.to_hf_dict(), f, indent=2)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items() if k != _TIED}
    save_file(state, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
