"""One state store for every source: the AI state and every source's cursor, together.

``<storage.path>/state.json`` holds the aggregator, the ingest counters and one cursor per
source (tail offsets, Redis applied ids, the push log's applied sequence number), written
in one atomic replace. A commit first holds every attached source still (its ``hold()``:
no batch half applied), then copies the state and the cursors, so what is on disk is
always a state and the exact positions that produced it; each source resumes from its own
cursor and counts what came after it once. Pushes go through the write-ahead log
(``wal.py``) before they are answered, so a 2xx survives ``kill -9``; the log is replayed
after the state is loaded and its segments are deleted once a commit covers them.

Storage that cannot be written never stops scrapes: readiness and
``ai_exporter_storage_writable`` say why, pushes are refused with 503, and the other
sources keep counting in memory (their cursors keep them exactly once after a restart,
from the last commit).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import msgspec
from prometheus_client.metrics_core import Metric

from exporter import catalog
from exporter.storage.files import DirLock, StorageLockedError, strerror, write_atomically
from exporter.storage.wal import WalRecord, WriteAheadLog

if TYPE_CHECKING:
    from exporter.aggregator import Aggregator
    from exporter.ingest import Ingestor

_log = logging.getLogger(__name__)

STATE_FILE = "state.json"
WAL_DIR = "wal"
STATE_VERSION = 1
WAL_CURSOR = "wal"
REQUEST_GAP_SECONDS = 0.2


Legacy = Callable[[], "tuple[State, Callable[[], None]] | None"]


class Participant(Protocol):
    """A source whose position must be committed together with the AI state."""

    def hold(self) -> AbstractContextManager[object]:
        """Keep the source from applying while the commit copies state and cursor."""

    def cursor(self) -> Any:
        """The source's position, JSON-able (msgspec), read while held."""

    def committed(self) -> None:
        """The last cursor taken is durable (e.g. Redis entries may now be acked)."""


@runtime_checkable
class Replayable(Protocol):
    """A source whose batches go through the write-ahead log and can be replayed."""

    name: str

    def replay(self, record: WalRecord, now: float) -> None:
        """Count a logged batch again, at its original time."""


class State(msgspec.Struct, kw_only=True):
    version: int
    written_at: float
    aggregator: dict[str, Any]
    ingest: dict[str, Any]
    cursors: dict[str, Any] = msgspec.field(default_factory=dict)


class _WalParticipant:
    def __init__(self, wal: WriteAheadLog) -> None:
        self.wal = wal
        self._taken = 0

    def hold(self) -> AbstractContextManager[object]:
        return self.wal.apply_lock

    def cursor(self) -> Any:
        self._taken = self.wal.applied_seq
        self.wal.rotate()
        return self._taken

    def committed(self) -> None:
        self.wal.drop_through(self._taken)


class StateStore:
    """The storage directory of one exporter (see the module docstring)."""

    def __init__(self, path: Path, *, sync: bool = True, interval: float = 5.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.sync = sync
        self.interval = interval
        self.clock = clock
        self.lock = DirLock(path)
        self.wal = WriteAheadLog(path / WAL_DIR, sync=sync, clock=clock)
        self._participants: dict[str, Participant] = {WAL_CURSOR: _WalParticipant(self.wal)}
        self._cursors: dict[str, Any] = {}
        self._commit_lock = threading.Lock()
        self._aggregator: Aggregator | None = None
        self._ingestor: Ingestor | None = None
        self._marker: Any = None
        self._stop = threading.Event()
        self._wanted = threading.Event()
        self._thread: threading.Thread | None = None
        self.problem = ""
        self.loaded_from = ""
        self.commits = {"success": 0.0, "failure": 0.0}
        self.last_commit = 0.0

    # --- opening -------------------------------------------------------------------------
    def open(self, ingestor: Ingestor, legacy: Legacy | None = None) -> None:
        """Take the lock and restore the saved state into ``ingestor`` (and its aggregator).

        StorageLockedError when another exporter holds the directory. A directory that
        cannot be written is not fatal: the state is read if it can be, and the store
        reports itself unwritable. ``legacy`` yields a state from an older layout (the tail
        checkpoint) and how to retire it, used when the store holds none yet."""
        self._ingestor, self._aggregator = ingestor, ingestor.aggregator
        try:
            os.makedirs(self.path, exist_ok=True)
            self.lock.acquire()
        except StorageLockedError:
            raise
        except OSError as exc:
            self._failed(f"storage.path {self.path} cannot be written: {strerror(exc)}")
        state = self._load()
        migrated = None
        if state is None and legacy is not None:
            migrated = legacy()
            if migrated is not None:
                state = migrated[0]
        if state is not None:
            ingestor.aggregator.restore(state.aggregator)
            ingestor.restore(state.ingest)
            self._cursors = dict(state.cursors)
        if migrated is not None and self.commit(force=True):
            migrated[1]()
            self.loaded_from = "migrated"

    def _load(self) -> State | None:
        path = self.path / STATE_FILE
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._failed(f"cannot read {path}: {strerror(exc)}")
            return None
        try:
            state = msgspec.json.decode(data, type=State)
            if state.version != STATE_VERSION:
                raise ValueError(f"version {state.version}, expected {STATE_VERSION}")
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
            aside = path.with_name(f"{STATE_FILE}.corrupt-{int(time.time())}")
            with contextlib.suppress(OSError):
                os.replace(path, aside)
            _log.error("storage: %s is unusable (%s); moved to %s, starting over", path, exc,
                       aside)
            return None
        self.loaded_from = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(state.written_at))
        _log.info("storage: restored the state of %s from %s", self.loaded_from, path)
        return state

    def replay(self, handlers: dict[str, Callable[[WalRecord, float], Any]]) -> int:
        """Apply the log records the loaded state does not hold yet (after ``open``)."""
        applied = int(self._cursors.get(WAL_CURSOR, 0) or 0)
        try:
            replayed = self.wal.recover(applied, handlers)
        except OSError as exc:
            self._failed(f"cannot read the log in {self.wal.dir}: {strerror(exc)}")
            return 0
        if replayed:
            _log.info("storage: replayed %d logged push batches", replayed)
            self.commit(force=True)
        return replayed

    # --- participants ----------------------------------------------------------------------
    def cursor(self, name: str) -> Any:
        """The last known cursor of a source (None for a source the store has not seen)."""
        with self._commit_lock:
            return self._cursors.get(name)

    def attach(self, name: str, participant: Participant) -> None:
        with self._commit_lock:
            self._participants[name] = participant

    def detach(self, name: str) -> None:
        """Commit the source's final cursor and forget the source (its cursor stays in
        the state, for the next source of that name: a reload or a restart)."""
        self.commit(force=True)
        with self._commit_lock:
            self._participants.pop(name, None)

    # --- committing ------------------------------------------------------------------------
    def commit(self, force: bool = False) -> bool:
        """Write the state and every cursor in one atomic replace; True when it is on disk
        (or nothing changed since the last commit)."""
        if self._aggregator is None or self._ingestor is None:
            return False
        with self._commit_lock:
            # The log last: a source may take a moment to reach the end of its batch (the
            # tail's poll), and pushes should not wait behind it.
            participants = sorted(self._participants.items(), key=lambda p: p[0] == WAL_CURSOR)
            with contextlib.ExitStack() as held:
                for _name, participant in participants:
                    held.enter_context(participant.hold())
                cursors = dict(self._cursors)
                for name, participant in participants:
                    cursors[name] = participant.cursor()
                ingest = self._ingestor.snapshot()
                marker = msgspec.json.encode((cursors, ingest))
                if marker == self._marker and not force and not self.problem:
                    # What is on disk already holds these cursors: a batch of redelivered
                    # duplicates changes no cursor, and its ids may be acknowledged now.
                    self._cursors = cursors
                    self._after_commit(participants)
                    return True
                state = State(version=STATE_VERSION, written_at=self.clock(),
                              aggregator=self._aggregator.snapshot(), ingest=ingest,
                              cursors=cursors)
                body = msgspec.json.encode(state)
            self._cursors = cursors
            why = ""
            if not self.lock.held:
                try:
                    os.makedirs(self.path, exist_ok=True)
                    self.lock.acquire()
                except StorageLockedError as exc:
                    why = str(exc)
                except OSError as exc:
                    why = strerror(exc)
            try:
                if not self.lock.held:
                    raise OSError(0, f"cannot take the lock in {self.path}"
                                     + (f" ({why})" if why else ""))
                write_atomically(self.path / STATE_FILE, body, sync=self.sync)
            except OSError as exc:
                self._failed(f"cannot write {self.path / STATE_FILE}: {strerror(exc)}")
                return False
            self._marker = marker
            self.commits["success"] += 1
            self.last_commit = state.written_at
            if self.problem:
                _log.info("storage: %s is writable again", self.path)
            self.problem = ""
            self._after_commit(participants)
            return True

    @staticmethod
    def _after_commit(participants: Sequence[tuple[str, Participant]]) -> None:
        for _name, participant in participants:
            try:
                participant.committed()
            except Exception as exc:  # a source's after-commit step must not stop others
                _log.error("storage: after-commit step failed: %s: %s",
                           type(exc).__name__, exc)

    def _failed(self, message: str) -> None:
        self.commits["failure"] += 1
        if message != self.problem:
            _log.error("storage: %s (counting goes on in memory; a restart resumes from "
                       "the last commit)", message)
        self.problem = message

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="storage", daemon=True)
        self._thread.start()

    def request_commit(self) -> None:
        """Ask for a commit soon (a source waiting to acknowledge what it counted)."""
        self._wanted.set()

    def _run(self) -> None:
        next_due = time.monotonic() + self.interval
        while not self._stop.is_set():
            self._wanted.wait(max(next_due - time.monotonic(), 0.0))
            if self._stop.is_set():
                return
            # Requests are coalesced: at most one commit per REQUEST_GAP_SECONDS for them.
            self._stop.wait(REQUEST_GAP_SECONDS if self._wanted.is_set() else 0.0)
            self._wanted.clear()
            try:
                self.commit()
            except Exception as exc:  # the committer must outlive one bad commit
                _log.error("storage: commit failed: %s: %s", type(exc).__name__, exc)
            next_due = time.monotonic() + self.interval

    def close(self) -> None:
        """Final commit, then release the log and the lock; safe to call twice."""
        self._stop.set()
        self._wanted.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        if self._aggregator is not None:
            self.commit(force=True)
        self.wal.close()
        self.lock.release()

    # --- health ----------------------------------------------------------------------------
    @property
    def writable(self) -> bool:
        return not self.problem and not self.wal.problem

    def ready(self) -> tuple[bool, str]:
        problem = self.problem or self.wal.problem
        if problem:
            return False, problem
        return True, f"writable, committed every {self.interval:g}s"

    def families(self) -> list[Metric]:
        writable = catalog.EXPORTER_STORAGE_WRITABLE.family()
        writable.add_metric([], 1.0 if self.writable else 0.0)
        commits = catalog.EXPORTER_STORAGE_COMMITS.family()
        for outcome, n in self.commits.items():
            commits.add_metric([outcome], n)
        last = catalog.EXPORTER_STORAGE_LAST_COMMIT.family()
        last.add_metric([], self.last_commit)
        wal_bytes = catalog.EXPORTER_STORAGE_WAL_BYTES.family()
        wal_bytes.add_metric([], float(self.wal.size()))
        records = catalog.EXPORTER_STORAGE_WAL_RECORDS.family()
        records.add_metric([], self.wal.stats.records)
        syncs = catalog.EXPORTER_STORAGE_WAL_SYNCS.family()
        syncs.add_metric([], self.wal.stats.syncs)
        return [writable, commits, last, wal_bytes, records, syncs]
