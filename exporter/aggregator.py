"""Bounded state that turns AI events into series, read by the ``ai`` collector at scrape.

Events from every source arrive here through ``ingest``; series are built from this
state only at scrape time (and by the OTLP bridge), so ingest does a few dict updates per
event and nothing else. Every metric holds at most ``max_series_per_metric`` label sets,
and all of them together at most ``max_total_samples`` exposed samples (``SampleBudget``);
past either, observations fold into one label set whose values are all ``other`` and are
counted in ``ai_exporter_series_overflow_total``. Ids (task, loop, intervention, security
event) are tracked in bounded maps, never used as labels.

This module is the facade: the lock, the clock and the configuration. The parts live in
``exporter.aggregation``, one seam each: ``stores`` (bounded label sets), ``state`` (every
store by name), ``handlers`` (what each event kind does), ``views`` (families, summary,
components), ``checkpoint`` (snapshot and restore) and ``contract`` (the native table).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from prometheus_client.metrics_core import Metric

from exporter.aggregation import checkpoint, views
from exporter.aggregation.contract import (
    HISTOGRAM_ROW,
    NATIVE_CONTRACT_VERSION,
    NativeStore,
    NativeTracked,
    native_table,
)
from exporter.aggregation.feeds import CONFIG_FED, FEEDS
from exporter.aggregation.handlers import Handler, Handlers
from exporter.aggregation.state import HEARTBEAT_SAMPLES, AiState, DailySpend, Heartbeat
from exporter.aggregation.stores import (
    MAX_LABEL_LENGTH,
    OTHER,
    CounterStore,
    GaugeStore,
    HistogramStore,
    Key,
    SampleBudget,
    Tracked,
    exposed_samples,
    sanitize,
)
from exporter.events import AnyEvent
from exporter.logutil import RateLimitedLogger
from exporter.pricing import PriceTable

__all__ = ["CONFIG_FED", "FEEDS", "HEARTBEAT_SAMPLES", "HISTOGRAM_ROW", "MAX_LABEL_LENGTH",
           "MAX_SAMPLES", "NATIVE_CONTRACT_VERSION", "OTHER", "Aggregator", "AiState",
           "CounterStore", "DailySpend", "GaugeStore", "Heartbeat", "HistogramStore", "Key",
           "NativeStore", "NativeTracked", "SampleBudget", "Tracked", "exposed_samples",
           "sanitize"]

# ai.max_total_samples by default: a full scrape of this many AI samples takes about half a
# second on a 2-vCPU machine (far below the default 5 s collector timeout) and keeps the
# exporter under 200 MB RSS while scraping (docs/events.md, "Bounded state").
MAX_SAMPLES = 50_000
_log = RateLimitedLogger(logging.getLogger(__name__), interval=60.0)


@dataclasses.dataclass(frozen=True)
class HistogramDelta:
    """An increment of one GenAI histogram series: ``metric`` "duration" (``detail``: the
    error type, "" on success) or "token_usage" (``detail``: the token type, input or
    output); per-bucket counts (the last is +Inf) and the sum."""

    metric: str
    operation: str
    provider: str
    model: str
    detail: str
    buckets: tuple[float, ...]
    total: float
    response_model: str = ""  # duration only: gen_ai.response.model


class Aggregator:
    """All AI state. ``ingest`` and ``families`` are safe to call from any thread."""

    def __init__(self, *, max_series: int = 10_000, max_tracked: int = 100_000,
                 max_samples: int = MAX_SAMPLES, heartbeat_timeout: float = 120.0,
                 budgets: dict[str, float] | None = None,
                 latency_threshold: float = 10.0, success_objective: float = 0.99,
                 extra_labels: dict[str, str] | None = None,
                 clock: Callable[[], float] = time.time,
                 prices: PriceTable | None = None) -> None:
        self._lock = threading.Lock()
        self.clock = clock
        extra = dict(sorted((extra_labels or {}).items()))
        self.view = views.ViewConfig(extra_names=tuple(extra),
                                     extra_values=tuple(extra.values()),
                                     heartbeat_timeout=heartbeat_timeout,
                                     latency_threshold=latency_threshold,
                                     success_objective=success_objective)
        self.failures = 0
        self.state = AiState(max_series=max_series, max_tracked=max_tracked,
                             max_samples=max_samples, budgets=dict(budgets or {}),
                             prices=prices)
        self._handlers = Handlers(self.state).by_type

    # --- the parts, for tests and the native table ------------------------------------
    @property
    def stores(self) -> dict[str, CounterStore | HistogramStore]:
        return self.state.stores

    @property
    def overflow(self) -> dict[str, float]:
        return self.state.overflow

    @property
    def budget(self) -> SampleBudget:
        return self.state.budget

    @property
    def budgets(self) -> dict[str, float]:
        return self.state.budgets

    @property
    def spend(self) -> dict[str, float]:
        return self.state.spend.by_scope

    @property
    def spend_day(self) -> str:
        return self.state.spend.day

    def reconfigure(self, *, heartbeat_timeout: float, budgets: dict[str, float],
                    latency_threshold: float, success_objective: float) -> None:
        """A reload's new settings; the state itself (counts, open items) is kept. The
        budgets dict is updated in place: the native path holds a reference to it."""
        with self._lock:
            self.view = dataclasses.replace(self.view, heartbeat_timeout=heartbeat_timeout,
                                            latency_threshold=latency_threshold,
                                            success_objective=success_objective)
            self.state.budgets.clear()
            self.state.budgets.update(budgets)

    def handler(self, cls: type) -> Handler:
        """The handler of an event type: ``handler(event, now)``, called with the lock
        held."""
        return self._handlers[cls]

    def native_table(self) -> dict[str, Any]:
        """The versioned store table the native path binds to (``contract.native_table``;
        exporter/native.py, "Native contract")."""
        return native_table(self.state, self._handlers)

    def spend_for(self, now: float) -> tuple[dict[str, float], dict[str, float]]:
        """Today's spend (afresh past the day it holds) and the budgets."""
        return self.state.spend_for(now)

    # --- ingest ---------------------------------------------------------------------
    def ingest(self, events: Iterable[AnyEvent], now: float | None = None) -> None:
        """Apply a batch of already-validated events under one lock acquisition, at
        ``now`` (the batch's time: the clock's unless given, e.g. by a log replay).

        An event whose handler fails (a bug, never expected for a validated event) is
        skipped and counted in ``failures``; the rest of the batch still applies.
        """
        handlers = self._handlers
        with self._lock:
            at = self.clock() if now is None else now
            for event in events:
                try:
                    handlers[type(event)](event, at)
                except Exception as exc:  # one event must not stop the batch
                    self.failed(type(event).__name__, exc)

    def merge_histograms(self, deltas: Iterable[HistogramDelta]) -> int:
        """Add GenAI histogram increments received as metrics (the OTLP intake's
        ``gen_ai.client.*`` data points, differenced) to the same series a span or an
        ``llm_call`` feeds; returns how many were merged. Their bucket bounds are the
        catalog's (the intake checks), so the merge is exact."""
        state = self.state
        merged = 0
        with self._lock:
            for d in deltas:
                if d.metric == "duration":
                    row = state.llm_duration.row((d.operation, d.provider, d.model, d.detail,
                                                  d.response_model))
                    requests = sum(d.buckets)
                    outcome = "error" if d.detail else "success"
                    state.llm_requests.inc((d.provider, d.model, outcome, d.detail), requests)
                else:
                    row = state.llm_token_usage.row((d.operation, d.provider, d.model,
                                                     d.detail))
                    state.llm_tokens.inc((d.provider, d.model, d.detail), d.total)
                for i, count in enumerate(d.buckets):
                    row[i] += count
                row[-1] += d.total
                merged += 1
        return merged

    def merge_rows(self, deltas: Iterable[tuple[str, Key, Sequence[float], float]]) -> int:
        """add histogram increments received as metrics (the OTLP
        intake's ``mcp.*`` data points, differenced) to the rows an event of the same
        labels feeds: (store by Prometheus name, key, per-bucket counts with +Inf last,
        sum). The bucket bounds are the store's (the intake checks). Returns how many."""
        merged = 0
        with self._lock:
            for name, key, buckets, total in deltas:
                store = self.state.stores[name]
                if not isinstance(store, HistogramStore):
                    continue
                row = store.row(key)
                for i, count in enumerate(buckets):
                    row[i] += count
                row[-1] += total
                merged += 1
        return merged

    @contextlib.contextmanager
    def batch(self, at: float | None = None
              ) -> Iterator[tuple[Callable[[], float], Callable[[AnyEvent], None]]]:
        """Hold the lock for a batch applied piece by piece (the native path applies
        most events itself and the rest through ``apply``): yields ``now()``, the batch's
        time, read from the clock at its first use only (as ``ingest`` reads it once, and
        not at all for no event), and ``apply``, which has the failure handling of
        ``ingest``. ``at``: the batch's time, given (the clock is then not read)."""
        handlers = self._handlers
        read: list[float] = [] if at is None else [at]

        def now() -> float:
            if not read:
                read.append(self.clock())
            return read[0]

        def apply(event: AnyEvent) -> None:
            try:
                handlers[type(event)](event, now())
            except Exception as exc:  # one event must not stop the batch
                self.failed(type(event).__name__, exc)

        with self._lock:
            yield now, apply

    def failed(self, what: str, exc: BaseException) -> None:
        """Count and log an event whose handler failed (a bug; never expected)."""
        self.failures += 1
        _log.error("aggregating %s failed: %s: %s", what, type(exc).__name__, exc,
                   key="ingest-failure")

    # --- read side --------------------------------------------------------------------
    def families(self, deadline: float | None = None) -> list[Metric]:
        """Every AI family for one scrape (extra labels such as ``demo`` appended).

        The lock is held only to copy the state; families are built outside it, so a
        scrape of many series does not stall ingest. ``deadline`` (``time.monotonic()``,
        the scrape's): past it, building and rendering stop with ``TimeoutError`` (looked
        at every few hundred label sets), so a scrape that already gave up on this collector
        does not keep a thread busy (and the GIL contended) for the rest of the build.
        """
        with self._lock:
            copy = views.copy_for_scrape(self.state, self.clock())
        return views.families(copy, self.view, deadline)

    def series_count(self) -> int:
        """Label sets held across every store and tracked map (for bounded-state checks)."""
        with self._lock:
            return views.series_count(self.state)

    def components(self) -> list[dict[str, Any]]:
        now = self.clock()
        with self._lock:
            rows = list(self.state.heartbeats.items())
        return views.components(rows, now, self.view.heartbeat_timeout)

    def summary(self) -> dict[str, Any]:
        """Current aggregates, keyed by metric name, for /api/metrics/ai."""
        with self._lock:
            return views.summary(self.state, self.clock())

    # --- checkpoint ------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """All event-fed state as plain JSON-able data, copied under the lock.

        The state store writes it into its checkpoint together with every source's
        cursor, so that after a restart counters continue from where they were (no
        ``rate()`` spike) and the events after the checkpoint are applied exactly once
        more. The format is ``checkpoint``'s, unchanged across releases.
        """
        with self._lock:
            return checkpoint.snapshot(self.state)

    def restore(self, state: dict[str, Any]) -> None:
        """Add a ``snapshot()`` into this state: counters and histograms add up, gauges,
        open items and heartbeats fill in where this state has none. Rows that no longer
        fit (a metric gone, labels or histogram buckets changed) are skipped."""
        with self._lock:
            checkpoint.restore(self.state, state, self.clock())
