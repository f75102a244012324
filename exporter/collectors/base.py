"""The collector contract: one class per file, a name, and a ``collect()`` method.

A collector builds fresh prometheus_client families on every call (node_exporter and
client_python style) and never touches a global registry; the runner in
``exporter.scrape`` times it, guards it and reports its success.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from prometheus_client.metrics_core import Metric

if TYPE_CHECKING:
    from exporter.config import Config


# Monotonic time by which the runner needs the running collector's families; set by the
# runner in the worker thread for the duration of one ``collect()`` call.
SCRAPE_DEADLINE: ContextVar[float | None] = ContextVar("scrape_deadline", default=None)


def time_left(default: float) -> float:
    """Seconds left before the current scrape's deadline (``default`` outside a scrape).

    Collectors that wait on the network (probes) use it so that a hanging target never
    makes the collector overrun the scrape and lose all of its series.
    """
    deadline = SCRAPE_DEADLINE.get()
    if deadline is None:
        return default
    return max(deadline - time.monotonic(), 0.0)


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
