"""ai-metrics-exporter: host and AI-agent-platform activity as Prometheus and OTLP metrics.

A regular package (not a namespace package) so that type checkers and tools resolve
``exporter.*`` module names unambiguously.

The public API is re-exported here, for code that embeds the exporter (its own
collectors or sources, a runtime in a test). The names are resolved on first use, so
importing any ``exporter`` module stays as cheap as that module: a collector does not pull
in Flask, and the package holds no import cycle with the modules it names.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from exporter.aggregator import Aggregator
    from exporter.catalog import MetricSpec
    from exporter.cli import main
    from exporter.collectors import COLLECTORS, Collector, CollectorContext, CollectorDeps
    from exporter.config import Config, ConfigError
    from exporter.events import Event, Rejection
    from exporter.hostpaths import HostPaths
    from exporter.ingest import Ingestor
    from exporter.runtime import Runtime
    from exporter.sources import Source
    from exporter.web import create_app

# Public name → the module that defines it.
_EXPORTS = {
    "Aggregator": "exporter.aggregator",
    "COLLECTORS": "exporter.collectors",
    "Collector": "exporter.collectors",
    "CollectorContext": "exporter.collectors",
    "CollectorDeps": "exporter.collectors",
    "Config": "exporter.config",
    "ConfigError": "exporter.config",
    "Event": "exporter.events",
    "HostPaths": "exporter.hostpaths",
    "Ingestor": "exporter.ingest",
    "MetricSpec": "exporter.catalog",
    "Rejection": "exporter.events",
    "Runtime": "exporter.runtime",
    "Source": "exporter.sources",
    "create_app": "exporter.web",
    "main": "exporter.cli",
}

__all__ = [
    "COLLECTORS",
    "Aggregator",
    "Collector",
    "CollectorContext",
    "CollectorDeps",
    "Config",
    "ConfigError",
    "Event",
    "HostPaths",
    "Ingestor",
    "MetricSpec",
    "Rejection",
    "Runtime",
    "Source",
    "create_app",
    "main",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'exporter' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
