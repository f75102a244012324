"""system_cpu_utilization_ratio does not depend on who scrapes.

In process, with a fake clock and fake CPU counters: scrapers at 1 s, 3 s and 7 s see the
same shares for the same window, the true change over that window. End to end: two real
Prometheus servers scraping one exporter at 1 s and 3 s store the same value for every
window both sampled.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from exporter.collectors.cpu import CpuWindow, utilization
from tests.procs import LOOPBACK, Exporter, Prometheus, static_job

WINDOW = 5.0
STEP = 0.25


class FakeHost:
    """CPU counters whose busy share changes every step, and the time."""

    def __init__(self) -> None:
        self.now = 0.0
        self.totals = {"user": 1000.0, "system": 300.0, "idle": 5000.0}
        self.steps = 0

    def advance(self) -> None:
        self.steps += 1
        self.now = round(self.now + STEP, 6)
        busy = 0.1 + 0.8 * ((self.steps * 7) % 11) / 10  # varies from step to step
        self.totals["user"] += STEP * busy * 0.7
        self.totals["system"] += STEP * busy * 0.3
        self.totals["idle"] += STEP * (1 - busy)

    def read(self) -> dict[str, float]:
        return dict(self.totals)


def test_scrapers_at_different_intervals_see_the_same_window() -> None:
    host = FakeHost()
    window = CpuWindow(host.read, WINDOW, clock=lambda: host.now)
    at_boundary: dict[int, dict[str, float]] = {}
    seen: dict[int, dict[str, dict[str, float]]] = {}  # window index -> scraper -> shares
    intervals = {"prometheus-a": 1.0, "prometheus-b": 3.0, "otlp-push": 7.0}
    for _ in range(int(60 / STEP)):
        host.advance()
        index = math.floor(host.now / WINDOW)
        if abs(host.now - index * WINDOW) < 1e-9:
            at_boundary[index] = host.read()
        for scraper, interval in intervals.items():
            if abs(host.now / interval - round(host.now / interval)) < 1e-9:
                seen.setdefault(index, {})[scraper] = window.shares()
    compared = 0
    for index, by_scraper in seen.items():
        if index - 1 not in at_boundary or index not in at_boundary:
            continue  # the partial first window
        truth = utilization(at_boundary[index - 1], at_boundary[index])
        for scraper, shares in by_scraper.items():
            assert shares == pytest.approx(truth, abs=1e-12), (index, scraper)
        compared += len(by_scraper) > 1
    assert compared >= 8
    # The windows differ from one another, so agreement is not trivially a constant.
    assert len({round(s["idle"], 9) for b in seen.values() for s in b.values()}) >= 5


def test_shares_before_the_first_boundary_are_fixed_and_sum_to_one() -> None:
    host = FakeHost()
    window = CpuWindow(host.read, WINDOW, clock=lambda: host.now)
    first = window.shares()
    host.advance()
    assert window.shares() == first  # still inside the first window: since boot
    assert sum(first.values()) == pytest.approx(1.0)


def test_the_sampling_thread_takes_each_boundary(tmp_path: Path) -> None:
    """With the real clock and a 1 s window the thread samples without any collection."""
    reads: list[float] = []

    def read() -> dict[str, float]:
        reads.append(time.time())
        return {"user": float(len(reads)), "idle": 10.0 * len(reads)}

    window = CpuWindow(read, 1.0)
    window.start()
    try:
        time.sleep(2.6)
    finally:
        window.close()
    boundary_reads = reads[1:]
    assert len(boundary_reads) >= 2
    assert all(r - math.floor(r) < 0.2 for r in boundary_reads), boundary_reads


def _samples(prometheus: Prometheus, job: str) -> list[tuple[float, float]]:
    result = prometheus.query(
        f'system_cpu_utilization_ratio{{cpu_mode="idle", job="{job}"}}[60s]')
    if not result:  # not scraped yet
        return []
    return [(float(ts), float(value)) for ts, value in result[0]["values"]]


@pytest.mark.e2e
def test_two_prometheus_servers_at_1s_and_3s_agree(tmp_path: Path) -> None:
    window = 3.0
    exporter = Exporter(tmp_path, {"host": {"cpu_utilization_window_seconds": window}})
    target = f"{LOOPBACK}:{exporter.port}"
    fast = slow = None
    try:
        fast = Prometheus(tmp_path, [static_job("fast", target)], interval="1s")
        slow = Prometheus(tmp_path, [static_job("slow", target)], interval="3s")
        deadline = time.monotonic() + 40
        common: set[int] = set()
        by_window: dict[str, dict[int, list[float]]] = {}
        while time.monotonic() < deadline:
            time.sleep(3)
            by_window = {}
            for name, prometheus in (("fast", fast), ("slow", slow)):
                windows: dict[int, list[float]] = {}
                for ts, value in _samples(prometheus, name):
                    offset = ts - math.floor(ts / window) * window
                    if 0.3 < offset < window - 0.2:  # clear of a boundary
                        windows.setdefault(math.floor(ts / window), []).append(value)
                by_window[name] = windows
            common = set(by_window["fast"]) & set(by_window["slow"])
            if len(common) >= 3:
                break
        assert len(common) >= 3, by_window
        for index in common:
            values = by_window["fast"][index] + by_window["slow"][index]
            assert max(values) - min(values) < 1e-9, (index, by_window)
    finally:
        for proc in (fast, slow):
            if proc is not None:
                proc.stop()
        exporter.stop()
