"""pytest with an instrumented build standing in for ``exporter._lines``.

``python -m tests.fuzz.sanitized EXT_DIR [PYTEST ARGS]``, run with the sanitizer runtime
preloaded (``tests.fuzz.build.Toolchain.env``). EXT_DIR holds the module that
``tests.fuzz.build.build`` compiled.

Why not a copy of the package first on PYTHONPATH: pytest puts the repository's root at
the front of ``sys.path`` for the tests/ package (rootdir-based imports), so ``exporter``
would be the repository's and its ``_lines`` the uninstrumented one. Instead the
directory goes first on ``exporter.__path__`` before anything imports the extension, the
module is imported from there under its own name, and its file is checked: every test
that uses ``exporter.native`` then runs the instrumented C.
"""

from __future__ import annotations

import functools
import importlib
import sys
from pathlib import Path

import pytest

import exporter

MARK = "sanitized exporter._lines:"


def load(directory: Path) -> Path:
    """Import ``exporter._lines`` from ``directory``; returns the file it came from."""
    if "exporter._lines" in sys.modules:
        raise RuntimeError("exporter._lines was imported before the instrumented build")
    exporter.__path__.insert(0, str(directory))
    module = importlib.import_module("exporter._lines")
    origin = Path(module.__file__ or "").resolve()
    if origin.parent != directory.resolve():
        raise RuntimeError(f"exporter._lines came from {origin}, not {directory}")
    return origin


def cache_model_spec() -> None:
    """Compute the native path's field constraints once per process, not per binding.

    ``exporter.native.model_spec`` reads them from the model (msgspec.inspect, ~50 ms,
    under ASan several times that) each time an aggregator binds the extension; the
    differential tests and the fuzz target bind two fresh aggregators per example, so
    that was most of their time. The result depends on the model only: caching it
    changes nothing the tests compare. A no-op where native.py caches it itself."""
    from exporter import native

    spec = getattr(native, "model_spec", None)
    if spec is not None and not hasattr(spec, "cache_info"):
        native.model_spec = functools.cache(spec)


def main(argv: list[str]) -> int:
    origin = load(Path(argv[0]))
    cache_model_spec()
    print(MARK, origin, flush=True)
    return int(pytest.main(argv[1:]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
