"""The OTLP push's own health: exports by outcome, last success, last export duration.

Reads the pusher from ``deps.otlp``; when no push is configured there is nothing to
report, which is not a failure.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.metrics_core import Metric

from exporter import catalog
from exporter.collectors.base import Collector


class OtlpCollector(Collector):
    name = "otlp"
    description = "OTLP push outcomes, last success time and export duration."

    def collect(self) -> Iterable[Metric]:
        pusher = self.ctx.deps.otlp
        if pusher is None:
            return
        exports, last_success, duration = pusher.stats()
        total = catalog.EXPORTER_OTLP_EXPORTS.family()
        for outcome, count in exports.items():
            total.add_metric([outcome], float(count))
        success = catalog.EXPORTER_OTLP_LAST_SUCCESS.family()
        success.add_metric([], last_success)
        took = catalog.EXPORTER_OTLP_EXPORT_DURATION.family()
        took.add_metric([], duration)
        yield from (total, success, took)
