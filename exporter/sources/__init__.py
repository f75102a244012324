"""The source table: each module listed here builds its sources from the configuration.

Adding a source is one new file with a ``Source`` subclass and a
``from_config(deps: SourceDeps) -> list[Source]`` function, plus one line in ``_MODULES``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from exporter.config import Config
from exporter.ingest import Ingestor
from exporter.otlp.gate import CollectGate
from exporter.security import Security
from exporter.sources.base import Source
from exporter.storage import StateStore


@dataclass(frozen=True)
class SourceDeps:
    """What a source is built from: the configuration, the ingestor it feeds and the
    state store that keeps its cursor (sources touch the store only once started)."""

    config: Config
    ingestor: Ingestor
    store: StateStore
    # Authorization of intake that does not pass the web layer (OTLP/gRPC); None where
    # nothing is served (a validation build).
    security: Security | None = None
    # Scrapes first: intake pauses its CPU work while /metrics is being served (one GIL).
    collect_gate: CollectGate | None = None


_MODULES = (
    "push",
    "demo",
    "redis_streams",
    "tail",
    "snapshot",
    "otlp",
)

SourceFactory = Callable[[SourceDeps], list[Source]]


def factories() -> dict[str, SourceFactory]:
    table: dict[str, SourceFactory] = {}
    for module_name in _MODULES:
        module = importlib.import_module(f"exporter.sources.{module_name}")
        table[module_name] = module.from_config
    return table


def build_sources(deps: SourceDeps) -> list[Source]:
    """Every source the configuration asks for."""
    return [s for factory in factories().values() for s in factory(deps)]


__all__ = ["Source", "SourceDeps", "build_sources", "factories"]
