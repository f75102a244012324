"""Self metrics of the Redis Streams source: connection, entries, stream length, group lag.

Sources are not collectors, so this collector finds the running Redis Streams sources
through the runtime and asks each for its families; stream length, lag and pending are
read from Redis at scrape time with a short timeout (skipped while Redis is down).
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.metrics_core import Metric

from exporter.collectors.base import Collector, time_left
from exporter.sources.redis_streams import RedisStreamsSource


class RedisStreamsCollector(Collector):
    name = "redis_streams"
    description = "Redis Streams source: connection, entries, stream length, group lag."

    def collect(self) -> Iterable[Metric]:
        runtime = self.ctx.services.get("runtime")
        for source in getattr(runtime, "sources", ()):
            if isinstance(source, RedisStreamsSource):
                yield from source.families(timeout=min(1.0, time_left(1.0) * 0.8))
