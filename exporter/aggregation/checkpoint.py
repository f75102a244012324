"""The state as plain JSON-able data, and back: what a restart keeps.

The format is the one checkpoints have always held (``stores`` by metric name with
``[key, value]`` rows, histogram rows as lists laid out as ``HISTOGRAM_ROW``; ``tracked``
by metric name; ``heartbeats`` as ``[kind, version, status, last_seen]``; the day's spend
and the overflow counts), so older checkpoints restore unchanged.
"""

from __future__ import annotations

from typing import Any

from exporter import catalog
from exporter.aggregation.state import AiState, DailySpend, Heartbeat, day_bounds
from exporter.aggregation.stores import CounterStore, GaugeStore, HistogramStore


def snapshot(state: AiState) -> dict[str, Any]:
    """Call with the lock held."""
    stores = {name: [[list(key), list(value) if isinstance(value, list) else value]
                     for key, value in store.values.items()]
              for name, store in state.stores.items()}
    tracked = {t.items.name: {"items": [[item, list(key), t.items.by_key[key][item]]
                                        for item, key in t.items.where.items()],
                              "keys": [list(key) for key in t.items.by_key]}
               for t in state.tracked}
    return {"stores": stores, "tracked": tracked,
            "heartbeats": {name: list(hb) for name, hb in state.heartbeats.items()},
            "spend_day": state.spend.day, "spend": dict(state.spend.by_scope),
            "overflow": dict(state.overflow)}


def restore(state: AiState, saved: dict[str, Any], now: float) -> None:
    """Add a ``snapshot()`` into ``state`` (lock held): counters and histograms add up,
    gauges, open items and heartbeats fill in where the state has none. Rows that no
    longer fit (a metric gone, labels or histogram buckets changed) are skipped."""
    for name, rows in saved.get("stores", {}).items():
        store = state.stores.get(name)
        if store is not None:
            _restore_rows(store, rows)
    for t in state.tracked:
        tr = t.items
        kept = saved.get("tracked", {}).get(tr.name, {})
        for key in kept.get("keys", []):
            if tuple(key) not in tr.by_key and tr.admits():
                tr.by_key[tuple(key)] = {}
        for item, key, since in kept.get("items", []):
            if item not in tr.where:
                tr.open(item, tuple(key), float(since))
    for name, (kind, version, status, last) in saved.get("heartbeats", {}).items():
        if name in state.heartbeats:
            if state.heartbeats[name].last_seen < last:
                state.heartbeats[name] = Heartbeat(kind, version, status, float(last))
        elif state.admit_heartbeat(name):
            state.heartbeats[name] = Heartbeat(kind, version, status, float(last))
    # The saved day's spend comes back while that day is current: today's, or a later day
    # held when the clock has been stepped back since (DailySpend.current).
    day = str(saved.get("spend_day") or "")
    bounds = day_bounds(day) if day else None
    spend = state.spend
    if bounds is not None and DailySpend(day, *bounds).current(now):
        start, end = bounds
        if not spend.holds(start):
            spend.day, spend.start, spend.end = day, start, end
            spend.by_scope = {}
        for scope, usd in saved.get("spend", {}).items():
            spend.by_scope[scope] = spend.by_scope.get(scope, 0.0) + float(usd)
    for name, count in saved.get("overflow", {}).items():
        state.overflow[name] = state.overflow.get(name, 0.0) + float(count)


# labels appended to a metric since (gen_ai_response_model on the
# LLM duration, gen_ai_tool_type on the tool metrics) restore as "" in an older checkpoint;
# the token type cached_input is cache_read now. (The time-to-first-chunk buckets changed:
# those rows no longer fit and are skipped.)
_APPENDED_LABEL = frozenset({catalog.GEN_AI_CLIENT_OPERATION_DURATION.name,
                             catalog.GEN_AI_EXECUTE_TOOL_DURATION.name,
                             catalog.AI_TOOL_CALLS.name})
_RENAMED_TOKEN_TYPE = {"cached_input": "cache_read"}


def _migrated(name: str, key: tuple[Any, ...], width: int) -> tuple[Any, ...]:
    if len(key) == width - 1 and name in _APPENDED_LABEL:
        return (*key, "")
    if name == catalog.AI_LLM_TOKENS.name and key and key[-1] in _RENAMED_TOKEN_TYPE:
        return (*key[:-1], _RENAMED_TOKEN_TYPE[key[-1]])
    return key


def _restore_rows(store: CounterStore | HistogramStore, rows: list[list[Any]]) -> None:
    width = len(store.spec.labels)
    for raw_key, value in rows:
        key = _migrated(store.spec.name, tuple(raw_key), width)
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
