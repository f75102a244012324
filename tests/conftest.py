"""Session fixtures: real servers started once, on free loopback ports, always cleaned up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs import Exporter


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("work")


@pytest.fixture(scope="session")
def exporter(workdir: Path) -> Iterator[Exporter]:
    """The exporter with default configuration: real host metrics, no demo."""
    proc = Exporter(workdir)
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def demo_exporter(workdir: Path) -> Iterator[Exporter]:
    """The exporter running the demo workload (all AI metrics moving), fast rate."""
    proc = Exporter(workdir, command="demo", args=["--demo.rate=400", "--demo.episode=none"])
    yield proc
    proc.stop()
