"""Redis Streams: AI events read through a consumer group, each counted once, then acked.

Delivery model (details and the remaining window in docs/components.md):

* Entries are read with ``XREADGROUP`` under a stable consumer name. Each entry's
  ``payload_field`` (default ``event``) holds one JSON event; with ``payload_field: ""``
  the entry's fields themselves are the event. Events go through the shared ``Ingestor``
  (same model and rejection reasons as every other source).
* An entry is acknowledged only once the state that counted it is on disk: decode, apply
  to the aggregator and record its id as applied (one step, held still by the state
  store's commit), commit the state with the applied ids (``exporter.storage``), then
  ``XACK``. Invalid entries are counted as rejected and acknowledged the same way, so a
  poison entry never blocks the group.
* After every (re)connect the consumer first re-reads its own pending entries (delivered
  earlier, not acknowledged: a read whose reply was lost, an ack that never reached Redis,
  or entries counted after the last commit before a crash), then claims entries idle
  longer than ``reclaim_idle_ms`` from dead consumers (``XAUTOCLAIM``), then reads new
  entries. Nothing delivered is ever left behind.
* The ids applied recently (bounded by ``state_max_ids``) are this source's cursor in the
  state store. A redelivered entry whose id is there is acknowledged without being counted
  again; one that is not was counted only in memory before a crash, and the state on
  disk does not hold it either, so it counts once. No window remains: the count, the id
  and the acknowledgement can no longer disagree.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from prometheus_client.metrics_core import Metric

from exporter import catalog
from exporter.config import RedisStreamsConfig
from exporter.events import AnyEvent, Rejection, classify
from exporter.ingest import Ingestor
from exporter.logutil import RateLimitedLogger
from exporter.sources.base import Source
from exporter.storage import StateStore

if TYPE_CHECKING:
    import redis

    from exporter.sources import SourceDeps

log = RateLimitedLogger(logging.getLogger(__name__), interval=30.0)

Key = tuple[str, str]  # (stream, entry id)
Entry = tuple[bytes, dict[bytes, bytes] | None]
OUTCOMES = ("applied", "rejected", "duplicate", "skipped")


class AppliedIds:
    """Recently applied entry ids: a bounded set, oldest forgotten first (the source's
    cursor in the state store)."""

    def __init__(self, max_ids: int, keys: Iterable[Sequence[str]] = ()) -> None:
        self.max_ids = max_ids
        self._order: deque[Key] = deque()
        self._set: set[Key] = set()
        for stream, entry_id in keys:
            self._remember((str(stream), str(entry_id)))

    @classmethod
    def from_journal(cls, max_ids: int, path: str) -> AppliedIds:
        """The ids of an older release's journal (``state_file``), read once at upgrade."""
        try:
            text = Path(path).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return cls(max_ids)
        keys = []
        for line in text.splitlines():
            try:
                stream, entry_id = json.loads(line)
            except (ValueError, TypeError):
                continue  # a torn last line after a crash: the entry was not acked either
            keys.append((str(stream), str(entry_id)))
        return cls(max_ids, keys)

    def _remember(self, key: Key) -> None:
        if key in self._set:
            return
        self._order.append(key)
        self._set.add(key)
        while len(self._order) > self.max_ids:
            self._set.discard(self._order.popleft())

    def __contains__(self, key: Key) -> bool:
        return key in self._set

    def __len__(self) -> int:
        return len(self._order)

    def add(self, keys: Sequence[Key]) -> None:
        for key in keys:
            self._remember(key)

    def keys(self) -> list[list[str]]:
        return [list(k) for k in self._order]


def entry_payload(fields: dict[bytes, bytes], payload_field: str
                  ) -> bytes | dict[str, str] | Rejection:
    """The raw JSON event of an entry, its fields as an object, or why neither exists."""
    if payload_field:
        raw = fields.get(payload_field.encode())
        if raw is None:
            return Rejection("missing_field", f"entry has no {payload_field!r} field")
        return raw
    try:
        return {k.decode(): v.decode() for k, v in fields.items()}
    except UnicodeDecodeError:
        return Rejection("invalid_utf8", "entry field is not valid UTF-8")


def event_from_fields(fields: dict[str, str]) -> AnyEvent | Rejection:
    """Whole-entry mode: field strings converted to the typed event (numbers parsed)."""
    try:
        event: AnyEvent = msgspec.convert(fields, AnyEvent, strict=False)
    except msgspec.ValidationError as exc:
        return Rejection(classify(str(exc)), str(exc))
    return event


class RedisStreamsSource(Source):
    name = "redis_streams"

    def __init__(self, ingestor: Ingestor, cfg: RedisStreamsConfig, store: StateStore
                 ) -> None:
        # redis-py is imported only when a stream is configured (~3 MB of RSS otherwise).
        self._redis = importlib.import_module("redis")
        super().__init__(ingestor)
        self.cfg = cfg
        self._store = store
        self._batch = threading.Lock()  # one batch applied at a time; held by commits
        self._covered: dict[str, int] = {}  # unacked ids per stream in the last cursor
        self._ackable: dict[str, list[bytes]] = {}  # counted and committed: ack them
        self.consumer = cfg.consumer or socket.gethostname()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._connected = False
        self._detail = "not started"
        self._reconnects = 0.0
        self._entries: dict[tuple[str, str], float] = {}
        self._unacked: dict[str, list[bytes]] = {}
        self._applied: AppliedIds | None = None
        self._stats_lock = threading.Lock()
        self._stats_client: redis.Redis | None = None

    # --- Source protocol -----------------------------------------------------------------
    def start(self) -> None:
        saved = self._store.cursor(self.name)
        if saved is not None:
            self._applied = AppliedIds(self.cfg.state_max_ids, saved.get("applied", []))
        elif self.cfg.state_file:
            self._applied = AppliedIds.from_journal(self.cfg.state_max_ids,
                                                    self.cfg.state_file)
        else:
            self._applied = AppliedIds(self.cfg.state_max_ids)
        self._store.attach(self.name, self)
        self._stop.clear()
        self._detail = "connecting"
        self._thread = threading.Thread(target=self._run, name="redis-streams", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(self.cfg.block_ms / 1000 + 10)
        if self._stats_client is not None:
            self._stats_client.close()
            self._stats_client = None
        self._store.detach(self.name)

    # --- state store participant ----------------------------------------------------------
    def hold(self) -> threading.Lock:
        return self._batch

    def cursor(self) -> dict[str, Any]:
        """The applied ids; notes which unacked ids this cursor covers (called held)."""
        with self._lock:
            self._covered = {s: len(ids) for s, ids in self._unacked.items() if ids}
        return {"applied": self._applied.keys() if self._applied is not None else []}

    def committed(self) -> None:
        """The ids covered by the committed cursor may be acknowledged now."""
        with self._lock:
            for stream, n in self._covered.items():
                ids = self._unacked.get(stream, [])
                self._ackable.setdefault(stream, []).extend(ids[:n])
                del ids[:n]
            self._covered = {}

    def ready(self) -> tuple[bool, str]:
        return self._connected, self._detail

    # --- connection -------------------------------------------------------------------------
    def _client(self, socket_timeout: float) -> redis.Redis:
        password = None
        if self.cfg.password_file:
            password = Path(self.cfg.password_file).read_text(encoding="utf-8").strip()
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        client: redis.Redis = self._redis.Redis.from_url(
            self.cfg.url, password=password, socket_timeout=socket_timeout,
            socket_connect_timeout=min(5.0, socket_timeout), retry=Retry(NoBackoff(), 0),
            health_check_interval=0)
        return client

    def _run(self) -> None:
        backoff = self.cfg.backoff_initial_seconds
        connected_before = False
        while not self._stop.is_set():
            client: redis.Redis | None = None
            try:
                client = self._client(self.cfg.block_ms / 1000 + 5)
                client.ping()
                self._ensure_groups(client)
                self._flush_acks(client)
                if connected_before:
                    with self._lock:
                        self._reconnects += 1
                connected_before = True
                self._connected, self._detail = True, f"connected as consumer {self.consumer}"
                log.info("redis streams: connected, consumer %s", self.consumer,
                         key="connected")
                backoff = self.cfg.backoff_initial_seconds
                self._consume(client)
            except (self._redis.RedisError, OSError) as exc:
                self._connected = False
                self._detail = f"redis unavailable: {type(exc).__name__}: {exc}"[:300]
                log.warning("redis streams: %s; retrying in %.1fs", self._detail, backoff,
                            key="down")
                self._stop.wait(backoff * (0.75 + random.random() / 2))  # noqa: S311
                backoff = min(backoff * 2, self.cfg.backoff_max_seconds)
            finally:
                if client is not None:
                    with contextlib.suppress(self._redis.RedisError, OSError):
                        if self._connected:
                            if self._stop.is_set():
                                self._store.commit()
                            self._flush_acks(client)
                    client.close()
        self._connected, self._detail = False, "stopped"

    def _ensure_groups(self, client: redis.Redis) -> None:
        for stream in self.cfg.streams:
            try:
                client.xgroup_create(stream, self.cfg.group, id=self.cfg.start_id,
                                     mkstream=True)
            except self._redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    # --- consumption ------------------------------------------------------------------------
    def _consume(self, client: redis.Redis) -> None:
        self._recover(client)
        last_reclaim = time.monotonic()
        streams: dict[str, str] = dict.fromkeys(self.cfg.streams, ">")
        while not self._stop.is_set():
            response: Any = client.xreadgroup(
                self.cfg.group, self.consumer, streams,  # type: ignore[arg-type]
                count=self.cfg.batch_size, block=self.cfg.block_ms)
            for stream, entries in response or ():
                self._handle(client, _text(stream), entries)
            self._flush_acks(client)  # what the last commit covers, batch or none
            reclaim_every = self.cfg.reclaim_idle_ms / 1000
            if reclaim_every and time.monotonic() - last_reclaim >= reclaim_every:
                self._reclaim(client)
                last_reclaim = time.monotonic()

    def _recover(self, client: redis.Redis) -> None:
        """Own pending entries first, then entries abandoned by dead consumers."""
        for stream in self.cfg.streams:
            last = "0"
            for _round in range(1_000_000):
                if self._stop.is_set():
                    return
                response: Any = client.xreadgroup(self.cfg.group, self.consumer,
                                                  {stream: last}, count=self.cfg.batch_size)
                entries = response[0][1] if response else []
                if not entries:
                    break
                self._handle(client, stream, entries)
                last = _text(entries[-1][0])
        if self.cfg.reclaim_idle_ms:
            self._reclaim(client)

    def _reclaim(self, client: redis.Redis) -> None:
        for stream in self.cfg.streams:
            start = "0-0"
            for _round in range(1_000_000):
                if self._stop.is_set():
                    return
                result: Any = client.xautoclaim(stream, self.cfg.group, self.consumer,
                                           min_idle_time=self.cfg.reclaim_idle_ms,
                                           start_id=start, count=self.cfg.batch_size)
                start = _text(result[0])
                entries = result[1]
                if entries:
                    log.info("redis streams: claimed %d idle entries of %s", len(entries),
                             stream, key=f"claim:{stream}")
                    self._handle(client, stream, entries)
                if start == "0-0":
                    break

    def _handle(self, client: redis.Redis, stream: str, entries: Sequence[Entry]) -> None:
        """Count a batch of one stream exactly once, then acknowledge all of it."""
        assert self._applied is not None
        applied = self._applied
        outcomes = dict.fromkeys(OUTCOMES, 0)
        ids: list[bytes] = []
        fresh: list[Key] = []
        raws: list[bytes] = []
        events: list[AnyEvent] = []
        rejections: list[Rejection] = []
        for raw_id, fields in entries:
            ids.append(raw_id)
            key = (stream, _text(raw_id))
            if fields is None:  # trimmed away while pending
                outcomes["skipped"] += 1
                continue
            if key in applied:
                outcomes["duplicate"] += 1
                continue
            fresh.append(key)
            payload = entry_payload(fields, self.cfg.payload_field)
            if isinstance(payload, Rejection):
                rejections.append(payload)
            elif isinstance(payload, bytes):
                raws.append(payload)
            else:
                result = event_from_fields(payload)
                if isinstance(result, Rejection):
                    rejections.append(result)
                else:
                    events.append(result)
        # Count and record as applied in one step a commit cannot cut; acknowledge once a
        # commit holds both. The events built from fields apply first, then the JSON
        # payloads (through the native path where it is built).
        with self._batch:
            accepted, bad = self.ingestor.apply_raw(self.name, raws, events=events)
            rejections.extend(r for _i, r in bad)
            for rejection in rejections:
                self.ingestor.reject(self.name, rejection, where=f"an entry of {stream}")
            applied.add(fresh)
            outcomes["applied"] += accepted
            outcomes["rejected"] += len(rejections)
            with self._lock:
                for outcome, n in outcomes.items():
                    if n:
                        key2 = (stream, outcome)
                        self._entries[key2] = self._entries.get(key2, 0.0) + n
                self._unacked.setdefault(stream, []).extend(ids)
        self._store.request_commit()
        self._flush_acks(client)

    def _flush_acks(self, client: redis.Redis) -> None:
        with self._lock:
            pending = {s: list(ids) for s, ids in self._ackable.items() if ids}
        for stream, ids in pending.items():
            for i in range(0, len(ids), 10_000):
                client.xack(stream, self.cfg.group, *ids[i:i + 10_000])
            with self._lock:
                del self._ackable[stream][:len(ids)]

    # --- metrics --------------------------------------------------------------------------
    def families(self, timeout: float = 1.0) -> list[Metric]:
        up = catalog.EXPORTER_REDIS_UP.family()
        up.add_metric([], 1.0 if self._connected else 0.0)
        reconnects = catalog.EXPORTER_REDIS_RECONNECTS.family()
        entries = catalog.EXPORTER_REDIS_ENTRIES.family()
        with self._lock:
            reconnects.add_metric([], self._reconnects)
            for (stream, outcome), n in sorted(self._entries.items()):
                entries.add_metric([stream, outcome], n)
        out: list[Metric] = [up, reconnects, entries]
        if self._connected:
            out.extend(self._stream_families(timeout))
        return out

    def _stream_families(self, timeout: float) -> Iterable[Metric]:
        length = catalog.EXPORTER_REDIS_STREAM_LENGTH.family()
        lag = catalog.EXPORTER_REDIS_GROUP_LAG.family()
        pending = catalog.EXPORTER_REDIS_GROUP_PENDING.family()
        if not self._stats_lock.acquire(timeout=timeout):
            return []
        try:
            if self._stats_client is None:
                self._stats_client = self._client(max(timeout, 0.05))
            client = self._stats_client
            for stream in self.cfg.streams:
                size: Any = client.xlen(stream)
                groups: Any = client.xinfo_groups(stream)
                length.add_metric([stream], float(size))
                for group in groups:
                    if _text(group.get("name", b"")) != self.cfg.group:
                        continue
                    if group.get("lag") is not None:
                        lag.add_metric([stream, self.cfg.group], float(group["lag"]))
                    pending.add_metric([stream, self.cfg.group], float(group["pending"]))
        except (self._redis.RedisError, OSError) as exc:
            log.warning("redis streams: stream statistics unavailable: %s", exc, key="stats")
            if self._stats_client is not None:
                self._stats_client.close()
                self._stats_client = None
            return []
        finally:
            self._stats_lock.release()
        return [length, lag, pending]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def from_config(deps: SourceDeps) -> list[Source]:
    config, ingestor = deps.config, deps.ingestor
    cfg = config.sources.redis_streams
    if not cfg.enabled:
        return []
    return [RedisStreamsSource(ingestor, cfg, deps.store)]
