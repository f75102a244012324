"""Durable file primitives: atomic replace and the directory lock.

A state file is replaced with write, fsync, rename, then an fsync of the directory, so a
reader (the next start, after a crash or a power cut) sees the old file or the new one and
never a mix; the lock keeps a second exporter off the same storage, whose offsets, applied
ids and log it would otherwise interleave with ours.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

LOCK_FILE = "lock"


class StorageLockedError(Exception):
    """Another process holds the storage directory."""


def strerror(exc: OSError) -> str:
    return exc.strerror or str(exc)


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in ``path`` survive a power cut."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_fully(fd: int, data: bytes | memoryview) -> None:
    """``os.write`` until all of ``data`` is written (a short write is not an error)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def write_atomically(target: Path, data: bytes, sync: bool = True) -> None:
    """Replace ``target`` by ``data``: readers see the old file or the new one, whole."""
    tmp = target.with_name(target.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            write_fully(fd, data)
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    if sync:
        fsync_dir(target.parent)


class DirLock:
    """An exclusive ``flock`` on ``<dir>/lock``, held for the life of the process.

    ``flock`` is released by the kernel when the process dies, ``kill -9`` included, so a
    crash never leaves a stale lock behind (a pid file would)."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock; StorageLockedError when another process has it, OSError when the
        directory cannot hold a lock file (read-only, missing permission)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = ""
            with contextlib.suppress(OSError, ValueError):
                holder = os.pread(fd, 32, 0).decode().strip()
            os.close(fd)
            raise StorageLockedError(
                f"storage.path {self.path.parent} is in use by another exporter"
                + (f" (pid {holder})" if holder else "")) from None
        except OSError:
            os.close(fd)
            raise
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
