"""Mamba (Gu and Dao, 2023) language models on kernelzoo's selective scan.

Module names, the state dict and the config fields are exactly those of
Hugging Face ``transformers.MambaForCausalLM`` / ``MambaConfig``
(``backbone.embeddings``, ``backbone.layers.N.norm``,
``backbone.layers.N.mixer.{in_proj, conv1d, x_proj, dt_proj, A_log, D,
out_proj}``, ``backbone.norm_f``, ``lm_head`` tied to the embeddings), so a
Hugging Face checkpoint loads as it is (see :mod:`kernelzoo.plugins.mamba.pretrained`).

One mixer (a Mamba block) on hidden states ``h`` of shape ``(batch, seqlen, hidden)``::

    x, z   = in_proj(h * mask)                       two halves of (batch, 2*inner, seqlen)
    x      = silu(causal depthwise conv1d(x)) * mask  torch's conv1d, padding conv_kernel-1
    dt,B,C = x_proj(x)                               dt of time_step_rank, B and C of state_size
    dt     = dt_proj.weight @ dt                     (the bias goes to the scan as delta_bias)
    y      = selective_scan_fn(x, dt, -exp(A_log), B, C, D, z, dt_proj.bias, delta_softplus=True)
    out    = out_proj(y)

``mask`` is the ``attention_mask`` (1 for a token, 0 for padding): padding is
handled as transformers does, by zeroing the hidden states of padded positions
before ``in_proj`` and after the convolution, so a padded position feeds nothing
into the state (and left padding gives the unpadded result at the real tokens).

Generation (:meth:`MambaForCausalLM.generate`) keeps per layer a convolution
state (the last ``conv_kernel - 1`` inputs of the convolution) and the SSM
state ``(batch, inner, state_size)``: one scan per layer over the prompt
(``return_last_state=True``), then per new token one convolution step and one
:func:`kernelzoo.ops.selective_state_update` per layer: the time and memory of
a new token do not grow with the length generated.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kernelzoo.nn.inference import decode_linear, onednn_linear, onednn_linear_ok
from kernelzoo.ops import selective_scan_fn, selective_state_update

__all__ = ["MambaConfig", "MambaForCausalLM", "MambaCausalLMOutput", "GenerateOutput"]


@dataclasses.dataclass
class MambaConfig:
    """The architecture, with Hugging Face ``MambaConfig``'s field names and
    defaults (``state-spaces/mamba-130m-hf``'s, but for the number of layers:
    24 here, as in the published 130m model)."""

    vocab_size: int = 50280
    hidden_size: int = 768
    state_size: int = 16
    num_hidden_layers: int = 24
    layer_norm_epsilon: float = 1e-5
    expand: int = 2
    conv_kernel: int = 4
    use_bias: bool = False
    use_conv_bias: bool = True
    hidden_act: str = "silu"
    residual_in_fp32: bool = True
    #: ``"auto"`` (or None): ``ceil(hidden_size / 16)``.
    time_step_rank: Union[int, str, None] = "auto"
    time_step_scale: float = 1.0
    time_step_min: float = 0.001
    time_step_max: float = 0.1
    time_step_init_scheme: str = "random"
    time_step_floor: float = 1e-4
    initializer_range: float = 0.1
    rescale_prenorm_residual: bool = False
    pad_token_id: Optional[int] = 0
    bos_token_id: Optional[int] = 0
    eos_token_id: Optional[int] = 0
    tie_word_embeddings: bool = True

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "state_size", "num_hidden_layers", "expand",
                     "conv_kernel"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"MambaConfig: {name} must be an int >= 1, got {v!r}")
        r = self.time_step_rank
        if r is not None and r != "auto" and (isinstance(r, bool) or not isinstance(r, int)
                                              or r < 1):
            raise ValueError(f"MambaConfig: time_step_rank must be 'auto' or an int >= 1, "
                             f"got {r!r}")
        if self.hidden_act not in ("silu", "swish"):
            raise ValueError(f"MambaConfig: unsupported hidden_act {self.hidden_act!r}; "
                             f"supported: 'silu'")
        if not self.tie_word_embeddings:
            raise ValueError("MambaConfig: tie_word_embeddings=False is not supported (the "
                             "published Mamba models tie lm_head to the embeddings)")

    @property
    def intermediate_size(self) -> int:
        return self.expand * self.hidden_size

    @property
    def dt_rank(self) -> int:
        r = self.time_step_rank
        return math.ceil(self.hidden_size / 16) if r in (None, "auto") else int(r)

    def to_hf_dict(self) -> dict:
        """A ``config.json`` dict that transformers' ``MambaConfig`` reads."""
        d = dataclasses.asdict(self)
        d["time_step_rank"] = self.dt_rank
        d["intermediate_size"] = self.intermediate_size
        d["model_type"] = "mamba"
        d["architectures"] = ["MambaForCausalLM"]
        return d


@dataclasses.dataclass
class MambaCausalLMOutput:
    """What :class:`MambaForCausalLM` returns: ``logits`` ``(batch, seqlen,
    vocab)`` in float32, as an attribute, by key or by index (``out[0]``), like
    Hugging Face's ``MambaCausalLMOutput``."""

    logits: Tensor

    def to_tuple(self) -> tuple:
        return (self.logits,)

    def __getitem__(self, i):
        if isinstance(i, str):
            return getattr(self, i)
        return self.to_tuple()[i]

    def __iter__(self):
        return iter(self.to_tuple())

    def __len__(self) -> int:
        return 1


try:
    import torch.utils._pytree as _pytree

    _pytree.register_pytree_node(
        MambaCausalLMOutput,
        lambda o: ([o.logits], None),
        lambda values, _: MambaCausalLMOutput(*values),
        serialized_type_name="kernelzoo.plugins.mamba.model.MambaCausalLMOutput",
    )
except (ValueError, AttributeError):  # already registered (module reloaded)
    pass


@dataclasses.dataclass
class GenerateOutput:
    """What :meth:`MambaForCausalLM.generate` returns: ``sequences`` (prompt
    then new tokens, ``(batch, prompt + new)``), ``new_tokens`` ``(batch,
    new)``, and timings: ``prefill_seconds``, ``decode_seconds`` (the new
    tokens after the first), ``tokens_per_second`` (new tokens per second of
    decoding, over the whole batch)."""

    sequences: Tensor
    new_tokens: Tensor
    prefill_seconds: float
    decode_seconds: float
    tokens_per_second: float


def _linear(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """``F.linear(x, weight, bias)``. In CPU inference, oneDNN's linear
    (``torch.ops.mkldnn._linear_pointwise``): measured here 2x faster than
    ``F.linear`` (MKL) for the weight-bound matrix-vector products of decoding
    (the 50280 x 768 head: 4.9 against 9.8 ms in float32). Same float32
    arithmetic, another summation order. Elsewhere (autograd, torch.compile,
    other devices) plain ``F.linear``."""
    # float32 only: in bfloat16, F.linear is the faster of the two for decoding's
    # matrix-vector products here (24 against 19 GB/s, measured).
    if not onednn_linear_ok(x, weight, dtypes=(torch.float32,)):
        return F.linear(x, weight, bias)
    return onednn_linear(x, weight, bias)


class MambaRMSNorm(nn.Module):
    """RMS norm in float32, the result cast back to the input's dtype before the weight."""

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, x: Tensor) -> Tensor:
        dtype = x.dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * h.to(dtype)


def _mask(x: Tensor, mask: Optional[Tensor]) -> Tensor:
    """``x`` ``(batch, seqlen, ...)`` zeroed at padded positions."""
    if mask is None:
        return x
    return (x * mask[:, :, None]).to(x.dtype)


class MambaMixer(nn.Module):
    """One Mamba block's mixer (see the module docstring)."""

    def __init__(self, config: MambaConfig) -> None:
        super().__init__()
        self.hidden_size = config.hidden_size
        self.ssm_state_size = n = config.state_size
        self.conv_kernel_size = k = config.conv_kernel
        self.intermediate_size = di = config.intermediate_size
        self.time_step_rank = r = config.dt_rank
        self.conv1d = nn.Conv1d(di, di, kernel_size=k, groups=di, padding=k - 1,
                                bias=config.use_conv_bias)
        self.in_proj = nn.Linear(config.hidden_size, 2 * di, bias=config.use_bias)
        self.x_proj = nn.Linear(di, r + 2 * n, bias=False)
        self.dt_proj = nn.Linear(r, di, bias=True)
        self.A_log = nn.Parameter(torch.empty(di, n))
        self.D = nn.Parameter(torch.empty(di))
        self.out_proj = nn.Linear(di, config.hidden_size, bias=config.use_bias)
        self._init_ssm(config)
        self._step_cache = None  # (key, float32 constants of step()), see _step_constants

    def _step_constants(self):
        """A = -exp(A_log), D, dt_proj's bias and the conv weight and bias in
        float32, as every decoding step needs them: computed once and kept
        until one of the parameters changes (in place or replaced)."""
        ps = [self.A_log, self.D, self.dt_proj.bias, self.conv1d.weight, self.conv1d.bias]
        key = tuple((p._version, p.data_ptr(), p.dtype) if p is not None else None for p in ps)
        if self._step_cache is None or self._step_cache[0] != key:
            bias = self.conv1d.bias
            self._step_cache = (key, (-torch.exp(self.A_log.float()), self.D.float(),
                                      self.dt_proj.bias.float(),
                                      self.conv1d.weight[:, 0, :].float(),
                                      bias.float() if bias is not None else None))
        return self._step_cache[1]

    @torch.no_grad()
    def _init_ssm(self, c: MambaConfig) -> None:
        # Mamba's initialisation: S4D-real A, D = 1, dt_proj's bias the inverse
        # softplus of time steps log-uniform in [time_step_min, time_step_max].
        n, di = self.ssm_state_size, self.intermediate_size
        self.A_log.copy_(torch.log(torch.arange(1, n + 1, dtype=torch.float32)).expand(di, n))
        self.D.fill_(1.0)
        std = self.time_step_rank ** -0.5 * c.time_step_scale
        if c.time_step_init_scheme == "constant":
            nn.init.constant_(self.dt_proj.weight, std)
        else:
            nn.init.uniform_(self.dt_proj.weight, -std, std)
        dt = torch.exp(torch.rand(di) * (math.log(c.time_step_max) - math.log(c.time_step_min))
                       + math.log(c.time_step_min)).clamp(min=c.time_step_floor)
        self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))

    def _ssm_inputs(self, x: Tensor):
        """``x`` ``(batch, inner, seqlen)`` after the convolution -> ``(dt, B, C)``
        in the scan's layout: ``dt`` ``(batch, inner, seqlen)``, ``B`` and ``C``
        ``(batch, state, seqlen)``."""
        n, r = self.ssm_state_size, self.time_step_rank
        x_dbl = _linear(x.transpose(1, 2), self.x_proj.weight)           # (b, L, r + 2n)
        dt, B, C = torch.split(x_dbl, [r, n, n], dim=-1)
        dt = _linear(dt, self.dt_proj.weight).transpose(1, 2)            # (b, inner, L)
        return dt, B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous()

    def forward(self, h: Tensor, mask: Optional[Tensor] = None, *,
                return_states: bool = False):
        seqlen = h.shape[1]
        xz = _linear(_mask(h, mask), self.in_proj.weight, self.in_proj.bias).transpose(1, 2)
        x, z = xz.chunk(2, dim=1)
        conv_in = x
        x = F.silu(self.conv1d(x)[..., :seqlen])
        if mask is not None:
            x = x * mask[:, None, :].to(x.dtype)
        dt, B, C = self._ssm_inputs(x)
        A = -torch.exp(self.A_log.float())
        res = selective_scan_fn(x.contiguous(), dt.contiguous(), A, B, C, self.D.float(),
                                z.contiguous(), self.dt_proj.bias.float(), True,
                                return_last_state=return_states)
        y, last = res if return_states else (res, None)
        out = _linear(y.transpose(1, 2), self.out_proj.weight, self.out_proj.bias)
        if not return_states:
            return out
        # The convolution state: the last conv_kernel - 1 inputs (zeros before the start).
        k = self.conv_kernel_size - 1
        conv_state = F.pad(conv_in, (max(0, k - seqlen), 0))[..., -k:] if k else conv_in[..., :0]
        return out, conv_state.contiguous(), last

    @torch.no_grad()
    def step(self, h: Tensor, conv_state: Tensor, ssm_state: Tensor) -> Tensor:
        """One decoding step: ``h`` ``(batch, hidden)``; updates ``conv_state``
        ``(batch, inner, conv_kernel - 1)`` and ``ssm_state`` ``(batch, inner,
        state)`` in place; returns ``(batch, hidden)``."""
        A, D, dt_bias, w, conv_bias = self._step_constants()
        xz = decode_linear(h, self.in_proj.weight, self.in_proj.bias)
        x, z = xz.chunk(2, dim=-1)                                        # (b, inner) each
        window = torch.cat([conv_state, x.unsqueeze(-1).to(conv_state.dtype)], dim=-1)
        conv_state.copy_(window[..., 1:])
        # conv_kernel products per channel (w: (inner, k)), in float32 (a bfloat16
        # einsum/bmm of this shape is slow on CPU: 10% of a bfloat16 decoding step, measured).
        xc = (window.float() * w).sum(-1)
        if conv_bias is not None:
            xc = xc + conv_bias
        x = F.silu(xc).to(h.dtype)
        n, r = self.ssm_state_size, self.time_step_rank
        dt, B, C = torch.split(decode_linear(x, self.x_proj.weight), [r, n, n], dim=-1)
        dt = decode_linear(dt, self.dt_proj.weight)
        y = selective_state_update(ssm_state, x.contiguous(), dt.contiguous(), A,
                                   B.contiguous(), C.contiguous(), D,
                                   z.contiguous(), dt_bias, True)
        return decode_linear(y.to(h.dtype), self.out_proj.weight, self.out_proj.bias)


class MambaBlock(nn.Module):
    """Pre-norm residual block: ``h + mixer(norm(h))`` (the residual in float32
    with ``residual_in_fp32``)."""

    def __init__(self, config: MambaConfig) -> None:
        super().__init__()
        self.residual_in_fp32 = config.residual_in_fp32
        self.norm = MambaRMSNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.mixer = MambaMixer(config)

    def _residual(self, h: Tensor) -> Tensor:
        return h.float() if self.residual_in_fp32 else h

    def forward(self, h: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        return self._residual(h) + self.mixer(self.norm(h.to(self.norm.weight.dtype)), mask)

    def prefill(self, h: Tensor):
        out, conv_state, ssm_state = self.mixer(self.norm(h.to(self.norm.weight.dtype)),
                                                return_states=True)
        return self._residual(h) + out, conv_state, ssm_state

    def step(self, h: Tensor, conv_state: Tensor, ssm_state: Tensor) -> Tensor:
        return self._residual(h) + self.mixer.step(self.norm(h.to(self.norm.weight.dtype)),
                                                   conv_state, ssm_state)


class MambaModel(nn.Module):
    """The backbone: embeddings, blocks, final norm (``MambaModel``'s names)."""

    def __init__(self, config: MambaConfig) -> None:
        super().__init__()
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(MambaBlock(config) for _ in range(config.num_hidden_layers))
        self.norm_f = MambaRMSNorm(config.hidden_size, eps=config.layer_norm_epsilon)

    def forward(self, input_ids: Tensor, attention_mask: Optional[Tensor] = None) -> Tensor:
        h = self.embeddings(input_ids)
        for layer in self.layers:
            h = layer(h, attention_mask)
        return self.norm_f(h)


class MambaForCausalLM(nn.Module):
    """A Mamba language model: ``model(input_ids, attention_mask=None).logits``
    ``(batch, seqlen, vocab)`` (float32), and :meth:`generate`."""

    def __init__(self, config: MambaConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = MambaModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self._init_weights()
        self.lm_head.weight = self.backbone.embeddings.weight   # tied

    @torch.no_grad()
    def _init_weights(self) -> None:
        # transformers' MambaPreTrainedModel: embeddings N(0, initializer_range),
        # linear layers their own default init with zero biases (dt_proj's kept).
        nn.init.normal_(self.backbone.embeddings.weight, std=self.config.initializer_range)
        for layer in self.backbone.layers:
            m = layer.mixer
            for lin in (m.in_proj, m.out_proj):
                if lin.bias is not None:
                    nn.init.zeros_(lin.bias)
            if self.config.rescale_prenorm_residual:
                nn.init.kaiming_uniform_(m.out_proj.weight, a=math.sqrt(5))
                m.out_proj.weight /= math.sqrt(self.config.num_hidden_layers)

    def forward(self, input_ids: Tensor, attention_mask: Optional[Tensor] = None
                ) -> MambaCausalLMOutput:
        if attention_mask is not None and attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask has shape {list(attention_mask.shape)}, expected "
                             f"input_ids' {list(input_ids.shape)}")
        h = self.backbone(input_ids, attention_mask)
        return MambaCausalLMOutput(_linear(h.to(self.lm_head.weight.dtype),
                                           self.lm_head.weight).float())

    # ------------------------------------------------------------------ generation

    def _logits(self, h: Tensor) -> Tensor:
        h = self.backbone.norm_f(h)
        return decode_linear(h.to(self.lm_head.weight.dtype), self.lm_head.weight).float()

    @torch.no_grad()
    def prefill(self, input_ids: Tensor):
        """Runs the prompt ``(batch, seqlen)``; returns the last position's
        logits ``(batch, vocab)`` and the per-layer states ``[(conv_state,
        ssm_state), ...]`` for :meth:`step`."""
        h = self.backbone.embeddings(input_ids)
        states = []
        for layer in self.backbone.layers:
            h, conv_state, ssm_state = layer.prefill(h)
            states.append((conv_state, ssm_state))
        return self._logits(h[:, -1]), states

    @torch.no_grad()
    def step(self, tokens: Tensor, states) -> Tensor:
        """One token per sequence ``(batch,)`` -> logits ``(batch, vocab)``;
        ``states`` (from :meth:`prefill`) are updated in place."""
        h = self.backbone.embeddings(tokens)
        for layer, (conv_state, ssm_state) in zip(self.backbone.layers, states):
            h = layer.step(h, conv_state, ssm_state)
        return self._logits(h)

    @torch.no_grad()
    def generate(self, input_ids: Tensor, max_new_tokens: int = 20, do_sample: bool = False,
                 temperature: float = 1.0, top_k: Optional[int] = None,
                 top_p: Optional[float] = None, seed: Optional[int] = None,
                 eos_token_id: Optional[int] = None, return_dict: bool = False):
        """Autoregressive generation from the prompts ``input_ids`` ``(batch,
        seqlen)`` (or ``(seqlen,)``; every prompt the same length, no padding).

        Greedy (``do_sample=False``, the default) takes the most likely token;
        sampling divides the logits by ``temperature``, keeps the ``top_k``
        most likely tokens and then the smallest set whose probability reaches
        ``top_p`` (the most likely token is always kept), and draws from a
        generator seeded with ``seed`` (the same seed gives the same tokens).
        With ``eos_token_id``, a sequence that produced it continues with it
        (and generation stops early when every sequence has).

        Returns the sequences ``(batch, seqlen + new)`` (prompt then new tokens),
        or with ``return_dict`` a :class:`GenerateOutput` with timings.
        """
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) \
                or max_new_tokens < 0:
            raise ValueError(f"generate: max_new_tokens must be an int >= 0, got "
                             f"{max_new_tokens!r}")
        squeeze = input_ids.dim() == 1
        ids = input_ids.unsqueeze(0) if squeeze else input_ids
        if ids.dim() != 2 or ids.shape[1] == 0 or ids.dtype not in (torch.long, torch.int32):
            raise ValueError(f"generate: input_ids must be integer token ids of shape (batch, "
                             f"seqlen) with seqlen >= 1, got {ids.dtype} {list(input_ids.shape)}")
        if do_sample:
            if not (temperature > 0 and math.isfinite(temperature)):
                raise ValueError(f"generate: temperature must be > 0, got {temperature!r}")
            if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int)
                                      or top_k < 1):
                raise ValueError(f"generate: top_k must be an int >= 1, got {top_k!r}")
            if top_p is not None and not 0 < top_p <= 1:
                raise ValueError(f"generate: top_p must be in (0, 1], got {top_p!r}")
        ids = ids.long()
        gen = None
        if do_sample:
            gen = torch.Generator(device=ids.device)
            gen.manual_seed(seed if seed is not None else torch.seed())

        def pick(logits: Tensor) -> Tensor:
            if not do_sample:
                return logits.argmax(-1)
            return sample_next(logits, temperature=temperature, top_k=top_k, top_p=top_p,
                               generator=gen)

        was = self.training
        self.eval()
        try:
            t0 = time.perf_counter()
            new = []
            if max_new_tokens > 0:
                logits, states = self.prefill(ids)
                tok = pick(logits)
                new.append(tok)
            t1 = time.perf_counter()
            done = (tok == eos_token_id) if (eos_token_id is not None and new) else None
            for _ in range(max_new_tokens - 1):
                if done is not None and bool(done.all()):
                    break
                logits = self.step(tok, states)
                nxt = pick(logits)
                if done is not None:
                    nxt = torch.where(done, torch.full_like(nxt, eos_token_id), nxt)
                    done = done | (nxt == eos_token_id)
                tok = nxt
                new.append(tok)
            t2 = time.perf_counter()
        finally:
            self.train(was)
        new_tokens = torch.stack(new, dim=1) if new else ids[:, :0]
        seqs = torch.cat([ids, new_tokens], dim=1)
        if squeeze:
            seqs, new_tokens = seqs[0], new_tokens[0]
        if not return_dict:
            return seqs
        decoded = max(0, len(new) - 1) * ids.shape[0]
        return GenerateOutput(seqs, new_tokens, prefill_seconds=t1 - t0,
                              decode_seconds=t2 - t1,
                              tokens_per_second=decoded / (t2 - t1) if t2 > t1 and decoded
                              else float("nan"))


def sample_next(logits: Tensor, *, temperature: float = 1.0, top_k: Optional[int] = None,
                top_p: Optional[float] = None,
                generator: Optional[torch.Generator] = None) -> Tensor:
    """One token per row of ``logits`` ``(batch, vocab)``: temperature, then
    top-k, then top-p (nucleus) filtering, then a draw with ``generator``."""
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # Drop a token when the tokens before it already reach top_p.
        before = probs.cumsum(-1) - probs
        drop_sorted = before >= top_p
        drop_sorted[..., 0] = False
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
