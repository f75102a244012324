"""Self metrics of the Redis Streams source: connection, entries, stream length, group lag.

Sources are not collectors, so this collector asks the runtime's running sources at
scrape time (``deps.sources``) for the Redis Streams ones, typed by the
``ReportsMetricsWithin`` protocol, and asks each for its families; stream length, lag and
pending are read from Redis at scrape time with a short timeout (skipped while Redis is
down).
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.metrics_core import Metric

from exporter.collectors.base import Collector, time_left
from exporter.sources.base import ReportsMetricsWithin

# The source this collector reports (its ``name``, which is also its config section).
REPORTED = "redis_streams"


class RedisStreamsCollector(Collector):
    name = "redis_streams"
    description = "Redis Streams source: connection, entries, stream length, group lag."

    def collect(self) -> Iterable[Metric]:
        for source in self.ctx.deps.sources():
            if source.name == REPORTED and isinstance(source, ReportsMetricsWithin):
                yield from source.families(timeout=min(1.0, time_left(1.0) * 0.8))
