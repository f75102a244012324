"""What each event kind does to the state: one method per kind, called with the lock held.

The ``llm_call`` handler is the hot path (about half of real traffic): everything one
(operation, provider, model, error, response model, agent) combination touches (and the
rates of its model) is resolved once into an
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
from exporter.aggregation.stores import OTHER, HistogramStore, Key, sanitize
from exporter.events import (
    ComponentStatus,
    Error,
    Guardian,
    Intervention,
    LlmCall,
    McpCall,
    McpSession,
    ProviderLimit,
    QualityGate,
    Resolution,
    SecurityEvent,
    Task,
    ToolCall,
)
from exporter.pricing import PriceTable, Rates

Handler = Callable[[Any, float], None]


class LlmSlot:
    """One LLM label combination resolved: its histogram rows (filled on first use, kept
    unless they folded into ``other``), the keys of the counters it feeds, and the rates of
    its (provider, model) from the price table, looked up once here (None: no price)."""

    __slots__ = ("agent_input_key", "agent_output_key", "cache_creation_key",
                 "cache_read_key", "cost_key", "duration", "duration_key", "input_key",
                 "input_usage", "labels", "output_key", "output_usage", "rates",
                 "reasoning_key", "requests_key", "saving", "tpoc", "ttft")

    def __init__(self, labels: Key, rates: Rates | None) -> None:
        op, provider, model, error, response_model, agent = labels
        self.labels = labels  # (operation, provider, model, error, response model, agent)
        self.duration: list[float] | None = None
        self.ttft: list[float] | None = None
        self.tpoc: list[float] | None = None
        self.input_usage: list[float] | None = None
        self.output_usage: list[float] | None = None
        self.duration_key = (op, provider, model, error, response_model)
        self.requests_key = (provider, model, "error" if error else "success", error)
        self.input_key = (provider, model, "input")
        self.output_key = (provider, model, "output")
        self.cache_read_key = (provider, model, "cache_read")
        self.cache_creation_key = (provider, model, "cache_creation")
        self.reasoning_key = (provider, model, "reasoning")
        self.agent_input_key = (agent, model, "input")
        self.agent_output_key = (agent, model, "output")
        self.cost_key = (provider, model)
        self.rates = rates
        # dollars saved per cache-read token (never negative: a counter only grows)
        self.saving = 0.0 if rates is None else max(rates.input - rates.cache_read, 0.0)


def stored_key(store: HistogramStore, key: Key) -> Key:
    """The key an observation of ``key`` was stored under: the sanitized key, or the
    ``other`` key when it folded (what an exemplar is offered for)."""
    clean = tuple(map(sanitize, key))
    return clean if clean in store.values else (OTHER,) * len(key)


class Handlers:
    """The per-kind handlers over one state; ``by_type`` maps each event type to one."""

    def __init__(self, state: AiState) -> None:
        self.state = state
        self.prices: PriceTable = state.prices
        self._llm_slots: dict[Key, LlmSlot] = {}
        self._max_slots = state.max_series
        self._duration_bounds = state.llm_duration.bounds
        self._ttft_bounds = state.llm_ttft.bounds
        self._tpoc_bounds = state.llm_tpoc.bounds
        self._token_bounds = state.llm_token_usage.bounds
        self.by_type: dict[type, Handler] = {
            LlmCall: self.llm_call, Task: self.task, ToolCall: self.tool_call,
            QualityGate: self.quality_gate, Resolution: self.resolution,
            Guardian: self.guardian, Intervention: self.intervention,
            SecurityEvent: self.security_event, Error: self.error,
            ProviderLimit: self.provider_limit, ComponentStatus: self.component_status,
            McpCall: self.mcp_call, McpSession: self.mcp_session,
        }

    # --- llm_call ---------------------------------------------------------------------
    def llm_call(self, e: LlmCall, now: float) -> None:
        """The hot path. The native path (``handle_llm`` in exporter/_lines.c) makes the
        same store operations in the same order, and computes the same cost with the same
        floating-point expression (``Rates.cost``)."""
        s = self.state
        skey = (e.operation, e.provider, e.model, e.error_type, e.response_model, e.component)
        slot = self._llm_slots.get(skey)
        if slot is None:
            slot = self._llm_slot(skey)
        trace = e.trace_id
        value = e.duration_seconds
        if value is not None:
            row = slot.duration or self._row(slot, "duration")
            row[bisect_left(self._duration_bounds, value)] += 1
            row[-1] += value
            if trace:
                self._exemplar(s.llm_duration, slot.duration_key, value, e, now)
        value = e.time_to_first_token_seconds
        if value is not None:
            row = slot.ttft or self._row(slot, "ttft")
            row[bisect_left(self._ttft_bounds, value)] += 1
            row[-1] += value
            if trace:
                self._exemplar(s.llm_ttft, skey[:3], value, e, now)
        value = e.time_per_output_chunk_seconds
        if value is not None:
            row = slot.tpoc or self._row(slot, "tpoc")
            row[bisect_left(self._tpoc_bounds, value)] += 1
            row[-1] += value
            if trace:
                self._exemplar(s.llm_tpoc, skey[:3], value, e, now)
        # Counter increments inlined (``CounterStore.inc`` without the call).
        tokens = s.llm_tokens.values
        agents = s.agent_tokens.values
        count = input_tokens = e.input_tokens
        if count:
            row = slot.input_usage or self._row(slot, "input_usage")
            row[bisect_left(self._token_bounds, count)] += 1
            row[-1] += count
            if trace:
                self._exemplar(s.llm_token_usage, (*skey[:3], "input"), count, e, now)
            try:
                tokens[slot.input_key] += count
            except KeyError:
                s.llm_tokens.add_new(slot.input_key, count)
            try:
                agents[slot.agent_input_key] += count
            except KeyError:
                s.agent_tokens.add_new(slot.agent_input_key, count)
        count = output_tokens = e.output_tokens
        if count:
            row = slot.output_usage or self._row(slot, "output_usage")
            row[bisect_left(self._token_bounds, count)] += 1
            row[-1] += count
            if trace:
                self._exemplar(s.llm_token_usage, (*skey[:3], "output"), count, e, now)
            try:
                tokens[slot.output_key] += count
            except KeyError:
                s.llm_tokens.add_new(slot.output_key, count)
            try:
                agents[slot.agent_output_key] += count
            except KeyError:
                s.agent_tokens.add_new(slot.agent_output_key, count)
        # cache_read_input_tokens wins; the old name counts only when it is 0 / absent
        cache_read = e.cache_read_input_tokens or e.cached_input_tokens
        if cache_read:
            s.llm_tokens.inc(slot.cache_read_key, cache_read)
        cache_write = e.cache_creation_input_tokens
        if cache_write:
            s.llm_tokens.inc(slot.cache_creation_key, cache_write)
        reasoning = e.reasoning_output_tokens
        if reasoning:
            s.llm_tokens.inc(slot.reasoning_key, reasoning)
        try:
            s.llm_requests.values[slot.requests_key] += 1
        except KeyError:
            s.llm_requests.add_new(slot.requests_key, 1)
        rates = slot.rates
        cost = e.cost_usd
        if cost is None:
            if rates is None:
                self._unpriced(slot, (input_tokens, output_tokens, cache_read, cache_write,
                                      reasoning))
                return
            cost = rates.cost(input_tokens, output_tokens, cache_read, cache_write, reasoning)
        if cache_read and slot.saving:
            s.llm_cache_savings.inc(slot.cost_key, cache_read * slot.saving)
        if cost:
            try:
                s.llm_cost.values[slot.cost_key] += cost
            except KeyError:
                s.llm_cost.add_new(slot.cost_key, cost)
            spend, budgets = s.spend_for(now)
            spend["total"] = spend.get("total", 0.0) + cost
            if e.provider in budgets:
                spend[e.provider] = spend.get(e.provider, 0.0) + cost

    def _unpriced(self, slot: LlmSlot, counts: tuple[int, int, int, int, int]) -> None:
        """A call without a cost whose model has no price: it costs 0, and is counted
        (``counts``: input, output, cache read, cache creation, reasoning tokens)."""
        s = self.state
        s.llm_unpriced_requests.inc(slot.cost_key)
        unpriced = s.llm_unpriced_tokens
        keys = (slot.input_key, slot.output_key, slot.cache_read_key,
                slot.cache_creation_key, slot.reasoning_key)
        for key, count in zip(keys, counts, strict=True):
            if count:
                unpriced.inc(key, count)

    @staticmethod
    def _exemplar(store: HistogramStore, key: Key, value: float,
                  e: LlmCall | ToolCall | Task, now: float) -> None:
        store.offer_exemplar(stored_key(store, key), float(value), e.trace_id, e.span_id, now)

    def _llm_slot(self, skey: Key) -> LlmSlot:
        slot = LlmSlot(skey, self.prices.rates(skey[1], skey[2]))
        if len(self._llm_slots) < self._max_slots:
            self._llm_slots[skey] = slot
        return slot

    def _row(self, slot: LlmSlot, which: str) -> list[float]:
        """The slot's row ``which``: kept in the slot unless it folded into ``other`` (so
        that every observation past the cap is still counted as overflow)."""
        s = self.state
        op, provider, model = slot.labels[:3]
        rows: dict[str, tuple[HistogramStore, Key]] = {
            "duration": (s.llm_duration, slot.duration_key),
            "ttft": (s.llm_ttft, (op, provider, model)),
            "tpoc": (s.llm_tpoc, (op, provider, model)),
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
                key = (component, queue, status)
                s.task_duration.observe(key, duration)
                if e.trace_id:
                    self._exemplar(s.task_duration, key, duration, e, now)
                if e.operation == "invoke_agent":
                    agent_key = (component, "" if status == "succeeded" else status)
                    s.invoke_agent_duration.observe(agent_key, duration)
                    if e.trace_id:
                        self._exemplar(s.invoke_agent_duration, agent_key, duration, e, now)

    def tool_call(self, e: ToolCall, now: float) -> None:
        s = self.state
        tool, agent, error, duration = e.tool, e.agent, e.error_type, e.duration_seconds
        tool_type = e.tool_type
        if duration is not None:
            key = (tool, agent, error, tool_type)
            s.tool_duration.observe(key, duration)
            if e.trace_id:
                self._exemplar(s.tool_duration, key, duration, e, now)
        s.tool_calls.inc((tool, agent, "error" if error else "success", tool_type))

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

    # --- mcp_call, mcp_session ----------------------------------
    def mcp_call(self, e: McpCall, now: float) -> None:
        s = self.state
        store = s.mcp_client_duration if e.side == "client" else s.mcp_server_duration
        key = (e.method, e.tool, e.prompt, e.error_type, e.protocol_version, e.transport)
        value = e.duration_seconds
        store.observe(key, value)
        if e.trace_id:
            store.offer_exemplar(key, value, e.trace_id, e.span_id, now)

    def mcp_session(self, e: McpSession, now: float) -> None:
        s = self.state
        store = s.mcp_client_session if e.side == "client" else s.mcp_server_session
        key = (e.error_type, e.protocol_version, e.transport)
        value = e.duration_seconds
        store.observe(key, value)
        if e.trace_id:
            store.offer_exemplar(key, value, e.trace_id, e.span_id, now)
