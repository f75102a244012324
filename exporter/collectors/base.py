"""The collector contract: one class per file, a name, and a ``collect()`` method.

A collector builds fresh prometheus_client families on every call (node_exporter and
client_python style) and never touches a global registry; the runner in
``exporter.scrape`` times it, guards it and reports its success.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from prometheus_client.metrics_core import Metric

if TYPE_CHECKING:
    from exporter.config import Config


@dataclass
class CollectorContext:
    """What a collector may read: the configuration and shared runtime services."""

    config: Config
    services: dict[str, Any] = field(default_factory=dict)


class Collector(ABC):
    """Base class of every collector."""

    name: ClassVar[str]
    default_enabled: ClassVar[bool] = True
    description: ClassVar[str] = ""

    def __init__(self, ctx: CollectorContext) -> None:
        self.ctx = ctx

    @abstractmethod
    def collect(self) -> Iterable[Metric]:
        """Yield the families for one scrape; raising marks the collector failed."""

    def close(self) -> None:  # noqa: B027 - optional hook, most collectors hold nothing
        """Release what the collector holds when the configuration is replaced."""
