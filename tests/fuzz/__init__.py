"""Instrumented builds of the native line path (exporter/_lines.c) and the fuzz target.

``build`` compiles the extension with sanitizers (and, for the fuzzer, coverage) into a
directory of its own, never over the repository's module; ``sanitized`` runs pytest with
that build standing in for ``exporter._lines``; ``target`` is the coverage-guided fuzz
target (atheris) with the Python path as its oracle. ``corpus/`` holds the seed inputs,
``regressions/`` the inputs of bugs found, replayed by tests/test_native_sanitized.py.
"""
