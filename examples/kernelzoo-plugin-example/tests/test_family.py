"""The plugin's own conformance test: every family should ship one like it."""

import kernelzoo
from kernelzoo.testing import check_family


def test_discovered():
    assert "tinydenoiser-test" in kernelzoo.list_models("tinydenoiser-*")


def test_conformance():
    assert check_family("tinydenoiser") == ["tinydenoiser-test"]
