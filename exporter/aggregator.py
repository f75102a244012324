"""Bounded state that turns AI events into series, read by the ``ai`` collector at scrape.

Events from every source arrive here through ``ingest``; series are built from this
state only at scrape time (and by the OTLP bridge), so ingest does a few dict updates per
event and nothing else. Every metric holds at most ``max_series_per_metric`` label sets,
and all of them together at most ``max_total_samples`` exposed samples (``SampleBudget``);
past either, observations fold into one label set whose values are all ``other`` and are
counted in ``ai_exporter_series_overflow_total``. Ids (task, loop, intervention, security
event) are tracked in bounded maps, never used as labels.
"""

from __future__ import annotations

import calendar
import contextlib
import logging
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample

from exporter import catalog
from exporter.catalog import MetricSpec
from exporter.deadline import check, paced
from exporter.events import (
    AnyEvent,
    ComponentStatus,
    Error,
    Guardian,
    Intervention,
    LlmCall,
    ProviderLimit,
    QualityGate,
    Resolution,
    SecurityEvent,
    Task,
    ToolCall,
)
from exporter.logutil import RateLimitedLogger

OTHER = "other"
MAX_LABEL_LENGTH = 128
# ai.max_total_samples by default: a full scrape of this many AI samples takes about half a
# second on a 2-vCPU machine (far below the default 5 s collector timeout) and keeps the
# exporter under 200 MB RSS while scraping (docs/events.md, "Bounded state").
MAX_SAMPLES = 50_000
# A component's heartbeat is three samples: up, last seen and info.
HEARTBEAT_SAMPLES = 3
# Label sets built into families between two looks at the scrape deadline: at most ~20 ms
# of work (histogram rows of ~20 samples each), a negligible cost per look.
_CHUNK = 256
_log = RateLimitedLogger(logging.getLogger(__name__), interval=60.0)

Key = tuple[str, ...]
_S = TypeVar("_S", bound="CounterStore | HistogramStore")

# Which metrics each event kind feeds: the contract documented in docs/events.md and
# checked by the tests (every metric listed here moves when its kind is ingested).
FEEDS: dict[str, tuple[MetricSpec, ...]] = {
    "llm_call": (catalog.GEN_AI_CLIENT_OPERATION_DURATION, catalog.GEN_AI_CLIENT_TOKEN_USAGE,
                 catalog.GEN_AI_CLIENT_TIME_TO_FIRST_CHUNK, catalog.AI_LLM_REQUESTS,
                 catalog.AI_LLM_TOKENS, catalog.AI_LLM_COST, catalog.AI_BUDGET_SPEND),
    "task": (catalog.AI_TASKS, catalog.AI_TASK_DURATION, catalog.AI_TASK_IN_PROGRESS,
             catalog.AI_TASK_QUEUE_DEPTH, catalog.AI_TASK_QUEUE_OLDEST_AGE),
    "tool_call": (catalog.GEN_AI_EXECUTE_TOOL_DURATION, catalog.AI_TOOL_CALLS),
    "quality_gate": (catalog.AI_QUALITY_GATE_DECISIONS, catalog.AI_QUALITY_GATE_SCORE),
    "resolution": (catalog.AI_RESOLUTION_ATTEMPTS, catalog.AI_RESOLUTION_INCIDENTS,
                   catalog.AI_RESOLUTION_CLOSURES, catalog.AI_RESOLUTION_ACTIVE,
                   catalog.AI_RESOLUTION_OLDEST_ACTIVE_AGE),
    "guardian": (catalog.AI_GUARDIAN_DECISIONS, catalog.AI_GUARDIAN_DURATION),
    "intervention": (catalog.AI_INTERVENTIONS, catalog.AI_INTERVENTION_OPEN,
                     catalog.AI_INTERVENTION_OLDEST_OPEN_AGE,
                     catalog.AI_INTERVENTION_TIME_TO_RESOLVE),
    "security_event": (catalog.AI_SECURITY_EVENTS, catalog.AI_SECURITY_UNRESOLVED),
    "error": (catalog.AI_ERRORS,),
    "provider_limit": (catalog.AI_PROVIDER_RATE_LIMIT_REMAINING,
                       catalog.AI_PROVIDER_RATE_LIMIT_CAPACITY,
                       catalog.AI_PROVIDER_RATE_LIMIT_RESET),
    "component_status": (catalog.AI_COMPONENT_HEARTBEAT_UP,
                         catalog.AI_COMPONENT_HEARTBEAT_LAST_SEEN, catalog.AI_COMPONENT_INFO),
}

# Served by the aggregator from configuration, not from events.
CONFIG_FED: tuple[MetricSpec, ...] = (catalog.AI_BUDGET_LIMIT, catalog.AI_LLM_LATENCY_THRESHOLD,
                                      catalog.AI_TASK_SUCCESS_OBJECTIVE)


def sanitize(value: str) -> str:
    """Label values from events: non-printable characters (C0/C1 controls, bidi overrides,
    line separators, zero-width and format characters, lone surrogates) dropped, length
    capped. ``str.isprintable`` makes the common clean case one C-level pass."""
    cleaned = value if value.isprintable() else "".join(c for c in value if c.isprintable())
    return cleaned[:MAX_LABEL_LENGTH] if len(cleaned) > MAX_LABEL_LENGTH else cleaned


def _clean(key: Key) -> Key:
    return tuple(sanitize(v) for v in key)


class SampleBudget:
    """The samples that the label sets of every AI metric together may expose.

    Why: the per-metric cap alone let a cardinality attack fill ~35 metrics with 10,000
    label sets each, histograms at up to 17 samples a label set: 1.6 M lines, 300 MB and
    12 s to render, past any scrape timeout, so even the host metrics were lost. A label
    set takes its samples here when it is first admitted (a counter or gauge 1, a
    histogram its buckets + ``+Inf`` + ``_sum`` + ``_count``) and keeps them: nothing is
    ever removed, so ``used`` only grows. Past the limit a new label set folds into
    ``other`` like one past the per-metric cap; the ``other`` label sets themselves are
    not charged (at most one per metric).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def fits(self, samples: int) -> bool:
        return self.used + samples <= self.limit

    def take(self, samples: int) -> bool:
        """Charge ``samples`` if they fit; False (nothing charged) when they do not."""
        if not self.fits(samples):
            return False
        self.used += samples
        return True


def exposed_samples(spec: MetricSpec) -> int:
    """Samples one label set of ``spec`` adds to /metrics."""
    return len(spec.buckets) + 3 if spec.kind is catalog.Kind.HISTOGRAM else 1


class _Capped:
    """Label-set admission shared by every store: sanitize once, cap, fold to ``other``."""

    def __init__(self, spec: MetricSpec, cap: int, overflow: dict[str, float],
                 budget: SampleBudget) -> None:
        self.spec = spec
        self.cap = cap
        self.samples = exposed_samples(spec)
        self._overflow = overflow
        self._budget = budget
        self._other: Key = (OTHER,) * len(spec.labels)

    def folds(self, key: Key) -> bool:
        """Whether ``key`` (not stored yet) would fold into ``other``."""
        known: dict[Key, Any] = self.values  # type: ignore[attr-defined]
        return (key not in known and _clean(key) not in known
                and (len(known) >= self.cap or not self._budget.fits(self.samples)))

    def admit(self, key: Key, known: dict[Key, Any]) -> Key:
        """The key to store under: ``key`` cleaned, or the ``other`` key past the cap or
        the sample budget. The native line path calls this too (through ``add_new`` and
        ``row``) for every label set it has not seen, so both paths fold alike."""
        clean = _clean(key)
        if clean in known or (len(known) < self.cap and self._budget.take(self.samples)):
            return clean
        self._overflow[self.spec.name] = self._overflow.get(self.spec.name, 0.0) + 1
        return self._other


class CounterStore(_Capped):
    """Monotonic totals per label set."""

    def __init__(self, spec: MetricSpec, cap: int, overflow: dict[str, float],
                 budget: SampleBudget) -> None:
        super().__init__(spec, cap, overflow, budget)
        self.values: dict[Key, float] = {}

    def inc(self, key: Key, amount: float = 1.0) -> None:
        try:
            self.values[key] += amount
        except KeyError:
            self.add_new(key, amount)

    def add_new(self, key: Key, amount: float) -> None:
        """Slow path of ``inc``: a label set not seen yet (admitted, or folded)."""
        key = self.admit(key, self.values)
        self.values[key] = self.values.get(key, 0.0) + amount

    def snapshot(self) -> list[tuple[Key, Any]]:
        """A copy of the values, taken under the aggregator's lock."""
        return list(self.values.items())

    def family(self, extra: Sequence[str], extra_values: Key,
               rows: Iterable[tuple[Key, Any]] | None = None) -> Metric:
        """The family for one scrape; samples are appended directly (no per-sample call)."""
        fam = self.spec.family(extra)
        name = fam.name + "_total" if self.spec.kind is catalog.Kind.COUNTER else fam.name
        names = (*self.spec.labels, *extra)
        append = fam.samples.append
        for key, value in self.values.items() if rows is None else rows:
            append(Sample(name, dict(zip(names, key + extra_values, strict=True)), value, None,
                          None))
        return fam


class GaugeStore(CounterStore):
    """Last value per label set."""

    def set(self, key: Key, value: float) -> None:
        if key not in self.values:
            key = self.admit(key, self.values)
        self.values[key] = value


class HistogramStore(_Capped):
    """Per label set: per-bucket counts (not cumulative, last one is +Inf), then the sum."""

    def __init__(self, spec: MetricSpec, cap: int, overflow: dict[str, float],
                 budget: SampleBudget) -> None:
        super().__init__(spec, cap, overflow, budget)
        self.bounds = list(spec.buckets)
        self.values: dict[Key, list[float]] = {}
        self._width = len(self.bounds) + 2
        self._les = [*(repr(float(b)) for b in self.bounds), "+Inf"]

    def row(self, key: Key) -> list[float]:
        """The row of ``key`` (created, or the ``other`` row past the cap)."""
        row = self.values.get(key)
        if row is None:
            key = self.admit(key, self.values)
            row = self.values.get(key)
            if row is None:
                row = self.values[key] = [0.0] * self._width
        return row

    def observe(self, key: Key, value: float) -> None:
        row = self.values.get(key) or self.row(key)
        row[bisect_left(self.bounds, value)] += 1
        row[-1] += value

    def snapshot(self) -> list[tuple[Key, Any]]:
        return [(key, row.copy()) for key, row in self.values.items()]

    def family(self, extra: Sequence[str], extra_values: Key,
               rows: Iterable[tuple[Key, Any]] | None = None) -> Metric:
        fam = self.spec.family(extra)
        bucket, count, total = fam.name + "_bucket", fam.name + "_count", fam.name + "_sum"
        names = (*self.spec.labels, *extra)
        les = self._les
        append = fam.samples.append
        for key, row in self.values.items() if rows is None else rows:
            labels = dict(zip(names, key + extra_values, strict=True))
            running = 0.0
            for le, n in zip(les, row, strict=False):
                running += n
                append(Sample(bucket, {**labels, "le": le}, running, None, None))
            append(Sample(count, labels, running, None, None))
            append(Sample(total, labels, row[-1], None, None))
        return fam


class _Tracked:
    """Open items (queued tasks, loops, interventions...) grouped by label set.

    Bounded twice: at most ``limit`` open ids (the oldest is forgotten past that, counted as
    overflow of ``name``), at most ``max_keys`` label sets and the sample budget (the rest
    fold into ``other``); each label set exposes ``samples`` samples (the count, and the
    oldest age where there is one). Items are kept in opening order, so the oldest of a
    group is its first.
    """

    def __init__(self, name: str, limit: int, max_keys: int, overflow: dict[str, float],
                 *, budget: SampleBudget, samples: int) -> None:
        self.name = name
        self.limit = limit
        self.max_keys = max_keys
        self.samples = samples
        self._overflow = overflow
        self._budget = budget
        self.by_key: dict[Key, dict[str, float]] = {}
        self.where: dict[str, Key] = {}

    def admits(self) -> bool:
        """Whether a label set not held yet fits (its samples are then charged)."""
        return len(self.by_key) < self.max_keys and self._budget.take(self.samples)

    def open(self, item: str, key: Key, since: float) -> None:
        self.close(item)
        if key not in self.by_key:
            key = _clean(key)
            if key not in self.by_key and not self.admits():
                key = (OTHER,) * len(key)
                self._count_overflow()
        if len(self.where) >= self.limit:
            self.close(next(iter(self.where)))
            self._count_overflow()
        self.where[item] = key
        self.by_key.setdefault(key, {})[item] = since

    def _count_overflow(self) -> None:
        self._overflow[self.name] = self._overflow.get(self.name, 0.0) + 1

    def close(self, item: str) -> tuple[Key, float] | None:
        key = self.where.pop(item, None)
        if key is None:
            return None
        since = self.by_key[key].pop(item)
        return key, since

    def counts(self) -> Iterator[tuple[Key, int, float | None]]:
        """(key, open count, oldest since) for every key ever seen (0 once drained)."""
        for key, group in self.by_key.items():
            yield key, len(group), next(iter(group.values())) if group else None


def _utc_day(now: float) -> tuple[str, float, float]:
    """The UTC day of ``now`` and its bounds, for the daily spend reset."""
    day = time.gmtime(now)
    start = float(calendar.timegm((day.tm_year, day.tm_mon, day.tm_mday, 0, 0, 0)))
    return time.strftime("%Y-%m-%d", day), start, start + 86400.0


class Aggregator:
    """All AI state. ``ingest`` and ``families`` are safe to call from any thread."""

    def __init__(self, *, max_series: int = 10_000, max_tracked: int = 100_000,
                 max_samples: int = MAX_SAMPLES, heartbeat_timeout: float = 120.0,
                 budgets: dict[str, float] | None = None,
                 latency_threshold: float = 10.0, success_objective: float = 0.99,
                 extra_labels: dict[str, str] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self.clock = clock
        self.heartbeat_timeout = heartbeat_timeout
        self.budgets = dict(budgets or {})
        self.latency_threshold = latency_threshold
        self.success_objective = success_objective
        extra = dict(sorted((extra_labels or {}).items()))
        self.extra_names = tuple(extra)
        self.extra_values: Key = tuple(extra.values())
        self.overflow: dict[str, float] = {}
        self.failures = 0
        self.stores: dict[str, CounterStore | HistogramStore] = {}
        self.budget = SampleBudget(max_samples)
        cap, of, budget = max_series, self.overflow, self.budget

        def c(spec: MetricSpec) -> CounterStore:
            return self._add(CounterStore(spec, cap, of, budget))

        def g(spec: MetricSpec) -> GaugeStore:
            return self._add(GaugeStore(spec, cap, of, budget))

        def h(spec: MetricSpec) -> HistogramStore:
            return self._add(HistogramStore(spec, cap, of, budget))

        def t(spec: MetricSpec, age: MetricSpec | None = None) -> _Tracked:
            return _Tracked(spec.name, max_tracked, max_series, of, budget=budget,
                            samples=1 if age is None else 2)

        self.llm_duration = h(catalog.GEN_AI_CLIENT_OPERATION_DURATION)
        self.llm_token_usage = h(catalog.GEN_AI_CLIENT_TOKEN_USAGE)
        self.llm_ttft = h(catalog.GEN_AI_CLIENT_TIME_TO_FIRST_CHUNK)
        self.llm_requests = c(catalog.AI_LLM_REQUESTS)
        self.llm_tokens = c(catalog.AI_LLM_TOKENS)
        self.llm_cost = c(catalog.AI_LLM_COST)
        self.tool_duration = h(catalog.GEN_AI_EXECUTE_TOOL_DURATION)
        self.tool_calls = c(catalog.AI_TOOL_CALLS)
        self.rl_remaining = g(catalog.AI_PROVIDER_RATE_LIMIT_REMAINING)
        self.rl_capacity = g(catalog.AI_PROVIDER_RATE_LIMIT_CAPACITY)
        self.rl_reset = g(catalog.AI_PROVIDER_RATE_LIMIT_RESET)
        self.tasks = c(catalog.AI_TASKS)
        self.task_duration = h(catalog.AI_TASK_DURATION)
        self.gate_decisions = c(catalog.AI_QUALITY_GATE_DECISIONS)
        self.gate_score = h(catalog.AI_QUALITY_GATE_SCORE)
        self.res_attempts = c(catalog.AI_RESOLUTION_ATTEMPTS)
        self.res_incidents = c(catalog.AI_RESOLUTION_INCIDENTS)
        self.res_closures = c(catalog.AI_RESOLUTION_CLOSURES)
        self.guardian_decisions = c(catalog.AI_GUARDIAN_DECISIONS)
        self.guardian_duration = h(catalog.AI_GUARDIAN_DURATION)
        self.interventions = c(catalog.AI_INTERVENTIONS)
        self.intervention_ttr = h(catalog.AI_INTERVENTION_TIME_TO_RESOLVE)
        self.security_events = c(catalog.AI_SECURITY_EVENTS)
        self.errors = c(catalog.AI_ERRORS)
        self.queued = t(catalog.AI_TASK_QUEUE_DEPTH, catalog.AI_TASK_QUEUE_OLDEST_AGE)
        self.running = t(catalog.AI_TASK_IN_PROGRESS)
        self.loops = t(catalog.AI_RESOLUTION_ACTIVE, catalog.AI_RESOLUTION_OLDEST_ACTIVE_AGE)
        self.open_interventions = t(catalog.AI_INTERVENTION_OPEN,
                                    catalog.AI_INTERVENTION_OLDEST_OPEN_AGE)
        self.unresolved = t(catalog.AI_SECURITY_UNRESOLVED)
        self.heartbeats: dict[str, tuple[str, str, str, float]] = {}
        self.max_components = max_series
        self.spend_day = ""
        self._day_start = self._day_end = 0.0
        self.spend: dict[str, float] = {}
        self._llm_slots: dict[Key, list[Any]] = {}
        self._max_slots = max_series
        self._duration_bounds = self.llm_duration.bounds
        self._ttft_bounds = self.llm_ttft.bounds
        self._token_bounds = self.llm_token_usage.bounds
        self._handlers: dict[type, Callable[[Any, float], None]] = {
            LlmCall: self._llm_call, Task: self._task, ToolCall: self._tool_call,
            QualityGate: self._quality_gate, Resolution: self._resolution,
            Guardian: self._guardian, Intervention: self._intervention,
            SecurityEvent: self._security_event, Error: self._error,
            ProviderLimit: self._provider_limit, ComponentStatus: self._component_status,
        }

    def handler(self, cls: type) -> Callable[[Any, float], None]:
        """The handler of an event type: ``handler(event, now)``, called with the lock
        held (the native line path calls it for the kinds it validates but delegates)."""
        return self._handlers[cls]

    def _add(self, store: _S) -> _S:
        self.stores[store.spec.name] = store
        return store

    # --- ingest ---------------------------------------------------------------------
    def ingest(self, events: Iterable[AnyEvent]) -> None:
        """Apply a batch of already-validated events under one lock acquisition.

        An event whose handler fails (a bug, never expected for a validated event) is
        skipped and counted in ``failures``; the rest of the batch still applies.
        """
        handlers = self._handlers
        with self._lock:
            now = self.clock()
            for event in events:
                try:
                    handlers[type(event)](event, now)
                except Exception as exc:  # one event must not stop the batch
                    self.failed(type(event).__name__, exc)

    @contextlib.contextmanager
    def batch(self) -> Iterator[tuple[Callable[[], float], Callable[[AnyEvent], None]]]:
        """Hold the lock for a batch applied piece by piece (the native line path applies
        most lines itself and the rest through ``apply``): yields ``now()``, the batch's
        time, read from the clock at its first use only (as ``ingest`` reads it once, and
        not at all for no event), and ``apply``, which has the failure handling of
        ``ingest``."""
        handlers = self._handlers
        read: list[float] = []

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

    def _llm_call(self, e: LlmCall, now: float) -> None:
        # The hot path (about half of real traffic). Everything one (operation, provider,
        # model, error) combination touches is resolved once into a slot: the histogram
        # rows it feeds and the counter keys, so an event costs list updates, not lookups.
        skey = (e.operation, e.provider, e.model, e.error_type)
        slot = self._llm_slots.get(skey)
        if slot is None:
            slot = self._llm_slot(skey)
        value = e.duration_seconds
        if value is not None:
            row = slot[0] or self._llm_row(slot, 0)
            row[bisect_left(self._duration_bounds, value)] += 1
            row[-1] += value
        value = e.time_to_first_token_seconds
        if value is not None:
            row = slot[1] or self._llm_row(slot, 1)
            row[bisect_left(self._ttft_bounds, value)] += 1
            row[-1] += value
        # Counter increments inlined (``CounterStore.inc`` without the call).
        tokens = self.llm_tokens.values
        count = e.input_tokens
        if count:
            row = slot[2] or self._llm_row(slot, 2)
            row[bisect_left(self._token_bounds, count)] += 1
            row[-1] += count
            try:
                tokens[slot[5]] += count
            except KeyError:
                self.llm_tokens.add_new(slot[5], count)
        count = e.output_tokens
        if count:
            row = slot[3] or self._llm_row(slot, 3)
            row[bisect_left(self._token_bounds, count)] += 1
            row[-1] += count
            try:
                tokens[slot[6]] += count
            except KeyError:
                self.llm_tokens.add_new(slot[6], count)
        count = e.cached_input_tokens
        if count:
            self.llm_tokens.inc(slot[7], count)
        try:
            self.llm_requests.values[slot[4]] += 1
        except KeyError:
            self.llm_requests.add_new(slot[4], 1)
        cost = e.cost_usd
        if cost:
            try:
                self.llm_cost.values[slot[8]] += cost
            except KeyError:
                self.llm_cost.add_new(slot[8], cost)
            spend, budgets = self.spend_for(now)
            spend["total"] = spend.get("total", 0.0) + cost
            if e.provider in budgets:
                spend[e.provider] = spend.get(e.provider, 0.0) + cost

    def spend_for(self, now: float) -> tuple[dict[str, float], dict[str, float]]:
        """Today's spend (started afresh when ``now`` is past the day it holds) and the
        budgets; shared with the native line path, which adds to the same dict."""
        if not self._day_start <= now < self._day_end:
            self.spend_day, self._day_start, self._day_end = _utc_day(now)
            self.spend = {}
        return self.spend, self.budgets

    def _llm_slot(self, skey: Key) -> list[Any]:
        """Rows (filled on first use) and counter keys of one LLM label combination."""
        _op, provider, model, error = skey
        slot: list[Any] = [None, None, None, None,
                           (provider, model, "error" if error else "success", error),
                           (provider, model, "input"), (provider, model, "output"),
                           (provider, model, "cached_input"), (provider, model), skey]
        if len(self._llm_slots) < self._max_slots:
            self._llm_slots[skey] = slot
        return slot

    def _llm_row(self, slot: list[Any], index: int) -> list[float]:
        """Slot row ``index``: kept in the slot unless it folded into ``other`` (so that
        every observation past the cap is still counted as overflow)."""
        op, provider, model, _error = slot[-1]
        store, key = ((self.llm_duration, slot[-1]), (self.llm_ttft, (op, provider, model)),
                      (self.llm_token_usage, (op, provider, model, "input")),
                      (self.llm_token_usage, (op, provider, model, "output")))[index]
        folded = store.folds(key)
        row = store.row(key)
        if not folded:
            slot[index] = row
        return row

    def _task(self, e: Task, now: float) -> None:
        component, queue, status = e.component, e.queue, e.status
        self.tasks.inc((component, queue, status))
        tid = e.task_id
        if status == "queued" or status == "retried":  # noqa: PLR1714 - faster than a set
            if tid:
                self.running.close(tid)
                self.queued.open(tid, (component, queue), now)
        elif status == "started":
            if tid:
                self.queued.close(tid)
                self.running.open(tid, (component, queue), now)
        else:
            started = None
            if tid:
                self.queued.close(tid)
                closed = self.running.close(tid)
                started = closed[1] if closed else None
            duration = e.duration_seconds
            if duration is None and started is not None:
                duration = max(now - started, 0.0)
            if duration is not None:
                self.task_duration.observe((component, queue, status), duration)

    def _tool_call(self, e: ToolCall, now: float) -> None:
        tool, agent, error, duration = e.tool, e.agent, e.error_type, e.duration_seconds
        if duration is not None:
            self.tool_duration.observe((tool, agent, error), duration)
        self.tool_calls.inc((tool, agent, "error" if error else "success"))

    def _quality_gate(self, e: QualityGate, now: float) -> None:
        self.gate_decisions.inc((e.gate, e.decision))
        if e.score is not None:
            self.gate_score.observe((e.gate,), e.score)

    def _resolution(self, e: Resolution, now: float) -> None:
        key = (e.component,)
        if e.action == "closed":
            self.loops.close(e.loop_id)
            self.res_closures.inc((e.component, e.outcome or "resolved"))
            return
        if e.loop_id not in self.loops.where:
            self.loops.open(e.loop_id, key, now)
        if e.action == "attempt":
            self.res_attempts.inc(key)
        else:
            self.res_incidents.inc(key)

    def _guardian(self, e: Guardian, now: float) -> None:
        guardian, gtype, duration = e.guardian, e.guardian_type, e.duration_seconds
        self.guardian_decisions.inc((guardian, gtype, e.verdict))
        if duration is not None:
            self.guardian_duration.observe((guardian, gtype), duration)

    def _intervention(self, e: Intervention, now: float) -> None:
        key = (e.type, e.priority)
        self.interventions.inc((e.type, e.priority, e.status))
        iid = e.intervention_id
        if e.status == "requested":
            self.open_interventions.open(iid, key, now)
        elif e.status == "acknowledged":
            if iid not in self.open_interventions.where:
                self.open_interventions.open(iid, key, now)
        else:
            closed = self.open_interventions.close(iid)
            if e.status == "resolved":
                wait = e.wait_seconds
                if wait is None and closed is not None:
                    wait = max(now - closed[1], 0.0)
                if wait is not None:
                    self.intervention_ttr.observe(key, wait)

    def _security_event(self, e: SecurityEvent, now: float) -> None:
        key = (e.category, e.severity)
        eid = e.event_id
        if e.resolved:
            if eid and self.unresolved.close(eid) is not None:
                return  # resolution of an event already counted
            self.security_events.inc(key)
            return
        if eid and eid in self.unresolved.where:
            return  # the same open event reported again
        self.security_events.inc(key)
        if eid:
            self.unresolved.open(eid, key, now)

    def _error(self, e: Error, now: float) -> None:
        self.errors.inc((e.component, e.category))

    def _provider_limit(self, e: ProviderLimit, now: float) -> None:
        p = e.provider
        for limit_type, remaining, capacity in (
                ("requests", e.remaining_requests, e.limit_requests),
                ("tokens", e.remaining_tokens, e.limit_tokens)):
            if remaining is not None:
                self.rl_remaining.set((p, limit_type), float(remaining))
            if capacity is not None:
                self.rl_capacity.set((p, limit_type), float(capacity))
            if e.reset_at is not None and (remaining is not None or capacity is not None):
                self.rl_reset.set((p, limit_type), e.reset_at)

    def _component_status(self, e: ComponentStatus, now: float) -> None:
        name = sanitize(e.component)
        if name not in self.heartbeats and (len(self.heartbeats) >= self.max_components
                                            or not self.budget.take(HEARTBEAT_SAMPLES)):
            metric = catalog.AI_COMPONENT_HEARTBEAT_UP.name
            self.overflow[metric] = self.overflow.get(metric, 0.0) + 1
            return
        self.heartbeats[name] = (e.component_kind, sanitize(e.version), e.status, now)

    # --- read side --------------------------------------------------------------------
    def families(self, deadline: float | None = None) -> list[Metric]:
        """Every AI family for one scrape (extra labels such as ``demo`` appended).

        The lock is held only to copy the state; families are built outside it, so a
        scrape of many series does not stall ingest. ``deadline`` (``time.monotonic()``,
        the scrape's): past it, building stops with ``TimeoutError`` (looked at every
        ``_CHUNK`` label sets), so a scrape that already gave up on this collector does
        not keep a thread busy (and the GIL contended) for the rest of the build.
        """
        extra, xv = self.extra_names, self.extra_values
        with self._lock:
            now = self.clock()
            rows = [(store, store.snapshot()) for store in self.stores.values()]
            tracked = [(spec_pair, list(tr.counts())) for spec_pair, tr in self._tracked()]
            heartbeats = list(self.heartbeats.items())
            spent = dict(self.spend) if self._day_start <= now < self._day_end else {}
            overflow_rows = list(self.overflow.items())
            used, limit = self.budget.used, self.budget.limit
        out = []
        for store, snap in rows:
            out.append(store.family(extra, xv, paced(snap, deadline, _CHUNK)))
        check(deadline)
        for (count_spec, age_spec), counts in tracked:
            count_family = count_spec.family(extra)
            age_family = age_spec.family(extra) if age_spec else None
            for key, count, oldest in counts:
                count_family.add_metric(key + xv, float(count))
                if age_family is not None:
                    age = max(now - oldest, 0.0) if oldest is not None else 0.0
                    age_family.add_metric(key + xv, age)
            out.append(count_family)
            if age_family is not None:
                out.append(age_family)
        out.extend(self._heartbeat_families(heartbeats, extra, xv, now))
        out.extend(self._budget_families(spent, extra, xv))
        overflow = catalog.EXPORTER_SERIES_OVERFLOW.family()
        for name, folded in overflow_rows:
            overflow.add_metric([name], folded)
        series = catalog.EXPORTER_SERIES.family()
        for store, snap in rows:
            series.add_metric([store.spec.name], float(len(snap)))
        samples = catalog.EXPORTER_SAMPLES.family()
        samples.add_metric([], float(used))
        samples_limit = catalog.EXPORTER_SAMPLES_LIMIT.family()
        samples_limit.add_metric([], float(limit))
        out.extend((overflow, series, samples, samples_limit))
        return out

    def _tracked(self) -> list[tuple[tuple[MetricSpec, MetricSpec | None], _Tracked]]:
        return [((catalog.AI_TASK_QUEUE_DEPTH, catalog.AI_TASK_QUEUE_OLDEST_AGE), self.queued),
                ((catalog.AI_TASK_IN_PROGRESS, None), self.running),
                ((catalog.AI_RESOLUTION_ACTIVE, catalog.AI_RESOLUTION_OLDEST_ACTIVE_AGE),
                 self.loops),
                ((catalog.AI_INTERVENTION_OPEN, catalog.AI_INTERVENTION_OLDEST_OPEN_AGE),
                 self.open_interventions),
                ((catalog.AI_SECURITY_UNRESOLVED, None), self.unresolved)]

    def _heartbeat_families(self, heartbeats: list[tuple[str, tuple[str, str, str, float]]],
                            extra: Sequence[str], xv: Key, now: float) -> list[Metric]:
        up = catalog.AI_COMPONENT_HEARTBEAT_UP.family(extra)
        seen = catalog.AI_COMPONENT_HEARTBEAT_LAST_SEEN.family(extra)
        info = catalog.AI_COMPONENT_INFO.family(extra)
        for name, (kind, version, status, last) in heartbeats:
            fresh = now - last <= self.heartbeat_timeout
            up.add_metric((name, kind, *xv), 1.0 if fresh and status != "down" else 0.0)
            seen.add_metric((name, kind, *xv), last)
            info.add_metric((name, kind, version, status, *xv), 1.0)
        return [up, seen, info]

    def _budget_families(self, spent: dict[str, float], extra: Sequence[str],
                         xv: Key) -> list[Metric]:
        limit = catalog.AI_BUDGET_LIMIT.family(extra)
        spend = catalog.AI_BUDGET_SPEND.family(extra)
        budgets = dict(self.budgets)
        for scope, usd in budgets.items():
            limit.add_metric((scope, *xv), usd)
        for scope in sorted({"total", *budgets}):
            spend.add_metric((scope, *xv), spent.get(scope, 0.0))
        latency = catalog.AI_LLM_LATENCY_THRESHOLD.family(extra)
        latency.add_metric(xv, self.latency_threshold)
        objective = catalog.AI_TASK_SUCCESS_OBJECTIVE.family(extra)
        objective.add_metric(xv, self.success_objective)
        return [limit, spend, latency, objective]

    def series_count(self) -> int:
        """Label sets held across every store and tracked map (for bounded-state checks)."""
        with self._lock:
            return (sum(len(s.values) for s in self.stores.values())
                    + sum(len(tr.by_key) for _, tr in self._tracked()) + len(self.heartbeats))

    # --- JSON views --------------------------------------------------------------------
    def components(self) -> list[dict[str, Any]]:
        now = self.clock()
        with self._lock:
            rows = list(self.heartbeats.items())
        return [{"component": name, "kind": kind, "version": version, "status": status,
                 "last_seen": last, "fresh": now - last <= self.heartbeat_timeout}
                for name, (kind, version, status, last) in sorted(rows)]

    def summary(self) -> dict[str, Any]:
        """Current aggregates, keyed by metric name, for /api/metrics/ai."""
        out: dict[str, Any] = {}
        with self._lock:
            now = self.clock()
            for name, store in self.stores.items():
                rows = []
                for key, value in store.values.items():
                    labels = dict(zip(store.spec.labels, key, strict=True))
                    if isinstance(value, list):
                        rows.append({"labels": labels, "count": sum(value[:-1]),
                                     "sum": value[-1]})
                    else:
                        rows.append({"labels": labels, "value": value})
                out[name] = rows
            for (spec, _), tracked in self._tracked():
                out[spec.name] = [{"labels": dict(zip(spec.labels, key, strict=True)),
                                   "value": count} for key, count, _ in tracked.counts()]
            spent = self.spend if self._day_start <= now < self._day_end else {}
            out[catalog.AI_BUDGET_SPEND.name] = {
                scope: spent.get(scope, 0.0) for scope in sorted({"total", *self.budgets})}
            out[catalog.AI_BUDGET_LIMIT.name] = dict(self.budgets)
            out[catalog.EXPORTER_SERIES_OVERFLOW.name] = dict(self.overflow)
        return out

    # --- checkpoint ------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """All event-fed state as plain JSON-able data, copied under the lock.

        The file sources write it into their checkpoint together with their offsets, so
        that after a restart counters continue from where they were (no ``rate()`` spike)
        and the events after the checkpoint are applied exactly once more.
        """
        with self._lock:
            stores = {name: [[list(key), list(value) if isinstance(value, list) else value]
                             for key, value in store.values.items()]
                      for name, store in self.stores.items()}
            tracked = {tr.name: {"items": [[item, list(key), tr.by_key[key][item]]
                                           for item, key in tr.where.items()],
                                 "keys": [list(key) for key in tr.by_key]}
                       for _, tr in self._tracked()}
            return {"stores": stores, "tracked": tracked,
                    "heartbeats": {name: list(hb) for name, hb in self.heartbeats.items()},
                    "spend_day": self.spend_day, "spend": dict(self.spend),
                    "overflow": dict(self.overflow)}

    def restore(self, state: dict[str, Any]) -> None:
        """Add a ``snapshot()`` into this state: counters and histograms add up, gauges,
        open items and heartbeats fill in where this state has none. Rows that no longer
        fit (a metric gone, labels or histogram buckets changed) are skipped."""
        with self._lock:
            for name, rows in state.get("stores", {}).items():
                store = self.stores.get(name)
                if store is not None:
                    _restore_rows(store, rows)
            for _, tr in self._tracked():
                saved = state.get("tracked", {}).get(tr.name, {})
                for key in saved.get("keys", []):
                    if tuple(key) not in tr.by_key and tr.admits():
                        tr.by_key[tuple(key)] = {}
                for item, key, since in saved.get("items", []):
                    if item not in tr.where:
                        tr.open(item, tuple(key), float(since))
            for name, (kind, version, status, last) in state.get("heartbeats", {}).items():
                if name in self.heartbeats:
                    if self.heartbeats[name][3] < last:
                        self.heartbeats[name] = (kind, version, status, float(last))
                elif (len(self.heartbeats) < self.max_components
                      and self.budget.take(HEARTBEAT_SAMPLES)):
                    self.heartbeats[name] = (kind, version, status, float(last))
            day, start, end = _utc_day(self.clock())
            if state.get("spend_day") == day:
                if not self._day_start <= start < self._day_end:
                    self.spend_day, self._day_start, self._day_end = day, start, end
                    self.spend = {}
                for scope, usd in state.get("spend", {}).items():
                    self.spend[scope] = self.spend.get(scope, 0.0) + float(usd)
            for name, count in state.get("overflow", {}).items():
                self.overflow[name] = self.overflow.get(name, 0.0) + float(count)


def _restore_rows(store: CounterStore | HistogramStore, rows: list[list[Any]]) -> None:
    width = len(store.spec.labels)
    for raw_key, value in rows:
        key = tuple(raw_key)
        if len(key) != width:
            continue
        if isinstance(store, HistogramStore):
            if isinstance(value, list) and len(value) == len(store.bounds) + 2:
                row = store.row(key)
                for i, n in enumerate(value):
                    row[i] += float(n)
        elif isinstance(store, GaugeStore):
            if key not in store.values:
                store.set(key, float(value))
        elif not isinstance(value, list):
            store.inc(key, float(value))
