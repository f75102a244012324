"""The source contract: start feeding the ingestor, stop, and say whether it is ready.

HTTP push, JSONL tailing, JSON snapshots, Redis Streams and the demo all implement this;
the runtime starts and stops them without knowing which is which.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

from exporter.ingest import Ingestor


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
