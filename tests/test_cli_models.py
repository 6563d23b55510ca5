"""`kernelzoo models`, `kernelzoo plugins`, `kernelzoo train` and the families
section of `kernelzoo info`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import kernelzoo
from kernelzoo import cli

from _plugin_helpers import fake_site, fresh_registry, good_plugin  # noqa: F401  (fixtures)

ESPCN_MODELS = ["espcn-test", "espcn-x2", "espcn-x2-rgb", "espcn-x3", "espcn-x3-rgb",
                "espcn-x4", "espcn-x4-rgb"]


def run(capsys, *argv):
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_models(capsys, fresh_registry):
    rc, out, _ = run(capsys, "models")
    assert rc == 0
    assert [m for m in out.split() if m.startswith("espcn")] == ESPCN_MODELS
    rc, out, _ = run(capsys, "models", "espcn-x?", "*-test")
    assert (rc, out.split()) == (0, ["espcn-test", "espcn-x2", "espcn-x3", "espcn-x4",
                                     "fasterrcnn-roipool-test", "fasterrcnn-test"])


def test_models_long_and_json(capsys, fresh_registry):
    rc, out, _ = run(capsys, "models", "-l", "espcn-x4-rgb")
    assert rc == 0
    assert out.split(None, 1) == ["espcn-x4-rgb", "ESPCNConfig(scale=4, channels=3, "
                                  "features=(64, 32), kernel_sizes=(5, 3, 3))\n"]
    rc, out, _ = run(capsys, "models", "--json", "espcn-x2")
    assert rc == 0
    assert json.loads(out) == [{"model": "espcn-x2", "config": {
        "scale": 2, "channels": 1, "features": [64, 32], "kernel_sizes": [5, 3, 3]}}]


def test_models_without_match(capsys, fresh_registry):
    rc, out, err = run(capsys, "models", "nothing-*")
    assert (rc, out) == (1, "")
    assert "no model matches nothing-*" in err


def test_plugins_table_and_json(capsys, fake_site):
    fake_site.add("fake-broken", "0.3", {"broken": "kzfake_broken:family"},
                  {"kzfake_broken": "raise ImportError('no module named torchfoo')\n"})
    fake_site.add("fake-good", "1.2", {"alpha": "kzfake_alpha:family"},
                  {"kzfake_alpha": good_plugin("alpha")})
    rc, out, err = run(capsys, "plugins")
    assert rc == 0 and err == ""      # the table reports failures; no warning noise
    lines = out.splitlines()
    assert lines[0].split() == ["family", "status", "distribution", "entry", "point"]
    rows = {ln.split()[0]: ln.split() for ln in lines[2:] if not ln.startswith(" ")}
    assert rows["alpha"][:4] == ["alpha", "ok", "fake-good", "1.2"]
    assert rows["broken"][:4] == ["broken", "failed", "fake-broken", "0.3"]
    assert rows["espcn"][:5] == ["espcn", "ok", "kernelzoo", kernelzoo.__version__, "(built-in)"]
    assert "    ImportError: no module named torchfoo" in lines
    rc, out, _ = run(capsys, "plugins", "--json")
    data = {p["family"]: p for p in json.loads(out)}
    assert data["broken"]["status"] == "failed"
    assert data["broken"]["entry_point"] == "broken = kzfake_broken:family"
    assert data["alpha"] == {"family": "alpha", "distribution": "fake-good", "version": "1.2",
                             "entry_point": "alpha = kzfake_alpha:family", "status": "ok",
                             "error": None, "builtin": False}


def test_models_prints_plugin_warnings_briefly(capsys, fake_site):
    fake_site.add("fake-broken", "0.3", {"broken": "kzfake_broken:family"},
                  {"kzfake_broken": "raise ImportError('no module named torchfoo')\n"})
    rc, out, err = run(capsys, "models")
    assert rc == 0 and "espcn-x3" in out.split()
    assert err.startswith("warning: kernelzoo: plugin distribution 'fake-broken' 0.3")
    assert "ImportError: no module named torchfoo" in err and len(err.splitlines()) == 1


def test_info_lists_families(capsys, fake_site):
    fake_site.add("fake-good", "1.2", {"alpha": "kzfake_alpha:family"},
                  {"kzfake_alpha": good_plugin("alpha")})
    rc, out, _ = run(capsys, "info")
    assert rc == 0
    assert out.splitlines()[0] == f"kernelzoo {kernelzoo.__version__}"   # existing output kept
    assert "ops (backends with kernels)" in out
    section = out[out.index("model families"):].splitlines()
    assert section[1].split()[:4] == ["alpha", "3", "models,", "fake-good"]
    assert section[2].split()[:4] == ["espcn", "7", "models,", "built-in:"]
    rc, out, _ = run(capsys, "info", "--json")
    fams = {f["family"]: f for f in json.loads(out)["families"]}
    assert fams["espcn"]["models"] == ESPCN_MODELS
    assert fams["espcn"]["status"] == "ok" and fams["espcn"]["builtin"] is True
    assert fams["alpha"]["distribution"] == "fake-good"


def test_train_json(capsys, tmp_path, fresh_registry):
    path = tmp_path / "w.pt"
    rc, out, err = run(capsys, "train", "espcn-test", "--steps", "3", "--batch-size", "2",
                       "--lr", "1e-3", "--seed", "4", "--save", str(path), "--json")
    assert rc == 0
    result = json.loads(out)
    assert (result["model"], result["steps"], result["batch_size"], result["lr"],
            result["seed"]) == ("espcn-test", 3, 2, 1e-3, 4)
    assert len(result["losses"]) == 3
    state = torch.load(path, weights_only=True)
    assert set(state) == set(kernelzoo.create_model("espcn-test").state_dict())
    assert "train espcn-test [" in err and "3/3" in err        # the progress bar


def test_train_text_report(capsys, fresh_registry):
    rc, out, err = run(capsys, "train", "espcn-test", "--steps", "2", "--no-progress")
    assert rc == 0 and err == ""
    assert out.startswith("espcn-test: 2 steps of 16 ")
    assert "PSNR on 32 held-out 96x96 images: model " in out and " dB, bicubic " in out


def test_train_threads(capsys, fresh_registry, monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    rc, _, _ = run(capsys, "train", "espcn-test", "--steps", "1", "--threads", "1",
                   "--no-progress")
    assert rc == 0 and calls == [1]
    rc, _, err = run(capsys, "train", "espcn-test", "--threads", "0")
    assert rc == 2 and "--threads must be at least 1" in err and calls == [1]


def test_train_errors(capsys, fresh_registry):
    rc, _, err = run(capsys, "train", "espcn-x9")
    assert rc == 2 and "kernelzoo train: unknown model 'espcn-x9'" in err
    rc, _, err = run(capsys, "train", "espcn-test", "--steps", "0")
    assert rc == 2 and "steps and batch_size must be positive" in err
    import kernelzoo.plugins.espcn as espcn

    kernelzoo.register_family(kernelzoo.ModelFamily(
        name="untrained", build=espcn.build, presets={"test": espcn.ESPCNConfig()},
        example_inputs=espcn.example_inputs))
    rc, _, err = run(capsys, "train", "untrained-test")
    assert rc == 2 and "family 'untrained' ships no training example" in err


def test_console_script(tmp_path):
    """The installed `python -m kernelzoo` entry point, in a fresh process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERNELZOO_")}
    proc = subprocess.run([sys.executable, "-m", "kernelzoo", "models", "espcn-x3*"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["espcn-x3", "espcn-x3-rgb"]
