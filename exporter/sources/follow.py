"""Following files: which files match, where each one is read, rotation and truncation.

The tail source (``tail.py``) owns what the lines mean (ingest, stats, its cursor in the
state store); this module only knows files. Files matching the globs are polled: new files
are picked up while running, deleted ones released, rotation by rename-and-create (a new
inode at the path; the old inode is drained through its still-open descriptor first) and
by copy-truncate (size below the offset, or the first bytes changed) are both followed, and
a partial last line is held until its newline arrives. Complete lines go to the sink in
big reads, never one by one.
"""

from __future__ import annotations

import contextlib
import glob
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import msgspec

from exporter.config import TailConfig
from exporter.logutil import RateLimitedLogger
from exporter.sources.base import path_label, resolve

HEAD_BYTES = 64  # first bytes of a file, kept to tell a rewritten file from the same one


class SavedFile(msgspec.Struct, kw_only=True):
    """Where reading of one file stopped: identity (device, inode, first bytes) and offset."""

    path: str
    dev: int
    ino: int
    offset: int
    line: int
    head: str = ""


@dataclass
class Tailed:
    """A followed file: its open descriptor, identity and read position."""

    path: str
    label: str
    fd: int
    dev: int
    ino: int
    committed: int  # end of the last complete line handled: what a cursor records
    read_pos: int  # next byte to read; [committed, read_pos) is ``pending`` or skipped
    line_no: int  # complete lines before ``committed``
    pending: bytes = b""
    skipping: bool = False  # inside a line longer than max_line_bytes
    head: bytes = b""
    size: int = -1
    mtime_ns: int = -1


class FollowSink(Protocol):
    """What the follower reports to the source that owns it."""

    def lines(self, tailed: Tailed, data: bytes, start: int, end: int, *, oversized: bool,
              nbytes: int) -> int:
        """Complete lines ``data[start:end]`` of ``tailed`` (``oversized``: a line over the
        limit ended just before ``start``); ``nbytes`` read. Returns the lines handled."""

    def read(self, label: str, nbytes: int) -> None:
        """Bytes read that completed no line."""

    def count(self, label: str, what: str) -> None:
        """A rotation or truncation of ``label``."""

    def lag(self, label: str, value: float) -> None:
        """Bytes of ``label`` not handled yet."""

    def problems_now(self, current: dict[str, tuple[str, str]]) -> None:
        """This poll's problems by label: (reason, what)."""


def strerror(exc: OSError) -> str:
    return exc.strerror or str(exc)


class FileFollower:
    """The files of one tail source; one thread (the source's poll) drives it."""

    def __init__(self, cfg: TailConfig, sink: FollowSink, log: RateLimitedLogger) -> None:
        self.cfg = cfg
        self.sink = sink
        self._log = log
        self.base = Path(os.path.abspath(cfg.base_dir))
        self.patterns = [resolve(self.base, p) for p in cfg.paths]
        self.files: dict[str, Tailed] = {}
        self.draining: list[tuple[Tailed, float]] = []  # rotated away, read until expiry
        self.first_start = True
        self._saved: dict[tuple[int, int], SavedFile] = {}
        self._saved_by_path: dict[str, SavedFile] = {}
        self._initial_scan = True
        self.eventful = False  # a file opened, rotated, truncated or released this poll
        self._current: dict[str, tuple[str, str]] = {}  # path → (reason, problem) this poll

    def label(self, path: str) -> str:
        return path_label(self.base, path)

    def restore(self, files: list[SavedFile]) -> None:
        """Positions of a stored cursor: files found again are read on from there."""
        self.first_start = False
        self._saved = {(f.dev, f.ino): f for f in files}
        self._saved_by_path = {f.path: f for f in files}

    def positions(self) -> list[SavedFile]:
        return [SavedFile(path=t.path, dev=t.dev, ino=t.ino, offset=t.committed,
                          line=t.line_no, head=t.head[:HEAD_BYTES].hex())
                for t in self.files.values()]

    def close(self) -> None:
        for tailed in self.files.values():
            os.close(tailed.fd)
        self.files.clear()

    def poll(self, deadline: float) -> bool:
        """One pass over the globs; True when some file still has unread data."""
        self.eventful = False
        self._current = {}
        found = self._scan()
        by_id = {(st.st_dev, st.st_ino): path for path, st in found.items()}
        # Files whose path is gone or holds another file now: finish reading the old
        # inode through the open descriptor, then re-home it (renamed to a path that
        # still matches) or release it.
        orphans = [t for path, t in self.files.items()
                   if (st := found.get(path)) is None or (st.st_dev, st.st_ino) != (t.dev,
                                                                                   t.ino)]
        for tailed in orphans:
            del self.files[tailed.path]
            self._read(tailed, None)
        for tailed in orphans:
            self.eventful = True
            old_path, old_label = tailed.path, tailed.label
            if old_path in found:
                self.sink.count(old_label, "rotations")
                self._log.info("tail: %s rotated (new file at the path)", old_label,
                               key=f"rotated:{old_label}")
            moved = by_id.get((tailed.dev, tailed.ino))
            if moved is not None and moved not in self.files:
                tailed.path, tailed.label = moved, self.label(moved)
                self.files[moved] = tailed
                continue
            # The writer may still be finishing the rotated (or deleted) file through its
            # own descriptor: keep reading it for rotate_wait_seconds before letting go.
            self.draining.append((tailed, time.monotonic() + self.cfg.rotate_wait_seconds))
            self.sink.lag(old_label, 0.0)
        self.drain(final=False)
        more = False
        for path, st in found.items():
            followed = self.files.get(path) or self._open(path)
            if followed is not None and self._follow(followed, st, deadline):
                more = True
        self._initial_scan = False
        self.sink.problems_now({self.label(p): v for p, v in self._current.items()})
        return more

    def drain(self, final: bool) -> None:
        """Read rotated-away files on; release those whose grace period is over."""
        keep = []
        now = time.monotonic()
        for tailed, until in self.draining:
            self._read(tailed, None)
            if final or now >= until:
                self._finish(tailed)
                os.close(tailed.fd)
                self._log.info("tail: released %s (inode %d)", tailed.label, tailed.ino,
                               key=f"released:{tailed.label}")
            else:
                keep.append((tailed, until))
        self.draining = keep

    def _scan(self) -> dict[str, os.stat_result]:
        found: dict[str, os.stat_result] = {}
        problems = self._current
        admitted = len(self.files)
        for pattern in self.patterns:
            for path in sorted(glob.glob(pattern)):
                if path in found:
                    continue
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    continue  # vanished between the listing and the stat
                except OSError as exc:
                    problems[path] = ("unreadable", f"cannot stat: {strerror(exc)}")
                    continue
                if not stat.S_ISREG(st.st_mode):
                    problems[path] = ("not_a_file", "not a regular file")
                    continue
                if path not in self.files:
                    if admitted >= self.cfg.max_files:
                        problems[path] = ("too_many_files", "not followed: over max_files "
                                                            f"({self.cfg.max_files})")
                        continue
                    admitted += 1
                found[path] = st
        return found

    def _open(self, path: str) -> Tailed | None:
        label = self.label(path)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._current[path] = ("unreadable", f"cannot open: {strerror(exc)}")
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                os.close(fd)
                return None
            head = os.pread(fd, HEAD_BYTES, 0)
        except OSError as exc:
            os.close(fd)
            self._current[path] = ("read_error", f"cannot read: {strerror(exc)}")
            return None
        tailed = Tailed(path=path, label=label, fd=fd, dev=st.st_dev, ino=st.st_ino,
                        committed=0, read_pos=0, line_no=0)
        saved = self._saved.pop((st.st_dev, st.st_ino), None)
        by_path = self._saved_by_path.pop(path, None)
        if saved is not None and head.startswith(bytes.fromhex(saved.head)):
            if st.st_size >= saved.offset:
                tailed.committed = tailed.read_pos = saved.offset
                tailed.line_no = saved.line
                tailed.head = head
            else:
                self.sink.count(label, "truncations")
                self._log.info("tail: %s was truncated while stopped; reading it from the "
                               "start", label, key=f"truncated:{label}")
        elif by_path is not None and (by_path.dev, by_path.ino) != (st.st_dev, st.st_ino):
            self.sink.count(label, "rotations")
        elif self.first_start and self._initial_scan and self.cfg.start_at == "end":
            self._seek_end(tailed, st.st_size)
        self.files[path] = tailed
        self.eventful = True
        self._log.info("tail: following %s from byte %d", label, tailed.committed,
                       key=f"follow:{label}")
        return tailed

    def _seek_end(self, tailed: Tailed, size: int) -> None:
        """Start after the last complete line, so a line being written is not cut."""
        window = min(size, self.cfg.max_line_bytes + 1)
        tail = os.pread(tailed.fd, window, size - window) if window else b""
        cut = tail.rfind(b"\n")
        if cut >= 0:
            tailed.committed = tailed.read_pos = size - window + cut + 1
        else:
            tailed.committed = size - window
            tailed.read_pos = size
            tailed.skipping = window > self.cfg.max_line_bytes

    def _follow(self, tailed: Tailed, st: os.stat_result, deadline: float) -> bool:
        """Detect truncation, read what is new; True when more is left to read."""
        if st.st_size == tailed.size and st.st_mtime_ns == tailed.mtime_ns:
            return False
        truncated = st.st_size < tailed.read_pos
        if not truncated and tailed.head:
            try:
                truncated = os.pread(tailed.fd, len(tailed.head), 0) != tailed.head
            except OSError:
                truncated = False
        if truncated:
            self.eventful = True
            self.sink.count(tailed.label, "truncations")
            self._log.info("tail: %s was truncated (copy-truncate?); reading it from the start",
                           tailed.label, key=f"truncated:{tailed.label}")
            tailed.committed = tailed.read_pos = tailed.line_no = 0
            tailed.pending, tailed.skipping, tailed.head = b"", False, b""
        more = self._read(tailed, deadline)
        if len(tailed.head) < HEAD_BYTES and tailed.read_pos > len(tailed.head):
            with contextlib.suppress(OSError):
                tailed.head = os.pread(tailed.fd, HEAD_BYTES, 0)
        if not more:
            tailed.size, tailed.mtime_ns = st.st_size, st.st_mtime_ns
        self.sink.lag(tailed.label, float(max(st.st_size, tailed.read_pos) - tailed.committed))
        return more

    def _read(self, tailed: Tailed, deadline: float | None) -> bool:
        """Read chunks until end of file (or the deadline); True when stopped early."""
        chunk_size = self.cfg.read_chunk_bytes
        while True:
            try:
                chunk = os.pread(tailed.fd, chunk_size, tailed.read_pos)
            except OSError as exc:
                self._current[tailed.path] = ("read_error", f"read failed: {strerror(exc)}")
                return False
            if not chunk:
                return False
            tailed.read_pos += len(chunk)
            self._consume(tailed, chunk)
            if len(chunk) < chunk_size:
                return False
            if deadline is not None and time.monotonic() >= deadline:
                return True

    def _consume(self, tailed: Tailed, chunk: bytes) -> None:
        """Split complete lines off the buffer and hand them on; hold the partial rest."""
        max_line = self.cfg.max_line_bytes
        data = tailed.pending + chunk if tailed.pending else chunk
        end = data.rfind(b"\n")
        if end < 0:
            if tailed.skipping:
                tailed.pending = b""
            elif len(data) > max_line:
                tailed.skipping, tailed.pending = True, b""
            else:
                tailed.pending = data
            self.sink.read(tailed.label, len(chunk))
            return
        start, oversized = 0, tailed.skipping
        if oversized:  # the end of a line already over max_line_bytes
            start, tailed.skipping = data.find(b"\n") + 1, False
        lines = self.sink.lines(tailed, data, start, end, oversized=oversized, nbytes=len(chunk))
        self._advance(tailed, data[end + 1:], lines)

    def _advance(self, tailed: Tailed, rest: bytes, lines: int) -> None:
        """``lines`` complete lines handled; ``rest`` (after the last newline) is held."""
        tailed.line_no += lines
        tailed.committed = tailed.read_pos - len(rest)
        if len(rest) > self.cfg.max_line_bytes:
            tailed.skipping, tailed.pending = True, b""
        else:
            tailed.pending = rest

    def _finish(self, tailed: Tailed) -> None:
        """A released file's last line without a newline is a line all the same."""
        if tailed.pending.strip() and not tailed.skipping:
            tailed.pending += b"\n"
            self._consume(tailed, b"")
