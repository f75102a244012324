"""What each event kind does to the state: one method per kind, called with the lock held.

The ``llm_call`` handler is the hot path (about half of real traffic): everything one
(operation, provider, model, error) combination touches is resolved once into an
``LlmSlot`` (the histogram rows it feeds and the counter keys), so an event costs list
updates, not lookups. The native path (``exporter/_lines.c``) applies the seven common
kinds with the same operations in the same order; ``tests/test_native.py`` holds the two
to each other bit for bit.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from typing import Any

from exporter import catalog
from exporter.aggregation.state import AiState, Heartbeat
from exporter.aggregation.stores import HistogramStore, Key, sanitize
from exporter.events import (
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

Handler = Callable[[Any, float], None]


class LlmSlot:
    """One LLM label combination resolved: its histogram rows (filled on first use, kept
    unless they folded into ``other``) and the keys of the counters it feeds."""

    __slots__ = ("cached_key", "cost_key", "duration", "input_key", "input_usage", "labels",
                 "output_key", "output_usage", "requests_key", "ttft")

    def __init__(self, labels: Key) -> None:
        _op, provider, model, error = labels
        self.labels = labels  # (operation, provider, model, error type)
        self.duration: list[float] | None = None
        self.ttft: list[float] | None = None
        self.input_usage: list[float] | None = None
        self.output_usage: list[float] | None = None
        self.requests_key = (provider, model, "error" if error else "success", error)
        self.input_key = (provider, model, "input")
        self.output_key = (provider, model, "output")
        self.cached_key = (provider, model, "cached_input")
        self.cost_key = (provider, model)


class Handlers:
    """The per-kind handlers over one state; ``by_type`` maps each event type to one."""

    def __init__(self, state: AiState) -> None:
        self.state = state
        self._llm_slots: dict[Key, LlmSlot] = {}
        self._max_slots = state.max_series
        self._duration_bounds = state.llm_duration.bounds
        self._ttft_bounds = state.llm_ttft.bounds
        self._token_bounds = state.llm_token_usage.bounds
        self.by_type: dict[type, Handler] = {
            LlmCall: self.llm_call, Task: self.task, ToolCall: self.tool_call,
            QualityGate: self.quality_gate, Resolution: self.resolution,
            Guardian: self.guardian, Intervention: self.intervention,
            SecurityEvent: self.security_event, Error: self.error,
            ProviderLimit: self.provider_limit, ComponentStatus: self.component_status,
        }

    # --- llm_call ---------------------------------------------------------------------
    def llm_call(self, e: LlmCall, now: float) -> None:
        s = self.state
        skey = (e.operation, e.provider, e.model, e.error_type)
        slot = self._llm_slots.get(skey)
        if slot is None:
            slot = self._llm_slot(skey)
        value = e.duration_seconds
        if value is not None:
            row = slot.duration or self._row(slot, "duration")
            row[bisect_left(self._duration_bounds, value)] += 1
            row[-1] += value
        value = e.time_to_first_token_seconds
        if value is not None:
            row = slot.ttft or self._row(slot, "ttft")
            row[bisect_left(self._ttft_bounds, value)] += 1
            row[-1] += value
        # Counter increments inlined (``CounterStore.inc`` without the call).
        tokens = s.llm_tokens.values
        count = e.input_tokens
        if count:
            row = slot.input_usage or self._row(slot, "input_usage")
            row[bisect_left(self._token_bounds, count)] += 1
            row[-1] += count
            try:
                tokens[slot.input_key] += count
            except KeyError:
                s.llm_tokens.add_new(slot.input_key, count)
        count = e.output_tokens
        if count:
            row = slot.output_usage or self._row(slot, "output_usage")
            row[bisect_left(self._token_bounds, count)] += 1
            row[-1] += count
            try:
                tokens[slot.output_key] += count
            except KeyError:
                s.llm_tokens.add_new(slot.output_key, count)
        count = e.cached_input_tokens
        if count:
            s.llm_tokens.inc(slot.cached_key, count)
        try:
            s.llm_requests.values[slot.requests_key] += 1
        except KeyError:
            s.llm_requests.add_new(slot.requests_key, 1)
        cost = e.cost_usd
        if cost:
            try:
                s.llm_cost.values[slot.cost_key] += cost
            except KeyError:
                s.llm_cost.add_new(slot.cost_key, cost)
            spend, budgets = s.spend_for(now)
            spend["total"] = spend.get("total", 0.0) + cost
            if e.provider in budgets:
                spend[e.provider] = spend.get(e.provider, 0.0) + cost

    def _llm_slot(self, skey: Key) -> LlmSlot:
        slot = LlmSlot(skey)
        if len(self._llm_slots) < self._max_slots:
            self._llm_slots[skey] = slot
        return slot

    def _row(self, slot: LlmSlot, which: str) -> list[float]:
        """The slot's row ``which``: kept in the slot unless it folded into ``other`` (so
        that every observation past the cap is still counted as overflow)."""
        s = self.state
        op, provider, model, _error = slot.labels
        rows: dict[str, tuple[HistogramStore, Key]] = {
            "duration": (s.llm_duration, slot.labels),
            "ttft": (s.llm_ttft, (op, provider, model)),
            "input_usage": (s.llm_token_usage, (op, provider, model, "input")),
            "output_usage": (s.llm_token_usage, (op, provider, model, "output"))}
        store, key = rows[which]
        folded = store.folds(key)
        row = store.row(key)
        if not folded:
            setattr(slot, which, row)
        return row

    # --- the other kinds --------------------------------------------------------------
    def task(self, e: Task, now: float) -> None:
        s = self.state
        component, queue, status = e.component, e.queue, e.status
        s.tasks.inc((component, queue, status))
        tid = e.task_id
        if status == "queued" or status == "retried":  # noqa: PLR1714 - faster than a set
            if tid:
                s.running.close(tid)
                s.queued.open(tid, (component, queue), now)
        elif status == "started":
            if tid:
                s.queued.close(tid)
                s.running.open(tid, (component, queue), now)
        else:
            started = None
            if tid:
                s.queued.close(tid)
                closed = s.running.close(tid)
                started = closed[1] if closed else None
            duration = e.duration_seconds
            if duration is None and started is not None:
                duration = max(now - started, 0.0)
            if duration is not None:
                s.task_duration.observe((component, queue, status), duration)

    def tool_call(self, e: ToolCall, now: float) -> None:
        s = self.state
        tool, agent, error, duration = e.tool, e.agent, e.error_type, e.duration_seconds
        if duration is not None:
            s.tool_duration.observe((tool, agent, error), duration)
        s.tool_calls.inc((tool, agent, "error" if error else "success"))

    def quality_gate(self, e: QualityGate, now: float) -> None:
        s = self.state
        s.gate_decisions.inc((e.gate, e.decision))
        if e.score is not None:
            s.gate_score.observe((e.gate,), e.score)

    def resolution(self, e: Resolution, now: float) -> None:
        s = self.state
        key = (e.component,)
        if e.action == "closed":
            s.loops.close(e.loop_id)
            s.res_closures.inc((e.component, e.outcome or "resolved"))
            return
        if e.loop_id not in s.loops.where:
            s.loops.open(e.loop_id, key, now)
        if e.action == "attempt":
            s.res_attempts.inc(key)
        else:
            s.res_incidents.inc(key)

    def guardian(self, e: Guardian, now: float) -> None:
        s = self.state
        guardian, gtype, duration = e.guardian, e.guardian_type, e.duration_seconds
        s.guardian_decisions.inc((guardian, gtype, e.verdict))
        if duration is not None:
            s.guardian_duration.observe((guardian, gtype), duration)

    def intervention(self, e: Intervention, now: float) -> None:
        s = self.state
        key = (e.type, e.priority)
        s.interventions.inc((e.type, e.priority, e.status))
        iid = e.intervention_id
        if e.status == "requested":
            s.open_interventions.open(iid, key, now)
        elif e.status == "acknowledged":
            if iid not in s.open_interventions.where:
                s.open_interventions.open(iid, key, now)
        else:
            closed = s.open_interventions.close(iid)
            if e.status == "resolved":
                wait = e.wait_seconds
                if wait is None and closed is not None:
                    wait = max(now - closed[1], 0.0)
                if wait is not None:
                    s.intervention_ttr.observe(key, wait)

    def security_event(self, e: SecurityEvent, now: float) -> None:
        s = self.state
        key = (e.category, e.severity)
        eid = e.event_id
        if e.resolved:
            if eid and s.unresolved.close(eid) is not None:
                return  # resolution of an event already counted
            s.security_events.inc(key)
            return
        if eid and eid in s.unresolved.where:
            return  # the same open event reported again
        s.security_events.inc(key)
        if eid:
            s.unresolved.open(eid, key, now)

    def error(self, e: Error, now: float) -> None:
        self.state.errors.inc((e.component, e.category))

    def provider_limit(self, e: ProviderLimit, now: float) -> None:
        s = self.state
        p = e.provider
        for limit_type, remaining, capacity in (
                ("requests", e.remaining_requests, e.limit_requests),
                ("tokens", e.remaining_tokens, e.limit_tokens)):
            if remaining is not None:
                s.rl_remaining.set((p, limit_type), float(remaining))
            if capacity is not None:
                s.rl_capacity.set((p, limit_type), float(capacity))
            if e.reset_at is not None and (remaining is not None or capacity is not None):
                s.rl_reset.set((p, limit_type), e.reset_at)

    def component_status(self, e: ComponentStatus, now: float) -> None:
        s = self.state
        name = sanitize(e.component)
        if name not in s.heartbeats and not s.admit_heartbeat(name):
            metric = catalog.AI_COMPONENT_HEARTBEAT_UP.name
            s.overflow[metric] = s.overflow.get(metric, 0.0) + 1
            return
        s.heartbeats[name] = Heartbeat(e.component_kind, sanitize(e.version), e.status, now)
