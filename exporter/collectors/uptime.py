"""Boot time and uptime, from ``<host.procfs_path>/stat`` (``btime``)."""

from __future__ import annotations

import time
from collections.abc import Iterable

from prometheus_client.metrics_core import Metric

from exporter import catalog
from exporter.collectors.base import Collector
from exporter.collectors.procfs import read_stat


class UptimeCollector(Collector):
    name = "uptime"
    description = "Boot time and uptime."

    def collect(self) -> Iterable[Metric]:
        boot = read_stat(self.ctx.host).boot_time
        boot_family = catalog.SYSTEM_BOOT_TIME.family()
        boot_family.add_metric([], boot)
        uptime = catalog.SYSTEM_UPTIME.family()
        uptime.add_metric([], max(time.time() - boot, 0.0))
        yield from (boot_family, uptime)
