"""Every model family passes kernelzoo's conformance checks; the built-in ones
are read from kernelzoo's own entry points, so that a built-in family whose
plugin fails to import is a failing test here, not a missing one."""

import pkgutil
from importlib import metadata

import pytest

import kernelzoo
import kernelzoo.plugins
from kernelzoo.registry import BUILTIN_DISTRIBUTION, ENTRY_POINT_GROUP
from kernelzoo.testing import check_family

#: Families the kernelzoo distribution declares (its installed metadata).
BUILTIN = sorted(ep.name for ep in metadata.distribution(BUILTIN_DISTRIBUTION).entry_points
                 if ep.group == ENTRY_POINT_GROUP)
#: Those and every other usable family (third-party plugins installed here).
FAMILIES = sorted(set(BUILTIN) | set(kernelzoo.list_families()))


def test_builtin_families_are_registered_and_load():
    assert BUILTIN, "the kernelzoo distribution declares no kernelzoo.families entry point"
    infos = {p.family: p for p in kernelzoo.list_plugins() if p.builtin}
    assert sorted(infos) == BUILTIN
    for name, info in infos.items():
        assert info.status == "ok", f"{name}: {info.error}"
        assert info.entry_point == f"{name} = kernelzoo.plugins.{name}:family"
    assert set(BUILTIN) <= set(kernelzoo.list_families())


def test_every_builtin_plugin_package_has_an_entry_point():
    """A family added under plugins/ is registered through pyproject.toml
    (reinstall to refresh the installed metadata)."""
    packages = sorted(m.name for m in pkgutil.iter_modules(kernelzoo.plugins.__path__)
                      if m.ispkg)
    assert packages == BUILTIN


@pytest.mark.parametrize("name", FAMILIES)
def test_family_conforms(name):
    family = kernelzoo.get_family(name)     # PluginError if it does not load
    checked = check_family(name)
    assert checked == [f"{name}-{p}" for p in family.small_presets]
    assert f"{name}-test" in checked or family.small
