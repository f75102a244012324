"""CPU time per logical CPU and mode, utilization over a fixed window, CPU count.

Read from ``<host.procfs_path>/stat`` (``exporter.collectors.procfs``).

``system_cpu_utilization_ratio`` does not depend on who collects or how often:
it was the change "since the previous scrape", so two Prometheus servers scraping one
exporter (an HA pair), or a scrape and the OTLP push, shortened each other's windows.
``CpuWindow`` takes a sample of the CPU totals at each boundary of
``host.cpu_utilization_window_seconds`` (15 s), boundaries aligned to the clock (:00, :15,
:30, :45), on a background thread; every collection serves the shares between the last two
samples, i.e. the last complete window. Before the first boundary after start-up it serves
the shares since boot (a fixed value too).
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterable

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


class CpuWindow:
    """CPU totals sampled at fixed, clock-aligned boundaries; shares over the last
    complete window. ``read`` returns the totals by mode, ``clock`` the time in seconds
    (a fake in tests); ``start()`` runs the sampling thread, ``close()`` stops it. A
    collection also takes the boundary's sample when the thread has not yet (it wakes a
    millisecond after the boundary), so the first to arrive takes it for everyone."""

    def __init__(self, read: Callable[[], dict[str, float]], window: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.window = window
        self._read = read
        self._clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._older: tuple[float, dict[str, float]] | None = None
        self._newer: tuple[float, dict[str, float]] | None = None
        with contextlib.suppress(OSError):  # procfs unreadable: the first tick samples
            self._newer = (clock(), read())

    def boundary(self, when: float) -> float:
        """The start of the window ``when`` falls in."""
        return math.floor(when / self.window) * self.window

    def tick(self) -> None:
        """Take the current boundary's sample unless it has been taken."""
        now = self._clock()
        edge = self.boundary(now)
        with self._lock:
            if self._newer is not None and self._newer[0] >= edge:
                return
            totals = self._read()
            if self._newer is None:
                self._newer = (now, totals)
            else:
                self._older, self._newer = self._newer, (edge, totals)

    def shares(self) -> dict[str, float]:
        """Share of CPU time per mode over the last complete window (since boot until
        there is one)."""
        self.tick()
        with self._lock:
            newer = self._newer[1] if self._newer is not None else {}
            if self._older is not None:
                shares = utilization(self._older[1], newer)
                if shares:
                    return shares
            return utilization({}, newer)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="cpu-window",
                                            daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            now = self._clock()
            wait = self.boundary(now) + self.window - now + 0.001
            if self._stop.wait(max(wait, 0.001)):
                return
            with contextlib.suppress(OSError):  # an unreadable /proc/stat: the next one
                self.tick()

    def close(self) -> None:
        self._stop.set()


class CpuCollector(Collector):
    name = "cpu"
    description = "CPU time per mode, utilization over a fixed window and logical CPU count."

    def __init__(self, ctx: CollectorContext, clock: Callable[[], float] = time.time,
                 sampler: bool = True) -> None:
        super().__init__(ctx)
        self._host = ctx.host
        self.window = CpuWindow(lambda: mode_times(read_stat(self._host).total),
                                ctx.config.host.cpu_utilization_window_seconds, clock)
        if sampler:
            self.window.start()

    def collect(self) -> Iterable[Metric]:
        time_family = catalog.SYSTEM_CPU_TIME.family()
        per_cpu = read_stat(self._host).per_cpu
        for number, times in enumerate(per_cpu):
            cpu = str(number)
            for mode, value in mode_times(times).items():
                time_family.add_metric([cpu, mode], value)
        yield time_family

        util = catalog.SYSTEM_CPU_UTILIZATION.family()
        for mode, share in self.window.shares().items():
            util.add_metric([mode], share)
        yield util

        count = catalog.SYSTEM_CPU_LOGICAL_COUNT.family()
        count.add_metric([], float(len(per_cpu)))
        yield count

    def close(self) -> None:
        self.window.close()
