"""Disk I/O bytes, operations and time per whole disk (partitions are excluded)."""

from __future__ import annotations

import re
from collections.abc import Iterable

import psutil
from prometheus_client.metrics_core import Metric

from exporter import catalog
from exporter.collectors.base import Collector, CollectorContext


class DiskstatsCollector(Collector):
    name = "diskstats"
    description = "Disk I/O bytes, operations and busy time per device."

    def __init__(self, ctx: CollectorContext) -> None:
        super().__init__(ctx)
        self._exclude = re.compile(ctx.config.host.disk_exclude_devices)

    def collect(self) -> Iterable[Metric]:
        io = catalog.SYSTEM_DISK_IO.family()
        ops = catalog.SYSTEM_DISK_OPERATIONS.family()
        op_time = catalog.SYSTEM_DISK_OPERATION_TIME.family()
        busy = catalog.SYSTEM_DISK_IO_TIME.family()
        counters = psutil.disk_io_counters(perdisk=True, nowrap=True) or {}
        for device, c in counters.items():
            if self._exclude.match(device):
                continue
            io.add_metric([device, "read"], float(c.read_bytes))
            io.add_metric([device, "write"], float(c.write_bytes))
            ops.add_metric([device, "read"], float(c.read_count))
            ops.add_metric([device, "write"], float(c.write_count))
            op_time.add_metric([device, "read"], c.read_time / 1000.0)
            op_time.add_metric([device, "write"], c.write_time / 1000.0)
            busy_ms = getattr(c, "busy_time", None)
            if busy_ms is not None:
                busy.add_metric([device], busy_ms / 1000.0)
        yield from (io, ops, op_time, busy)
