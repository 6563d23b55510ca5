"""Checkpoint folders as Hugging Face saves them, for model families'
``load_pretrained`` / ``from_pretrained`` hooks (:class:`kernelzoo.ModelFamily`).

A folder holds ``config.json`` and the weights, ``model.safetensors`` (read with
``safetensors``, imported only then) or else ``pytorch_model.bin``
(``torch.load(weights_only=True)``). Errors about a folder that does not fit a
model are :class:`CheckpointError` (a ``ValueError``) and name the key;
missing files are ``FileNotFoundError``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Iterable, Mapping

import torch

__all__ = ["CheckpointError", "checkpoint_files", "read_config", "read_state_dict",
           "config_from_dict", "check_config", "check_state_dict"]

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class CheckpointError(ValueError):
    """A checkpoint folder does not fit the model (a ``ValueError``)."""


def checkpoint_files(path: Any) -> tuple[str, str]:
    """``(config.json, weights file)`` of the checkpoint folder ``path``."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path!r} is not a folder (a checkpoint folder holds "
                                f"config.json and model.safetensors or pytorch_model.bin)")
    config = os.path.join(path, "config.json")
    if not os.path.isfile(config):
        raise FileNotFoundError(f"{path!r} has no config.json")
    for name in WEIGHT_FILES:
        weights = os.path.join(path, name)
        if os.path.isfile(weights):
            return config, weights
    raise FileNotFoundError(f"{path!r} has neither model.safetensors nor pytorch_model.bin")


def read_config(path: Any) -> dict:
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


def read_state_dict(path: Any) -> dict[str, torch.Tensor]:
    """The tensors of the folder's ``model.safetensors`` (else ``pytorch_model.bin``), on the CPU."""
    _, weights = checkpoint_files(path)
    if weights.endswith(".safetensors"):
        from safetensors.torch import load_file  # needed only to read checkpoints

        return load_file(weights, device="cpu")
    state = torch.load(weights, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise CheckpointError(f"{weights}: expected a state dict, got {type(state).__name__}")
    return state


def config_from_dict(config_class: type, hf: Mapping[str, Any], overrides: Mapping[str, Any],
                     *, model_type: str, family: str,
                     unsupported: Mapping[str, Any] = {}) -> Any:
    """``config_class`` (a dataclass with Hugging Face's field names) from the
    config dict ``hf`` (keys it lacks are ignored), with ``overrides``.

    Raises :class:`CheckpointError` when ``hf``'s ``model_type`` is not
    ``model_type``, when a key of ``unsupported`` has another value than the
    one the family supports, or when the class rejects a value; ``TypeError``
    for an override that is not a field."""
    found = hf.get("model_type", model_type)
    if found != model_type:
        raise CheckpointError(f"config.json: model_type is {found!r}; the {family} family "
                              f"loads model_type {model_type!r}")
    for key, supported in unsupported.items():
        if hf.get(key) is not None and hf[key] != supported:
            raise CheckpointError(f"config.json: {key} is {hf[key]!r}; the {family} family "
                                  f"supports only {supported!r}")
    fields = {f.name for f in dataclasses.fields(config_class)}
    unknown = [k for k in overrides if k not in fields]
    if unknown:
        raise TypeError(f"unknown override(s) {', '.join(map(repr, unknown))}; valid keys: "
                        f"{', '.join(sorted(fields))}")
    kwargs = {k: v for k, v in hf.items() if k in fields and v is not None}
    kwargs.update(overrides)
    try:
        return config_class(**kwargs)
    except ValueError as e:
        raise CheckpointError(f"config.json: {e}") from None


def check_config(config: Any, checkpoint: Any, keys: Iterable[str], what: str = "the model",
                 get: Callable[[Any, str], Any] = getattr) -> None:
    """Raises :class:`CheckpointError` naming the first of ``keys`` on which the
    model's ``config`` and the checkpoint's (``checkpoint``, the same class)
    disagree."""
    for key in keys:
        ours, theirs = get(config, key), get(checkpoint, key)
        if ours != theirs:
            raise CheckpointError(
                f"config.json does not match {what}: {key} is {theirs!r} in config.json but "
                f"{ours!r} in {what} (use kernelzoo.from_pretrained(path) to build the model "
                f"from the checkpoint's own config)")


def check_state_dict(own: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor],
                     where: str, missing_hint: Callable[[list], str] = lambda missing: "") -> None:
    """Raises :class:`CheckpointError` naming the key when the checkpoint's
    ``state`` has a key the model's state dict ``own`` lacks, lacks one of its
    keys (``missing_hint(missing)`` is appended to that message), or holds a
    tensor of another shape or of no floating-point dtype."""
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if unexpected:
        raise CheckpointError(
            f"{where}: unexpected key {unexpected[0]!r} (not in the model" +
            (f"; {len(unexpected)} unexpected keys in all" if len(unexpected) > 1 else "") +
            "); does config.json describe these weights?")
    if missing:
        raise CheckpointError(
            f"{where}: missing key {missing[0]!r}" +
            (f" ({len(missing)} missing keys in all)" if len(missing) > 1 else "") +
            missing_hint(missing))
    for k, t in own.items():
        if tuple(state[k].shape) != tuple(t.shape):
            raise CheckpointError(f"{where}: key {k!r} has shape {tuple(state[k].shape)} in the "
                                  f"checkpoint but {tuple(t.shape)} in the model")
        if not state[k].is_floating_point():
            raise CheckpointError(f"{where}: key {k!r} has dtype {state[k].dtype}, expected a "
                                  f"floating-point tensor")
