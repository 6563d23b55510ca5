"""A plugin cannot take the registry down: whatever its import, factory or
builder raises (SystemExit, argparse's usage error, GeneratorExit, a custom
BaseException) or prints, and however malformed its entry point; only a real
Ctrl-C goes through."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import warnings

import pytest
import torch
from torch import nn

import kernelzoo
import kernelzoo.registry as registry
from kernelzoo import ModelFamily, cli
from kernelzoo.registry import PluginError, PluginWarning
from kernelzoo.testing import FamilyCheckError, check_family

from _plugin_helpers import (fake_site, fresh_registry, good_plugin,  # noqa: F401  (fixtures)
                             plugin, plugin_warnings)

ARGPARSE_AT_IMPORT = """
import argparse
parser = argparse.ArgumentParser()
parser.add_argument("--plugin-option", required=True)
parser.parse_args()       # kernelzoo's (or pytest's) command line: usage error, SystemExit(2)
"""

RAISING_AT_IMPORT = {
    "sys.exit": ("import sys\nsys.exit(3)\n", "SystemExit(3): the plugin called sys.exit()"),
    "sys.exit(0)": ("import sys\nsys.exit(0)\n", "SystemExit(0)"),
    "sys.exit(message)": ("import sys\nsys.exit('cannot run here')\n",
                          "SystemExit('cannot run here')"),
    "argparse": (ARGPARSE_AT_IMPORT, "SystemExit(2)"),
    "GeneratorExit": ("raise GeneratorExit('closing')\n", "GeneratorExit: closing"),
    "custom BaseException": ("class Abort(BaseException):\n    pass\nraise Abort('no way')\n",
                             "Abort: no way"),
    "KeyboardInterrupt raised by the plugin": ("raise KeyboardInterrupt\n",
                                               "KeyboardInterrupt"),
    "factory exits": (good_plugin("exiter").replace(
        "def make_family():\n", "def make_family():\n    raise SystemExit(5)\n"), "SystemExit(5)"),
}




@pytest.mark.parametrize("kind", list(RAISING_AT_IMPORT))
def test_non_exception_at_import_fails_only_that_plugin(fake_site, kind):
    body, reason = RAISING_AT_IMPORT[kind]
    target = "make_family" if kind == "factory exits" else "family"
    fake_site.add("fake-exiter", "0.1", {"exiter": f"kzfake_exiter:{target}"},
                  {"kzfake_exiter": body})
    fake_site.add("fake-good", "1.0", {"alpha": "kzfake_alpha:family"},
                  {"kzfake_alpha": good_plugin("alpha")})
    handler = signal.getsignal(signal.SIGINT)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        models = kernelzoo.list_models()
        info = plugin("exiter")
        with pytest.raises(PluginError, match="'exiter' could not be loaded from distribution "
                                              "'fake-exiter' 0.1") as exc:
            kernelzoo.create_model("exiter-test")
    assert signal.getsignal(signal.SIGINT) == handler          # restored
    assert info.status == "failed" and info.error.startswith(reason), info.error
    assert "\n" not in info.error
    assert isinstance(exc.value.__cause__, BaseException)
    assert not isinstance(exc.value.__cause__, Exception)
    msgs = plugin_warnings(record)
    assert len(msgs) == 1 and "fake-exiter" in msgs[0] and reason in msgs[0]
    # The others are untouched.
    assert "alpha-x2" in models and "espcn-test" in models
    assert not any(m.startswith("exiter-") for m in models)
    assert kernelzoo.list_families() == sorted(set(kernelzoo.list_families()) - {"exiter"})


def test_usage_text_is_kept_in_the_reason_not_printed(fake_site, capsys):
    fake_site.add("fake-cli", "0.2", {"clifam": "kzfake_cli:family"},
                  {"kzfake_cli": ARGPARSE_AT_IMPORT})
    rc = cli.main(["models", "--json"])
    out, err = capsys.readouterr()
    assert rc == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginWarning)
        assert [r["model"] for r in json.loads(out)] == kernelzoo.list_models()
    assert "usage:" not in out and "--plugin-option" not in out
    # One warning line, which carries what the plugin printed.
    assert len(err.splitlines()) == 1 and err.startswith("warning: kernelzoo: plugin ")
    assert "the following arguments are required: --plugin-option" in err
    rc = cli.main(["plugins"])
    out, err = capsys.readouterr()
    assert rc == 0 and err == ""
    row = next(ln for ln in out.splitlines() if ln.startswith("clifam"))
    assert row.split()[:3] == ["clifam", "failed", "fake-cli"]
    reason = out.splitlines()[out.splitlines().index(row) + 1]
    assert reason.startswith("    SystemExit(2): the plugin called sys.exit()")
    assert "it printed while loading: usage: " in reason
    assert "the following arguments are required: --plugin-option" in reason


def test_what_a_working_plugin_prints_goes_to_stderr(fake_site, capsys):
    fake_site.add("fake-chatty", "1.0", {"chatty": "kzfake_chatty:family"},
                  {"kzfake_chatty": "print('chatty: hello from the plugin')\n"
                                    "import sys\nprint('chatty: on stderr', file=sys.stderr)\n"
                                    + good_plugin("chatty")})
    rc = cli.main(["models", "--json", "chatty-*"])
    out, err = capsys.readouterr()
    assert rc == 0
    assert [r["model"] for r in json.loads(out)] == ["chatty-test", "chatty-x2", "chatty-x10"]
    assert "chatty: hello from the plugin" in err and "chatty: on stderr" in err
    assert plugin("chatty").status == "ok"


def test_a_real_ctrl_c_during_import_goes_through(fake_site):
    fake_site.add("fake-slow", "1.0", {"slow": "kzfake_slow:family"},
                  {"kzfake_slow": "import signal\nsignal.raise_signal(signal.SIGINT)\n"
                                  + good_plugin("slow")})
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        kernelzoo.list_plugins()
    assert signal.getsignal(signal.SIGINT) == handler
    # Not marked failed: the user interrupted it, the plugin did nothing wrong.
    p = next(p for p in registry._REGISTRY.providers() if p.family_name == "slow")
    assert p.status == "ok" and not p.loaded


def test_subprocess_commands_survive_a_plugin_that_parses_arguments(fake_site):
    fake_site.add("fake-cli", "0.2", {"clifam": "kzfake_cli:family"},
                  {"kzfake_cli": ARGPARSE_AT_IMPORT})
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERNELZOO_")}
    env["PYTHONPATH"] = os.pathsep.join([str(fake_site.root), env.get("PYTHONPATH", "")])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginWarning)
        expected = kernelzoo.list_models()
    for argv in (["models"], ["plugins"], ["info"]):
        proc = subprocess.run([sys.executable, "-m", "kernelzoo", *argv], capture_output=True,
                              text=True, env=env, cwd=str(fake_site.root), timeout=300)
        assert proc.returncode == 0, (argv, proc.stderr)
        assert "usage:" not in proc.stdout.split("\n", 1)[0]
        assert "Traceback" not in proc.stderr
        if argv == ["models"]:
            assert proc.stdout.split() == expected
            assert len(proc.stderr.splitlines()) == 1 and "SystemExit(2)" in proc.stderr
        if argv == ["plugins"]:
            assert "clifam" in proc.stdout and "failed" in proc.stdout
        if argv == ["info"]:
            assert "FAILED" in proc.stdout and "clifam" in proc.stdout


# --------------------------------------------------------------------------- build time


def tiny_build(width=2):
    return nn.Linear(width, 1)


def tiny_inputs(model, batch_size=2):
    return (torch.randn(batch_size, model.in_features),)


def exiting_build(width=2):
    sys.exit(7)


class Abort(BaseException):
    pass


def aborting_inputs(model, batch_size=2):
    raise Abort("no inputs today")


class GeneratorExitModel(nn.Linear):
    def forward(self, x):
        raise GeneratorExit


@pytest.mark.parametrize("kwargs, step, reason", [
    ({"build": exiting_build}, "build", "SystemExit(7): the plugin called sys.exit()"),
    ({"example_inputs": aborting_inputs}, "example_inputs", "Abort: no inputs today"),
    ({"build": lambda width=2: GeneratorExitModel(width, 1)}, "forward", "GeneratorExit"),
])
def test_check_family_reports_non_exceptions_as_failures(kwargs, step, reason):
    fam = ModelFamily(**{"name": "tiny", "build": tiny_build, "presets": {"test": {}},
                         "example_inputs": tiny_inputs, **kwargs})
    with pytest.raises(FamilyCheckError) as exc:
        check_family(fam, compile=False)
    assert str(exc.value).startswith(f"check_family('tiny'): tiny-test: {step} raised {reason}")


def test_create_model_turns_a_build_exit_into_a_plugin_error(fresh_registry):
    kernelzoo.register_family(ModelFamily(name="tiny", build=exiting_build,
                                          presets={"test": {}}, example_inputs=tiny_inputs))
    with pytest.raises(PluginError, match=r"family 'tiny': building tiny-test raised "
                                          r"SystemExit\(7\)") as exc:
        kernelzoo.create_model("tiny-test")
    assert isinstance(exc.value.__cause__, SystemExit)


def test_a_real_ctrl_c_during_build_goes_through(fresh_registry):
    def build(width=2):
        signal.raise_signal(signal.SIGINT)
        return nn.Linear(width, 1)

    kernelzoo.register_family(ModelFamily(name="tiny", build=build, presets={"test": {}},
                                          example_inputs=tiny_inputs))
    with pytest.raises(KeyboardInterrupt):
        kernelzoo.create_model("tiny-test")
    with pytest.raises(KeyboardInterrupt):
        check_family("tiny", compile=False)


# --------------------------------------------------------------------------- entry point values


@pytest.mark.parametrize("value, problem", [
    ("kzfake_mod", "no ':attribute' part (a module alone cannot be a family)"),
    ("kzfake_mod:a:b", "more than one ':'"),
    ("kzfake_mod:family extra]", "unbalanced brackets"),
    ("kzfake_mod:family [extra", "unbalanced brackets"),
    ("1kzfake:family", "'1kzfake' is not a dotted Python name"),
    ("kzfake..mod:family", "'kzfake..mod' is not a dotted Python name"),
    ("kzfake_mod:fam-ily", "'fam-ily' is not a dotted Python name"),
    (":family", "no module before ':'"),
    ("kzfake_mod:", "no attribute after ':'"),
])
def test_malformed_entry_point_value_is_reported_without_import(fake_site, value, problem):
    fake_site.add("fake-typo", "0.9", {"typo": value},
                  {"kzfake_mod": "raise AssertionError('must not be imported')\n"})
    with pytest.warns(PluginWarning) as record:
        info = plugin("typo")
    assert info.status == "failed"
    assert info.error == (f"malformed value {value!r} of entry point 'typo' (distribution "
                          f"'fake-typo'): {problem}; expected 'module:attribute', e.g. "
                          f"'typo = my_plugin:family'")
    msgs = plugin_warnings(record)
    assert len(msgs) == 1 and "'fake-typo' 0.9" in msgs[0] and problem in msgs[0]
    with pytest.raises(PluginError, match="'typo' could not be loaded from distribution "
                                          "'fake-typo' 0.9 .*malformed value"):
        kernelzoo.create_model("typo-test")
    assert "kzfake_mod" not in sys.modules
    assert "espcn-test" in kernelzoo.list_models()


def test_empty_entry_point_value(fake_site):
    fake_site.add("fake-empty", "1.0", {"hollow": ""})
    with pytest.warns(PluginWarning, match="'fake-empty'"):
        info = plugin("hollow")
    assert info.status == "failed" and ": it is empty;" in info.error


@pytest.mark.parametrize("value", ["kzfake_alpha:family", "kzfake_alpha : family",
                                   "kzfake_alpha:family [extra]", "kzfake_alpha:make_family"])
def test_well_formed_entry_point_values_still_load(fake_site, value):
    fake_site.add("fake-good", "1.0", {"alpha": value}, {"kzfake_alpha": good_plugin("alpha")})
    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginWarning)
        assert plugin("alpha").status == "ok"
        assert kernelzoo.list_models("alpha-*") == ["alpha-test", "alpha-x2", "alpha-x10"]
