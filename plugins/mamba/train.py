"""Training example that needs no download: ``kernelzoo train mamba-test``.

The selective-copying task of the Mamba paper (Gu and Dao, 2023, section
4.1.1): a sequence of ``body`` tokens, almost all of them a noise token, with
``n_data`` data tokens at random positions, then ``n_data`` marker tokens. At
each marker position the model must output the data tokens in order. Where the
data tokens sit changes from sequence to sequence, so a time-invariant model
(a fixed convolution, S4) cannot solve it: the model has to select what to
keep in its state by content, which is what the input-dependent ``dt``, ``B``
and ``C`` of Mamba's selective scan do.

Token ids: 0 the noise token, 1 the marker, data tokens ``2 .. 2 + n_tokens``.
The loss is the cross-entropy of the ``n_data`` outputs at the marker
positions; accuracy is per data token on a held-out batch (chance: ``1 /
n_tokens``), and the fraction of sequences copied entirely. ``--save`` writes
the model's state dict (Hugging Face ``MambaForCausalLM`` keys).
"""

from __future__ import annotations


import torch
import torch.nn.functional as F

from kernelzoo._training import (check_hyperparameters, cosine_schedule, fit_and_save, train_steps)
from kernelzoo.registry import create_model, model_config

__all__ = ["NOISE", "MARKER", "FIRST", "copying_batch", "fit", "train", "evaluate"]

NOISE, MARKER = 0, 1
#: The first data token id.
FIRST = 2
#: Seed of the held-out evaluation batch.
EVAL_SEED = 2023


def copying_batch(batch_size: int, *, body: int = 32, n_data: int = 4, n_tokens: int = 8,
                  generator: torch.Generator | None = None):
    """``(input_ids, targets)``: ``input_ids`` ``(batch, body + n_data)`` (the
    body with ``n_data`` data tokens at random distinct positions among noise,
    then ``n_data`` markers), ``targets`` ``(batch, n_data)`` the data tokens in order."""
    g = generator
    data = torch.randint(FIRST, FIRST + n_tokens, (batch_size, n_data), generator=g)
    pos = torch.rand(batch_size, body, generator=g).argsort(-1)[:, :n_data].sort(-1).values
    ids = torch.full((batch_size, body + n_data), NOISE, dtype=torch.long)
    ids.scatter_(1, pos, data)
    ids[:, body:] = MARKER
    return ids, data


def _loss(model, ids, targets):
    n = targets.shape[1]
    logits = model(ids).logits[:, -n:]                      # the marker positions
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)), logits


@torch.no_grad()
def evaluate(model, *, n: int = 512, device="cpu", **task) -> dict:
    """Loss and accuracy on ``n`` held-out sequences (eval mode)."""
    g = torch.Generator().manual_seed(EVAL_SEED)
    ids, targets = (t.to(device) for t in copying_batch(n, generator=g, **task))
    was = model.training
    model.eval()
    try:
        loss, logits = _loss(model, ids, targets)
    finally:
        model.train(was)
    hit = logits.argmax(-1) == targets
    return {"eval_loss": float(loss), "eval_accuracy": float(hit.float().mean()),
            "eval_sequence_accuracy": float(hit.all(-1).float().mean()), "eval_sequences": n,
            "chance_accuracy": 1.0 / task.get("n_tokens", 8)}


def fit(model_name: str = "mamba-test", *, steps: int | None = None,
        batch_size: int | None = None, lr: float | None = None, seed: int = 0,
        device: str = "cpu", progress: bool = True, eval_sequences: int = 512,
        body: int = 32, n_data: int = 4, n_tokens: int = 8, **overrides):
    """Trains ``model_name`` on selective copying; returns ``(model, results)``.
    AdamW (weight decay 0.01) with linear warm-up over 5% of the steps and
    cosine decay; a fresh batch every step.

    Args:
        steps: optimizer steps (default 600).
        batch_size: sequences per step (default 64).
        lr: peak learning rate (default 3e-3).
        body, n_data, n_tokens: the task: body length, data tokens per
            sequence, distinct data tokens.
        overrides: passed to :func:`kernelzoo.create_model`.
    """
    config = model_config(model_name, **overrides)
    if config.vocab_size < FIRST + n_tokens:
        raise ValueError(f"{model_name}: vocab_size {config.vocab_size} is below the task's "
                         f"{FIRST + n_tokens} tokens")
    if not 1 <= n_data <= body:
        raise ValueError(f"n_data must be in [1, body], got {n_data}")
    steps = 600 if steps is None else steps
    batch_size = 64 if batch_size is None else batch_size
    lr = 3e-3 if lr is None else lr
    check_hyperparameters(steps=steps, batch_size=batch_size, lr=lr)
    task = {"body": body, "n_data": n_data, "n_tokens": n_tokens}

    torch.manual_seed(seed)
    model = create_model(model_name, **overrides).to(device)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "A_log" not in n]
    other = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "A_log" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                             {"params": other, "weight_decay": 0.0}], lr=lr)
    sched = cosine_schedule(opt, steps, warmup=steps // 20)
    g = torch.Generator().manual_seed(seed + 1)
    before = evaluate(model, n=eval_sequences, device=device, **task)

    def step_loss(step):
        ids, targets = (t.to(device) for t in copying_batch(batch_size, generator=g, **task))
        return _loss(model, ids, targets)[0]

    losses, train_s = train_steps(steps, step_loss, opt, sched, lr, f"train {model_name}",
                                  progress=progress, clip=list(model.parameters()))

    k = min(20, len(losses))
    result = {"model": model_name, "task": "selective copying", **task, "steps": steps,
              "batch_size": batch_size, "lr": lr, "seed": seed, "device": str(device),
              "first_loss": losses[0], "final_loss": sum(losses[-k:]) / k,
              "initial_eval_loss": before["eval_loss"],
              "initial_eval_accuracy": before["eval_accuracy"],
              "train_seconds": round(train_s, 2)}
    result.update(evaluate(model, n=eval_sequences, device=device, **task))
    result["losses"] = losses
    return model, result


def train(model_name: str = "mamba-test", *, save: str | None = None, verbose: bool = True,
          **options) -> dict:
    """``kernelzoo train``: :func:`fit`, then a report; returns the results
    (JSON-serialisable). ``save`` writes the model's state dict there."""
    model, result = fit_and_save(fit, model_name, save, options)
    if verbose:
        print(f"{model_name}: {result['steps']} steps of {result['batch_size']} sequences "
              f"(selective copying: {result['n_data']} of {result['n_tokens']} data tokens in "
              f"{result['body']} positions) in {result['train_seconds']:.1f} s; loss "
              f"{result['first_loss']:.4f} -> {result['final_loss']:.4f}")
        print(f"held-out ({result['eval_sequences']} sequences): accuracy per data token "
              f"{result['initial_eval_accuracy']:.1%} -> {result['eval_accuracy']:.1%} "
              f"(chance {result['chance_accuracy']:.1%}), whole sequences copied "
              f"{result['eval_sequence_accuracy']:.1%}")
        if save:
            print(f"saved the state dict to {save}")
    return result
