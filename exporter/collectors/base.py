"""The collector contract: one class per file, a name, and a ``collect()`` method.

A collector builds fresh prometheus_client families on every call (node_exporter and
client_python style) and never touches a global registry; the runner in
``exporter.scrape`` times it, guards it and reports its success.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from prometheus_client.metrics_core import Metric

from exporter.hostpaths import HostPaths

if TYPE_CHECKING:
    from exporter.collectors.probes import ProbeService
    from exporter.config import Config
    from exporter.ingest import Ingestor
    from exporter.otlp.pusher import OtlpPusher
    from exporter.security import Security
    from exporter.sources.base import SelfMetrics


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


def _no_sources() -> Sequence[SelfMetrics]:
    return ()


@dataclass(frozen=True)
class CollectorDeps:
    """The runtime-owned objects a collector may read, each named and typed.

    Built by the runtime for each set of collectors (at start and on every reload) and
    handed to every collector's constructor; a collector built in a test gets the defaults
    (nothing shared) or exactly the fakes it names. ``None`` means the
    feature is off (no OTLP push configured, the probes collector disabled), which is not
    a failure for the collector that reports it."""

    ingestor: Ingestor | None = None
    security: Security | None = None
    otlp: OtlpPusher | None = None
    probes: ProbeService | None = None
    # The running sources that report self metrics, asked at scrape time: sources are
    # rebuilt on reload after the collectors, and a collector must see the new ones.
    sources: Callable[[], Sequence[SelfMetrics]] = _no_sources


@dataclass(frozen=True)
class CollectorContext:
    """What a collector may read: the configuration and its typed dependencies."""

    config: Config
    deps: CollectorDeps = field(default_factory=CollectorDeps)

    @property
    def host(self) -> HostPaths:
        """Where the host's procfs is (``host.procfs_path``): a collector that reads procfs
        files reads them under this root, so a test builds it on fixture files."""
        return HostPaths.from_config(self.config)


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
