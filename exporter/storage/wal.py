"""The write-ahead log: a pushed batch is on disk before it is counted and answered.

Group commit without a thread: a writer appends its record under the append lock, then
whoever takes the sync lock first fsyncs once for every record written so far and applies
all of them, in log order, under the apply lock; the others find their record applied
when they get the sync lock. Concurrent pushers so share one fsync, and the order in which
records are applied is the order of the log, which is what a replay repeats.

A record is applied only after its fsync succeeded. A failed write or fsync removes what
this group wrote (``ftruncate`` back to the last synced length) and fails the group's
requests with StorageUnavailableError: the client was told nothing was kept and nothing
was, so its retry counts once.

Frame: ``<IIQd`` (payload length, CRC-32 of the rest, sequence number, batch time), then
a msgpack ``WalRecord``. A torn or corrupt frame ends the log (a crash mid-write); the
segment is cut there at the next start.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from exporter.storage.files import fsync_dir, strerror, write_fully

_log = logging.getLogger(__name__)

HEADER = struct.Struct("<IIQd")
SUFFIX = ".wal"
SEGMENT_BYTES = 64 * 1024 * 1024
RETRY_SECONDS = 1.0


class StorageUnavailableError(Exception):
    """The record could not be made durable; nothing of it was applied."""


class WalRecord(msgspec.Struct, array_like=True):
    """One batch as its source received it: replayed through the same source handler."""

    source: str
    kind: str
    body: bytes
    # The scope of the credential that sent it (exporter.scopes, encoded), so a replay
    # judges each event as the answer did; empty: unscoped. Older records lack it.
    scope: bytes = b""


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(WalRecord)


@dataclass
class _Pending:
    seq: int
    when: float
    apply: Callable[[float], Any]
    done: bool = False
    result: Any = None
    error: BaseException | None = None


@dataclass
class _Segment:
    path: Path
    first: int
    last: int = 0  # 0: no record yet
    size: int = 0


@dataclass
class WalStats:
    records: float = 0.0
    bytes: float = 0.0
    syncs: float = 0.0
    failures: float = 0.0
    replayed: float = 0.0
    segments: list[_Segment] = field(default_factory=list)


def _frame(seq: int, when: float, payload: bytes) -> bytes:
    rest = HEADER.pack(len(payload), 0, seq, when)[8:] + payload
    return HEADER.pack(len(payload), zlib.crc32(rest), seq, when)[:8] + rest


def read_segment(path: Path) -> Iterator[tuple[int, int, float, WalRecord | None]]:
    """(end offset, seq, time, record) for each whole frame; stops at the first bad one.
    A record that does not decode yields None (its frame was whole: skip it, go on)."""
    data = path.read_bytes()
    pos = 0
    while pos + HEADER.size <= len(data):
        length, crc, seq, when = HEADER.unpack_from(data, pos)
        end = pos + HEADER.size + length
        if end > len(data) or zlib.crc32(data[pos + 8:end]) != crc:
            return
        try:
            record: WalRecord | None = _DECODER.decode(data[pos + HEADER.size:end])
        except msgspec.DecodeError:
            record = None
        yield end, seq, when, record
        pos = end


class WriteAheadLog:
    """Segments ``<dir>/<first seq>.wal``; see the module docstring for the protocol."""

    def __init__(self, directory: Path, sync: bool = True,
                 clock: Callable[[], float] = time.time) -> None:
        self.dir = directory
        self.sync = sync
        self.clock = clock
        self.apply_lock = threading.Lock()
        self._append_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._queue: deque[_Pending] = deque()
        self._fd: int | None = None
        self._segment: _Segment | None = None
        self._synced_size = 0
        self.next_seq = 1
        self.applied_seq = 0
        self.problem = ""
        self._retry_at = 0.0
        self.stats = WalStats()

    # --- start ---------------------------------------------------------------------------
    def recover(self, applied: int, handlers: dict[str, Callable[[WalRecord, float], Any]]
                ) -> int:
        """Replay every record after ``applied`` (the sequence number the loaded state
        already holds) through its source's handler; returns how many were replayed.
        Cuts a torn last frame, so new records never follow a broken one."""
        self.applied_seq = applied
        replayed = 0
        last_seq = applied
        segments = sorted(self.dir.glob("*" + SUFFIX), key=lambda p: int(p.stem))
        for path in segments:
            segment = _Segment(path, int(path.stem))
            good = 0
            for end, seq, when, record in read_segment(path):
                good = end
                segment.last = seq
                last_seq = max(last_seq, seq)
                if seq <= self.applied_seq or record is None:
                    continue
                handler = handlers.get(record.source)
                if handler is None:
                    _log.error("storage: log record %d is from source %r, which is not "
                               "configured; it is kept but not counted", seq, record.source)
                else:
                    try:
                        handler(record, when)
                    except Exception as exc:  # one bad record must not stop the replay
                        _log.error("storage: replaying log record %d failed: %s: %s", seq,
                                   type(exc).__name__, exc)
                    replayed += 1
                self.applied_seq = seq
            size = path.stat().st_size
            if good < size:
                _log.warning("storage: %s ends in %d bytes of a torn write; cut", path.name,
                             size - good)
                try:
                    with open(path, "r+b") as fh:
                        fh.truncate(good)
                        os.fsync(fh.fileno())
                except OSError as exc:
                    # Read-only storage: the torn bytes stay, and every read stops at them
                    # again. New records never follow them: they go to a new segment, and
                    # the sequence numbers must still go on after the last good record.
                    _log.warning("storage: cannot cut %s (%s); it is read up to the torn "
                                 "write", path.name, strerror(exc))
            segment.size = good
            self.stats.segments.append(segment)
        self.next_seq = last_seq + 1
        self.applied_seq = max(self.applied_seq, last_seq)
        self.stats.replayed += replayed
        return replayed

    # --- writing -------------------------------------------------------------------------
    def _open_segment(self) -> None:
        segment = _Segment(self.dir / f"{self.next_seq:020d}{SUFFIX}", self.next_seq)
        fd = os.open(segment.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                     0o600)
        if self.sync:
            try:
                fsync_dir(self.dir)
            except OSError:
                os.close(fd)
                raise
        self._fd, self._segment, self._synced_size = fd, segment, 0
        self.stats.segments.append(segment)

    def _usable(self) -> None:
        """Raise when the log cannot take a record now (retried once a second)."""
        if self.problem:
            if time.monotonic() < self._retry_at:
                raise StorageUnavailableError(self.problem)
            self._close_segment()
        if self._fd is None:
            try:
                os.makedirs(self.dir, exist_ok=True)
                self._open_segment()
            except OSError as exc:
                self._fail(f"cannot open a log segment in {self.dir}: {strerror(exc)}")
                raise StorageUnavailableError(self.problem) from None
            if self.problem:
                _log.info("storage: the write-ahead log is writable again")
            self.problem = ""

    def _fail(self, message: str) -> None:
        self.problem = message
        self._retry_at = time.monotonic() + RETRY_SECONDS
        self.stats.failures += 1
        _log.error("storage: %s; pushes are refused with 503 until it can be written", message)

    def _close_segment(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = None
        self._segment = None

    def append(self, source: str, kind: str, body: bytes,
               apply: Callable[[float], Any], scope: bytes = b"") -> Any:
        """Log the batch, make it durable, then ``apply(batch time)`` and return its result.
        StorageUnavailableError when it cannot be made durable (nothing was applied)."""
        payload = _ENCODER.encode(WalRecord(source, kind, body, scope))
        with self._append_lock:
            self._usable()
            assert self._fd is not None and self._segment is not None
            if self._segment.size >= SEGMENT_BYTES and self._segment.last:
                self._rotate_locked()
            seq, when = self.next_seq, self.clock()
            frame = _frame(seq, when, payload)
            segment = self._segment
            try:
                write_fully(self._fd, frame)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, segment.size)
                self._fail(f"cannot write the log {segment.path.name}: {strerror(exc)}")
                entry = None
            else:
                self.next_seq += 1
                segment.size += len(frame)
                segment.last = seq
                self.stats.records += 1
                self.stats.bytes += len(frame)
                entry = _Pending(seq, when, apply)
                self._queue.append(entry)
        if entry is None:
            message = self.problem
            self._retire_segment()
            raise StorageUnavailableError(message)
        self._sync_and_apply(entry)
        if entry.error is not None:
            raise entry.error
        return entry.result

    def _sync_and_apply(self, entry: _Pending) -> None:
        with self._sync_lock:
            if entry.done:
                return
            with self._append_lock:
                fd, segment = self._fd, self._segment
                size = segment.size if segment is not None else 0
                batch = list(self._queue)
                self._queue.clear()
            if self.sync and fd is not None:
                try:
                    os.fsync(fd)
                    self.stats.syncs += 1
                except OSError as exc:
                    self._abandon(batch, fd, segment, exc)
                    return
            with self._append_lock:
                if segment is self._segment:
                    self._synced_size = max(self._synced_size, size)
            with self.apply_lock:
                for pending in batch:
                    try:
                        pending.result = pending.apply(pending.when)
                    except Exception as exc:  # the record is logged; its handler is a bug
                        pending.error = exc
                    self.applied_seq = pending.seq
                    pending.done = True

    def _abandon(self, batch: list[_Pending], fd: int, segment: _Segment | None,
                 exc: OSError) -> None:
        """fsync failed: cut the unsynced records so a later start never replays what the
        clients were told was not kept."""
        with self._append_lock:
            if segment is not None:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, self._synced_size)
                segment.size = self._synced_size
            self._fail(f"cannot sync the log: {strerror(exc)}")
            self._close_segment()
            # Records appended after our snapshot of the queue went to the same segment
            # and were cut with it: fail them too.
            batch.extend(self._queue)
            self._queue.clear()
        error = StorageUnavailableError(self.problem)
        for pending in batch:
            pending.error = error
            pending.done = True

    def _retire_segment(self) -> None:
        """After a failed write: the records written before it still wait for their
        group's fsync. Sync them (they are applied and answered as usual) or, when that
        fails too, cut and fail them; then close the segment. Under the sync lock, so no
        group is syncing or applying the descriptor while it closes."""
        with self._sync_lock, self._append_lock:
            fd, segment = self._fd, self._segment
            if fd is None or segment is None:
                return
            if self.sync and self._queue:
                try:
                    os.fsync(fd)
                    self.stats.syncs += 1
                    self._synced_size = segment.size
                except OSError as exc:
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, self._synced_size)
                    segment.size = self._synced_size
                    self._fail(f"cannot sync the log: {strerror(exc)}")
                    error = StorageUnavailableError(self.problem)
                    for pending in self._queue:
                        pending.error = error
                        pending.done = True
                    self._queue.clear()
            self._close_segment()

    # --- checkpoint coordination ---------------------------------------------------------
    def rotate(self) -> None:
        """Start a new segment, so the ones a checkpoint covers can be deleted whole."""
        with self._append_lock:
            if self._segment is not None and self._segment.last:
                self._rotate_locked()

    def _rotate_locked(self) -> None:
        if self.sync and self._fd is not None:
            # Records of the old segment may still wait for their group's fsync, which
            # will go to the new segment's descriptor: sync them here.
            try:
                os.fsync(self._fd)
            except OSError as exc:
                self._fail(f"cannot sync the log: {strerror(exc)}")
                return
        self._close_segment()
        try:
            self._open_segment()
        except OSError as exc:
            self._fail(f"cannot open a log segment in {self.dir}: {strerror(exc)}")

    def drop_through(self, seq: int) -> None:
        """Delete the segments whose records are all at or below ``seq`` (checkpointed)."""
        with self._append_lock:
            current = self._segment
            keep: list[_Segment] = []
            for segment in self.stats.segments:
                if segment is not current and segment.last <= seq:
                    with contextlib.suppress(FileNotFoundError):
                        segment.path.unlink()
                    continue
                keep.append(segment)
            self.stats.segments = keep

    def size(self) -> int:
        return sum(s.size for s in self.stats.segments)

    def close(self) -> None:
        with self._append_lock:
            self._close_segment()
