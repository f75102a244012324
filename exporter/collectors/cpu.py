"""CPU time per logical CPU and mode, utilization since the previous scrape, CPU count.

Read from ``<host.procfs_path>/stat`` (``exporter.collectors.procfs``).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable

from prometheus_client.metrics_core import Metric

from exporter import catalog
from exporter.collectors.base import Collector, CollectorContext
from exporter.collectors.procfs import read_stat

# psutil field → OTel ``cpu.mode``; guest time is already part of user/nice time.
MODES = {"user": "user", "nice": "nice", "system": "system", "idle": "idle",
         "iowait": "iowait", "irq": "interrupt", "softirq": "softirq", "steal": "steal"}


def mode_times(times: object) -> dict[str, float]:
    """Map one ``scputimes`` (psutil's, or ``procfs.CpuTimes``) to OTel modes (fields
    absent on a platform are skipped)."""
    return {mode: float(getattr(times, field)) for field, mode in MODES.items()
            if hasattr(times, field)}


def utilization(previous: dict[str, float], current: dict[str, float]) -> dict[str, float]:
    """Share of time per mode between two totals; empty when no time has passed."""
    deltas = {m: max(current[m] - previous.get(m, 0.0), 0.0) for m in current}
    total = sum(deltas.values())
    return {m: d / total for m, d in deltas.items()} if total > 0 else {}


class CpuCollector(Collector):
    name = "cpu"
    description = "CPU time per mode, utilization and logical CPU count."

    def __init__(self, ctx: CollectorContext) -> None:
        super().__init__(ctx)
        self._host = ctx.host
        self._lock = threading.Lock()
        self._previous: dict[str, float] = {}
        # The last shares computed: served again when no CPU time has passed since (two
        # collections within one clock tick, e.g. an OTLP push right after a scrape).
        self._shares: dict[str, float] = {}
        with contextlib.suppress(OSError):  # procfs unreadable: first scrape is since boot
            self._previous = mode_times(read_stat(self._host).total)

    def collect(self) -> Iterable[Metric]:
        time_family = catalog.SYSTEM_CPU_TIME.family()
        per_cpu = read_stat(self._host).per_cpu
        totals: dict[str, float] = {}
        for number, times in enumerate(per_cpu):
            cpu = str(number)
            for mode, value in mode_times(times).items():
                time_family.add_metric([cpu, mode], value)
                totals[mode] = totals.get(mode, 0.0) + value
        yield time_family

        with self._lock:
            shares = utilization(self._previous, totals)
            if shares:
                self._previous, self._shares = totals, shares
            elif self._shares:
                shares = self._shares
            else:
                # No CPU time since the collector started (its first collection within
                # one clock tick): the shares since boot rather than no series at all.
                shares = utilization({}, totals)
        util = catalog.SYSTEM_CPU_UTILIZATION.family()
        for mode, share in shares.items():
            util.add_metric([mode], share)
        yield util

        count = catalog.SYSTEM_CPU_LOGICAL_COUNT.family()
        count.add_metric([], float(len(per_cpu)))
        yield count
