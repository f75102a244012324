"""Bounded state that turns AI events into series, read by the ``ai`` collector at scrape.

Events from every source arrive here through ``ingest``; series are built from this
state only at scrape time (and by the OTLP bridge), so ingest does a few dict updates per
event and nothing else. Every metric holds at most ``max_series_per_metric`` label sets;
past that, observations fold into one label set whose values are all ``other`` and are
counted in ``ai_exporter_series_overflow_total``. Ids (task, loop, intervention, security
event) are tracked in bounded maps, never used as labels.
"""

from __future__ import annotations

import re
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.metrics_core import Metric

from exporter import catalog
from exporter.catalog import MetricSpec
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

OTHER = "other"
MAX_LABEL_LENGTH = 128
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

Key = tuple[str, ...]


def sanitize(value: str) -> str:
    """Label values from events: control characters dropped, length capped."""
    cleaned = _CONTROL.sub("", value)
    return cleaned[:MAX_LABEL_LENGTH] if len(cleaned) > MAX_LABEL_LENGTH else cleaned


class _Capped:
    """Label-set admission shared by every store: sanitize once, cap, fold to ``other``."""

    def __init__(self, spec: MetricSpec, cap: int, overflow: dict[str, float]) -> None:
        self.spec = spec
        self.cap = cap
        self._overflow = overflow
        self._other: Key = (OTHER,) * len(spec.labels)

    def admit(self, key: Key, known: dict[Key, Any]) -> Key:
        clean = tuple(sanitize(v) for v in key)
        if clean in known or len(known) < self.cap:
            return clean
        self._overflow[self.spec.name] = self._overflow.get(self.spec.name, 0.0) + 1
        return self._other


class CounterStore(_Capped):
    def __init__(self, spec: MetricSpec, cap: int, overflow: dict[str, float]) -> None:
        super().__init__(spec, cap, overflow)
        self.values: dict[Key, float] = {}

    def inc(self, key: Key, amount: float = 1.0) -> None:
        values = self.values
        if key in values:
            values[key] += amount
        else:
            key = self.admit(key, values)
            values[key] = values.get(key, 0.0) + amount

    def family(self, extra: Sequence[str], extra_values: Key) -> Metric:
        fam = self.spec.family(extra)
        for key, value in self.values.items():
            fam.add_metric(key + extra_values, value)
        return fam


class GaugeStore(CounterStore):
    def set(self, key: Key, value: float) -> None:
        if key not in self.values:
            key = self.admit(key, self.values)
        self.values[key] = value


class HistogramStore(_Capped):
    """Per label set: per-bucket counts (not cumulative), then sum and count."""

    def __init__(self, spec: MetricSpec, cap: int, overflow: dict[str, float]) -> None:
        super().__init__(spec, cap, overflow)
        self.bounds = list(spec.buckets)
        self.values: dict[Key, list[float]] = {}
        self._width = len(self.bounds) + 1

    def observe(self, key: Key, value: float) -> None:
        row = self.values.get(key)
        if row is None:
            key = self.admit(key, self.values)
            row = self.values.get(key)
            if row is None:
                row = self.values[key] = [0.0] * (self._width + 2)
        row[bisect_left(self.bounds, value)] += 1
        row[-2] += value
        row[-1] += 1

    def family(self, extra: Sequence[str], extra_values: Key) -> Metric:
        fam = self.spec.family(extra)
        les = [*(_fmt(b) for b in self.bounds), "+Inf"]
        for key, row in self.values.items():
            running = 0.0
            buckets = []
            for le, count in zip(les, row, strict=False):
                running += count
                buckets.append((le, running))
            fam.add_metric(list(key + extra_values), buckets, row[-2])
        return fam


def _fmt(bound: float) -> str:
    return repr(float(bound))


@dataclass
class _Tracked:
    """Open items (queued tasks, loops, interventions…) grouped by label set, oldest first."""

    limit: int
    max_keys: int = 10_000
    by_key: dict[Key, dict[str, float]] = field(default_factory=dict)
    where: dict[str, Key] = field(default_factory=dict)

    def open(self, item: str, key: Key, since: float) -> None:
        self.close(item)
        if key not in self.by_key:
            key = tuple(sanitize(v) for v in key)
            if key not in self.by_key and len(self.by_key) >= self.max_keys:
                key = (OTHER,) * len(key)
        if len(self.where) >= self.limit:
            oldest = next(iter(self.where))
            self.close(oldest)
        self.where[item] = key
        self.by_key.setdefault(key, {})[item] = since

    def close(self, item: str) -> tuple[Key, float] | None:
        key = self.where.pop(item, None)
        if key is None:
            return None
        group = self.by_key[key]
        since = group.pop(item)
        return key, since

    def counts(self) -> Iterator[tuple[Key, int, float | None]]:
        """(key, open count, oldest since) for every key ever seen (0 once drained)."""
        for key, group in self.by_key.items():
            yield key, len(group), min(group.values()) if group else None


class Aggregator:
    """All AI state. ``ingest`` and ``families`` are safe to call from any thread."""

    def __init__(self, *, max_series: int = 10_000, max_tracked: int = 100_000,
                 heartbeat_timeout: float = 120.0, budgets: dict[str, float] | None = None,
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
        self.stores: dict[str, CounterStore | HistogramStore] = {}
        cap, of = max_series, self.overflow
        c: Callable[[MetricSpec], CounterStore] = (  # noqa: E731
            lambda spec: self._add(CounterStore(spec, cap, of)))
        g: Callable[[MetricSpec], GaugeStore] = (  # noqa: E731
            lambda spec: self._add(GaugeStore(spec, cap, of)))
        h: Callable[[MetricSpec], HistogramStore] = (  # noqa: E731
            lambda spec: self._add(HistogramStore(spec, cap, of)))
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
        self.queued = _Tracked(max_tracked, max_series)
        self.running = _Tracked(max_tracked, max_series)
        self.loops = _Tracked(max_tracked, max_series)
        self.open_interventions = _Tracked(max_tracked, max_series)
        self.unresolved = _Tracked(max_tracked, max_series)
        self.heartbeats: dict[str, tuple[str, str, str, float]] = {}
        self.max_components = max_series
        self.spend_day = ""
        self.spend: dict[str, float] = {}
        self._handlers: dict[type, Callable[[Any, float], None]] = {
            LlmCall: self._llm_call, Task: self._task, ToolCall: self._tool_call,
            QualityGate: self._quality_gate, Resolution: self._resolution,
            Guardian: self._guardian, Intervention: self._intervention,
            SecurityEvent: self._security_event, Error: self._error,
            ProviderLimit: self._provider_limit, ComponentStatus: self._component_status,
        }

    def _add(self, store: Any) -> Any:
        self.stores[store.spec.name] = store
        return store

    # --- ingest ---------------------------------------------------------------------
    def ingest(self, events: Iterable[AnyEvent]) -> None:
        """Apply a batch of already-validated events under one lock acquisition."""
        handlers = self._handlers
        with self._lock:
            now = self.clock()
            for event in events:
                handlers[type(event)](event, now)

    def _llm_call(self, e: LlmCall, now: float) -> None:
        op, provider, model = e.operation, e.provider, e.model
        base = (op, provider, model)
        if e.duration_seconds is not None:
            self.llm_duration.observe((*base, e.error_type), e.duration_seconds)
        if e.time_to_first_token_seconds is not None:
            self.llm_ttft.observe(base, e.time_to_first_token_seconds)
        pm = (provider, model)
        if e.input_tokens or e.output_tokens:
            self.llm_token_usage.observe((*base, "input"), e.input_tokens)
            self.llm_token_usage.observe((*base, "output"), e.output_tokens)
            self.llm_tokens.inc((provider, model, "input"), e.input_tokens)
            self.llm_tokens.inc((provider, model, "output"), e.output_tokens)
        if e.cached_input_tokens:
            self.llm_tokens.inc((provider, model, "cached_input"), e.cached_input_tokens)
        outcome = "error" if e.error_type else "success"
        self.llm_requests.inc((provider, model, outcome, e.error_type))
        if e.cost_usd:
            self.llm_cost.inc(pm, e.cost_usd)
            self._spend(provider, e.cost_usd, now)

    def _spend(self, provider: str, usd: float, now: float) -> None:
        day = time.strftime("%Y-%m-%d", time.gmtime(now))
        if day != self.spend_day:
            self.spend_day = day
            self.spend = {}
        self.spend["total"] = self.spend.get("total", 0.0) + usd
        if provider in self.budgets:
            self.spend[provider] = self.spend.get(provider, 0.0) + usd

    def _task(self, e: Task, now: float) -> None:
        key = (e.component, e.queue)
        status = e.status
        self.tasks.inc((e.component, e.queue, status))
        tid = e.task_id
        if status in ("queued", "retried"):
            if tid:
                self.running.close(tid)
                self.queued.open(tid, key, now)
        elif status == "started":
            if tid:
                self.queued.close(tid)
                self.running.open(tid, key, now)
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
                self.task_duration.observe((e.component, e.queue, status), duration)

    def _tool_call(self, e: ToolCall, now: float) -> None:
        if e.duration_seconds is not None:
            self.tool_duration.observe((e.tool, e.agent, e.error_type), e.duration_seconds)
        self.tool_calls.inc((e.tool, e.agent, "error" if e.error_type else "success"))

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
        self.guardian_decisions.inc((e.guardian, e.guardian_type, e.verdict))
        if e.duration_seconds is not None:
            self.guardian_duration.observe((e.guardian, e.guardian_type), e.duration_seconds)

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
        if name not in self.heartbeats and len(self.heartbeats) >= self.max_components:
            self.overflow["ai_component_heartbeat_up"] = (
                self.overflow.get("ai_component_heartbeat_up", 0.0) + 1)
            return
        self.heartbeats[name] = (e.component_kind, sanitize(e.version), e.status, now)

    # --- read side --------------------------------------------------------------------
    def families(self) -> list[Metric]:
        """Every AI family for one scrape (extra labels such as ``demo`` appended)."""
        extra, xv = self.extra_names, self.extra_values
        now = self.clock()
        with self._lock:
            out = [store.family(extra, xv) for store in self.stores.values()]
            out.extend(self._tracked_families(extra, xv, now))
            out.extend(self._heartbeat_families(extra, xv, now))
            out.extend(self._budget_families(extra, xv, now))
            overflow = catalog.EXPORTER_SERIES_OVERFLOW.family()
            for name, count in self.overflow.items():
                overflow.add_metric([name], count)
            series = catalog.EXPORTER_SERIES.family()
            for name, store in self.stores.items():
                series.add_metric([name], float(len(store.values)))
        out.extend((overflow, series))
        return out

    def _tracked_families(self, extra: Sequence[str], xv: Key, now: float) -> list[Metric]:
        out: list[Metric] = []
        for tracked, count_spec, age_spec in (
                (self.queued, catalog.AI_TASK_QUEUE_DEPTH, catalog.AI_TASK_QUEUE_OLDEST_AGE),
                (self.running, catalog.AI_TASK_IN_PROGRESS, None),
                (self.loops, catalog.AI_RESOLUTION_ACTIVE,
                 catalog.AI_RESOLUTION_OLDEST_ACTIVE_AGE),
                (self.open_interventions, catalog.AI_INTERVENTION_OPEN,
                 catalog.AI_INTERVENTION_OLDEST_OPEN_AGE),
                (self.unresolved, catalog.AI_SECURITY_UNRESOLVED, None)):
            count_family = count_spec.family(extra)
            age_family = age_spec.family(extra) if age_spec else None
            for key, count, oldest in tracked.counts():
                count_family.add_metric(key + xv, float(count))
                if age_family is not None:
                    age_family.add_metric(key + xv, max(now - oldest, 0.0) if oldest else 0.0)
            out.append(count_family)
            if age_family is not None:
                out.append(age_family)
        return out

    def _heartbeat_families(self, extra: Sequence[str], xv: Key, now: float) -> list[Metric]:
        up = catalog.AI_COMPONENT_HEARTBEAT_UP.family(extra)
        seen = catalog.AI_COMPONENT_HEARTBEAT_LAST_SEEN.family(extra)
        info = catalog.AI_COMPONENT_INFO.family(extra)
        for name, (kind, version, status, last) in self.heartbeats.items():
            fresh = now - last <= self.heartbeat_timeout
            up.add_metric((name, kind, *xv), 1.0 if fresh and status != "down" else 0.0)
            seen.add_metric((name, kind, *xv), last)
            info.add_metric((name, kind, version, status, *xv), 1.0)
        return [up, seen, info]

    def _budget_families(self, extra: Sequence[str], xv: Key, now: float) -> list[Metric]:
        limit = catalog.AI_BUDGET_LIMIT.family(extra)
        spend = catalog.AI_BUDGET_SPEND.family(extra)
        today = time.strftime("%Y-%m-%d", time.gmtime(now))
        spent = self.spend if self.spend_day == today else {}
        for scope, usd in self.budgets.items():
            limit.add_metric((scope, *xv), usd)
        for scope in sorted({"total", *self.budgets}):
            spend.add_metric((scope, *xv), spent.get(scope, 0.0))
        latency = catalog.AI_LLM_LATENCY_THRESHOLD.family(extra)
        latency.add_metric(xv, self.latency_threshold)
        objective = catalog.AI_TASK_SUCCESS_OBJECTIVE.family(extra)
        objective.add_metric(xv, self.success_objective)
        return [limit, spend, latency, objective]

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
            for name, store in self.stores.items():
                rows = []
                for key, value in store.values.items():
                    labels = dict(zip(store.spec.labels, key, strict=True))
                    if isinstance(store, HistogramStore):
                        assert isinstance(value, list)
                        rows.append({"labels": labels, "count": value[-1], "sum": value[-2]})
                    else:
                        rows.append({"labels": labels, "value": value})
                out[name] = rows
            out["ai_task_queue_depth"] = _tracked_rows(self.queued, ("component", "queue"))
            out["ai_task_in_progress"] = _tracked_rows(self.running, ("component", "queue"))
            out["ai_resolution_active"] = _tracked_rows(self.loops, ("component",))
            out["ai_intervention_open"] = _tracked_rows(self.open_interventions,
                                                        ("type", "priority"))
            out["ai_security_unresolved"] = _tracked_rows(self.unresolved,
                                                          ("category", "severity"))
            out["ai_budget_spend_usd"] = dict(self.spend)
            out["ai_budget_limit_usd"] = dict(self.budgets)
        return out


def _tracked_rows(tracked: _Tracked, names: Sequence[str]) -> list[dict[str, Any]]:
    return [{"labels": dict(zip(names, key, strict=True)), "value": count}
            for key, count, _ in tracked.counts()]
