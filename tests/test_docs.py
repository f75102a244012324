"""docs/metrics.md must match the catalog and collector table as they are at test time."""

from __future__ import annotations

import difflib
import subprocess
import sys
from pathlib import Path

import pytest

from exporter import catalog, docs
from exporter.collectors import COLLECTORS
from tests.procs import ROOT

DOC = ROOT / "docs" / "metrics.md"
REGENERATE = f"{sys.executable} -m exporter.docs   (or: .venv/bin/python -m exporter.docs)"


def test_metrics_doc_is_current() -> None:
    expected = docs.render()
    current = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
    if current != expected:
        diff = "".join(list(difflib.unified_diff(
            current.splitlines(keepends=True), expected.splitlines(keepends=True),
            "docs/metrics.md (checked in)", "docs/metrics.md (from the catalog)"))[:60])
        raise AssertionError(
            f"docs/metrics.md is stale. Regenerate it from the repository root with:\n"
            f"    {REGENERATE}\nand commit the result.\n{diff}")


def test_every_metric_and_collector_is_documented() -> None:
    text = docs.render()
    for spec in catalog.all_metrics():
        assert f"| `{spec.name}` | {spec.kind.value} |" in text, spec.name
        assert f"`{spec.otel_name}`" in text
    for name, cls in COLLECTORS.items():
        default = "enabled" if cls.default_enabled else "disabled"
        assert f"| `{name}` | {default} |" in text, name


def test_table_cells_are_escaped() -> None:
    assert docs._cell("a | b\nc") == "a \\| b c"
    rows = docs.metric_rows([catalog.MetricSpec("x.y", "s", catalog.Kind.GAUGE, "p|q",
                                                ("a.b",))])
    assert rows[2] == "| `x_y_seconds` | gauge | `s` | `a_b` | `x.y` | exporter | p\\|q |"


@pytest.mark.e2e
def test_check_mode_reports_stale_file(tmp_path: Path) -> None:
    out = tmp_path / "metrics.md"
    out.write_text("stale\n")
    stale = subprocess.run([sys.executable, "-m", "exporter.docs", "--check",
                            f"--output={out}"], capture_output=True, text=True, timeout=60,
                           check=False, cwd=ROOT)
    assert stale.returncode == 1
    assert "python -m exporter.docs" in stale.stderr
    assert out.read_text() == "stale\n"  # --check never writes
    written = subprocess.run([sys.executable, "-m", "exporter.docs", f"--output={out}"],
                             capture_output=True, text=True, timeout=60, check=False, cwd=ROOT)
    assert written.returncode == 0, written.stderr
    assert out.read_text() == docs.render()


def test_security_matrix_in_the_docs_is_the_one_the_tests_assert() -> None:
    from tests import security_matrix

    current = security_matrix.current_section(security_matrix.DOC.read_text(encoding="utf-8"))
    assert current == security_matrix.section(), (
        "docs/security.md's access matrix is stale: run "
        f"`{sys.executable} -m tests.security_matrix` and commit the result")
