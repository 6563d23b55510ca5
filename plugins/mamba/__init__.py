"""The ``mamba`` model family: Mamba language models on kernelzoo's selective scan.

Models at the published configurations ``mamba-130m``, ``mamba-370m``,
``mamba-790m``, ``mamba-1.4b``, ``mamba-2.8b`` (randomly initialised) and the
tiny ``mamba-test``. Module names, state dicts and config fields are Hugging
Face ``MambaForCausalLM``'s, so a Hugging Face checkpoint folder loads as it is:

    kernelzoo.create_model("mamba-130m", pretrained="path/to/mamba-130m-hf")
    kernelzoo.from_pretrained("path/to/any-mamba-checkpoint")

Generation: :meth:`MambaForCausalLM.generate` (``kernelzoo generate``).
Training example: ``kernelzoo train mamba-test`` (the selective-copying task).

``safetensors`` is needed only to read checkpoints; it is imported when used.
"""

from __future__ import annotations

import torch

from kernelzoo.registry import ModelFamily

from .model import GenerateOutput, MambaCausalLMOutput, MambaConfig, MambaForCausalLM

__all__ = ["MambaConfig", "MambaForCausalLM", "MambaCausalLMOutput", "GenerateOutput", "family",
           "load_pretrained", "from_pretrained"]


def build(config: MambaConfig) -> MambaForCausalLM:
    return MambaForCausalLM(config)


def example_inputs(model: MambaForCausalLM, batch_size: int = 2) -> tuple:
    """``(input_ids, attention_mask)``: ``batch_size`` sequences of different
    lengths (13, 7, 10, ...; at least 1 token) left-padded to 13 (as for
    generation), the padding token 0."""
    config = model.config
    seqlen = 13
    g = torch.Generator().manual_seed(batch_size)
    lengths = [max(1, seqlen - (6 * i) % seqlen) for i in range(batch_size)]
    ids = torch.randint(1, config.vocab_size, (batch_size, seqlen), generator=g)
    mask = torch.zeros(batch_size, seqlen, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, seqlen - n:] = 1
    return ids * mask, mask


def load_pretrained(model, path):
    """Family hook: see :func:`kernelzoo.plugins.mamba.pretrained.load_pretrained`."""
    from .pretrained import load_pretrained as load

    return load(model, path)


def from_pretrained(path, **overrides):
    """Family hook: see :func:`kernelzoo.plugins.mamba.pretrained.from_pretrained`."""
    from .pretrained import from_pretrained as build_from

    return build_from(path, **overrides)


def train_example(model_name: str, **options) -> dict:
    """``kernelzoo train``: see :func:`kernelzoo.plugins.mamba.train.train`."""
    from .train import train

    return train(model_name, **options)


def _published(hidden_size: int, num_hidden_layers: int) -> MambaConfig:
    # state-spaces/mamba-*: vocab 50277 padded to a multiple of 8 (50280),
    # d_state 16, expand 2, d_conv 4, dt_rank ceil(d_model / 16).
    return MambaConfig(vocab_size=50280, hidden_size=hidden_size,
                       num_hidden_layers=num_hidden_layers, state_size=16, expand=2,
                       conv_kernel=4)


_presets = {
    "130m": _published(768, 24),
    "370m": _published(1024, 48),
    "790m": _published(1536, 48),
    "1.4b": _published(2048, 48),
    "2.8b": _published(2560, 64),
    "test": MambaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, state_size=8,
                        expand=2, conv_kernel=4),
}

family = ModelFamily(
    name="mamba",
    build=build,
    presets=_presets,
    example_inputs=example_inputs,
    description="Mamba language models (Hugging Face MambaForCausalLM's state dict) on "
                "kernelzoo's selective scan",
    train=train_example,
    load_pretrained=load_pretrained,
    from_pretrained=from_pretrained,
    model_types=("mamba",),
)
