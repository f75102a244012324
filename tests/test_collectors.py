"""Host collectors' pure mappings on literal inputs, the collector runner, and the table.

The runner is exercised in process with small collectors that succeed, raise or hang; the
real-process case points ``host.procfs_path`` at an empty directory so that the collectors
reading procfs fail while the others are still served.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections import namedtuple
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client.metrics_core import Metric

from exporter import catalog, config, exposition
from exporter.collectors import COLLECTORS, Collector, CollectorContext
from exporter.collectors.battery import battery_state
from exporter.collectors.cpu import CpuCollector, mode_times, utilization
from exporter.collectors.diskstats import DiskstatsCollector
from exporter.collectors.filesystem import FilesystemCollector, FsUsage, usage_from_statvfs
from exporter.collectors.memory import memory_states
from exporter.collectors.network import NetworkCollector
from exporter.scrape import CollectorRunner
from tests.procs import Exporter, sample_value

# --- pure mappings ---------------------------------------------------------------------

SCpuTimes = namedtuple("SCpuTimes", "user nice system idle iowait irq softirq steal guest "
                                    "guest_nice")
MacCpuTimes = namedtuple("MacCpuTimes", "user nice system idle")


def test_mode_times_maps_psutil_fields_to_otel_modes() -> None:
    times = SCpuTimes(10.5, 1.0, 4.0, 100.0, 2.0, 0.5, 0.25, 0.0, 3.0, 0.0)
    assert mode_times(times) == {"user": 10.5, "nice": 1.0, "system": 4.0, "idle": 100.0,
                                 "iowait": 2.0, "interrupt": 0.5, "softirq": 0.25,
                                 "steal": 0.0}  # guest is already inside user/nice


def test_mode_times_skips_fields_a_platform_lacks() -> None:
    assert mode_times(MacCpuTimes(1, 2, 3, 4)) == {"user": 1.0, "nice": 2.0, "system": 3.0,
                                                   "idle": 4.0}


def test_utilization_is_share_of_delta() -> None:
    before = {"user": 10.0, "system": 5.0, "idle": 85.0}
    after = {"user": 13.0, "system": 6.0, "idle": 91.0}
    shares = utilization(before, after)
    assert shares == pytest.approx({"user": 0.3, "system": 0.1, "idle": 0.6})
    assert sum(shares.values()) == pytest.approx(1.0)


def test_utilization_without_elapsed_time_is_empty() -> None:
    same = {"user": 1.0, "idle": 2.0}
    assert utilization(same, same) == {}
    # A counter that went backwards (CPU hot-unplugged) never yields a negative share.
    assert utilization({"user": 5.0, "idle": 1.0}, {"user": 4.0, "idle": 3.0}) == {
        "user": 0.0, "idle": 1.0}


def test_utilization_from_nothing_is_since_boot() -> None:
    assert utilization({}, {"user": 1.0, "idle": 3.0}) == {"user": 0.25, "idle": 0.75}


def test_memory_states() -> None:
    Vm = namedtuple("Vm", "total available percent used free active inactive buffers cached")
    vm = Vm(1000, 600, 40.0, 300, 200, 0, 0, 100, 400)
    assert memory_states(vm) == {"used": 300.0, "free": 200.0, "buffers": 100.0,
                                 "cached": 400.0}
    Bsd = namedtuple("Bsd", "total available used free")
    assert memory_states(Bsd(10, 5, 4, 6)) == {"used": 4.0, "free": 6.0}


def _statvfs(bsize: int, frsize: int, blocks: int, bfree: int, bavail: int, files: int,
             ffree: int) -> os.statvfs_result:
    return os.statvfs_result((bsize, frsize, blocks, bfree, bavail, files, ffree, ffree, 0,
                              255))


def test_usage_from_statvfs() -> None:
    fs = usage_from_statvfs(_statvfs(4096, 4096, blocks=1000, bfree=300, bavail=250,
                                     files=500, ffree=120))
    assert fs == FsUsage(used=700 * 4096.0, free=250 * 4096.0, reserved=50 * 4096.0,
                         inodes_used=380.0, inodes_free=120.0)
    assert fs.limit == 1000 * 4096.0
    assert fs.utilization == pytest.approx(700 / 950)  # as df reports Use%


def test_usage_from_statvfs_falls_back_to_bsize_and_handles_empty() -> None:
    fs = usage_from_statvfs(_statvfs(512, 0, blocks=10, bfree=10, bavail=10, files=0, ffree=0))
    assert fs.free == 5120.0
    assert fs.used == 0.0
    empty = usage_from_statvfs(_statvfs(4096, 4096, 0, 0, 0, 0, 0))
    assert empty.utilization == 0.0


@pytest.mark.parametrize(("plugged", "percent", "state"), [
    (True, 100.0, "full"), (True, 55.0, "charging"), (False, 55.0, "discharging"),
    (None, 100.0, "discharging"),
])
def test_battery_state(plugged: bool | None, percent: float, state: str) -> None:
    assert battery_state(plugged, percent) == state


def test_default_disk_exclude_keeps_whole_disks() -> None:
    pattern = re.compile(config.build().host.disk_exclude_devices)
    for excluded in ("sda1", "vda2", "nvme0n1p1", "loop0", "ram3", "xvdb1"):
        assert pattern.match(excluded), excluded
    for kept in ("sda", "vda", "nvme0n1", "dm-0", "zram0", "md0"):
        assert not pattern.match(kept), kept


def test_default_mountpoint_exclude() -> None:
    pattern = re.compile(config.build().host.filesystem_exclude_mountpoints)
    for excluded in ("/proc", "/sys/fs/cgroup", "/run/user/0", "/dev/shm",
                     "/var/lib/docker/overlay2/x"):
        assert pattern.search(excluded), excluded
    for kept in ("/", "/home", "/var/lib/docker", "/srv/data", "/runner"):
        assert not pattern.search(kept), kept


# --- host collectors on this host --------------------------------------------------------

def _ctx(**host: object) -> CollectorContext:
    return CollectorContext(config.build({"host": host} if host else {}))


def _families(collector: Collector) -> dict[str, Metric]:
    return {f.name: f for f in collector.collect()}


def test_filesystem_mounts_exclude_pseudo_filesystems() -> None:
    collector = FilesystemCollector(_ctx())
    rows = collector.mounts()
    excluded = set(config.build().host.filesystem_exclude_types)
    mountpoints = [m for _, m, _ in rows]
    assert len(mountpoints) == len(set(mountpoints))  # one row per mountpoint
    for _device, mountpoint, fstype in rows:
        assert fstype not in excluded
        assert not mountpoint.startswith(("/proc", "/sys", "/dev/"))


def test_filesystem_exclude_types_from_config() -> None:
    everything = FilesystemCollector(_ctx()).mounts()
    types = {t for _, _, t in everything}
    assert types, "this host has no real filesystem"
    dropped = sorted(types)[0]
    fewer = FilesystemCollector(_ctx(filesystem_exclude_types=[dropped])).mounts()
    assert all(t != dropped for _, _, t in fewer)


def test_network_exclude_interfaces() -> None:
    families = _families(NetworkCollector(_ctx()))
    io = families[catalog.SYSTEM_NETWORK_IO.family_name]
    nics = {s.labels["network_interface_name"] for s in io.samples if s.name.endswith("_total")}
    assert "lo" in nics
    without_lo = _families(NetworkCollector(_ctx(network_exclude_interfaces="^lo$")))
    nics_after = {s.labels["network_interface_name"]
                  for s in without_lo[catalog.SYSTEM_NETWORK_IO.family_name].samples}
    assert nics_after == nics - {"lo"}


def test_diskstats_series_use_catalog_labels() -> None:
    families = _families(DiskstatsCollector(_ctx()))
    io = families[catalog.SYSTEM_DISK_IO.family_name]
    for sample in io.samples:
        assert set(sample.labels) == {"system_device", "disk_io_direction"}
        assert sample.labels["disk_io_direction"] in {"read", "write"}
        assert sample.value >= 0


def test_cpu_utilization_between_scrapes() -> None:
    collector = CpuCollector(_ctx())
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:  # bounded busy loop so some CPU time passes
        pass
    families = _families(collector)
    util = families[catalog.SYSTEM_CPU_UTILIZATION.name]
    shares = {s.labels["cpu_mode"]: s.value for s in util.samples}
    assert set(shares) >= {"user", "system", "idle"}
    assert sum(shares.values()) == pytest.approx(1.0)
    count = families[catalog.SYSTEM_CPU_LOGICAL_COUNT.name].samples[0].value
    assert count == os.cpu_count()


def test_cpu_utilization_in_back_to_back_collections() -> None:
    """Collections closer together than the CPU clock's tick (a scrape, then an OTLP
    push's collection) see no time pass: each still serves the last utilization."""
    collector = CpuCollector(_ctx())
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:  # bounded busy loop so some CPU time passes
        pass
    first = _families(collector)[catalog.SYSTEM_CPU_UTILIZATION.name].samples
    assert first
    for _ in range(20):  # most of these fall within one 10 ms tick of the one before
        util = _families(collector)[catalog.SYSTEM_CPU_UTILIZATION.name].samples
        assert sum(s.value for s in util) == pytest.approx(1.0)


def test_collector_table() -> None:
    assert {"cpu", "loadavg", "memory", "filesystem", "diskstats", "network", "uptime",
            "battery", "ai"} <= set(COLLECTORS)
    for name, cls in COLLECTORS.items():
        assert cls.name == name
        assert cls.description, name
        assert re.fullmatch(r"[a-z][a-z0-9_]*", name)


# --- runner ------------------------------------------------------------------------------

class _Good(Collector):
    name = "good"

    def collect(self) -> Iterable[Metric]:
        family = catalog.SYSTEM_UPTIME.family()
        family.add_metric([], 42.0)
        yield family


class _Raises(Collector):
    name = "raises"

    def collect(self) -> Iterable[Metric]:
        family = catalog.SYSTEM_BOOT_TIME.family()
        family.add_metric([], 1.0)
        yield family  # a partial result must not leak into the scrape
        raise RuntimeError("boom")


class _Hangs(Collector):
    """Blocks until released (bounded), counting how often it was started."""

    name = "hangs"

    def __init__(self, ctx: CollectorContext) -> None:
        super().__init__(ctx)
        self.release = threading.Event()
        self.started = 0

    def collect(self) -> Iterable[Metric]:
        self.started += 1
        self.release.wait(10)
        family = catalog.SYSTEM_CPU_LOGICAL_COUNT.family()
        family.add_metric([], 1.0)
        yield family


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(max_workers=4)
    yield executor
    executor.shutdown(wait=True, cancel_futures=True)


def _by_collector(families: list[Metric], name: str) -> dict[str, float]:
    family = next(f for f in families if f.name == name)
    return {s.labels["collector"]: s.value for s in family.samples}


def test_runner_failure_and_timeout_give_success_0(pool: ThreadPoolExecutor) -> None:
    ctx = _ctx()
    hangs = _Hangs(ctx)
    runner = CollectorRunner([_Good(ctx), _Raises(ctx), hangs], timeout=0.5, pool=pool)
    try:
        started = time.monotonic()
        families = runner.collect()
        elapsed = time.monotonic() - started
        assert elapsed < 3.0  # the scrape is served at the deadline, not when all finish
        success = _by_collector(families, catalog.EXPORTER_COLLECTOR_SUCCESS.name)
        assert success == {"good": 1.0, "raises": 0.0, "hangs": 0.0}
        durations = _by_collector(families, catalog.EXPORTER_COLLECTOR_DURATION.name)
        assert set(durations) == {"good", "raises", "hangs"}
        assert durations["hangs"] >= 0.4
        names = {f.name for f in families}
        assert catalog.SYSTEM_UPTIME.name in names  # the good collector is served
        assert catalog.SYSTEM_BOOT_TIME.name not in names  # nothing from the failed one
        assert catalog.SYSTEM_CPU_LOGICAL_COUNT.name not in names

        # Still stuck on the next scrape: not started a second time, still success 0.
        again = runner.collect()
        assert _by_collector(again, catalog.EXPORTER_COLLECTOR_SUCCESS.name)["hangs"] == 0.0
        assert hangs.started == 1

        # Once it returns it runs again normally.
        hangs.release.set()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            result = _by_collector(runner.collect(), catalog.EXPORTER_COLLECTOR_SUCCESS.name)
            if result["hangs"] == 1.0:
                break
            time.sleep(0.05)
        assert result["hangs"] == 1.0
        assert hangs.started >= 2
    finally:
        hangs.release.set()


def test_runner_respects_scrape_deadline(pool: ThreadPoolExecutor) -> None:
    ctx = _ctx()
    hangs = _Hangs(ctx)
    runner = CollectorRunner([_Good(ctx), hangs], timeout=30.0, pool=pool)
    try:
        started = time.monotonic()
        families = runner.collect(deadline=time.monotonic() + 0.3)
        assert time.monotonic() - started < 3.0
        success = _by_collector(families, catalog.EXPORTER_COLLECTOR_SUCCESS.name)
        assert success == {"good": 1.0, "hangs": 0.0}
    finally:
        hangs.release.set()


class _Huge(Collector):
    """Quick to collect, seconds to render: one family of a million samples (one Sample
    object repeated, so building it costs nothing)."""

    name = "huge"

    def __init__(self, ctx: CollectorContext) -> None:
        super().__init__(ctx)
        self.started = 0

    def collect(self) -> Iterable[Metric]:
        self.started += 1
        family = catalog.SYSTEM_CPU_LOGICAL_COUNT.family()
        family.add_metric([], 1.0)
        family.samples *= 1_000_000
        yield family


def test_runner_renders_each_collector_within_its_own_deadline(
        pool: ThreadPoolExecutor) -> None:
    """A collector whose families cannot be rendered in time fails alone, the others come
    rendered, and its thread stops at the deadline instead of rendering on."""
    ctx = _ctx()
    huge = _Huge(ctx)
    runner = CollectorRunner([_Good(ctx), huge], timeout=0.3, pool=pool)
    rendered: list[str] = []
    started = time.monotonic()
    families = runner.collect(rendered=rendered)
    assert time.monotonic() - started < 2.0
    assert _by_collector(families, catalog.EXPORTER_COLLECTOR_SUCCESS.name) == {
        "good": 1.0, "huge": 0.0}
    assert exposition.join(rendered) == exposition.render(families)
    assert catalog.SYSTEM_CPU_LOGICAL_COUNT.name not in {f.name for f in families}

    # A thread rendering on would be "still running" here, not started a second time.
    deadline = time.monotonic() + 5
    while huge.started < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
        runner.collect()
    assert huge.started >= 2


def test_runner_renders_only_when_asked(pool: ThreadPoolExecutor) -> None:
    """The OTLP bridge and the JSON views collect without rendering."""
    ctx = _ctx()
    runner = CollectorRunner([_Good(ctx)], timeout=5.0, pool=pool)
    rendered: list[str] = []
    families = runner.collect(rendered=rendered)
    assert exposition.join(rendered) == exposition.render(families)
    before = list(rendered)
    assert runner.collect()
    assert rendered == before


# --- real process: procfs unreadable -----------------------------------------------------

PROCFS_COLLECTORS = {"cpu", "memory", "filesystem", "network", "uptime"}


@pytest.mark.e2e
def test_empty_procfs_fails_procfs_collectors_only(workdir: Path, tmp_path: Path) -> None:
    empty = tmp_path / "proc"
    empty.mkdir()
    proc = Exporter(workdir, config={"host": {"procfs_path": str(empty)}})
    try:
        text = proc.metrics()
        for name in COLLECTORS:
            if not COLLECTORS[name].default_enabled:
                continue
            value = sample_value(text, "ai_exporter_collector_success", {"collector": name})
            expected = 0.0 if name in PROCFS_COLLECTORS else 1.0
            assert value == expected, (name, value)
        # The collectors that do not read procfs are served.
        assert sample_value(text, "system_cpu_load_average_1m") is not None
        assert sample_value(text, "ai_exporter_build_info") == 1.0
        assert "system_memory_limit_bytes " not in text
        assert "system_cpu_time_seconds_total{" not in text
        # Routes keep answering: health names the check it cannot make.
        health = proc.get("/healthz")
        assert health.status_code == 503
        assert health.json()["checks"]["memory"] == {
            "ok": False, "error": "cannot read memory statistics"}
        assert proc.get("/api/status/system").status_code == 200
        assert proc.get("/readyz").status_code == 200
    finally:
        proc.stop()
