"""Entry-point discovery: built-in and third-party plugins, failures, collisions,
API versions, environment variables, laziness, and the example plugin package."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

import kernelzoo
import kernelzoo.registry as registry
from kernelzoo.registry import PluginError, PluginWarning

from _plugin_helpers import (fake_site, fresh_registry, good_plugin,  # noqa: F401  (fixtures)
                             plugin, plugin_warnings)

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "kernelzoo-plugin-example"




# --------------------------------------------------------------------------- built-in


def test_builtin_family_comes_from_kernelzoos_own_entry_point(fresh_registry):
    info = plugin("espcn")
    assert info.distribution == "kernelzoo"
    assert info.version == kernelzoo.__version__
    assert info.entry_point == "espcn = kernelzoo.plugins.espcn:family"
    assert info.status == "ok" and info.error is None and info.builtin
    import kernelzoo.plugins.espcn as espcn

    assert kernelzoo.get_family("espcn") is espcn.family


# --------------------------------------------------------------------------- third party


def test_third_party_object_and_callable_entry_points(fake_site):
    fake_site.add("fake-good", "2.5",
                  {"alpha": "kzfake_alpha:family", "beta": "kzfake_beta:make_family"},
                  {"kzfake_alpha": good_plugin("alpha"), "kzfake_beta": good_plugin("beta")})
    assert kernelzoo.list_models("alpha-*") == ["alpha-test", "alpha-x2", "alpha-x10"]
    assert "beta-x10" in kernelzoo.list_models()
    assert {"alpha", "beta", "espcn"} <= set(kernelzoo.list_families())
    info = plugin("beta")
    assert (info.distribution, info.version, info.entry_point, info.status, info.builtin) == \
        ("fake-good", "2.5", "beta = kzfake_beta:make_family", "ok", False)
    model = kernelzoo.create_model("alpha-x2", channels=2)
    out = model(torch.rand(1, 2, 3, 4))
    assert out.shape == (1, 2, 6, 8)
    from kernelzoo.testing import check_family

    assert check_family("beta", compile=False) == ["beta-test"]


def test_failing_import_is_isolated_and_reported(fake_site):
    fake_site.add("fake-broken", "0.3", {"broken": "kzfake_broken:family"},
                  {"kzfake_broken": "raise RuntimeError('boom: missing dependency')\n"})
    fake_site.add("fake-good", "1.0", {"alpha": "kzfake_alpha:family"},
                  {"kzfake_alpha": good_plugin("alpha")})
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        models = kernelzoo.list_models()
        kernelzoo.list_models()
        kernelzoo.list_plugins()
        with pytest.raises(PluginError) as exc:
            kernelzoo.create_model("broken-test")
    # One warning for the broken plugin, however often the registry is used.
    msgs = plugin_warnings(record)
    assert len(msgs) == 1, msgs
    assert "fake-broken" in msgs[0] and "boom: missing dependency" in msgs[0]
    # Every other family keeps working.
    assert "alpha-x2" in models and "espcn-x3" in models
    assert not any(m.startswith("broken-") for m in models)
    kernelzoo.create_model("espcn-test")
    # The error names the distribution and the entry point, and chains the cause.
    msg = str(exc.value)
    assert "'broken'" in msg and "'fake-broken' 0.3" in msg
    assert "broken = kzfake_broken:family" in msg
    assert isinstance(exc.value.__cause__, RuntimeError)
    assert str(exc.value.__cause__) == "boom: missing dependency"
    info = plugin("broken")
    assert info.status == "failed"
    assert info.error == "RuntimeError: boom: missing dependency"


@pytest.mark.parametrize("body, needle", [
    ("family = 42\n", "yields int 42, not a kernelzoo.ModelFamily"),
    ("def family():\n    return {'name': 'odd'}\n", "yields dict"),
    ("from kernelzoo import ModelFamily as family\n", "yields type"),
])
def test_entry_point_that_is_not_a_family_fails(fake_site, body, needle):
    fake_site.add("fake-odd", "1.0", {"odd": "kzfake_odd:family"}, {"kzfake_odd": body})
    with pytest.warns(PluginWarning, match="fake-odd"):
        info = plugin("odd")
    assert info.status == "failed"
    assert info.error.startswith("TypeError: ") and needle in info.error
    with pytest.raises(PluginError, match="could not be loaded") as exc:
        kernelzoo.create_model("odd-test")
    assert isinstance(exc.value.__cause__, TypeError)


def test_entry_point_name_must_match_family_name(fake_site):
    fake_site.add("fake-alias", "1.0", {"other": "kzfake_alias:family"},
                  {"kzfake_alias": good_plugin("alpha")})
    with pytest.warns(PluginWarning):
        info = plugin("other")
    assert info.status == "failed"
    assert "entry point 'other' yields a family named 'alpha'" in info.error
    assert "alpha-x2" not in kernelzoo.list_models()


def test_invalid_entry_point_name_fails_without_import(fake_site):
    fake_site.add("fake-bad-name", "1.0", {"Bad-Name": "kzfake_badname:family"},
                  {"kzfake_badname": "raise AssertionError('must not be imported')\n"})
    with pytest.warns(PluginWarning, match="invalid family name 'Bad-Name'"):
        info = plugin("Bad-Name")
    assert info.status == "failed"
    assert "kzfake_badname" not in sys.modules


# --------------------------------------------------------------------------- collisions


def test_two_distributions_with_one_family_name_both_conflict(fake_site):
    fake_site.add("fake-one", "1.0", {"twin": "kzfake_one:family"},
                  {"kzfake_one": good_plugin("twin")})
    fake_site.add("fake-two", "2.0", {"twin": "kzfake_two:family"},
                  {"kzfake_two": good_plugin("twin")})
    with pytest.warns(PluginWarning, match="'twin' is provided by"):
        infos = [p for p in kernelzoo.list_plugins() if p.family == "twin"]
    assert sorted((p.distribution, p.status) for p in infos) == \
        [("fake-one", "conflict"), ("fake-two", "conflict")]
    assert "fake-two" in next(p.error for p in infos if p.distribution == "fake-one")
    with pytest.raises(PluginError) as exc:
        kernelzoo.create_model("twin-x2")
    assert "'fake-one' 1.0" in str(exc.value) and "'fake-two' 2.0" in str(exc.value)
    assert not any(m.startswith("twin-") for m in kernelzoo.list_models())
    # Neither contender was imported.
    assert "kzfake_one" not in sys.modules and "kzfake_two" not in sys.modules


def test_third_party_cannot_replace_a_builtin_family(fake_site, monkeypatch):
    fake_site.add("fake-hijack", "6.6", {"espcn": "kzfake_hijack:family"},
                  {"kzfake_hijack": good_plugin("espcn")})
    with pytest.warns(PluginWarning):
        infos = [p for p in kernelzoo.list_plugins() if p.family == "espcn"]
    assert sorted((p.distribution, p.status) for p in infos) == \
        [("fake-hijack", "conflict"), ("kernelzoo", "conflict")]
    with pytest.raises(PluginError) as exc:
        kernelzoo.create_model("espcn-x3")
    assert "'kernelzoo'" in str(exc.value) and "'fake-hijack'" in str(exc.value)
    assert "KERNELZOO_DISABLE_PLUGINS" in str(exc.value)
    assert "kzfake_hijack" not in sys.modules
    # The documented way out: disable one of them.
    monkeypatch.setenv("KERNELZOO_DISABLE_PLUGINS", "fake-hijack:espcn")
    registry.refresh()
    model = kernelzoo.create_model("espcn-x3")
    assert type(model).__module__ == "kernelzoo.plugins.espcn.model"
    assert {(p.distribution, p.status) for p in kernelzoo.list_plugins()
            if p.family == "espcn"} == {("kernelzoo", "ok"), ("fake-hijack", "disabled")}


def test_register_family_never_overwrites(fresh_registry):
    import kernelzoo.plugins.espcn as espcn

    impostor = registry.ModelFamily(name="espcn", build=espcn.build, presets={"x3": {}},
                                    example_inputs=espcn.example_inputs)
    with pytest.raises(ValueError, match="'espcn' already exists .*distribution 'kernelzoo'"):
        kernelzoo.register_family(impostor)
    assert kernelzoo.create_model("espcn-x3").scale == 3   # untouched

    mine = registry.ModelFamily(name="mine", build=espcn.build,
                                presets={"test": espcn.ESPCNConfig(features=(2, 2))},
                                example_inputs=espcn.example_inputs)
    assert kernelzoo.register_family(mine) is mine
    with pytest.raises(ValueError, match="'mine' already exists .*register_family"):
        kernelzoo.register_family(registry.ModelFamily(
            name="mine", build=espcn.build, presets={"other": espcn.ESPCNConfig()},
            example_inputs=espcn.example_inputs))
    assert kernelzoo.list_models("mine-*") == ["mine-test"]
    info = plugin("mine")
    assert (info.distribution, info.entry_point, info.status) == (None, None, "ok")
    assert registry.unregister_family("mine") is mine
    assert kernelzoo.list_models("mine-*") == []
    with pytest.raises(ValueError, match="comes from an entry point"):
        registry.unregister_family("espcn")
    with pytest.raises(TypeError, match="expects a kernelzoo.ModelFamily"):
        kernelzoo.register_family("espcn")


# --------------------------------------------------------------------------- API versions


def test_incompatible_api_version(fake_site):
    fake_site.add("fake-future", "9.0", {"future": "kzfake_future:family"},
                  {"kzfake_future": good_plugin("future", api_version=99)})
    with pytest.warns(PluginWarning, match="incompatible"):
        info = plugin("future")
    assert info.status == "incompatible"
    assert "plugin API version 99" in info.error
    assert "supports API version(s) 1" in info.error
    with pytest.raises(PluginError, match="incompatible.*supports API version\\(s\\) 1"):
        kernelzoo.create_model("future-x2")
    assert "future-x2" not in kernelzoo.list_models()
    # In-process registration is refused outright.
    fam = sys.modules["kzfake_future"].family
    with pytest.raises(ValueError, match="API version 99"):
        kernelzoo.register_family(fam)


def test_supported_versions_include_the_current_one():
    assert registry.API_VERSION in registry.SUPPORTED_API_VERSIONS
    import kernelzoo.plugins.espcn as espcn

    assert espcn.family.api_version == registry.API_VERSION


# --------------------------------------------------------------------------- environment


@pytest.fixture
def two_plugins(fake_site):
    fake_site.add("fake-alpha", "1.0", {"alpha": "kzfake_alpha:family"},
                  {"kzfake_alpha": good_plugin("alpha")})
    fake_site.add("fake-beta", "1.0", {"beta": "kzfake_beta:family"},
                  {"kzfake_beta": good_plugin("beta")})
    return fake_site


def statuses():
    return {p.family: p.status for p in kernelzoo.list_plugins()}


def builtin_families() -> list[str]:
    """The kernelzoo distribution's own families, as its metadata declares them."""
    from importlib import metadata

    names = sorted(ep.name for ep in metadata.distribution("kernelzoo").entry_points
                   if ep.group == registry.ENTRY_POINT_GROUP)
    assert names
    return names


def test_allow_list_by_family(two_plugins, monkeypatch):
    first, *others = builtin_families()
    monkeypatch.setenv("KERNELZOO_PLUGINS", f"{first}, alpha")
    assert statuses() == {first: "ok", **dict.fromkeys(others, "disabled"), "alpha": "ok",
                          "beta": "disabled"}
    assert "kzfake_beta" not in sys.modules
    with pytest.raises(PluginError, match=f"'beta' .* is disabled: not in the allow-list "
                                          f"KERNELZOO_PLUGINS='{first}, alpha'"):
        kernelzoo.create_model("beta-x2")


def test_allow_list_by_distribution_pattern(two_plugins, monkeypatch):
    monkeypatch.setenv("KERNELZOO_PLUGINS", "fake_BETA:*")   # names are normalised
    assert statuses() == {**dict.fromkeys(builtin_families(), "disabled"), "alpha": "disabled",
                          "beta": "ok"}
    assert kernelzoo.list_models() == ["beta-test", "beta-x2", "beta-x10"]


def test_deny_list_wins_over_allow_list(two_plugins, monkeypatch):
    monkeypatch.setenv("KERNELZOO_PLUGINS", "*")
    monkeypatch.setenv("KERNELZOO_DISABLE_PLUGINS", "alpha")
    assert statuses() == {**dict.fromkeys(builtin_families(), "ok"), "alpha": "disabled",
                          "beta": "ok"}
    assert "kzfake_alpha" not in sys.modules


def test_no_third_party(two_plugins, monkeypatch):
    monkeypatch.setenv("KERNELZOO_NO_THIRD_PARTY_PLUGINS", "1")
    infos = kernelzoo.list_plugins()
    assert {p.family: p.status for p in infos} == \
        {**dict.fromkeys(builtin_families(), "ok"), "alpha": "disabled", "beta": "disabled"}
    assert all("KERNELZOO_NO_THIRD_PARTY_PLUGINS=1" in p.error for p in infos
               if p.status == "disabled")
    assert kernelzoo.list_families() == builtin_families()
    assert "kzfake_alpha" not in sys.modules and "kzfake_beta" not in sys.modules


def test_env_is_read_at_discovery_and_refresh(two_plugins, monkeypatch):
    assert statuses()["alpha"] == "ok"
    monkeypatch.setenv("KERNELZOO_DISABLE_PLUGINS", "alpha")
    assert statuses()["alpha"] == "ok"          # cached until refresh()
    registry.refresh()
    assert statuses()["alpha"] == "disabled"


# --------------------------------------------------------------------------- laziness


def test_discovery_runs_once_per_process(fresh_registry, monkeypatch):
    from importlib import metadata

    calls = []
    real = metadata.entry_points

    def counting(**kw):
        calls.append(kw)
        return real(**kw)

    monkeypatch.setattr(metadata, "entry_points", counting)
    kernelzoo.list_models()
    kernelzoo.create_model("espcn-test")
    kernelzoo.list_plugins()
    kernelzoo.list_families()
    assert calls == [{"group": "kernelzoo.families"}]
    registry.refresh()
    kernelzoo.list_models()
    assert len(calls) == 2


LAZY_PROBE = textwrap.dedent("""
    import json, sys
    import kernelzoo

    def loaded():
        return sorted(m for m in sys.modules
                      if m.startswith(("kernelzoo.plugins", "kzfake_")))

    out = {"after_import": loaded()}
    kernelzoo.create_model("espcn-test")
    out["after_create"] = loaded()
    kernelzoo.list_models("alpha*")
    out["after_list_alpha"] = loaded()
    kernelzoo.list_models()
    out["after_list_all"] = loaded()
    out["torchvision"] = "torchvision" in sys.modules
    print(json.dumps(out))
""")


def test_import_is_lazy_and_building_imports_one_family(fake_site):
    fake_site.add("fake-alpha", "1.0", {"alpha": "kzfake_alpha:family"},
                  {"kzfake_alpha": good_plugin("alpha")})
    fake_site.add("fake-beta", "1.0", {"beta": "kzfake_beta:family"},
                  {"kzfake_beta": good_plugin("beta")})
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(fake_site.root), env.get("PYTHONPATH", "")])
    for var in ("KERNELZOO_PLUGINS", "KERNELZOO_DISABLE_PLUGINS",
                "KERNELZOO_NO_THIRD_PARTY_PLUGINS"):
        env.pop(var, None)
    proc = subprocess.run([sys.executable, "-c", LAZY_PROBE], capture_output=True, text=True,
                          env=env, cwd=str(fake_site.root), timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["after_import"] == []
    assert out["after_create"] == ["kernelzoo.plugins", "kernelzoo.plugins.espcn",
                                   "kernelzoo.plugins.espcn.model"]
    assert out["after_list_alpha"] == out["after_create"] + ["kzfake_alpha"]
    # Listing everything imports the other families: each built-in family's
    # package (and what it imports), never torchvision (the fasterrcnn family
    # imports it only to build a model).
    new = set(out["after_list_all"]) - set(out["after_list_alpha"])
    others = [f"kernelzoo.plugins.{f}" for f in builtin_families() if f != "espcn"]
    assert {m for m in new if not m.startswith(tuple(others))} == {"kzfake_beta"}
    assert set(others) <= new
    assert out["torchvision"] is False


# --------------------------------------------------------------------------- the example package


@pytest.fixture(scope="module")
def example_site(tmp_path_factory):
    """The example plugin, pip-installed into a private folder (not the venv)."""
    tmp = tmp_path_factory.mktemp("example")
    src, site = tmp / "src", tmp / "site"
    # Build from a copy, so the build leaves nothing in the repository.
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
           "--no-index", "--no-cache-dir", "--disable-pip-version-check", "--quiet",
           "--target", str(site), str(src)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return site


@pytest.fixture
def with_example(example_site, fresh_registry, monkeypatch):
    monkeypatch.syspath_prepend(str(example_site))
    yield example_site
    for m in [m for m in sys.modules if m.startswith("kernelzoo_plugin_example")]:
        del sys.modules[m]


def test_example_plugin_is_a_real_installed_distribution(example_site):
    infos = list(example_site.glob("kernelzoo_plugin_example-*.dist-info"))
    assert len(infos) == 1
    text = (infos[0] / "entry_points.txt").read_text()
    assert "[kernelzoo.families]" in text
    assert "tinydenoiser = kernelzoo_plugin_example:family" in text


def test_example_plugin_is_discovered_listed_built_and_conforms(with_example):
    from importlib import metadata

    assert "kernelzoo_plugin_example" not in sys.modules
    info = plugin("tinydenoiser")
    assert (info.distribution, info.version, info.status, info.builtin) == \
        ("kernelzoo-plugin-example", metadata.version("kernelzoo-plugin-example"), "ok", False)
    assert info.entry_point == "tinydenoiser = kernelzoo_plugin_example:family"
    assert kernelzoo.list_models("tiny*") == [
        "tinydenoiser-base", "tinydenoiser-rgb", "tinydenoiser-small", "tinydenoiser-test"]
    model = kernelzoo.create_model("tinydenoiser-small", channels=3)
    x = torch.rand(2, 3, 8, 6)
    assert model(x).shape == x.shape
    with pytest.raises(TypeError, match="unknown override 'colour'; valid keys: channels, "
                                        "depth, width"):
        kernelzoo.create_model("tinydenoiser-small", colour=3)
    from kernelzoo.testing import check_family

    assert check_family("tinydenoiser") == ["tinydenoiser-test"]
