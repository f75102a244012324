"""The source table: each module listed here builds its sources from the configuration.

Adding a source is one new file with a ``Source`` subclass and a
``from_config(config, ingestor) -> list[Source]`` function, plus one line in ``_MODULES``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from exporter.config import Config
from exporter.ingest import Ingestor
from exporter.sources.base import Source

_MODULES = (
    "push",
    "demo",
    "redis_streams",
    "tail",
    "snapshot",
)

SourceFactory = Callable[[Config, Ingestor], list[Source]]


def factories() -> dict[str, SourceFactory]:
    table: dict[str, SourceFactory] = {}
    for module_name in _MODULES:
        module = importlib.import_module(f"exporter.sources.{module_name}")
        table[module_name] = module.from_config
    return table


def build_sources(config: Config, ingestor: Ingestor) -> list[Source]:
    """Every source the configuration asks for."""
    return [s for factory in factories().values() for s in factory(config, ingestor)]


__all__ = ["Source", "build_sources", "factories"]
