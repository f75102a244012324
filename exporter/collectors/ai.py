"""AI activity series from the aggregator, and the ingest self metrics of every source."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.metrics_core import Metric

from exporter.collectors.base import SCRAPE_DEADLINE, Collector


class AiCollector(Collector):
    name = "ai"
    description = "AI activity aggregated from events (push, files, Redis, demo)."

    def collect(self) -> Iterable[Metric]:
        ingestor = self.ctx.deps.ingestor
        if ingestor is None:
            return
        # The scrape's deadline: building the families stops there (and the runner's
        # render of them too), so an AI state too large for the time left fails this
        # collector alone, promptly, and leaves the GIL to the rest of the scrape.
        yield from ingestor.aggregator.families(SCRAPE_DEADLINE.get())
        yield from ingestor.families()
