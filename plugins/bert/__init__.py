"""The ``bert`` model family: BERT encoders run unpadded on kernelzoo's varlen
flash attention.

Models ``bert-base`` (bert-base-uncased's architecture), ``bert-large``,
``bert-minilm-l6`` (sentence-transformers' all-MiniLM-L6-v2) and the tiny
``bert-test``. Module names and state dicts are Hugging Face ``BertModel``'s,
so a Hugging Face checkpoint folder loads as it is:

    kernelzoo.create_model("bert-minilm-l6", pretrained="path/to/all-MiniLM-L6-v2")
    kernelzoo.from_pretrained("path/to/any-bert-checkpoint")

Sentence embeddings: :class:`SentenceEncoder` (``kernelzoo embed``). Training
example: ``kernelzoo train bert-test`` (masked tokens of a synthetic language).

``safetensors`` and ``tokenizers`` are needed only to read checkpoints and
tokenize; they are imported when used.
"""

from __future__ import annotations

import torch

from kernelzoo.registry import ModelFamily

from .model import BertConfig, BertModel, BertOutput

__all__ = ["BertConfig", "BertModel", "BertOutput", "SentenceEncoder", "family",
           "minilm_path", "load_pretrained", "from_pretrained"]


def build(config: BertConfig) -> BertModel:
    return BertModel(config)


def example_inputs(model: BertModel, batch_size: int = 2) -> tuple:
    """``(input_ids, attention_mask, token_type_ids)``: ``batch_size`` sequences
    of different lengths (13, 7, 10, ...; at least 1 token) right-padded to 13,
    with both token types."""
    config = model.config
    seqlen = min(13, config.max_position_embeddings)
    g = torch.Generator().manual_seed(batch_size)
    lengths = [max(1, seqlen - (6 * i) % seqlen) for i in range(batch_size)]
    ids = torch.randint(1, config.vocab_size, (batch_size, seqlen), generator=g)
    mask = torch.zeros(batch_size, seqlen, dtype=torch.long)
    types = torch.zeros(batch_size, seqlen, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
        types[i, n // 2:n] = min(1, config.type_vocab_size - 1)
    ids = ids * mask            # the padding token (0) where the mask is 0
    return ids, mask, types


def load_pretrained(model, path):
    """Family hook: see :func:`kernelzoo.plugins.bert.pretrained.load_pretrained`."""
    from .pretrained import load_pretrained as load

    return load(model, path)


def from_pretrained(path, **overrides):
    """Family hook: see :func:`kernelzoo.plugins.bert.pretrained.from_pretrained`."""
    from .pretrained import from_pretrained as build_from

    return build_from(path, **overrides)


def train_example(model_name: str, **options) -> dict:
    """``kernelzoo train``: see :func:`kernelzoo.plugins.bert.train.train`."""
    from .train import train

    return train(model_name, **options)


def __getattr__(name):
    # The encoder and the packaged-weights helper are imported when first used.
    if name == "SentenceEncoder":
        from .sentence import SentenceEncoder

        return SentenceEncoder
    if name == "minilm_path":
        from .weights import minilm_path

        return minilm_path
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_presets = {
    "base": BertConfig(),
    "large": BertConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                        intermediate_size=4096),
    "minilm-l6": BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                            intermediate_size=1536),
    "test": BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2,
                       num_attention_heads=4, intermediate_size=37,
                       max_position_embeddings=64),
}

family = ModelFamily(
    name="bert",
    build=build,
    presets=_presets,
    example_inputs=example_inputs,
    description="BERT encoders (Hugging Face BertModel's state dict), unpadded, on "
                "kernelzoo's varlen flash attention",
    train=train_example,
    load_pretrained=load_pretrained,
    from_pretrained=from_pretrained,
    model_types=("bert",),
)
