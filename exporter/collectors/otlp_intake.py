"""Self metrics of the OTLP intake: requests by signal, transport and outcome; items by
signal and outcome; the span identities kept against retried exports.

The intake is a source, so this collector asks the runtime's running sources at scrape
time (``deps.sources``) for it by name, typed by the ``ReportsMetrics`` protocol.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.metrics_core import Metric

from exporter.collectors.base import Collector
from exporter.sources.base import ReportsMetrics

REPORTED = "otlp"  # the source's name, which is also its config section


class OtlpIntakeCollector(Collector):
    name = "otlp_intake"
    description = "OTLP intake: requests, items by outcome, span identities kept."

    def collect(self) -> Iterable[Metric]:
        for source in self.ctx.deps.sources():
            if source.name == REPORTED and isinstance(source, ReportsMetrics):
                yield from source.families()
