"""Helpers for the plugin tests: fake installed distributions and a private registry.

A fake distribution is a ``<name>-<version>.dist-info`` folder (METADATA and
entry_points.txt) plus plain modules, written into a temporary folder that is
put on ``sys.path``; ``importlib.metadata`` then finds it like an installed
package. Fake plugin modules are named ``kzfake_*`` and removed from
``sys.modules`` afterwards.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

import kernelzoo
import kernelzoo.registry as registry
from kernelzoo.registry import PluginWarning

FAKE_PREFIX = "kzfake_"

# A complete, valid plugin module body (see good_plugin).
GOOD_PLUGIN = '''
import torch
from torch import nn
from kernelzoo import ModelFamily
from kernelzoo.nn import PixelShuffle

class Up(nn.Module):
    def __init__(self, channels=1, scale=2):
        super().__init__()
        self.channels = channels
        self.conv = nn.Conv2d(channels, channels * scale * scale, 3, padding=1)
        self.shuffle = PixelShuffle(scale)

    def forward(self, x):
        return self.shuffle(self.conv(x))

def build(channels=1, scale=2):
    return Up(channels, scale)

def example_inputs(model, batch_size=2):
    return (torch.rand(batch_size, model.channels, 5, 7),)

family = ModelFamily(name="@NAME@", build=build,
                     presets={"x2": {"scale": 2}, "x10": {"scale": 10},
                               "test": {"scale": 3}},
                     example_inputs=example_inputs, description="fake @NAME@",
                     api_version=@API@)

def make_family():
    return family
'''


def good_plugin(name: str, api_version: int = 1) -> str:
    return GOOD_PLUGIN.replace("@NAME@", name).replace("@API@", str(api_version))


class FakeSite:
    """A folder on sys.path into which fake distributions are written."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def add(self, dist: str, version: str = "1.0", entry_points: dict | None = None,
            modules: dict | None = None) -> None:
        info = self.root / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        lines = [f"{k} = {v}" for k, v in (entry_points or {}).items()]
        (info / "entry_points.txt").write_text(
            "[kernelzoo.families]\n" + "\n".join(lines) + "\n")
        for mod, src in (modules or {}).items():
            assert mod.startswith(FAKE_PREFIX), mod
            (self.root / f"{mod}.py").write_text(textwrap.dedent(src))


def _forget_fake_modules() -> None:
    for m in [m for m in sys.modules if m.startswith(FAKE_PREFIX)]:
        del sys.modules[m]


@pytest.fixture
def fresh_registry(monkeypatch):
    """A private registry (discovery not yet run), restored afterwards; the
    plugin environment variables are cleared."""
    for var in (registry.ENV_ALLOW, registry.ENV_DENY, registry.ENV_NO_THIRD_PARTY):
        monkeypatch.delenv(var, raising=False)
    reg = registry._Registry()
    monkeypatch.setattr(registry, "_REGISTRY", reg)
    yield reg


@pytest.fixture
def fake_site(tmp_path, monkeypatch, fresh_registry):
    site = FakeSite(tmp_path / "site")
    monkeypatch.syspath_prepend(str(site.root))
    _forget_fake_modules()
    yield site
    _forget_fake_modules()


def plugin(family: str):
    """The one PluginInfo of ``family`` (asserts there is exactly one)."""
    found = [p for p in kernelzoo.list_plugins() if p.family == family]
    assert len(found) == 1, found
    return found[0]


def plugin_warnings(record) -> list[str]:
    """The messages of the PluginWarnings in a ``warnings.catch_warnings`` record."""
    return [str(w.message) for w in record if issubclass(w.category, PluginWarning)]
