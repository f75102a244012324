"""Where the host's kernel interfaces are mounted (``host.procfs_path``), and the one place
that tells psutil.

node_exporter takes ``--path.procfs`` and hands the root to each collector. Collectors here
receive the same as a typed ``HostPaths`` (``CollectorDeps.host``), so a collector that
reads procfs files itself takes its root from there, and a test builds it on fixture
files. psutil, which most host collectors use, reads only its module global
``psutil.PROCFS_PATH`` on every call: one root for the whole process. So that global is set
once, at process start, by the command line (``pin_psutil_procfs``), before any collector
or thread exists, and never again: ``host.procfs_path`` is fixed for the process lifetime
and a reload that changes it is refused (``check_unchanged``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import psutil

from exporter.config import Config, ConfigError

log = logging.getLogger(__name__)

DEFAULT_PROCFS = "/proc"


@dataclass(frozen=True)
class HostPaths:
    """The mount points of the host's kernel interfaces, as configured."""

    procfs: str = DEFAULT_PROCFS

    @classmethod
    def from_config(cls, cfg: Config) -> HostPaths:
        return cls(procfs=cfg.host.procfs_path)


def pin_psutil_procfs(paths: HostPaths) -> None:
    """Point psutil at ``paths.procfs`` for the rest of the process.

    Call once, at process start, before collectors are built (the CLI does; an
    application embedding the exporter does the same): psutil's root is process-wide, so
    setting it later would change what running collectors and routes read mid-scrape."""
    psutil.PROCFS_PATH = paths.procfs


def psutil_procfs() -> str:
    """The root psutil reads (``pin_psutil_procfs``, else psutil's default)."""
    return str(psutil.PROCFS_PATH)


def warn_if_unpinned(paths: HostPaths) -> None:
    """Log when the configured root is not the one psutil reads (a runtime built without
    ``pin_psutil_procfs``, e.g. in process): psutil-based collectors read psutil's root."""
    if paths.procfs != psutil_procfs():
        log.warning("host.procfs_path is %s but psutil reads %s: psutil-based collectors "
                    "and health checks read the latter (set it at process start)",
                    paths.procfs, psutil_procfs())


def check_unchanged(current: Config, new: Config) -> None:
    """Refuse a reload that changes ``host.procfs_path`` (fixed for the process lifetime)."""
    if new.host.procfs_path != current.host.procfs_path:
        raise ConfigError("host.procfs_path: fixed for the process lifetime; restart the "
                          "exporter to change it")
