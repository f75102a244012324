"""The one path every source takes into the aggregator: decode, validate, count, apply.

Sources hand over raw JSON objects (``ingest_raw``: Redis entries, NDJSON lines), a whole
JSON array (``ingest_array``: a push body), JSON lines (``ingest_lines``: the tail) or
already-built events (``apply``: the demo); the ingestor decodes each event independently,
so a bad event is rejected with its index and reason while the valid events of the same
batch are applied exactly once, in one lock. Each method takes the batch's time ``now``
(the aggregator's clock when None; a log replay passes the original time). Where the
native extension is built, every method but ``apply`` runs through it
(``exporter.native``), with the same outcome.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from prometheus_client.metrics_core import Metric

from exporter import catalog
from exporter import native as exporter_native
from exporter.aggregator import Aggregator
from exporter.bodies import split_array
from exporter.events import KIND_OF, AnyEvent, EventDecoder, Rejection
from exporter.logutil import RateLimitedLogger

_log = logging.getLogger(__name__)
# How much of a read one batch takes, by path (see ``Ingestor.ingest_lines``).
NATIVE_SLICE_BYTES = 1024 * 1024
PYTHON_SLICE_BYTES = 64 * 1024


class Ingestor:
    """Decodes raw events for the aggregator and keeps the per-source self metrics."""

    def __init__(self, aggregator: Aggregator, max_event_bytes: int = 1024 * 1024,
                 log_interval: float = 10.0, native: bool = True) -> None:
        self.aggregator = aggregator
        self.decoder = EventDecoder(max_event_bytes)
        self._lock = threading.Lock()
        self.accepted: dict[tuple[str, str], float] = {}
        self.rejected: dict[tuple[str, str], float] = {}
        self.last_event: dict[str, float] = {}
        self._log = RateLimitedLogger(_log, log_interval)
        self._native: exporter_native.NativeLines | None = None
        self._use_native = native and exporter_native.available()

    def decode(self, raws: Iterable[bytes | memoryview]
               ) -> tuple[list[AnyEvent], list[tuple[int, Rejection]]]:
        """Decode each raw object; returns the events and (index, rejection) pairs."""
        return self.decoder.decode_many(raws)

    def ingest_raw(self, source: str, raws: Iterable[bytes | memoryview],
                   now: float | None = None) -> tuple[int, list[tuple[int, Rejection]]]:
        """Decode and apply single JSON objects (each rejection reported as ``event
        <index>``); returns (accepted count, rejections with their index)."""
        accepted, rejections = self.apply_raw(source, raws, now)
        for index, rejection in rejections:
            self.reject(source, rejection, where=f"event {index}")
        return accepted, rejections

    def apply_raw(self, source: str, raws: Iterable[bytes | memoryview],
                  now: float | None = None, events: Sequence[AnyEvent] = ()
                  ) -> tuple[int, list[tuple[int, Rejection]]]:
        """Apply ``events`` (already valid), then decode and apply each raw JSON object, in
        one batch; the rejections are returned, not reported (the caller says where they
        came from, e.g. a Redis stream). Returns (accepted count, (index, rejection))."""
        native = self._bind_native()
        if native is None:
            decoded, rejections = self.decode(raws)
            applied = [*events, *decoded] if events else decoded
            self.apply(source, applied, now)
            return len(applied), rejections
        counts: dict[str, int] = {}
        items = raws if isinstance(raws, list) else list(raws)
        rejections = native.apply_items(items, self.decoder, counts, now, events)
        self._count(source, counts, now)
        return sum(counts.values()), rejections

    def ingest_admitted(self, source: str, raws: Iterable[bytes | memoryview],
                        admit: Callable[[AnyEvent], AnyEvent | Rejection],
                        now: float | None = None) -> tuple[int, list[tuple[int, Rejection]]]:
        """``ingest_raw`` with a check of each decoded event (a scoped credential's
        bounds, ``exporter.scopes``): ``admit`` gives the event to count or the rejection.
        The Python decode path: only requests that need the check pay for it."""
        events: list[AnyEvent] = []
        rejections: list[tuple[int, Rejection]] = []
        decode = self.decoder.decode_one
        for index, raw in enumerate(raws):
            result = decode(raw)
            if not isinstance(result, Rejection):
                result = admit(result)
            if isinstance(result, Rejection):
                rejections.append((index, result))
            else:
                events.append(result)
        self.apply(source, events, now)
        for index, rejection in rejections:
            self.reject(source, rejection, where=f"event {index}")
        return len(events), rejections

    def ingest_array(self, source: str, body: bytes, now: float | None = None
                     ) -> tuple[int, list[tuple[int, Rejection]]]:
        """Decode and apply the elements of a JSON array body (its first non-blank byte is
        ``[``), cut by ``exporter.bodies.split_array`` (a broken element is rejected, the
        others still apply); each rejection is reported as ``event <index>``. Returns
        (accepted count, rejections with their element index)."""
        native = self._bind_native()
        if native is None:
            events = self.decoder.decode_array(body)
            if events is not None:
                self.apply(source, events, now)
                return len(events), []
            return self.ingest_raw(source, split_array(body), now)
        counts: dict[str, int] = {}
        _, rejections = native.apply_array(body, self.decoder, counts, now)
        self._count(source, counts, now)
        for index, rejection in rejections:
            self.reject(source, rejection, where=f"event {index}")
        return sum(counts.values()), rejections

    def _bind_native(self) -> exporter_native.NativeLines | None:
        if self._native is None and self._use_native:
            self._native = exporter_native.NativeLines(self.aggregator)
        return self._native

    def ingest_lines(self, source: str, data: bytes, max_line: int, start: int = 0,
                     end: int | None = None, *, now: float | None = None
                     ) -> tuple[int, int, list[tuple[int, Rejection]]]:
        """Decode and apply the JSON lines of ``data[start:end]`` (complete lines without
        the last newline, e.g. all of one read; blank lines are skipped, a line over
        ``max_line`` bytes is refused as too large). Returns (lines, events, (line index,
        rejection) pairs); the caller reports each rejection through ``reject`` (with its
        file and line number). ``now``: the time of every batch (else the clock's).

        The lines go in slices (views, not copies), one batch each. The native path
        (``exporter.native``, when built and not switched off by ``ai.native_lines``) takes
        1 MiB slices (the aggregator's lock is held ~4 ms for one). The Python path takes
        64 KiB slices, whose events are still in the CPU cache when they are aggregated;
        each is one array decoded in two msgspec passes and applied as one batch, or,
        holding a bad line, decoded line by line, which finds each bad line's reason.
        """
        end = len(data) if end is None else end
        native = self._bind_native()
        step = NATIVE_SLICE_BYTES if native is not None else PYTHON_SLICE_BYTES
        view = memoryview(data)
        lines = events = 0
        rejects: list[tuple[int, Rejection]] = []
        while start <= end:
            stop = end
            if end - start > step:
                stop = data.rfind(b"\n", start, start + step)
                if stop < 0:  # a line longer than a slice: the slice ends with it
                    stop = data.find(b"\n", start + step, end)
                    stop = end if stop < 0 else stop
            if native is not None:
                counts: dict[str, int] = {}
                n, rejected = native.apply_lines(view[start:stop], max_line, self.decoder,
                                                 counts, now)
                self._count(source, counts, now)
                applied = sum(counts.values())
            else:
                n, applied, rejected = self._ingest_lines_python(source, data[start:stop],
                                                                 max_line, now)
            rejects.extend((lines + index, rejection) for index, rejection in rejected)
            lines += n
            events += applied
            start = stop + 1
        return lines, events, rejects

    def _ingest_lines_python(self, source: str, body: bytes, max_line: int,
                             now: float | None) -> tuple[int, int, list[tuple[int, Rejection]]]:
        events = self.decoder.decode_lines(body, max_line)
        if events is not None:
            self.apply(source, events, now)
            return len(events), len(events), []
        batch = body.split(b"\n")
        rejects: list[tuple[int, Rejection]] = []
        if len(body) > max_line and max(map(len, batch)) > max_line:
            for i, line in enumerate(batch):
                if len(line) > max_line:
                    rejects.append((i, Rejection("too_large",
                                                 f"line of {len(line)} bytes over {max_line}")))
                    batch[i] = b""
        decoded, rejections = self.decode(batch)
        rejects.extend((i, r) for i, r in rejections if batch[i].strip())
        self.apply(source, decoded, now)
        return len(batch), len(decoded), sorted(rejects, key=lambda r: r[0])

    def apply(self, source: str, events: Sequence[AnyEvent], now: float | None = None
              ) -> None:
        """Count and aggregate events that are already valid (at ``now``, the batch's time,
        when given)."""
        if not events:
            return
        self.aggregator.ingest(events, now)
        self._count(source, {KIND_OF[cls]: n for cls, n in Counter(map(type, events)).items()},
                    now)

    def _count(self, source: str, counts: dict[str, int], now: float | None = None) -> None:
        """Add accepted events per kind (and the time of the last one) for ``source``."""
        if not counts:
            return
        now = time.time() if now is None else now
        with self._lock:
            accepted = self.accepted
            for kind, n in counts.items():
                key = (source, kind)
                accepted[key] = accepted.get(key, 0.0) + n
            self.last_event[source] = now

    def reject(self, source: str, rejection: Rejection, where: str = "") -> None:
        """Count one rejected input and log it (at most once per interval per source)."""
        with self._lock:
            key = (source, rejection.reason)
            self.rejected[key] = self.rejected.get(key, 0.0) + 1
        self._log.warning("source %s rejected %s: %s: %s", source, where or "an event",
                          rejection.reason, rejection.detail[:200], key=f"reject:{source}")

    def families(self) -> list[Metric]:
        accepted = catalog.EXPORTER_EVENTS.family()
        rejected = catalog.EXPORTER_EVENTS_REJECTED.family()
        last = catalog.EXPORTER_EVENTS_LAST_TIMESTAMP.family()
        with self._lock:
            for (source, kind), n in self.accepted.items():
                accepted.add_metric([source, kind], n)
            for (source, reason), n in self.rejected.items():
                rejected.add_metric([source, reason], n)
            for source, ts in self.last_event.items():
                last.add_metric([source], ts)
        return [accepted, rejected, last]

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "accepted": [{"source": s, "kind": k, "count": n}
                             for (s, k), n in sorted(self.accepted.items())],
                "rejected": [{"source": s, "reason": r, "count": n}
                             for (s, r), n in sorted(self.rejected.items())],
                "last_event": dict(self.last_event),
            }

    # --- checkpoint ------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """The ingest counters as plain data (checkpointed with the aggregator's state)."""
        with self._lock:
            return {"accepted": [[s, k, n] for (s, k), n in self.accepted.items()],
                    "rejected": [[s, r, n] for (s, r), n in self.rejected.items()],
                    "last_event": dict(self.last_event)}

    def restore(self, state: dict[str, Any]) -> None:
        """Add a ``snapshot()`` into the current counters, so they continue after restart."""
        with self._lock:
            for table, rows in ((self.accepted, state.get("accepted", [])),
                                (self.rejected, state.get("rejected", []))):
                for source, label, n in rows:
                    table[(source, label)] = table.get((source, label), 0.0) + float(n)
            for source, ts in state.get("last_event", {}).items():
                self.last_event[source] = max(self.last_event.get(source, 0.0), float(ts))
