"""What scrapes and the JSON routes read from the state: families, summary, components.

Each view is two steps: a copy of the state taken under the aggregator's lock (cheap: the
stores' rows, the tracked counts), then the families built from the copy outside it, so a
scrape of many series does not stall ingest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client.metrics_core import Metric

from exporter import catalog
from exporter.aggregation.state import AiState, Heartbeat
from exporter.aggregation.stores import CounterStore, HistogramStore, Key
from exporter.catalog import MetricSpec
from exporter.deadline import check


@dataclass(frozen=True, slots=True)
class ViewConfig:
    """What the views add from configuration: extra labels, thresholds, objectives."""

    extra_names: tuple[str, ...]
    extra_values: Key
    heartbeat_timeout: float
    latency_threshold: float
    success_objective: float


@dataclass(frozen=True, slots=True)
class ScrapeCopy:
    """The state as one scrape sees it, copied under the lock."""

    now: float
    rows: list[tuple[CounterStore | HistogramStore, list[tuple[Key, Any]]]]
    tracked: list[tuple[MetricSpec, MetricSpec | None, list[tuple[Key, int, float | None]]]]
    heartbeats: list[tuple[str, Heartbeat]]
    spent: dict[str, float]
    budgets: dict[str, float]
    overflow: list[tuple[str, float]]
    samples_used: int
    samples_limit: int
    # Exemplar rows per histogram store (by metric name), where any were offered: the
    # stores' own rows, not copies (``HistogramStore.exemplar_snapshot`` says why).
    exemplars: dict[str, dict[Key, Any]]


def copy_for_scrape(state: AiState, now: float) -> ScrapeCopy:
    """Call with the lock held."""
    return ScrapeCopy(
        now=now,
        rows=[(store, store.snapshot()) for store in state.stores.values()],
        tracked=[(t.spec, t.age, list(t.items.counts())) for t in state.tracked],
        heartbeats=list(state.heartbeats.items()),
        spent=dict(state.spend.by_scope) if state.spend.current(now) else {},
        budgets=dict(state.budgets),
        overflow=list(state.overflow.items()),
        samples_used=state.budget.used, samples_limit=state.budget.limit,
        exemplars={name: store.exemplar_snapshot() for name, store in state.stores.items()
                   if isinstance(store, HistogramStore) and store.exemplars})


def families(copy: ScrapeCopy, config: ViewConfig, deadline: float | None) -> list[Metric]:
    """Every AI family of one scrape (past ``deadline``: ``TimeoutError``). The stores'
    families write their lines when rendered, looking at the deadline as they go."""
    extra, xv, now = config.extra_names, config.extra_values, copy.now
    out = []
    exemplars = copy.exemplars
    for store, snap in copy.rows:
        ex = exemplars.get(store.spec.name) if exemplars else None
        # The stores' families format their lines when rendered (under the deadline).
        if ex is None:
            out.append(store.family(extra, xv, snap))
        else:
            assert isinstance(store, HistogramStore)
            out.append(store.family(extra, xv, snap, ex))
    check(deadline)
    for count_spec, age_spec, counts in copy.tracked:
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
    out.extend(_heartbeat_families(copy.heartbeats, config, now))
    out.extend(_budget_families(copy.spent, copy.budgets, config))
    overflow = catalog.EXPORTER_SERIES_OVERFLOW.family()
    for name, folded in copy.overflow:
        overflow.add_metric([name], folded)
    series = catalog.EXPORTER_SERIES.family()
    for store, snap in copy.rows:
        series.add_metric([store.spec.name], float(len(snap)))
    samples = catalog.EXPORTER_SAMPLES.family()
    samples.add_metric([], float(copy.samples_used))
    samples_limit = catalog.EXPORTER_SAMPLES_LIMIT.family()
    samples_limit.add_metric([], float(copy.samples_limit))
    out.extend((overflow, series, samples, samples_limit))
    return out


def _heartbeat_families(heartbeats: list[tuple[str, Heartbeat]], config: ViewConfig,
                        now: float) -> list[Metric]:
    extra, xv = config.extra_names, config.extra_values
    up = catalog.AI_COMPONENT_HEARTBEAT_UP.family(extra)
    seen = catalog.AI_COMPONENT_HEARTBEAT_LAST_SEEN.family(extra)
    info = catalog.AI_COMPONENT_INFO.family(extra)
    for name, (kind, version, status, last) in heartbeats:
        fresh = now - last <= config.heartbeat_timeout
        up.add_metric((name, kind, *xv), 1.0 if fresh and status != "down" else 0.0)
        seen.add_metric((name, kind, *xv), last)
        info.add_metric((name, kind, version, status, *xv), 1.0)
    return [up, seen, info]


def _budget_families(spent: dict[str, float], budgets: dict[str, float],
                     config: ViewConfig) -> list[Metric]:
    extra, xv = config.extra_names, config.extra_values
    limit = catalog.AI_BUDGET_LIMIT.family(extra)
    spend = catalog.AI_BUDGET_SPEND.family(extra)
    for scope, usd in budgets.items():
        limit.add_metric((scope, *xv), usd)
    for scope in sorted({"total", *budgets}):
        spend.add_metric((scope, *xv), spent.get(scope, 0.0))
    latency = catalog.AI_LLM_LATENCY_THRESHOLD.family(extra)
    latency.add_metric(xv, config.latency_threshold)
    objective = catalog.AI_TASK_SUCCESS_OBJECTIVE.family(extra)
    objective.add_metric(xv, config.success_objective)
    return [limit, spend, latency, objective]


def series_count(state: AiState) -> int:
    """Label sets held across every store and tracked map (call with the lock held)."""
    return (sum(len(s.values) for s in state.stores.values())
            + sum(len(t.items.by_key) for t in state.tracked) + len(state.heartbeats))


def components(heartbeats: Sequence[tuple[str, Heartbeat]], now: float,
               timeout: float) -> list[dict[str, Any]]:
    """The components' heartbeats for /api/status/ai, by name."""
    return [{"component": name, "kind": kind, "version": version, "status": status,
             "last_seen": last, "fresh": now - last <= timeout}
            for name, (kind, version, status, last) in sorted(heartbeats)]


def summary(state: AiState, now: float) -> dict[str, Any]:
    """Current aggregates, keyed by metric name, for /api/metrics/ai (lock held)."""
    out: dict[str, Any] = {}
    for name, store in state.stores.items():
        rows = []
        for key, value in store.values.items():
            labels = dict(zip(store.spec.labels, key, strict=True))
            if isinstance(value, list):
                rows.append({"labels": labels, "count": sum(value[:-1]), "sum": value[-1]})
            else:
                rows.append({"labels": labels, "value": value})
        out[name] = rows
    for tracked in state.tracked:
        spec = tracked.spec
        out[spec.name] = [{"labels": dict(zip(spec.labels, key, strict=True)), "value": count}
                          for key, count, _ in tracked.items.counts()]
    spent = state.spend.by_scope if state.spend.current(now) else {}
    out[catalog.AI_BUDGET_SPEND.name] = {
        scope: spent.get(scope, 0.0) for scope in sorted({"total", *state.budgets})}
    out[catalog.AI_BUDGET_LIMIT.name] = dict(state.budgets)
    out[catalog.EXPORTER_SERIES_OVERFLOW.name] = dict(state.overflow)
    return out
