"""The package's public surface: every name in ``__all__`` resolves, lazily."""

from __future__ import annotations

import subprocess
import sys

import pytest

import exporter


def test_every_public_name_resolves_to_its_definition() -> None:
    for name in exporter.__all__:
        value = getattr(exporter, name)
        module = exporter._EXPORTS[name]
        assert value is getattr(sys.modules[module], name), name
    assert sorted(exporter.__all__) == sorted(exporter._EXPORTS)
    assert set(exporter.__all__) <= set(dir(exporter))


@pytest.mark.e2e
def test_importing_a_module_does_not_import_the_web_stack() -> None:
    # A fresh interpreter: this one has imported Flask through other tests already.
    code = ("import sys, exporter.catalog, exporter.config; "
            "print('flask' in sys.modules, 'exporter.runtime' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_unknown_name_is_an_attribute_error() -> None:
    try:
        exporter.no_such_name  # noqa: B018 - the lookup is the test
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("exporter.no_such_name resolved")
