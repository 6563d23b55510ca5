"""Training example that needs no download: ``kernelzoo train bert-test``.

A synthetic masked-token task on a made-up language with one rule: every
content token is followed by its successor under a fixed random permutation
of the vocabulary. Each sequence is ``[CLS] x1 ... xn [SEP]`` (n from 4 to
29, a random first token, two token-type segments); 15% of the content tokens
are replaced by ``[MASK]`` and the model predicts them. A masked token can be
recovered only from its neighbours (the successor of the token before it, the
predecessor of the one after it), so the loss falls from ``ln(content
tokens)`` only if attention learns to look at the adjacent positions and the
MLP learns the permutation. Sequences have different lengths and run as a
padded batch with an ``attention_mask``: the model removes the padding.
Attention dropout (the op's ``dropout_p``) and hidden dropout stay on during
training, at the preset's rates (0.1).

The masked-LM head is the usual one (dense, GELU, layer norm, then the
decoder tied to the word embeddings); ``--save`` writes the encoder's state
dict (Hugging Face ``BertModel`` keys).
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from kernelzoo._training import (check_batch_fits, check_hyperparameters, cosine_schedule,
                                 fit_and_save, train_steps)
from kernelzoo.registry import create_model, model_config

__all__ = ["PAD", "CLS", "SEP", "MASK", "FIRST", "chain_batch", "successor_table", "MaskedLMHead", "fit",
           "train", "evaluate"]

PAD, CLS, SEP, MASK = 0, 1, 2, 3
#: The first content token id.
FIRST = 4
#: Seed of the held-out evaluation batch.
EVAL_SEED = 2019


def successor_table(vocab_size: int) -> torch.Tensor:
    """The synthetic language's rule: a fixed random permutation of the content
    tokens (the same for every run), ``table[t]`` the token that follows ``t``."""
    g = torch.Generator().manual_seed(1234)
    table = torch.arange(vocab_size)
    table[FIRST:] = FIRST + torch.randperm(vocab_size - FIRST, generator=g)
    return table


def chain_batch(batch_size: int, vocab_size: int, *, min_len: int = 4, max_len: int = 29,
                mask_prob: float = 0.15, generator: torch.Generator | None = None):
    """A padded batch of the task: ``(input_ids, attention_mask, token_type_ids,
    labels)``, ``labels`` -100 where nothing is predicted."""
    g = generator
    table = successor_table(vocab_size)
    lengths = torch.randint(min_len, max_len + 1, (batch_size,), generator=g)
    seqlen = max_len + 2
    ids = torch.full((batch_size, seqlen), PAD, dtype=torch.long)
    types = torch.zeros(batch_size, seqlen, dtype=torch.long)
    labels = torch.full((batch_size, seqlen), -100, dtype=torch.long)
    for i, n in enumerate(lengths.tolist()):
        x = torch.empty(n, dtype=torch.long)
        x[0] = torch.randint(FIRST, vocab_size, (1,), generator=g)
        for j in range(1, n):
            x[j] = table[x[j - 1]]
        ids[i, 0] = CLS
        ids[i, 1:n + 1] = x
        ids[i, n + 1] = SEP
        types[i, n // 2 + 1:n + 2] = 1       # two segments, as BERT's sentence pairs
        content = torch.arange(1, n + 1)
        chosen = content[torch.rand(n, generator=g) < mask_prob]
        if len(chosen) == 0:                  # at least one prediction per sequence
            chosen = content[torch.randint(0, n, (1,), generator=g)]
        labels[i, chosen] = ids[i, chosen]
        ids[i, chosen] = MASK
    mask = (ids != PAD).long()
    return ids, mask, types, labels


class MaskedLMHead(nn.Module):
    """Hugging Face's ``BertLMPredictionHead``: dense, activation, layer norm,
    then the word embeddings (tied) and a bias."""

    def __init__(self, model) -> None:
        super().__init__()
        c = model.config
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(c.vocab_size))
        self.embeddings = model.embeddings.word_embeddings   # tied
        from .model import ACTIVATIONS

        self.act = ACTIVATIONS[c.hidden_act]

    def forward(self, hidden):
        h = self.LayerNorm(self.act(self.dense(hidden)))
        return F.linear(h, self.embeddings.weight, self.bias)


def _masked_loss(model, head, batch):
    ids, mask, types, labels = batch
    hidden = model(ids, mask, types).last_hidden_state
    keep = labels != -100
    logits = head(hidden[keep])
    return F.cross_entropy(logits, labels[keep]), logits, labels[keep]


@torch.no_grad()
def evaluate(model, head, vocab_size: int, *, n: int = 256, device="cpu") -> dict:
    """Masked-token loss and accuracy on ``n`` held-out sequences (eval mode)."""
    g = torch.Generator().manual_seed(EVAL_SEED)
    batch = [t.to(device) for t in chain_batch(n, vocab_size, generator=g)]
    was = model.training
    model.eval()
    head.eval()
    try:
        loss, logits, labels = _masked_loss(model, head, batch)
    finally:
        model.train(was)
        head.train(was)
    acc = float((logits.argmax(-1) == labels).float().mean())
    return {"eval_loss": float(loss), "eval_accuracy": acc, "eval_sequences": n,
            "chance_accuracy": 1.0 / (vocab_size - FIRST)}


def fit(model_name: str = "bert-test", *, steps: int | None = None,
        batch_size: int | None = None, lr: float | None = None, seed: int = 0,
        device: str = "cpu", progress: bool = True, eval_sequences: int = 256, **overrides):
    """Trains ``model_name`` with a masked-LM head on the synthetic task; returns
    ``(model, results)``. AdamW (weight decay 0.01) with linear warm-up over
    5% of the steps and cosine decay; a fresh batch every step.

    Args:
        steps: optimizer steps (default 1000).
        batch_size: sequences per step (default 32).
        lr: peak learning rate (default 5e-3).
        overrides: passed to :func:`kernelzoo.create_model` (e.g. dropout rates).
    """
    config = model_config(model_name, **overrides)
    vocab = config.vocab_size
    if vocab <= FIRST + 1:
        raise ValueError(f"{model_name}: vocab_size {vocab} leaves no content tokens")
    if config.max_position_embeddings < 31:
        raise ValueError(f"{model_name}: max_position_embeddings must be at least 31")
    steps = 1000 if steps is None else steps
    batch_size = 32 if batch_size is None else batch_size
    lr = 5e-3 if lr is None else lr
    check_hyperparameters(steps=steps, batch_size=batch_size, lr=lr)
    # A lower bound of one step's memory: the MLP's activations of every token.
    check_batch_fits(batch_size * 31 * config.intermediate_size * 4 * config.num_hidden_layers,
                     f"a batch of {batch_size} sequences", device)

    torch.manual_seed(seed)
    model = create_model(model_name, **overrides).to(device)
    head = MaskedLMHead(model).to(device)
    model.train()
    head.train()
    params = list(model.parameters()) + [p for n, p in head.named_parameters()
                                         if not n.startswith("embeddings.")]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    sched = cosine_schedule(opt, steps, warmup=steps // 20)
    g = torch.Generator().manual_seed(seed + 1)
    before = evaluate(model, head, vocab, n=eval_sequences, device=device)

    def step_loss(step):
        batch = [t.to(device) for t in chain_batch(batch_size, vocab, generator=g)]
        return _masked_loss(model, head, batch)[0]

    losses, train_s = train_steps(steps, step_loss, opt, sched, lr, f"train {model_name}",
                                  progress=progress, clip=params)

    k = min(20, len(losses))
    result = {"model": model_name, "steps": steps, "batch_size": batch_size, "lr": lr,
              "seed": seed, "device": str(device),
              "attention_dropout": config.attention_probs_dropout_prob,
              "hidden_dropout": config.hidden_dropout_prob,
              "first_loss": losses[0], "final_loss": sum(losses[-k:]) / k,
              "initial_eval_loss": before["eval_loss"],
              "initial_eval_accuracy": before["eval_accuracy"],
              "train_seconds": round(train_s, 2)}
    result.update(evaluate(model, head, vocab, n=eval_sequences, device=device))
    result["losses"] = losses
    return model, result


def train(model_name: str = "bert-test", *, save: str | None = None, verbose: bool = True,
          **options) -> dict:
    """``kernelzoo train``: :func:`fit`, then a report; returns the results
    (JSON-serialisable). ``save`` writes the encoder's state dict there."""
    model, result = fit_and_save(fit, model_name, save, options)
    if verbose:
        print(f"{model_name}: {result['steps']} steps of {result['batch_size']} sequences "
              f"(synthetic language, attention dropout {result['attention_dropout']}) in "
              f"{result['train_seconds']:.1f} s; loss {result['first_loss']:.4f} -> "
              f"{result['final_loss']:.4f}")
        print(f"held-out masked tokens ({result['eval_sequences']} sequences): loss "
              f"{result['initial_eval_loss']:.4f} -> {result['eval_loss']:.4f}, accuracy "
              f"{result['initial_eval_accuracy']:.1%} -> {result['eval_accuracy']:.1%} "
              f"(chance {result['chance_accuracy']:.1%})")
        if save:
            print(f"saved the state dict to {save}")
    return result
