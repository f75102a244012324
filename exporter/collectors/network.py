"""Bytes, packets, errors and drops per network interface."""

from __future__ import annotations

import re
from collections.abc import Iterable

import psutil
from prometheus_client.metrics_core import Metric

from exporter import catalog
from exporter.collectors.base import Collector, CollectorContext


class NetworkCollector(Collector):
    name = "network"
    description = "Network bytes, packets, errors and drops per interface."

    def __init__(self, ctx: CollectorContext) -> None:
        super().__init__(ctx)
        self._exclude = re.compile(ctx.config.host.network_exclude_interfaces)

    def collect(self) -> Iterable[Metric]:
        io = catalog.SYSTEM_NETWORK_IO.family()
        packets = catalog.SYSTEM_NETWORK_PACKETS.family()
        errors = catalog.SYSTEM_NETWORK_ERRORS.family()
        dropped = catalog.SYSTEM_NETWORK_DROPPED.family()
        for nic, c in (psutil.net_io_counters(pernic=True, nowrap=True) or {}).items():
            if self._exclude.search(nic):
                continue
            io.add_metric([nic, "transmit"], float(c.bytes_sent))
            io.add_metric([nic, "receive"], float(c.bytes_recv))
            packets.add_metric([nic, "transmit"], float(c.packets_sent))
            packets.add_metric([nic, "receive"], float(c.packets_recv))
            errors.add_metric([nic, "transmit"], float(c.errout))
            errors.add_metric([nic, "receive"], float(c.errin))
            dropped.add_metric([nic, "transmit"], float(c.dropout))
            dropped.add_metric([nic, "receive"], float(c.dropin))
        yield from (io, packets, errors, dropped)
