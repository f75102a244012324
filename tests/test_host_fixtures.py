"""Host collectors on a fixture procfs tree (``tests/fixtures/proc``), node_exporter style:
known files in, exact series out, in process.

The CPU and uptime collectors read ``stat`` under ``host.procfs_path`` themselves; memory,
network and disk I/O go through psutil, whose root is its process-wide ``PROCFS_PATH``
(``exporter.hostpaths``): each test points it at the fixtures for its own duration only.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from prometheus_client.metrics_core import Metric

from exporter import catalog, config
from exporter.collectors.base import CollectorContext
from exporter.collectors.cpu import CpuCollector
from exporter.collectors.diskstats import DiskstatsCollector
from exporter.collectors.memory import MemoryCollector
from exporter.collectors.network import NetworkCollector
from exporter.collectors.procfs import CLOCK_TICKS
from exporter.collectors.uptime import UptimeCollector

PROC = Path(__file__).parent / "fixtures" / "proc"
KiB = 1024
SECTOR = 512  # psutil's sector size for /proc/diskstats


@pytest.fixture
def ctx() -> CollectorContext:
    return CollectorContext(config.build({"host": {"procfs_path": str(PROC)}}))


@pytest.fixture
def psutil_on_fixtures(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """psutil reads the fixture tree during the test; its wrap-around memory of earlier
    counters (``nowrap=True``) is cleared on both sides so real readings never mix in."""
    _forget_counters()
    monkeypatch.setattr(psutil, "PROCFS_PATH", str(PROC))
    yield
    _forget_counters()


def _forget_counters() -> None:
    # psutil's stubs do not declare the cache_clear it adds to these two.
    psutil.net_io_counters.cache_clear()  # type: ignore[attr-defined]
    psutil.disk_io_counters.cache_clear()  # type: ignore[attr-defined]


def samples(families: list[Metric], name: str) -> dict[tuple[str, ...], float]:
    """Values of one family by label values, the family named as served or without
    ``_total``."""
    family = next(f for f in families if name in (f.name, f"{f.name}_total"))
    return {tuple(s.labels.values()): s.value for s in family.samples
            if not s.name.endswith("_created")}


def test_cpu_time_per_cpu_and_mode(ctx: CollectorContext) -> None:
    families = list(CpuCollector(ctx).collect())
    times = samples(families, catalog.SYSTEM_CPU_TIME.name)
    assert len(times) == 2 * 8  # two CPUs, eight modes
    assert times[("0", "user")] == pytest.approx(200 / CLOCK_TICKS)
    assert times[("0", "softirq")] == pytest.approx(3 / CLOCK_TICKS)
    assert times[("1", "system")] == pytest.approx(40 / CLOCK_TICKS)
    assert times[("1", "iowait")] == pytest.approx(10 / CLOCK_TICKS)
    assert samples(families, catalog.SYSTEM_CPU_LOGICAL_COUNT.name) == {(): 2.0}


def test_cpu_utilization_is_served_before_any_cpu_time_passes(ctx: CollectorContext) -> None:
    """The fixture's counters never move: the first collection (as right after a start)
    still serves the shares, since boot, instead of no utilization series at all."""
    families = list(CpuCollector(ctx).collect())
    shares = samples(families, catalog.SYSTEM_CPU_UTILIZATION.name)
    times = samples(families, catalog.SYSTEM_CPU_TIME.name)
    total = sum(times.values())
    for (mode,), share in shares.items():
        assert share == pytest.approx(sum(v for (_, m), v in times.items() if m == mode)
                                      / total)
    assert sum(shares.values()) == pytest.approx(1.0)


def test_uptime_counts_from_btime(ctx: CollectorContext) -> None:
    families = list(UptimeCollector(ctx).collect())
    assert samples(families, catalog.SYSTEM_BOOT_TIME.name) == {(): 1_700_000_000.0}
    [(_, uptime)] = samples(families, catalog.SYSTEM_UPTIME.name).items()
    assert uptime > 0


@pytest.mark.usefixtures("psutil_on_fixtures")
def test_memory_and_swap_from_meminfo(ctx: CollectorContext) -> None:
    families = list(MemoryCollector(ctx).collect())
    total = 16_303_428 * KiB
    usage = samples(families, catalog.SYSTEM_MEMORY_USAGE.name)
    assert usage == {
        ("used",): float(total - 9_876_543 * KiB),  # total - MemAvailable, as free(1)
        ("free",): 1_012_345.0 * KiB,
        ("buffers",): 234_567.0 * KiB,
        ("cached",): (7_654_321.0 + 654_321.0) * KiB,  # Cached + SReclaimable
    }
    utilization = samples(families, catalog.SYSTEM_MEMORY_UTILIZATION.name)
    assert utilization == {k: pytest.approx(v / total) for k, v in usage.items()}
    assert samples(families, catalog.SYSTEM_MEMORY_LIMIT.name) == {(): float(total)}
    assert samples(families, catalog.SYSTEM_LINUX_MEMORY_AVAILABLE.name) == {
        (): 9_876_543.0 * KiB}
    paging = samples(families, catalog.SYSTEM_PAGING_USAGE.name)
    assert paging == {("used",): (2_097_148.0 - 1_572_860.0) * KiB,
                      ("free",): 1_572_860.0 * KiB}
    assert samples(families, catalog.SYSTEM_PAGING_UTILIZATION.name)[("used",)] == (
        pytest.approx(0.25, abs=1e-6))


@pytest.mark.usefixtures("psutil_on_fixtures")
def test_network_counters_per_interface_and_direction(ctx: CollectorContext) -> None:
    families = list(NetworkCollector(ctx).collect())
    io = samples(families, catalog.SYSTEM_NETWORK_IO.name)
    assert {nic for nic, _ in io} == {"lo", "eth0", "docker0"}
    assert io[("eth0", "receive")] == 987_654_321.0
    assert io[("eth0", "transmit")] == 123_456_789.0
    packets = samples(families, catalog.SYSTEM_NETWORK_PACKETS.name)
    assert packets[("eth0", "receive")] == 765_432.0
    assert packets[("docker0", "transmit")] == 60.0
    errors = samples(families, catalog.SYSTEM_NETWORK_ERRORS.name)
    assert (errors[("eth0", "receive")], errors[("eth0", "transmit")]) == (3.0, 1.0)
    dropped = samples(families, catalog.SYSTEM_NETWORK_DROPPED.name)
    assert (dropped[("eth0", "receive")], dropped[("eth0", "transmit")]) == (7.0, 2.0)


@pytest.mark.usefixtures("psutil_on_fixtures")
def test_network_exclusion_pattern_drops_interfaces() -> None:
    ctx = CollectorContext(config.build({"host": {
        "procfs_path": str(PROC), "network_exclude_interfaces": "^(lo|docker.*)$"}}))
    io = samples(list(NetworkCollector(ctx).collect()), catalog.SYSTEM_NETWORK_IO.name)
    assert {nic for nic, _ in io} == {"eth0"}


@pytest.mark.usefixtures("psutil_on_fixtures")
def test_disk_io_per_whole_device(ctx: CollectorContext) -> None:
    families = list(DiskstatsCollector(ctx).collect())
    io = samples(families, catalog.SYSTEM_DISK_IO.name)
    # Partitions and loop devices are excluded by default: whole disks only.
    assert {device for device, _ in io} == {"sda", "nvme0n1"}
    assert io[("sda", "read")] == 8_000_000.0 * SECTOR
    assert io[("sda", "write")] == 4_000_000.0 * SECTOR
    ops = samples(families, catalog.SYSTEM_DISK_OPERATIONS.name)
    assert (ops[("nvme0n1", "read")], ops[("nvme0n1", "write")]) == (50_000.0, 40_000.0)
    op_time = samples(families, catalog.SYSTEM_DISK_OPERATION_TIME.name)
    assert (op_time[("sda", "read")], op_time[("sda", "write")]) == (150.0, 90.0)
    assert samples(families, catalog.SYSTEM_DISK_IO_TIME.name) == {
        ("sda",): 120.0, ("nvme0n1",): 50.0}
