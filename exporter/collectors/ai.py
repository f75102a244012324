"""AI activity series from the aggregator, and the ingest self metrics of every source."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.metrics_core import Metric

from exporter.collectors.base import Collector


class AiCollector(Collector):
    name = "ai"
    description = "AI activity aggregated from events (push, files, Redis, demo)."

    def collect(self) -> Iterable[Metric]:
        ingestor = self.ctx.services.get("ingestor")
        if ingestor is None:
            return
        yield from ingestor.aggregator.families()
        yield from ingestor.families()
