"""Space and inodes of real filesystems; pseudo and excluded mounts are left out."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

import psutil
from prometheus_client.metrics_core import Metric

from exporter import catalog
from exporter.collectors.base import Collector, CollectorContext


@dataclass(frozen=True)
class FsUsage:
    """One filesystem's figures, in bytes and inodes."""

    used: float
    free: float
    reserved: float
    inodes_used: float
    inodes_free: float

    @property
    def limit(self) -> float:
        return self.used + self.free + self.reserved

    @property
    def utilization(self) -> float:
        """Used share of the space users may fill (as ``df`` reports it)."""
        usable = self.used + self.free
        return self.used / usable if usable else 0.0


def usage_from_statvfs(st: os.statvfs_result) -> FsUsage:
    """Pure mapping from ``statvfs`` to used / free / reserved."""
    frsize = st.f_frsize or st.f_bsize
    return FsUsage(
        used=float((st.f_blocks - st.f_bfree) * frsize),
        free=float(st.f_bavail * frsize),
        reserved=float((st.f_bfree - st.f_bavail) * frsize),
        inodes_used=float(st.f_files - st.f_ffree),
        inodes_free=float(st.f_ffree),
    )


class FilesystemCollector(Collector):
    name = "filesystem"
    description = "Filesystem space and inodes per mount."

    def __init__(self, ctx: CollectorContext) -> None:
        super().__init__(ctx)
        host = ctx.config.host
        self._exclude_types = frozenset(host.filesystem_exclude_types)
        self._exclude_mounts = re.compile(host.filesystem_exclude_mountpoints)

    def mounts(self) -> list[tuple[str, str, str]]:
        """(device, mountpoint, type) of every real mount, one row per mountpoint."""
        seen: set[str] = set()
        rows = []
        for part in psutil.disk_partitions(all=False):
            if (part.fstype in self._exclude_types or part.mountpoint in seen
                    or self._exclude_mounts.search(part.mountpoint)):
                continue
            seen.add(part.mountpoint)
            rows.append((part.device, part.mountpoint, part.fstype))
        return rows

    def collect(self) -> Iterable[Metric]:
        usage = catalog.SYSTEM_FILESYSTEM_USAGE.family()
        limit = catalog.SYSTEM_FILESYSTEM_LIMIT.family()
        util = catalog.SYSTEM_FILESYSTEM_UTILIZATION.family()
        inodes = catalog.SYSTEM_FILESYSTEM_INODES_USAGE.family()
        for device, mountpoint, fstype in self.mounts():
            try:
                fs = usage_from_statvfs(os.statvfs(mountpoint))
            except OSError:
                continue  # unmounted between listing and stat: nothing to report
            labels = [device, mountpoint, fstype]
            usage.add_metric([*labels, "used"], fs.used)
            usage.add_metric([*labels, "free"], fs.free)
            usage.add_metric([*labels, "reserved"], fs.reserved)
            limit.add_metric(labels, fs.limit)
            util.add_metric(labels, fs.utilization)
            inodes.add_metric([*labels, "used"], fs.inodes_used)
            inodes.add_metric([*labels, "free"], fs.inodes_free)
        yield from (usage, limit, util, inodes)
