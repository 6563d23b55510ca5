"""BERT (Devlin et al., 2019) on kernelzoo's varlen flash attention, run unpadded.

Module names and the state dict are exactly those of Hugging Face
``transformers.BertModel`` (``embeddings.word_embeddings``, ...,
``encoder.layer.N.attention.self.query``, ..., ``pooler.dense``), so a Hugging
Face checkpoint loads as it is (see :mod:`kernelzoo.plugins.bert.pretrained`).

Execution is unpadded (the "rmpad" technique): a padded batch ``(batch,
seqlen)`` with an ``attention_mask`` is gathered into the packed tokens
``(total, hidden)`` of the real tokens only, every layer (embeddings, linear
layers, layer norms, the MLP) runs on those, attention runs through
:func:`kernelzoo.ops.flash_attn_varlen_func` with ``cu_seqlens``, and the
result is scattered back into ``(batch, seqlen, hidden)``. Nothing is computed
on padding. Packed input (``input_ids`` of shape ``(total,)`` with
``cu_seqlens``) is accepted directly and gives packed output.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kernelzoo.nn.inference import onednn_linear, onednn_linear_ok
from kernelzoo.ops import flash_attn_varlen_func

__all__ = ["BertConfig", "BertModel", "BertOutput", "ACTIVATIONS"]


def _gelu_tanh(x: Tensor) -> Tensor:
    return F.gelu(x, approximate="tanh")


#: ``hidden_act`` values (Hugging Face's names) and their functions.
ACTIVATIONS = {
    "gelu": F.gelu,                 # exact (erf) GELU, as Hugging Face's "gelu"
    "gelu_new": _gelu_tanh,
    "gelu_pytorch_tanh": _gelu_tanh,
    "gelu_fast": _gelu_tanh,
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
}


#: oneDNN post-ops (torch.ops.mkldnn._linear_pointwise) for activations: (attr, algorithm).
_POST_OPS = {"gelu": ("gelu", "none"), "gelu_new": ("gelu", "tanh"),
             "gelu_pytorch_tanh": ("gelu", "tanh"), "gelu_fast": ("gelu", "tanh"),
             "relu": ("relu", "")}


def _linear(x: Tensor, layer: nn.Linear, act: Optional[str] = None) -> Tensor:
    """``act(layer(x))`` for 2-D ``x``. In CPU inference (:mod:`kernelzoo.nn.inference`)
    this is one oneDNN call with the bias and the activation fused into the
    matrix product: about twice as fast as ``addmm`` for BERT's shapes in
    float32 on this project's CPUs (measured; same float32 arithmetic, another
    summation order). Elsewhere (autograd, torch.compile, other devices) the
    plain ``F.linear``."""
    post = _POST_OPS.get(act, ("none", "")) if act is not None else ("none", "")
    if onednn_linear_ok(x, layer.weight) and (act is None or act in _POST_OPS):
        return onednn_linear(x, layer.weight, layer.bias, *post)
    y = F.linear(x, layer.weight, layer.bias)
    return ACTIVATIONS[act](y) if act is not None else y


@dataclasses.dataclass
class BertConfig:
    """The architecture, with Hugging Face ``BertConfig``'s field names and defaults
    (those of ``bert-base-uncased``)."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    initializer_range: float = 0.02
    add_pooling_layer: bool = True

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"BertConfig: {name} must be an int >= 1, got {v!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"BertConfig: hidden_size ({self.hidden_size}) must be a multiple "
                             f"of num_attention_heads ({self.num_attention_heads})")
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"BertConfig: unsupported hidden_act {self.hidden_act!r}; "
                             f"supported: {', '.join(ACTIVATIONS)}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            v = getattr(self, name)
            if not 0 <= v < 1:
                raise ValueError(f"BertConfig: {name} must be in [0, 1), got {v!r}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


@dataclasses.dataclass
class BertOutput:
    """What :class:`BertModel` returns: ``last_hidden_state`` and ``pooler_output``
    (None without a pooler), as attributes, by key or by index (``out[0]``),
    like Hugging Face's ``BaseModelOutputWithPoolingAndCrossAttentions``;
    ``cu_seqlens`` is set for packed input."""

    last_hidden_state: Tensor
    pooler_output: Optional[Tensor] = None
    cu_seqlens: Optional[Tensor] = None

    def to_tuple(self) -> tuple:
        return tuple(t for t in (self.last_hidden_state, self.pooler_output) if t is not None)

    def __getitem__(self, i):
        if isinstance(i, str):
            return getattr(self, i)
        return self.to_tuple()[i]

    def __iter__(self):
        return iter(self.to_tuple())

    def __len__(self) -> int:
        return len(self.to_tuple())


# The output is a pytree node (a tuple of its tensors), so torch.compile and
# kernelzoo.testing see inside it.
try:
    import torch.utils._pytree as _pytree

    _pytree.register_pytree_node(
        BertOutput,
        lambda o: ([o.last_hidden_state, o.pooler_output, o.cu_seqlens], None),
        lambda values, _: BertOutput(*values),
        serialized_type_name="kernelzoo.plugins.bert.model.BertOutput",
    )
except (ValueError, AttributeError):  # already registered (module reloaded)
    pass


class BertEmbeddings(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size,
                                            padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings,
                                                config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor, position_ids: Tensor) -> Tensor:
        x = (self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
             + self.position_embeddings(position_ids))
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(nn.Module):
    """Multi-head self-attention of packed tokens ``(total, hidden)`` through the
    varlen flash-attention op; attention dropout is the op's ``dropout_p``."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.dropout_p = config.attention_probs_dropout_prob
        h = config.hidden_size
        self.query = nn.Linear(h, h)
        self.key = nn.Linear(h, h)
        self.value = nn.Linear(h, h)

    def forward(self, x: Tensor, cu_seqlens: Tensor, max_seqlen: int) -> Tensor:
        shape = (x.shape[0], self.num_heads, self.head_dim)
        q = _linear(x, self.query).view(shape)
        k = _linear(x, self.key).view(shape)
        v = _linear(x, self.value).view(shape)
        out = flash_attn_varlen_func(
            q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen,
            dropout_p=self.dropout_p if self.training else 0.0,
            softmax_scale=1.0 / math.sqrt(self.head_dim))
        return out.reshape(x.shape[0], self.num_heads * self.head_dim)


class BertSelfOutput(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dropout(_linear(x, self.dense)) + residual)


class BertAttention(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config)

    def forward(self, x: Tensor, cu_seqlens: Tensor, max_seqlen: int) -> Tensor:
        return self.output(self.self(x, cu_seqlens, max_seqlen), x)


class BertIntermediate(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.hidden_act = config.hidden_act

    def forward(self, x: Tensor) -> Tensor:
        return _linear(x, self.dense, self.hidden_act)


class BertFFNOutput(nn.Module):
    """Hugging Face's ``BertOutput`` module (the MLP's second projection);
    renamed here because :class:`BertOutput` is the model's output."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dropout(_linear(x, self.dense)) + residual)


class BertLayer(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertFFNOutput(config)

    def forward(self, x: Tensor, cu_seqlens: Tensor, max_seqlen: int) -> Tensor:
        x = self.attention(x, cu_seqlens, max_seqlen)
        return self.output(self.intermediate(x), x)


class BertEncoder(nn.Module):
    """The layers, on packed tokens ``(total, hidden)``."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, x: Tensor, cu_seqlens: Tensor, max_seqlen: int) -> Tensor:
        for layer in self.layer:
            x = layer(x, cu_seqlens, max_seqlen)
        return x


class BertPooler(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, first_tokens: Tensor) -> Tensor:
        return torch.tanh(_linear(first_tokens, self.dense))


def _cu_seqlens(seqlens: Tensor) -> Tensor:
    return F.pad(seqlens.cumsum(0, dtype=torch.int32), (1, 0))


class BertModel(nn.Module):
    """Hugging Face ``BertModel``'s encoder, run on packed tokens.

    ``model(input_ids, attention_mask=None, token_type_ids=None,
    position_ids=None)`` with ``input_ids`` ``(batch, seqlen)`` returns a
    :class:`BertOutput` with ``last_hidden_state`` ``(batch, seqlen, hidden)``
    and ``pooler_output`` ``(batch, hidden)``, as ``BertModel`` does. Tokens
    whose ``attention_mask`` is 0 are never computed on: their rows of
    ``last_hidden_state`` are zeros (``BertModel`` fills them with values no
    one should use). Positions are the token's index in the padded row, as
    ``BertModel``'s (right padding gives 0, 1, ... for every sequence); the
    pooler reads each sequence's first real token (``BertModel`` reads column
    0, the same token for right padding).

    Packed input: ``model(input_ids, cu_seqlens=cu_seqlens)`` with
    ``input_ids`` ``(total,)`` (the sequences one after another),
    ``cu_seqlens`` int32 ``(batch + 1,)`` offsets and optionally
    ``max_seqlen`` (an int at least every length; computed from
    ``cu_seqlens`` when not given, which needs a device-to-host read);
    ``token_type_ids`` and ``position_ids`` are then ``(total,)`` too
    (positions default to 0, 1, ... within each sequence). The output's
    ``last_hidden_state`` is packed, ``(total, hidden)``, and its
    ``cu_seqlens`` is set.
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if config.add_pooling_layer else None
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Hugging Face's initialisation: normal(0, initializer_range) weights,
        zero biases, unit layer norms, a zero padding embedding."""
        std = self.config.initializer_range
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                m.weight.normal_(0.0, std)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    m.bias.zero_()
                if isinstance(m, nn.Embedding) and m.padding_idx is not None:
                    m.weight[m.padding_idx].zero_()
            elif isinstance(m, nn.LayerNorm):
                m.weight.fill_(1.0)
                m.bias.zero_()

    def forward(self, input_ids: Tensor, attention_mask: Optional[Tensor] = None,
                token_type_ids: Optional[Tensor] = None, position_ids: Optional[Tensor] = None,
                *, cu_seqlens: Optional[Tensor] = None,
                max_seqlen: Optional[int] = None) -> BertOutput:
        if cu_seqlens is not None:
            return self._forward_packed(input_ids, cu_seqlens, max_seqlen, token_type_ids,
                                        position_ids, attention_mask)
        if input_ids.dim() != 2:
            raise ValueError(f"BertModel: input_ids must be (batch, seqlen), or (total,) with "
                             f"cu_seqlens, got shape {tuple(input_ids.shape)}")
        batch, seqlen = input_ids.shape
        device = input_ids.device
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        if position_ids is None:
            position_ids = torch.arange(seqlen, device=device).expand(batch, seqlen)
        for name, t in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids),
                        ("position_ids", position_ids)):
            if t is not None and t.shape != input_ids.shape:
                raise ValueError(f"BertModel: {name} must have input_ids' shape "
                                 f"{tuple(input_ids.shape)}, got {tuple(t.shape)}")
        if attention_mask is None:
            # Nothing to remove: the rows are the packed sequences already.
            seqlens = torch.full((batch,), seqlen, dtype=torch.int32, device=device)
            cu = _cu_seqlens(seqlens)
            hidden = self._packed(input_ids.reshape(-1), token_type_ids.reshape(-1),
                                  position_ids.reshape(-1), cu, seqlen)
            pooled = self._pool(hidden, cu, seqlens)
            return BertOutput(hidden.view(batch, seqlen, -1), pooled)

        keep = attention_mask.reshape(-1) != 0
        index = keep.nonzero().squeeze(1)             # the real tokens, row by row
        seqlens = (attention_mask != 0).sum(1, dtype=torch.int32)
        cu = _cu_seqlens(seqlens)
        hidden = self._packed(input_ids.reshape(-1)[index], token_type_ids.reshape(-1)[index],
                              position_ids.reshape(-1)[index], cu, seqlen)
        pooled = self._pool(hidden, cu, seqlens)
        out = hidden.new_zeros(batch * seqlen, hidden.shape[-1]).index_copy(0, index, hidden)
        return BertOutput(out.view(batch, seqlen, -1), pooled)

    def _forward_packed(self, input_ids, cu_seqlens, max_seqlen, token_type_ids, position_ids,
                        attention_mask) -> BertOutput:
        if attention_mask is not None:
            raise ValueError("BertModel: give attention_mask (padded input) or cu_seqlens "
                             "(packed input), not both")
        if input_ids.dim() != 1:
            raise ValueError(f"BertModel: with cu_seqlens, input_ids must be packed, "
                             f"(total,), got shape {tuple(input_ids.shape)}")
        if cu_seqlens.dim() != 1 or cu_seqlens.dtype != torch.int32 or cu_seqlens.numel() < 2:
            raise ValueError(f"BertModel: cu_seqlens must be int32 (batch + 1,) offsets, got "
                             f"{cu_seqlens.dtype} of shape {tuple(cu_seqlens.shape)}")
        total = input_ids.shape[0]
        seqlens = cu_seqlens[1:] - cu_seqlens[:-1]
        if max_seqlen is None:
            max_seqlen = int(seqlens.max()) if seqlens.numel() else 0
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        if position_ids is None:
            tokens = torch.arange(total, device=input_ids.device, dtype=torch.int32)
            seq = torch.searchsorted(cu_seqlens[1:], tokens, right=True)
            position_ids = (tokens - cu_seqlens[seq.clamp_max(cu_seqlens.numel() - 2)]).long()
        hidden = self._packed(input_ids, token_type_ids, position_ids, cu_seqlens, max_seqlen)
        return BertOutput(hidden, self._pool(hidden, cu_seqlens, seqlens), cu_seqlens)

    def _packed(self, input_ids, token_type_ids, position_ids, cu_seqlens, max_seqlen) -> Tensor:
        x = self.embeddings(input_ids, token_type_ids, position_ids)
        return self.encoder(x, cu_seqlens, max_seqlen)

    def _pool(self, hidden: Tensor, cu_seqlens: Tensor, seqlens: Tensor) -> Optional[Tensor]:
        """The pooler on each sequence's first token (zeros for an empty one)."""
        if self.pooler is None:
            return None
        padded = torch.cat([hidden, hidden.new_zeros(1, hidden.shape[-1])])
        first = torch.where(seqlens > 0, cu_seqlens[:-1], hidden.shape[0])
        return self.pooler(padded[first.long()])
