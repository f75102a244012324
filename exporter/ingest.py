"""The one path every source takes into the aggregator: decode, validate, count, apply.

Sources hand over raw JSON objects (or already-built events, for the demo); the ingestor
decodes each one independently, so a bad event is rejected with its index and reason
while the valid events of the same batch are applied exactly once, in one lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client.metrics_core import Metric

from exporter import catalog
from exporter.aggregator import Aggregator
from exporter.events import KIND_OF, AnyEvent, EventDecoder, Rejection
from exporter.logutil import RateLimitedLogger

_log = logging.getLogger(__name__)


class Ingestor:
    """Decodes raw events for the aggregator and keeps the per-source self metrics."""

    def __init__(self, aggregator: Aggregator, max_event_bytes: int = 1024 * 1024,
                 log_interval: float = 10.0) -> None:
        self.aggregator = aggregator
        self.decoder = EventDecoder(max_event_bytes)
        self._lock = threading.Lock()
        self.accepted: dict[tuple[str, str], float] = {}
        self.rejected: dict[tuple[str, str], float] = {}
        self.last_event: dict[str, float] = {}
        self._log = RateLimitedLogger(_log, log_interval)

    def decode(self, raws: Iterable[bytes | memoryview]
               ) -> tuple[list[AnyEvent], list[tuple[int, Rejection]]]:
        """Decode each raw object; returns the events and (index, rejection) pairs."""
        return self.decoder.decode_many(raws)

    def ingest_raw(self, source: str, raws: Iterable[bytes | memoryview]
                   ) -> tuple[int, list[tuple[int, Rejection]]]:
        """Decode and apply; returns (accepted count, rejections with their index)."""
        events, rejections = self.decode(raws)
        self.apply(source, events)
        for index, rejection in rejections:
            self.reject(source, rejection, where=f"event {index}")
        return len(events), rejections

    def apply(self, source: str, events: Sequence[AnyEvent]) -> None:
        """Count and aggregate events that are already valid."""
        if not events:
            return
        self.aggregator.ingest(events)
        counts = Counter(map(type, events))
        now = time.time()
        with self._lock:
            accepted = self.accepted
            for cls, n in counts.items():
                key = (source, KIND_OF[cls])
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
