"""Which price table computes costs: ``ai_exporter_price_table_info`` (exporter/pricing.py).

Reads the aggregator's table through ``deps.ingestor``; without an ingestor there is no
AI state to price, which is not a failure.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.metrics_core import Metric

from exporter import catalog
from exporter.collectors.base import Collector


class PricingCollector(Collector):
    name = "pricing"
    description = "The price table in force (genai-prices version, overrides, price file)."

    def collect(self) -> Iterable[Metric]:
        ingestor = self.ctx.deps.ingestor
        if ingestor is None:
            return
        family = catalog.EXPORTER_PRICE_TABLE_INFO.family()
        family.add_metric(list(ingestor.aggregator.state.prices.info()), 1.0)
        yield family
