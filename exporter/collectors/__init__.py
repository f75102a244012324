"""The collector table: every collector, by name, built from the modules listed here.

Adding a collector is one new file holding a ``Collector`` subclass, plus one line in
``_MODULES``. Flags (``--collector.<name>``), config keys and the README table all come
from this table.
"""

from __future__ import annotations

import importlib

from exporter.collectors.base import Collector, CollectorContext, CollectorDeps

_MODULES = (
    "cpu",
    "loadavg",
    "memory",
    "filesystem",
    "diskstats",
    "network",
    "uptime",
    "battery",
    "otlp",
    "ai",
    "pricing",
    "files",
    "http_auth",
    "probes",
    "redis_streams",
    "otlp_intake",
    "processes",
    "gpu",
)


def _load() -> dict[str, type[Collector]]:
    table: dict[str, type[Collector]] = {}
    for module_name in _MODULES:
        module = importlib.import_module(f"exporter.collectors.{module_name}")
        for value in vars(module).values():
            if (isinstance(value, type) and issubclass(value, Collector)
                    and value is not Collector and value.__module__ == module.__name__):
                table[value.name] = value
    return table


COLLECTORS: dict[str, type[Collector]] = _load()

__all__ = ["COLLECTORS", "Collector", "CollectorContext", "CollectorDeps"]
