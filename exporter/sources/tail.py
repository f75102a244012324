"""JSONL tail source: AI events from growing files, exactly once across rotation and restart.

Which files, and where each is read (rotation, truncation, partial lines), is the
follower's job (``follow.py``); this source gives the complete lines of each big read to
``Ingestor.ingest_lines`` (the native line path, validated and aggregated in C, when it is
built; else slices decoded as one JSON array each in two msgspec passes), counts the
per-file self metrics, and keeps its cursor in the state store (docs/files.md).

Exactly once: the offset of every file (the end of its last complete line) and the
per-file self metrics are this source's cursor in the state store (``exporter.storage``),
committed in one atomic replace with the AI state those lines produced. A commit holds the
tail still between polls, so offsets and state always agree. At start the state is
restored first and the files are read on from the cursor's offsets, so every line after
the commit is applied once more and only once, whether the exporter stopped gracefully or
was killed; counters continue where they were. A checkpoint of the older layout
(``<state_dir>/tail-checkpoint.json``) is migrated into the store at the first start.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from prometheus_client.metrics_core import Metric

from exporter import catalog
from exporter.config import TailConfig
from exporter.events import Rejection
from exporter.ingest import Ingestor
from exporter.logutil import RateLimitedLogger
from exporter.sources.base import Source
from exporter.sources.follow import FileFollower, SavedFile, Tailed
from exporter.storage import State, StateStore

if TYPE_CHECKING:
    from exporter.sources import SourceDeps

_log = logging.getLogger(__name__)

SOURCE = "tail"
CHECKPOINT_FILE = "tail-checkpoint.json"  # the older layout, migrated into the store
CHECKPOINT_VERSION = 1


class FileStats(msgspec.Struct, kw_only=True):
    """Self metrics of one path; in the cursor, so the counters survive restarts too."""

    read_bytes: float = 0.0
    lines: float = 0.0
    events: float = 0.0
    rotations: float = 0.0
    truncations: float = 0.0
    last_read: float = 0.0
    lag: float = 0.0
    rejected: dict[str, float] = msgspec.field(default_factory=dict)
    errors: dict[str, float] = msgspec.field(default_factory=dict)


class Cursor(msgspec.Struct, kw_only=True):
    """This source's cursor in the state store."""

    files: list[SavedFile]
    stats: dict[str, FileStats]


class Checkpoint(msgspec.Struct, kw_only=True):
    """The older layout: offsets and the whole AI state in the tail's own file."""

    version: int
    written_at: float
    files: list[SavedFile]
    stats: dict[str, FileStats]
    ingest: dict[str, Any]
    aggregator: dict[str, Any]


class TailSource(Source):
    """Follows JSONL files and feeds their lines to the ingestor as source ``tail``."""

    name = SOURCE

    def __init__(self, ingestor: Ingestor, cfg: TailConfig, store: StateStore,
                 log_interval: float = 10.0) -> None:
        super().__init__(ingestor)
        self.cfg = cfg
        self.store = store
        self._log = RateLimitedLogger(_log, log_interval)
        self.follower = FileFollower(cfg, self, self._log)
        self.stats: dict[str, FileStats] = {}
        self.problems: dict[str, str] = {}  # label → what is wrong with it now
        self.last_rejection = ""
        self._lock = threading.Lock()  # stats, problems: read by scrapes
        self._work = threading.Lock()  # one poll or commit at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def files(self) -> dict[str, Tailed]:
        return self.follower.files

    # --- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        """Restore the cursor, catch up on what it had not covered, then follow."""
        self._stop.clear()
        with self._work:
            self._restore(self.store.cursor(SOURCE))
            self.store.attach(SOURCE, self)
            if not self.follower.first_start and self.cfg.catch_up_timeout_seconds > 0:
                # Read what the last commit had not covered before the first scrape is
                # served: counters then never show less than before a crash.
                deadline = time.monotonic() + self.cfg.catch_up_timeout_seconds
                while self.follower.poll(deadline) and time.monotonic() < deadline:
                    pass
        self._thread = threading.Thread(target=self._run, name="tail", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop following and commit the final offsets; safe to call twice."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        if self._work.acquire(timeout=30):
            try:
                self.follower.drain(final=True)
            finally:
                self._work.release()
        self.store.detach(SOURCE)
        with self._work:
            self.follower.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with self._work:
                    more = self.follower.poll(time.monotonic() + 1.0)
                if self.follower.eventful:  # a file opened, rotated or released
                    self.store.request_commit()
            except Exception as exc:
                self._log.error("tail: poll failed: %s: %s", type(exc).__name__, exc,
                                key="tail-poll")
                more = False
            if not more:
                self._stop.wait(self.cfg.poll_interval_seconds)

    def ready(self) -> tuple[bool, str]:
        with self._lock:
            problems = [f"{label}: {what}" for label, what in sorted(self.problems.items())]
            rejection = self.last_rejection
        alive = self._thread is not None and self._thread.is_alive()
        parts = [f"following {len(self.files)} files"]
        if problems:
            parts.append("problems: " + "; ".join(problems[:10]))
        if rejection:
            parts.append(f"last rejected line: {rejection}")
        return alive and not problems, ", ".join(parts) if alive else "stopped"

    # --- the follower's sink -------------------------------------------------------------
    def lines(self, tailed: Tailed, data: bytes, start: int, end: int, *, oversized: bool,
              nbytes: int) -> int:
        """Ingest the complete lines of one read; count them per file."""
        max_line = self.cfg.max_line_bytes
        first = tailed.line_no + 1
        rejects: list[tuple[int, Rejection]] = []
        lines = 0
        if oversized:
            rejects.append((first, Rejection("too_large", f"line over {max_line} bytes")))
            lines = 1
        counted, events, rejected = self.ingestor.ingest_lines(
            SOURCE, data, max_line, start, end)
        rejects.extend((first + lines + index, rejection) for index, rejection in rejected)
        lines += counted
        self._record(tailed, nbytes, lines, events, rejects)
        return lines

    def read(self, label: str, nbytes: int) -> None:
        with self._lock:
            stats = self._stats(label)
            stats.read_bytes += nbytes
            stats.last_read = time.time()

    def count(self, label: str, what: str) -> None:
        with self._lock:
            stats = self._stats(label)
            setattr(stats, what, getattr(stats, what) + 1)

    def lag(self, label: str, value: float) -> None:
        with self._lock:
            self._stats(label).lag = value

    def problems_now(self, current: dict[str, tuple[str, str]]) -> None:
        """The problems of this poll replace the last ones; new ones are counted and logged."""
        with self._lock:
            for label, (reason, what) in current.items():
                if self.problems.get(label) != what:
                    errors = self._stats(label).errors
                    errors[reason] = errors.get(reason, 0.0) + 1
                    self._log.warning("tail: %s: %s", label, what, key=f"problem:{label}")
            self.problems = {label: what for label, (_, what) in current.items()}

    def _stats(self, label: str) -> FileStats:
        stats = self.stats.get(label)
        if stats is None:
            if len(self.stats) >= 2 * self.cfg.max_files:
                followed = {t.label for t in self.files.values()}
                for old in [k for k in self.stats if k not in followed][:len(self.stats) // 4]:
                    del self.stats[old]
            stats = self.stats[label] = FileStats()
        return stats

    def _record(self, tailed: Tailed, nbytes: int, nlines: int, nevents: int,
                rejects: list[tuple[int, Rejection]]) -> None:
        for line_no, rejection in sorted(rejects, key=lambda r: r[0]):
            self.ingestor.reject(SOURCE, rejection, where=f"{tailed.label} line {line_no}")
        with self._lock:
            stats = self._stats(tailed.label)
            stats.read_bytes += nbytes
            stats.lines += nlines
            stats.events += nevents
            stats.last_read = time.time()
            for line_no, rejection in rejects:
                stats.rejected[rejection.reason] = stats.rejected.get(rejection.reason, 0.0) + 1
                self.last_rejection = (f"{tailed.label} line {line_no}: {rejection.reason}: "
                                       f"{rejection.detail[:120]}")

    # --- state store participant ---------------------------------------------------------
    def hold(self) -> threading.Lock:
        """Commits wait for the poll in progress: offsets and state then agree."""
        return self._work

    def cursor(self) -> Cursor:
        with self._lock:
            stats = {label: msgspec.structs.replace(s, rejected=dict(s.rejected),
                                                    errors=dict(s.errors))
                     for label, s in self.stats.items()}
        return Cursor(files=self.follower.positions(), stats=stats)

    def committed(self) -> None:
        """Nothing waits on a commit here: the files are the log."""

    def _restore(self, saved: Any) -> None:
        if saved is None:
            return
        try:
            cursor = msgspec.convert(saved, Cursor)
        except msgspec.ValidationError as exc:
            _log.error("tail: the stored cursor is unusable (%s); reading files anew", exc)
            return
        self.follower.restore(cursor.files)
        with self._lock:
            for label, stats in cursor.stats.items():
                self.stats.setdefault(label, stats)

    # --- self metrics ------------------------------------------------------------------
    def families(self) -> list[Metric]:
        specs = {name: spec.family() for name, spec in (
            ("read_bytes", catalog.EXPORTER_TAIL_READ), ("lag", catalog.EXPORTER_TAIL_LAG),
            ("lines", catalog.EXPORTER_TAIL_LINES), ("events", catalog.EXPORTER_TAIL_EVENTS),
            ("rotations", catalog.EXPORTER_TAIL_ROTATIONS),
            ("truncations", catalog.EXPORTER_TAIL_TRUNCATIONS),
            ("last_read", catalog.EXPORTER_TAIL_LAST_READ))}
        rejected = catalog.EXPORTER_TAIL_REJECTED.family()
        errors = catalog.EXPORTER_TAIL_ERRORS.family()
        with self._lock:
            for label, stats in self.stats.items():
                for name, family in specs.items():
                    family.add_metric([label], getattr(stats, name))
                for reason, n in stats.rejected.items():
                    rejected.add_metric([label, reason], n)
                for reason, n in stats.errors.items():
                    errors.add_metric([label, reason], n)
        files = catalog.EXPORTER_TAIL_FILES.family()
        files.add_metric([], float(len(self.files)))
        return [*specs.values(), rejected, errors, files]


def legacy_state(cfg: TailConfig) -> tuple[State, Callable[[], None]] | None:
    """The older layout's checkpoint as a store state (AI state, ingest counters, this
    source's cursor), and how to retire the file once the store holds it."""
    base = Path(os.path.abspath(cfg.base_dir))
    state_dir = Path(cfg.state_dir)
    path = (state_dir if state_dir.is_absolute() else base / state_dir) / CHECKPOINT_FILE
    try:
        old = msgspec.json.decode(path.read_bytes(), type=Checkpoint)
    except FileNotFoundError:
        return None
    except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        _log.error("tail: the older checkpoint %s cannot be migrated (%s)", path, exc)
        return None
    if old.version != CHECKPOINT_VERSION:
        _log.error("tail: the older checkpoint %s has version %d; not migrated", path,
                   old.version)
        return None
    state = State(version=0, written_at=old.written_at, aggregator=old.aggregator,
                  ingest=old.ingest,
                  cursors={SOURCE: msgspec.to_builtins(Cursor(files=old.files,
                                                              stats=old.stats))})

    def retire() -> None:
        with contextlib.suppress(OSError):
            os.replace(path, path.with_name(CHECKPOINT_FILE + ".migrated"))
        _log.info("tail: migrated %s into the state store", path)

    return state, retire


def from_config(deps: SourceDeps) -> list[Source]:
    config, ingestor = deps.config, deps.ingestor
    cfg = config.sources.tail
    if not cfg.enabled:
        return []
    return [TailSource(ingestor, cfg, deps.store, config.ai.log_interval_seconds)]
