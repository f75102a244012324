"""The source contract: start feeding the ingestor, stop, and say whether it is ready.

HTTP push, JSONL tailing, JSON snapshots, Redis Streams and the demo all implement this;
the runtime starts and stops them without knowing which is which.

A source that has self metrics of its own (files followed, stream lag, ...) reports them
through ``ReportsMetrics`` (or ``ReportsMetricsWithin`` when reading them waits on a remote
system): collectors are handed the running sources typed by these protocols, so no
collector imports a source class.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

from prometheus_client.metrics_core import Metric

from exporter.ingest import Ingestor


@runtime_checkable
class ReportsMetrics(Protocol):
    """A source that reports its own self metrics at scrape time, from memory."""

    @property
    def name(self) -> str:
        """The source's name (``tail``, ``snapshot``, ...): how a collector picks its own."""
        ...

    def families(self) -> list[Metric]:
        """The source's self metrics, built fresh for one scrape."""
        ...


@runtime_checkable
class ReportsMetricsWithin(Protocol):
    """A source whose self metrics are read from a remote system (Redis stream length,
    consumer-group lag): the collector bounds the read by the scrape's time left."""

    @property
    def name(self) -> str:
        """The source's name (``redis_streams``)."""
        ...

    def families(self, timeout: float) -> list[Metric]:
        """The source's self metrics, each remote read bounded by ``timeout`` seconds."""
        ...


# A running source as the collectors see it: one of the two, picked by name.
SelfMetrics = ReportsMetrics | ReportsMetricsWithin


def reporting(sources: Iterable[Source]) -> list[SelfMetrics]:
    """The sources among ``sources`` that report self metrics."""
    return [s for s in sources if isinstance(s, ReportsMetrics | ReportsMetricsWithin)]


class Source(ABC):
    """One event source feeding the shared ingestor."""

    name: ClassVar[str]

    def __init__(self, ingestor: Ingestor) -> None:
        self.ingestor = ingestor

    @abstractmethod
    def start(self) -> None:
        """Begin delivering events (return quickly; run in a thread if needed)."""

    @abstractmethod
    def stop(self) -> None:
        """Stop delivering events and release resources; safe to call twice."""

    def ready(self) -> tuple[bool, str]:
        """Readiness for /readyz and a short detail."""
        return True, "ok"


def resolve(base: Path, path: str) -> str:
    """A configured path or glob: absolute as given, otherwise under ``base``."""
    return path if os.path.isabs(path) else str(base / path)


def path_label(base: Path, path: str) -> str:
    """The ``path`` label of a file source: relative to ``base`` when under it, so the
    label does not change with where the platform is installed."""
    try:
        rel = os.path.relpath(path, base)
    except ValueError:  # another drive (Windows)
        return path
    return path if rel.startswith("..") else rel
