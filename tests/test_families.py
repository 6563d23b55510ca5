"""Every registered model family passes kernelzoo's conformance checks."""

import pytest

import kernelzoo
from kernelzoo.testing import check_family

FAMILIES = kernelzoo.list_families()


def test_builtin_families_are_registered():
    assert "espcn" in FAMILIES


@pytest.mark.parametrize("name", FAMILIES)
def test_family_conforms(name):
    family = kernelzoo.get_family(name)
    checked = check_family(name)
    assert checked == [f"{name}-{p}" for p in family.small_presets]
    assert f"{name}-test" in checked or family.small
