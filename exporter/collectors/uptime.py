"""Boot time and uptime."""

from __future__ import annotations

import time
from collections.abc import Iterable

import psutil
from prometheus_client.metrics_core import Metric

from exporter import catalog
from exporter.collectors.base import Collector


class UptimeCollector(Collector):
    name = "uptime"
    description = "Boot time and uptime."

    def collect(self) -> Iterable[Metric]:
        boot = psutil.boot_time()
        boot_family = catalog.SYSTEM_BOOT_TIME.family()
        boot_family.add_metric([], boot)
        uptime = catalog.SYSTEM_UPTIME.family()
        uptime.add_metric([], max(time.time() - boot, 0.0))
        yield from (boot_family, uptime)
