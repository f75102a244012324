"""JSONL tail source: AI events from growing files, exactly once across rotation and restart.

Files matching the configured globs are polled: new files are picked up while running,
deleted ones released, rotation by rename-and-create (a new inode at the path; the old
inode is drained through its still-open descriptor first) and by copy-truncate (size below
the offset, or the first bytes changed) are both followed, and a partial last line is held
until its newline arrives. Reads are big chunks; their complete lines go to
``Ingestor.ingest_lines``: the native line path (validated and aggregated in C) when it is
built, else slices each decoded as one JSON array in two msgspec passes and applied as one
batch; either way no Python work per line unless a line needs a look (docs/files.md,
"Performance").

Exactly once: the offset of every file (the end of its last complete line) and the
per-file self metrics are this source's cursor in the state store (``exporter.storage``),
committed in one atomic replace with the AI state those lines produced. A commit holds the
tail still between batches, so offsets and state always agree. At start the state is
restored first and the files are read on from the cursor's offsets, so every line after
the commit is applied once more and only once, whether the exporter stopped gracefully or
was killed; counters continue where they were. A checkpoint of the older layout
(``<state_dir>/tail-checkpoint.json``) is migrated into the store at the first start.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from prometheus_client.metrics_core import Metric

from exporter import catalog
from exporter.config import TailConfig
from exporter.events import Rejection
from exporter.ingest import Ingestor
from exporter.logutil import RateLimitedLogger
from exporter.sources.base import Source, path_label, resolve
from exporter.storage import State, StateStore

_log = logging.getLogger(__name__)

SOURCE = "tail"
CHECKPOINT_FILE = "tail-checkpoint.json"  # the older layout, migrated into the store
CHECKPOINT_VERSION = 1
HEAD_BYTES = 64  # first bytes of a file, kept to tell a rewritten file from the same one

if TYPE_CHECKING:
    from exporter.sources import SourceDeps


class FileStats(msgspec.Struct, kw_only=True):
    """Self metrics of one path; checkpointed, so the counters survive restarts too."""

    read_bytes: float = 0.0
    lines: float = 0.0
    events: float = 0.0
    rotations: float = 0.0
    truncations: float = 0.0
    last_read: float = 0.0
    lag: float = 0.0
    rejected: dict[str, float] = msgspec.field(default_factory=dict)
    errors: dict[str, float] = msgspec.field(default_factory=dict)


class SavedFile(msgspec.Struct, kw_only=True):
    """Where reading of one file stopped: identity (device, inode, first bytes) and offset."""

    path: str
    dev: int
    ino: int
    offset: int
    line: int
    head: str = ""


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


@dataclass
class Tailed:
    """A followed file: its open descriptor, identity and read position."""

    path: str
    label: str
    fd: int
    dev: int
    ino: int
    committed: int  # end of the last complete line handled: what a checkpoint records
    read_pos: int  # next byte to read; [committed, read_pos) is ``pending`` or skipped
    line_no: int  # complete lines before ``committed``
    pending: bytes = b""
    skipping: bool = False  # inside a line longer than max_line_bytes
    head: bytes = b""
    size: int = -1
    mtime_ns: int = -1


def _strerror(exc: OSError) -> str:
    return exc.strerror or str(exc)


class TailSource(Source):
    """Follows JSONL files and feeds their lines to the ingestor as source ``tail``."""

    name = SOURCE

    def __init__(self, ingestor: Ingestor, cfg: TailConfig, store: StateStore,
                 log_interval: float = 10.0) -> None:
        super().__init__(ingestor)
        self.cfg = cfg
        self.store = store
        self.base = Path(os.path.abspath(cfg.base_dir))
        self.patterns = [resolve(self.base, p) for p in cfg.paths]
        self.files: dict[str, Tailed] = {}
        self.draining: list[tuple[Tailed, float]] = []  # rotated away, read until expiry
        self.stats: dict[str, FileStats] = {}
        self.problems: dict[str, str] = {}  # label → what is wrong with it now
        self.last_rejection = ""
        self._saved: dict[tuple[int, int], SavedFile] = {}
        self._saved_by_path: dict[str, SavedFile] = {}
        self._first_start = True
        self._initial_scan = True
        self._eventful = False  # a file opened, rotated, truncated or released this poll
        self._current: dict[str, tuple[str, str]] = {}  # path → (reason, problem) this poll
        self._lock = threading.Lock()  # stats, problems: read by scrapes
        self._work = threading.Lock()  # one poll or commit at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._catching_up = False
        self._log = RateLimitedLogger(_log, log_interval)

    # --- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        """Restore the cursor, catch up on what it had not covered, then follow."""
        self._stop.clear()
        with self._work:
            self._restore(self.store.cursor(SOURCE))
            self.store.attach(SOURCE, self)
            if not self._first_start and self.cfg.catch_up_timeout_seconds > 0:
                # Read what the checkpoint had not covered before the first scrape is
                # served: counters then never show less than before a crash.
                self._catching_up = True
                deadline = time.monotonic() + self.cfg.catch_up_timeout_seconds
                while self._poll(deadline) and time.monotonic() < deadline:
                    pass
                self._catching_up = False
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
                self._drain(final=True)
            finally:
                self._work.release()
        self.store.detach(SOURCE)
        with self._work:
            for tailed in self.files.values():
                os.close(tailed.fd)
            self.files.clear()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with self._work:
                    more = self._poll(time.monotonic() + 1.0)
                if self._eventful:  # a file opened, rotated or released: commit it soon
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

    # --- polling -----------------------------------------------------------------------
    def _poll(self, deadline: float) -> bool:
        """One pass over the globs; True when some file still has unread data."""
        self._eventful = False
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
            self._eventful = True
            old_path, old_label = tailed.path, tailed.label
            if old_path in found:
                self._count(old_label, "rotations")
                self._log.info("tail: %s rotated (new file at the path)", old_label,
                               key=f"rotated:{old_label}")
            moved = by_id.get((tailed.dev, tailed.ino))
            if moved is not None and moved not in self.files:
                tailed.path, tailed.label = moved, self._label(moved)
                self.files[moved] = tailed
                continue
            # The writer may still be finishing the rotated (or deleted) file through its
            # own descriptor: keep reading it for rotate_wait_seconds before letting go.
            self.draining.append((tailed, time.monotonic() + self.cfg.rotate_wait_seconds))
            with self._lock:
                self._stats(old_label).lag = 0.0
        self._drain(final=False)
        more = False
        for path, st in found.items():
            followed = self.files.get(path) or self._open(path)
            if followed is not None and self._follow(followed, st, deadline):
                more = True
        self._initial_scan = False
        self._publish_problems()
        return more

    def _drain(self, final: bool) -> None:
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
                    problems[path] = ("unreadable", f"cannot stat: {_strerror(exc)}")
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

    def _publish_problems(self) -> None:
        """The problems of this poll replace the last ones; new ones are counted and logged."""
        current = {self._label(p): v for p, v in self._current.items()}
        with self._lock:
            for label, (reason, what) in current.items():
                if self.problems.get(label) != what:
                    errors = self._stats(label).errors
                    errors[reason] = errors.get(reason, 0.0) + 1
                    self._log.warning("tail: %s: %s", label, what, key=f"problem:{label}")
            self.problems = {label: what for label, (_, what) in current.items()}

    def _label(self, path: str) -> str:
        return path_label(self.base, path)

    def _stats(self, label: str) -> FileStats:
        stats = self.stats.get(label)
        if stats is None:
            if len(self.stats) >= 2 * self.cfg.max_files:
                followed = {t.label for t in self.files.values()}
                for old in [k for k in self.stats if k not in followed][:len(self.stats) // 4]:
                    del self.stats[old]
            stats = self.stats[label] = FileStats()
        return stats

    def _count(self, label: str, what: str) -> None:
        with self._lock:
            stats = self._stats(label)
            setattr(stats, what, getattr(stats, what) + 1)

    def _open(self, path: str) -> Tailed | None:
        label = self._label(path)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._current[path] = ("unreadable", f"cannot open: {_strerror(exc)}")
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                os.close(fd)
                return None
            head = os.pread(fd, HEAD_BYTES, 0)
        except OSError as exc:
            os.close(fd)
            self._current[path] = ("read_error", f"cannot read: {_strerror(exc)}")
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
                self._count(label, "truncations")
                self._log.info("tail: %s was truncated while stopped; reading it from the "
                               "start", label, key=f"truncated:{label}")
        elif by_path is not None and (by_path.dev, by_path.ino) != (st.st_dev, st.st_ino):
            self._count(label, "rotations")
        elif self._first_start and self._initial_scan and self.cfg.start_at == "end":
            self._seek_end(tailed, st.st_size)
        self.files[path] = tailed
        self._eventful = True
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
            self._eventful = True
            self._count(tailed.label, "truncations")
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
        with self._lock:
            self._stats(tailed.label).lag = float(max(st.st_size, tailed.read_pos)
                                                  - tailed.committed)
        return more

    def _read(self, tailed: Tailed, deadline: float | None) -> bool:
        """Read chunks until end of file (or the deadline); True when stopped early."""
        chunk_size = self.cfg.read_chunk_bytes
        while True:
            try:
                chunk = os.pread(tailed.fd, chunk_size, tailed.read_pos)
            except OSError as exc:
                self._current[tailed.path] = ("read_error", f"read failed: {_strerror(exc)}")
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
        """Split complete lines off the buffer; decode and apply them slice by slice."""
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
            with self._lock:
                stats = self._stats(tailed.label)
                stats.read_bytes += len(chunk)
                stats.last_read = time.time()
            return
        first = tailed.line_no + 1
        rejects: list[tuple[int, Rejection]] = []
        lines = start = 0
        if tailed.skipping:  # the end of a line already over max_line_bytes
            rejects.append((first, Rejection("too_large", f"line over {max_line} bytes")))
            start, lines, tailed.skipping = data.find(b"\n") + 1, 1, False
        counted, events, rejected = self.ingestor.ingest_lines(
            SOURCE, data, max_line, start, end)
        rejects.extend((first + lines + index, rejection) for index, rejection in rejected)
        lines += counted
        self._advance(tailed, data[end + 1:], lines)
        self._record(tailed, len(chunk), lines, events, rejects)

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
        files = [SavedFile(path=t.path, dev=t.dev, ino=t.ino, offset=t.committed,
                           line=t.line_no, head=t.head[:HEAD_BYTES].hex())
                 for t in self.files.values()]
        with self._lock:
            stats = {label: msgspec.structs.replace(s, rejected=dict(s.rejected),
                                                    errors=dict(s.errors))
                     for label, s in self.stats.items()}
        return Cursor(files=files, stats=stats)

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
        self._first_start = False
        self._saved = {(f.dev, f.ino): f for f in cursor.files}
        self._saved_by_path = {f.path: f for f in cursor.files}
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
