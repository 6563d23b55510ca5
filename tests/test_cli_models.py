"""`kernelzoo models`, `kernelzoo plugins`, `kernelzoo train` and the families
section of `kernelzoo info`."""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import os
import subprocess
import sys

import pytest
import torch

import kernelzoo
from kernelzoo import cli
from kernelzoo.registry import model_config

from _plugin_helpers import fake_site, fresh_registry, good_plugin  # noqa: F401  (fixtures)

def run(capsys, *argv):
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def with_alpha(fake_site):
    """A fake third-party family 'alpha' (presets x2, x10, test) next to the built-in ones."""
    fake_site.add("fake-good", "1.2", {"alpha": "kzfake_alpha:family"},
                  {"kzfake_alpha": good_plugin("alpha")})


def test_models(capsys, fake_site):
    with_alpha(fake_site)
    rc, out, _ = run(capsys, "models")
    assert rc == 0
    # Every model of every family, as the registry lists them, naturally sorted.
    assert out.split() == kernelzoo.list_models() and len(out.split()) > 3
    assert [m for m in out.split() if m.startswith("alpha-")] == \
        ["alpha-test", "alpha-x2", "alpha-x10"]
    rc, out, _ = run(capsys, "models", "alpha-x?", "*-test")
    expected = [m for m in kernelzoo.list_models()
                if fnmatch.fnmatchcase(m, "alpha-x?") or m.endswith("-test")]
    assert (rc, out.split()) == (0, expected)
    assert {"alpha-x2", "alpha-test"} <= set(expected) and "alpha-x10" not in expected
    # Every family ships a '-test' preset, and each is listed.
    assert {m.partition("-")[0] for m in expected if m.endswith("-test")} == \
        set(kernelzoo.list_families())


def config_as_json(config):
    c = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    return json.loads(json.dumps(c, default=repr))


def test_models_long_and_json(capsys, fake_site):
    with_alpha(fake_site)
    names = kernelzoo.list_models()
    rc, out, _ = run(capsys, "models", "-l")
    assert rc == 0
    width = max(map(len, names))
    assert out.splitlines() == [f"{n:<{width}}  {model_config(n)}" for n in names]
    rc, out, _ = run(capsys, "models", "--json")
    assert rc == 0
    assert json.loads(out) == [{"model": n, "config": config_as_json(model_config(n))}
                               for n in names]
    rc, out, _ = run(capsys, "models", "--json", "alpha-x2")
    assert (rc, json.loads(out)) == (0, [{"model": "alpha-x2", "config": {"scale": 2}}])
    rc, out, _ = run(capsys, "models", "-l", "alpha-x10")
    assert (rc, out) == (0, "alpha-x10  {'scale': 10}\n")


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
    builtin = [p.family for p in kernelzoo.list_plugins() if p.builtin]
    assert builtin
    for name in builtin:
        assert rows[name][:5] == [name, "ok", "kernelzoo", kernelzoo.__version__, "(built-in)"]
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
    with_alpha(fake_site)
    rc, out, _ = run(capsys, "info")
    assert rc == 0
    assert out.splitlines()[0] == f"kernelzoo {kernelzoo.__version__}"   # existing output kept
    assert "ops (backends with kernels)" in out
    section = out[out.index("model families"):].splitlines()[1:]
    families = kernelzoo.list_families()
    assert [line.split()[0] for line in section] == families
    for line in section:
        fam = kernelzoo.get_family(line.split()[0])
        info = next(p for p in kernelzoo.list_plugins() if p.family == fam.name)
        source = "built-in:" if info.builtin else info.distribution
        assert line.split()[1:4] == [str(len(fam.model_names())), "models,", source]
    rc, out, _ = run(capsys, "info", "--json")
    fams = {f["family"]: f for f in json.loads(out)["families"]}
    assert sorted(fams) == families
    for name, f in fams.items():
        assert f["status"] == "ok" and f["models"] == kernelzoo.get_family(name).model_names()
    builtin = {p.family for p in kernelzoo.list_plugins() if p.builtin}
    assert builtin and {n for n, f in fams.items() if f["builtin"]} == builtin
    assert fams["alpha"]["distribution"] == "fake-good" and not fams["alpha"]["builtin"]


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
    assert rc == 2 and "kernelzoo train: --steps must be at least 1, got 0" in err
    import kernelzoo.plugins.espcn as espcn

    kernelzoo.register_family(kernelzoo.ModelFamily(
        name="untrained", build=espcn.build, presets={"test": espcn.ESPCNConfig()},
        example_inputs=espcn.example_inputs))
    rc, _, err = run(capsys, "train", "untrained-test")
    assert rc == 2 and "family 'untrained' ships no training example" in err


def test_console_script(tmp_path, fresh_registry):
    """The installed `python -m kernelzoo` entry point, in a fresh process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERNELZOO_")}
    proc = subprocess.run([sys.executable, "-m", "kernelzoo", "models", "*-test"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == kernelzoo.list_models("*-test") != []
