"""Memory and swap usage by state, and their utilization."""

from __future__ import annotations

from collections.abc import Iterable

import psutil
from prometheus_client.metrics_core import Metric

from exporter import catalog
from exporter.collectors.base import Collector

MEMORY_STATES = ("used", "free", "buffers", "cached")


def memory_states(vm: object) -> dict[str, float]:
    """psutil ``virtual_memory()`` → bytes per OTel ``system.memory.state``."""
    return {s: float(getattr(vm, s)) for s in MEMORY_STATES if hasattr(vm, s)}


class MemoryCollector(Collector):
    name = "memory"
    description = "Memory and swap usage and utilization."

    def collect(self) -> Iterable[Metric]:
        vm = psutil.virtual_memory()
        states = memory_states(vm)
        usage = catalog.SYSTEM_MEMORY_USAGE.family()
        util = catalog.SYSTEM_MEMORY_UTILIZATION.family()
        for state, value in states.items():
            usage.add_metric([state], value)
            if vm.total:
                util.add_metric([state], value / vm.total)
        limit = catalog.SYSTEM_MEMORY_LIMIT.family()
        limit.add_metric([], float(vm.total))
        available = catalog.SYSTEM_LINUX_MEMORY_AVAILABLE.family()
        available.add_metric([], float(vm.available))
        yield from (usage, util, limit, available)

        swap = psutil.swap_memory()
        paging = catalog.SYSTEM_PAGING_USAGE.family()
        paging_util = catalog.SYSTEM_PAGING_UTILIZATION.family()
        for state, value in (("used", swap.used), ("free", swap.free)):
            paging.add_metric([state], float(value))
            if swap.total:
                paging_util.add_metric([state], value / swap.total)
        yield from (paging, paging_util)
