"""``/proc/stat`` read under a given root, node_exporter style (``--path.procfs``).

psutil reads procfs under one process-wide root (``exporter.hostpaths``); the CPU and
uptime collectors read ``stat`` here instead, under the root their context names, so a
test builds them on fixture files. The parse is psutil's own (the first ten fields of
each ``cpu`` line over ``SC_CLK_TCK``, ``btime``), so the series are the same. Elsewhere
than Linux there is no procfs: psutil answers, as it did.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import NamedTuple

import psutil

from exporter.hostpaths import HostPaths

ON_LINUX = sys.platform.startswith("linux")
CLOCK_TICKS = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0


class CpuTimes(NamedTuple):
    """Seconds per field of one ``cpu`` line (psutil's ``scputimes`` on Linux)."""

    user: float = 0.0
    nice: float = 0.0
    system: float = 0.0
    idle: float = 0.0
    iowait: float = 0.0
    irq: float = 0.0
    softirq: float = 0.0
    steal: float = 0.0
    guest: float = 0.0
    guest_nice: float = 0.0


@dataclass(frozen=True)
class Stat:
    """What the collectors need from one read of ``stat``."""

    total: object  # CpuTimes (psutil's own tuple off Linux)
    per_cpu: list[object]
    boot_time: float


def _times(line: bytes) -> CpuTimes:
    fields = line.split()[1:1 + len(CpuTimes._fields)]
    return CpuTimes(*(float(f) / CLOCK_TICKS for f in fields))


def parse_stat(data: bytes, where: str = "stat") -> Stat:
    """The aggregate and per-CPU times and the boot time of a ``stat`` file's content."""
    lines = data.splitlines()
    if not lines or not lines[0].startswith(b"cpu "):
        raise ValueError(f"{where}: no aggregate 'cpu' line")
    per_cpu: list[object] = [_times(line) for line in lines[1:] if line.startswith(b"cpu")]
    btime = next((line for line in lines if line.startswith(b"btime")), None)
    if btime is None:
        raise RuntimeError(f"line 'btime' not found in {where}")
    return Stat(_times(lines[0]), per_cpu, float(btime.split()[1]))


def read_stat(host: HostPaths) -> Stat:
    """``<procfs>/stat``, read once; ``OSError`` when procfs is unreadable there."""
    if not ON_LINUX:
        return Stat(psutil.cpu_times(), list(psutil.cpu_times(percpu=True)),
                    psutil.boot_time())
    path = os.path.join(host.procfs, "stat")
    with open(path, "rb") as f:
        return parse_stat(f.read(), path)
