"""The native contract: the versioned store table the C ingest path binds to.

``exporter/_lines.c`` names nothing of the aggregator but what is here: the table's
version, the histogram row layout, and the stores and tracked maps by catalog metric name
with their label names (checked by the C at bind time). See exporter/native.py, "Native
contract". Changing a row layout, a label order or what a tracked map holds means bumping
``NATIVE_CONTRACT_VERSION`` here and ``CONTRACT_VERSION`` in the C together.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from exporter.aggregation.handlers import Handler
from exporter.aggregation.state import AiState
from exporter.aggregation.stores import (
    EXEMPLAR_REFRESH_SECONDS,
    GaugeStore,
    HistogramStore,
    Key,
)

NATIVE_CONTRACT_VERSION = 3
# A histogram row: per-bucket counts (not cumulative), then the +Inf count, then the sum.
HISTOGRAM_ROW = ("buckets", "+Inf", "sum")


class NativeStore(NamedTuple):
    """One store as the native path sees it: its label names (the key order), the values
    (key -> float, or key -> histogram row), ``admit(key, ...)`` for a label set not
    stored yet (``CounterStore.add_new(key, amount)``, ``HistogramStore.row(key)``), the
    bucket bounds of a histogram (None for a counter), and for a histogram its
    ``offer_exemplar(key, value, trace_id, span_id, ts)`` (called after an observation of
    an event with a trace id, with the key the observation was stored under) and its
    ``exemplars`` (key -> per-bucket exemplar or None), which the native path reads to skip
    an offer that would change nothing (``HistogramStore.offer_exemplar``: a bucket keeps
    its exemplar for ``EXEMPLAR_REFRESH_SECONDS``)."""

    labels: tuple[str, ...]
    values: dict[Key, Any]
    admit: Callable[..., Any]
    bounds: tuple[float, ...] | None
    offer: Callable[[Key, float, str, str, float], None] | None
    exemplars: dict[Key, list[Any]] | None


class NativeTracked(NamedTuple):
    """One map of open items as the native path sees it: label names, ``where`` (item ->
    key), ``groups`` (key -> {item: since}, in opening order), ``open(item, key, since)``
    for what needs admission or eviction, and the cap on open items."""

    labels: tuple[str, ...]
    where: dict[str, Key]
    groups: dict[Key, dict[str, float]]
    open: Callable[[str, Key, float], None]
    limit: int


def native_table(state: AiState, handlers: dict[type, Handler]) -> dict[str, Any]:
    """Every counter and histogram store (the ones native code may add to) and every
    tracked map by metric name, the daily spend, the prices (``price_for(provider,
    model) -> Rates | None``, asked once per label set), the handler of every event type."""
    stores = {name: NativeStore(
        store.spec.labels, store.values,
        store.row if isinstance(store, HistogramStore) else store.add_new,
        tuple(store.bounds) if isinstance(store, HistogramStore) else None,
        store.offer_exemplar if isinstance(store, HistogramStore) else None,
        store.exemplars if isinstance(store, HistogramStore) else None)
        for name, store in state.stores.items() if not isinstance(store, GaugeStore)}
    tracked = {t.spec.name: NativeTracked(t.spec.labels, t.items.where, t.items.by_key,
                                           t.items.open, t.items.limit)
               for t in state.tracked}
    return {"version": NATIVE_CONTRACT_VERSION, "histogram_row": HISTOGRAM_ROW,
            "stores": stores, "tracked": tracked, "spend_for": state.spend_for,
            "price_for": state.prices.rates,
            "exemplar_refresh_seconds": EXEMPLAR_REFRESH_SECONDS,
            "handlers": dict(handlers)}
