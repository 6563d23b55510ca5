"""The mamba family's training example (selective copying, Mamba paper 4.1.1):
the task's batches, and that mamba-test learns it well above chance in a fixed
number of steps."""

from __future__ import annotations

import json

import torch

from kernelzoo.cli import main
from kernelzoo.plugins.mamba.train import FIRST, MARKER, NOISE, copying_batch, fit


def test_copying_batch():
    g = torch.Generator().manual_seed(0)
    ids, targets = copying_batch(50, body=20, n_data=3, n_tokens=5, generator=g)
    assert ids.shape == (50, 23) and targets.shape == (50, 3)
    assert (ids[:, 20:] == MARKER).all()
    for row, t in zip(ids, targets):
        body = row[:20]
        data = body[body != NOISE]
        assert torch.equal(data, t)                       # the data tokens, in order
        assert ((t >= FIRST) & (t < FIRST + 5)).all()
    # the positions vary from sequence to sequence
    assert len({tuple((r[:20] != NOISE).nonzero().flatten().tolist()) for r in ids}) > 40


def test_learns_selective_copying():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)       # tiny matrices: one thread is faster, on a busy machine too
    try:
        _, result = fit("mamba-test", steps=400, lr=1e-2, progress=False, eval_sequences=512)
    finally:
        torch.set_num_threads(threads)
    assert result["chance_accuracy"] == 1 / 8
    assert result["initial_eval_accuracy"] < 0.3
    # measured: 89.6% per data token, 60% of the sequences copied whole (chance 12.5%)
    assert result["eval_accuracy"] > 0.6, result["eval_accuracy"]
    assert result["final_loss"] < 0.5 * result["first_loss"]


def test_cli_train_json(capsys, tmp_path):
    save = tmp_path / "m.pt"
    assert main(["train", "mamba-test", "--steps", "3", "--batch-size", "4", "--json",
                 "--no-progress", "--save", str(save)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["task"] == "selective copying" and out["steps"] == 3 and len(out["losses"]) == 3
    state = torch.load(save, weights_only=True)
    assert "backbone.layers.1.mixer.A_log" in state
