"""The AI state itself: every store, tracked map, heartbeat and today's spend, by name.

One object holds it all so the handlers, the views, the checkpoint and the native table
share one definition of what exists (and the aggregator's lock guards one thing). Only
construction lives here: what events do to it is ``handlers``, what scrapes read is
``views``, what a restart keeps is ``checkpoint``.
"""

from __future__ import annotations

import calendar
import time
from dataclasses import dataclass, field
from typing import NamedTuple, TypeVar

from exporter import catalog
from exporter.aggregation.stores import (
    CounterStore,
    GaugeStore,
    HistogramStore,
    SampleBudget,
    Tracked,
)
from exporter.catalog import MetricSpec
from exporter.pricing import PriceTable

# A component's heartbeat is three samples: up, last seen and info.
HEARTBEAT_SAMPLES = 3
_S = TypeVar("_S", bound="CounterStore | HistogramStore")


class Heartbeat(NamedTuple):
    """The last heartbeat of one component (checkpointed as a list in this order)."""

    kind: str
    version: str
    status: str
    last_seen: float


class TrackedMetric(NamedTuple):
    """A tracked map and the metrics it is exposed as: the open count, and the age of the
    oldest open item where there is one."""

    spec: MetricSpec
    age: MetricSpec | None
    items: Tracked


# The longest step back of the wall clock that keeps the day held (see DailySpend.current).
MAX_STEP_BACK = 86400.0


def utc_day(now: float) -> tuple[str, float, float]:
    """The UTC day of ``now`` and its bounds, for the daily spend reset."""
    day = time.gmtime(now)
    start = float(calendar.timegm((day.tm_year, day.tm_mon, day.tm_mday, 0, 0, 0)))
    return time.strftime("%Y-%m-%d", day), start, start + 86400.0


def day_bounds(day: str) -> tuple[float, float] | None:
    """The bounds of a UTC day written as ``utc_day`` writes it; None if it is not one."""
    try:
        parsed = time.strptime(day, "%Y-%m-%d")
    except ValueError:
        return None
    start = float(calendar.timegm(parsed))
    return start, start + 86400.0


@dataclass(slots=True)
class DailySpend:
    """Spend per scope (``total`` and each budgeted provider) for one UTC day."""

    day: str = ""
    start: float = 0.0
    end: float = 0.0
    by_scope: dict[str, float] = field(default_factory=dict)

    def holds(self, now: float) -> bool:
        """Whether ``now`` falls in the day held."""
        return self.start <= now < self.end

    def current(self, now: float) -> bool:
        """Whether the day held is still the one to count into at ``now``: ``now`` falls in
        it, or before it by less than ``MAX_STEP_BACK`` (the wall clock was stepped back,
        across midnight perhaps). The day held never moves backwards: its spend is neither
        dropped nor started again at 0, and when the clock comes forward again it is still
        there, once (a budget errs towards counting spend, never towards forgetting it).
        A clock further back than that is a different day: the spend starts afresh."""
        return self.start - MAX_STEP_BACK <= now < self.end

    def today(self, now: float) -> dict[str, float]:
        """The spend dict of ``now``'s day, started afresh (a new dict) past the day held."""
        if not self.current(now):
            self.day, self.start, self.end = utc_day(now)
            self.by_scope = {}
        return self.by_scope


class AiState:
    """Every piece of event-fed state, by name, bounded by the caps given."""

    def __init__(self, *, max_series: int, max_tracked: int, max_samples: int,
                 budgets: dict[str, float], prices: PriceTable | None = None) -> None:
        self.overflow: dict[str, float] = {}
        # The prices in force: rates looked up once per LLM label set (handlers, native).
        self.prices: PriceTable = PriceTable() if prices is None else prices
        self.budget = SampleBudget(max_samples)
        self.budgets = budgets
        self.stores: dict[str, CounterStore | HistogramStore] = {}
        self.max_series = max_series
        cap, of, budget = max_series, self.overflow, self.budget

        def c(spec: MetricSpec) -> CounterStore:
            return self._add(CounterStore(spec, cap, of, budget))

        def g(spec: MetricSpec) -> GaugeStore:
            return self._add(GaugeStore(spec, cap, of, budget))

        def h(spec: MetricSpec) -> HistogramStore:
            return self._add(HistogramStore(spec, cap, of, budget))

        def t(spec: MetricSpec, age: MetricSpec | None = None) -> Tracked:
            return Tracked(spec.name, max_tracked, max_series, of, budget=budget,
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
        # MCP operations and sessions, by side
        self.mcp_client_duration = h(catalog.MCP_CLIENT_OPERATION_DURATION)
        self.mcp_server_duration = h(catalog.MCP_SERVER_OPERATION_DURATION)
        self.mcp_client_session = h(catalog.MCP_CLIENT_SESSION_DURATION)
        self.mcp_server_session = h(catalog.MCP_SERVER_SESSION_DURATION)
        self.queued = t(catalog.AI_TASK_QUEUE_DEPTH, catalog.AI_TASK_QUEUE_OLDEST_AGE)
        self.running = t(catalog.AI_TASK_IN_PROGRESS)
        self.loops = t(catalog.AI_RESOLUTION_ACTIVE, catalog.AI_RESOLUTION_OLDEST_ACTIVE_AGE)
        self.open_interventions = t(catalog.AI_INTERVENTION_OPEN,
                                    catalog.AI_INTERVENTION_OLDEST_OPEN_AGE)
        self.unresolved = t(catalog.AI_SECURITY_UNRESOLVED)
        self.tracked: tuple[TrackedMetric, ...] = (
            TrackedMetric(catalog.AI_TASK_QUEUE_DEPTH, catalog.AI_TASK_QUEUE_OLDEST_AGE,
                          self.queued),
            TrackedMetric(catalog.AI_TASK_IN_PROGRESS, None, self.running),
            TrackedMetric(catalog.AI_RESOLUTION_ACTIVE, catalog.AI_RESOLUTION_OLDEST_ACTIVE_AGE,
                          self.loops),
            TrackedMetric(catalog.AI_INTERVENTION_OPEN, catalog.AI_INTERVENTION_OLDEST_OPEN_AGE,
                          self.open_interventions),
            TrackedMetric(catalog.AI_SECURITY_UNRESOLVED, None, self.unresolved))
        # --- llm_call: cost, cache savings, agent tokens, streaming, agent runs ---------
        self.llm_tpoc = h(catalog.GEN_AI_CLIENT_TIME_PER_OUTPUT_CHUNK)
        self.llm_unpriced_requests = c(catalog.AI_LLM_UNPRICED_REQUESTS)
        self.llm_unpriced_tokens = c(catalog.AI_LLM_UNPRICED_TOKENS)
        self.llm_cache_savings = c(catalog.AI_LLM_CACHE_SAVINGS)
        self.agent_tokens = c(catalog.AI_AGENT_TOKENS)
        self.invoke_agent_duration = h(catalog.GEN_AI_INVOKE_AGENT_DURATION)
        self.heartbeats: dict[str, Heartbeat] = {}
        self.max_components = max_series
        self.spend = DailySpend()

    def _add(self, store: _S) -> _S:
        self.stores[store.spec.name] = store
        return store

    def spend_for(self, now: float) -> tuple[dict[str, float], dict[str, float]]:
        """Today's spend (started afresh when ``now`` is past the day it holds) and the
        budgets; shared with the native path, which adds to the same dict."""
        return self.spend.today(now), self.budgets

    def admit_heartbeat(self, name: str) -> bool:
        """Whether a component not held yet fits (its samples are then charged)."""
        return (len(self.heartbeats) < self.max_components
                and self.budget.take(HEARTBEAT_SAMPLES))
