"""Load averages over 1, 5 and 15 minutes."""

from __future__ import annotations

import os
from collections.abc import Iterable

from prometheus_client.metrics_core import Metric

from exporter import catalog
from exporter.collectors.base import Collector


class LoadavgCollector(Collector):
    name = "loadavg"
    description = "Load averages."

    def collect(self) -> Iterable[Metric]:
        specs = (catalog.SYSTEM_CPU_LOAD_1M, catalog.SYSTEM_CPU_LOAD_5M,
                 catalog.SYSTEM_CPU_LOAD_15M)
        for spec, value in zip(specs, os.getloadavg(), strict=True):
            family = spec.family()
            family.add_metric([], value)
            yield family
