"""prometheus_client families → OpenTelemetry SDK ``MetricsData``, as pure functions.

The Prometheus pull path stays native (see DESIGN.md: the OTel SDK aggregation is 8x
slower); the push path re-uses the very families a scrape serves and only changes their
shape. Identity comes from the metric catalog: a family whose name the catalog derives
gets the catalog's OTel name, unit, description and attribute keys, so ``system_cpu_time
_seconds_total{cpu_mode}`` goes out as ``system.cpu.time`` (unit ``s``, attribute
``cpu.mode``) — exactly what the OTel→Prometheus compatibility rules turn back into the
served name. Families the catalog does not know (prometheus_client's ``process_*``) keep
their Prometheus name.

Counters become monotonic sums, gauges gauges, histograms explicit-bucket histograms with
the same bounds. A counter's ``_created`` sample, when present, is its start time; other
cumulative series start when the process started. Delta temporality is computed from two
consecutive cumulative snapshots by ``DeltaBaseline``.

The work is done in slices (``Translator.steps`` yields every ``SLICE`` samples) so that
the pusher can give way to scrapes between two slices; ``translate`` runs it all at once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, Literal

from opentelemetry.sdk.metrics import Exemplar as SdkExemplar
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client.metrics_core import Metric as PromFamily

from exporter import catalog

Kind = Literal["counter", "gauge", "histogram"]
# Attributes as one flat tuple (key, value, key, value, ...): hashable, and a single
# container per series (pairs would add one object per label for the GC to count).
Attrs = tuple[str, ...]
SeriesKey = tuple[str, Attrs]
# Samples handled between two points where the pusher may give way to a scrape (~0.3 ms).
SLICE = 256

# Units the OTel→Prometheus translation knows (the collector's Prometheus exporters and
# Prometheus's OTLP receiver, ``otlptranslator`` unit map): they become the usual suffixes.
# Any other unit outside braces is appended to the name *as written* (no lower-casing).
TRANSLATED_UNITS = frozenset({
    "d", "h", "min", "s", "ms", "us", "ns", "By", "KiBy", "MiBy", "GiBy", "TiBy", "KBy",
    "MBy", "GBy", "TBy", "m", "V", "A", "J", "W", "g", "Cel", "Hz", "1", "%"})


def otlp_unit(unit: str) -> str:
    """The unit pushed for a catalog unit, so that a collector derives the served name.

    The catalog writes currency as the ISO code (``USD``) and serves the suffix ``_usd``;
    a collector would append the unknown unit as written (``ai_llm_cost_USD_total``), so
    such units go out lower-cased (``usd`` → ``ai_llm_cost_usd_total``). Units the
    translation knows, annotations (``{token}``) and ``x/y`` units are sent unchanged."""
    if not unit or unit in TRANSLATED_UNITS or "{" in unit or "/" in unit:
        return unit
    return unit.lower()


def attributes_dict(attrs: Attrs) -> dict[str, str]:
    """A flat attribute tuple as a mapping."""
    return dict(zip(attrs[::2], attrs[1::2], strict=True))


def seconds_to_ns(seconds: float) -> int:
    """Unix seconds → nanoseconds, rounded to the microsecond a float can hold exactly."""
    return round(seconds * 1_000_000) * 1000


@dataclass(frozen=True, slots=True)
class OtlpExemplar:
    """An exemplar of a histogram point: the value, its time and the trace it came from
    (ids as lowercase hex, as the bucket samples carry them; empty when absent)."""

    value: float
    time_ns: int
    trace_id: str
    span_id: str


@dataclass(slots=True)
class HistValue:
    """One histogram series: OTel (non-cumulative) bucket counts, one more than bounds;
    ``exemplars``: those the bucket samples carried."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    total: float
    count: int
    exemplars: tuple[OtlpExemplar, ...] = ()


def _exemplar(exemplar: Any) -> OtlpExemplar:
    """A prometheus_client ``Exemplar`` (Unix seconds, ``trace_id``/``span_id`` labels)."""
    labels = exemplar.labels
    ts = exemplar.timestamp
    return OtlpExemplar(float(exemplar.value), seconds_to_ns(float(ts)) if ts is not None else 0,
                        labels.get("trace_id", ""), labels.get("span_id", ""))


@dataclass(slots=True)
class Series:
    """One data point before it is encoded (so deltas can be taken first). Attributes are
    kept as a flat tuple: hashable, so it is the series' key and the encoder's cache key."""

    attrs: Attrs
    start_ns: int
    value: float | HistValue

    @property
    def key(self) -> Attrs:
        return self.attrs

    @property
    def attributes(self) -> dict[str, str]:
        return attributes_dict(self.attrs)


@dataclass
class OtelMetric:
    """One OTLP metric: identity plus its series."""

    name: str
    description: str
    unit: str
    kind: Kind
    series: list[Series] = field(default_factory=list)


@dataclass(frozen=True)
class _Identity:
    name: str
    description: str
    unit: str
    attributes: Mapping[str, str]  # label → attribute key, for the labels that differ


def _catalog_index() -> dict[str, catalog.MetricSpec]:
    """Family name (as handed to prometheus_client) → spec."""
    return {spec.family_name: spec for spec in catalog.all_metrics()}


class Translator:
    """Turns one scrape's families into OTel metrics; holds only the catalog index."""

    def __init__(self, specs: Mapping[str, catalog.MetricSpec] | None = None) -> None:
        self._specs = dict(specs) if specs is not None else _catalog_index()
        self._identities: dict[tuple[str, str], _Identity] = {}

    def _identity(self, family: PromFamily, kind: Kind, fallback_name: str) -> _Identity:
        cache_key = (family.name, fallback_name)
        ident = self._identities.get(cache_key)
        if ident is not None:
            return ident
        spec = self._specs.get(family.name)
        expected = {"counter": catalog.Kind.COUNTER, "gauge": catalog.Kind.GAUGE,
                    "histogram": catalog.Kind.HISTOGRAM}[kind]
        if spec is not None and spec.kind is expected:
            # Only the labels whose attribute key differs (``cpu_mode`` → ``cpu.mode``).
            renamed = {label: attribute for label, attribute
                       in zip(spec.labels, spec.attributes, strict=True) if label != attribute}
            ident = _Identity(spec.otel_name, spec.description, otlp_unit(spec.unit),
                              renamed)
        else:
            ident = _Identity(fallback_name, family.documentation, family.unit or "", {})
        self._identities[cache_key] = ident
        return ident

    def translate(self, families: Iterable[PromFamily], default_start_ns: int) -> list[OtelMetric]:
        """Every family as OTel metrics; families with no samples are left out."""
        out: list[OtelMetric] = []
        for _ in self.steps(families, default_start_ns, out):
            pass
        return out

    def steps(self, families: Iterable[PromFamily], default_start_ns: int,
              out: list[OtelMetric]) -> Iterator[None]:
        """``translate`` in slices: appends to ``out`` and yields every ``SLICE`` samples."""
        for family in families:
            if not family.samples:
                continue
            if family.type == "counter":
                yield from self._counter(family, default_start_ns, out)
            elif family.type == "gauge":
                yield from self._gauge(family, out)
            elif family.type == "histogram":
                yield from self._histogram(family, default_start_ns, out)
            else:
                out.extend(self._as_gauges(family))
            yield

    @staticmethod
    def _attrs(names: Mapping[str, str], labels: Mapping[str, str]) -> Attrs:
        if not names:
            return (*chain.from_iterable(labels.items()),)
        return (*chain.from_iterable((names.get(k, k), v) for k, v in labels.items()),)

    def _counter(self, family: PromFamily, default_start_ns: int,
                 out: list[OtelMetric]) -> Iterator[None]:
        ident = self._identity(family, "counter", f"{family.name}_total")
        total, created = f"{family.name}_total", f"{family.name}_created"
        samples = family.samples
        starts = {tuple(s.labels.items()): seconds_to_ns(s.value)
                  for s in samples if s.name == created}
        metric = OtelMetric(ident.name, ident.description, ident.unit, "counter")
        names = ident.attributes
        attrs = self._attrs
        append = metric.series.append
        for lo in range(0, len(samples), SLICE):
            for s in samples[lo:lo + SLICE]:
                if s.name == total:
                    labels = s.labels
                    start = (starts.get(tuple(labels.items()), default_start_ns) if starts
                             else default_start_ns)
                    append(Series(attrs(names, labels), start, float(s.value)))
            yield
        if metric.series:
            out.append(metric)

    def _gauge(self, family: PromFamily, out: list[OtelMetric]) -> Iterator[None]:
        name = family.name
        ident = self._identity(family, "gauge", name)
        metric = OtelMetric(ident.name, ident.description, ident.unit, "gauge")
        names = ident.attributes
        attrs = self._attrs
        append = metric.series.append
        samples = family.samples
        for lo in range(0, len(samples), SLICE):
            for s in samples[lo:lo + SLICE]:
                if s.name == name:
                    append(Series(attrs(names, s.labels), 0, float(s.value)))
            yield
        if metric.series:
            out.append(metric)

    def _as_gauges(self, family: PromFamily) -> list[OtelMetric]:
        """info, stateset, summary, untyped: each sample name becomes a gauge of that name
        (the OTel SDK data model has no summary; these keep their exposition names)."""
        by_name: dict[str, list[Any]] = {}
        for s in family.samples:
            by_name.setdefault(s.name, []).append(s)
        out = []
        for name, samples in by_name.items():
            metric = OtelMetric(name, family.documentation, "", "gauge")
            metric.series.extend(Series((*chain.from_iterable(s.labels.items()),), 0,
                                        float(s.value)) for s in samples)
            out.append(metric)
        return out

    def _histogram(self, family: PromFamily, default_start_ns: int,
                   out: list[OtelMetric]) -> Iterator[None]:
        ident = self._identity(family, "histogram", family.name)
        base = family.name
        cut = len(base)
        groups: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
        samples = family.samples
        for lo in range(0, len(samples), SLICE):
            for s in samples[lo:lo + SLICE]:
                suffix = s.name[cut:]
                if suffix == "_bucket":
                    key = tuple(item for item in s.labels.items() if item[0] != "le")
                    group = groups.get(key)
                    if group is None:
                        group = groups[key] = {"le": []}
                    group["le"].append((float(s.labels["le"]), s.value))
                    if s.exemplar is not None:
                        group.setdefault("ex", []).append(_exemplar(s.exemplar))
                elif suffix in ("_sum", "_count", "_created"):
                    group = groups.setdefault(tuple(s.labels.items()), {"le": []})
                    group[suffix] = s.value
            yield
        metric = OtelMetric(ident.name, ident.description, ident.unit, "histogram")
        names = ident.attributes
        append = metric.series.append
        for n, (key, group) in enumerate(groups.items(), 1):
            buckets = sorted(group["le"])
            count = int(group.get("_count", buckets[-1][1] if buckets else 0))
            bounds = tuple(le for le, _ in buckets if not math.isinf(le))
            counts: list[int] = []
            previous = 0
            for _, cumulative in buckets:
                counts.append(int(cumulative) - previous)
                previous = int(cumulative)
            if not buckets or not math.isinf(buckets[-1][0]):
                counts.append(count - previous)
            created = group.get("_created")
            start = seconds_to_ns(created) if created is not None else default_start_ns
            append(Series(self._attrs(names, dict(key)), start,
                          HistValue(bounds, tuple(counts), float(group.get("_sum", 0.0)),
                                    count, tuple(group.get("ex", ())))))
            if n % (SLICE // 16) == 0:
                yield
        if metric.series:
            out.append(metric)


class DeltaBaseline:
    """The last exported cumulative values, to turn the next snapshot into deltas.

    Advanced only after a successful export, so a failed export's increments are carried
    into the next delta and nothing is lost. Holds one value per live series: series
    absent from a snapshot are dropped when it is committed, so memory follows the
    (capped) series count.
    """

    def __init__(self) -> None:
        self._values: dict[SeriesKey, tuple[int, float | HistValue]] = {}

    def __len__(self) -> int:
        return len(self._values)

    def deltas(self, metrics: Sequence[OtelMetric]) -> list[OtelMetric]:
        """Counters and histograms as the change since the baseline; gauges unchanged."""
        out: list[OtelMetric] = []
        for metric in metrics:
            if metric.kind == "gauge":
                out.append(metric)
                continue
            delta = OtelMetric(metric.name, metric.description, metric.unit, metric.kind)
            for s in metric.series:
                prev = self._values.get((metric.name, s.attrs))
                delta.series.append(_delta(s, prev))
            out.append(delta)
        return out

    def commit(self, metrics: Sequence[OtelMetric], time_ns: int) -> None:
        """Make this (cumulative) snapshot the baseline of the next delta."""
        self._values = {(m.name, s.attrs): (time_ns, s.value)
                        for m in metrics if m.kind != "gauge" for s in m.series}

    def advance(self, delivered: Sequence[OtelMetric], snapshot: Sequence[OtelMetric],
                time_ns: int) -> None:
        """After a round that delivered only part of ``snapshot`` (a later request
        failed): the delivered series move to this snapshot, the others keep their
        baseline (their next delta spans the failure), vanished series are dropped."""
        old = self._values
        values = {key: old[key] for m in snapshot if m.kind != "gauge"
                  for key in ((m.name, s.attrs) for s in m.series) if key in old}
        values.update(((m.name, s.attrs), (time_ns, s.value))
                      for m in delivered if m.kind != "gauge" for s in m.series)
        self._values = values


def _delta(s: Series, prev: tuple[int, float | HistValue] | None) -> Series:
    if prev is None:
        return s  # a new series: everything since its start is new
    prev_ns, prev_value = prev
    value = s.value
    if isinstance(value, HistValue):
        if (not isinstance(prev_value, HistValue) or prev_value.bounds != value.bounds
                or value.count < prev_value.count):
            return s  # reset or re-bucketed: the cumulative value is the delta
        return Series(s.attrs, prev_ns, HistValue(
            value.bounds, tuple(a - b for a, b in zip(value.counts, prev_value.counts,
                                                      strict=True)),
            value.total - prev_value.total, value.count - prev_value.count,
            # Only the exemplars of the delta's interval (newer than the baseline).
            tuple(e for e in value.exemplars if e.time_ns > prev_ns)))
    if isinstance(prev_value, HistValue) or value < prev_value:
        return s  # counter reset
    return Series(s.attrs, prev_ns, value - prev_value)


def to_metrics_data(metrics: Sequence[OtelMetric], resource: Resource,
                    scope: InstrumentationScope, time_ns: int,
                    temporality: AggregationTemporality) -> MetricsData:
    """The SDK structure the official OTLP exporters encode and send."""
    sdk_metrics: list[Metric] = []
    for metric in metrics:
        data: Sum | Gauge | Histogram
        if metric.kind == "histogram":
            points = []
            for s in metric.series:
                h = s.value
                assert isinstance(h, HistValue)
                points.append(HistogramDataPoint(
                    attributes=attributes_dict(s.attrs), start_time_unix_nano=s.start_ns,
                    time_unix_nano=time_ns, count=h.count, sum=h.total,
                    bucket_counts=h.counts, explicit_bounds=h.bounds,
                    # Prometheus histograms carry no min/max; None leaves the field unset.
                    min=None, max=None,  # type: ignore[arg-type]
                    exemplars=[SdkExemplar(
                        {}, e.value, e.time_ns, int(e.span_id, 16) if e.span_id else None,
                        int(e.trace_id, 16) if e.trace_id else None) for e in h.exemplars]))
            data = Histogram(data_points=points, aggregation_temporality=temporality)
        else:
            numbers = [NumberDataPoint(attributes=attributes_dict(s.attrs),
                                       start_time_unix_nano=s.start_ns,
                                       time_unix_nano=time_ns, value=s.value)  # type: ignore[arg-type]
                       for s in metric.series]
            if metric.kind == "counter":
                data = Sum(data_points=numbers, aggregation_temporality=temporality,
                           is_monotonic=True)
            else:
                data = Gauge(data_points=numbers)
        sdk_metrics.append(Metric(name=metric.name, description=metric.description,
                                  unit=metric.unit, data=data))
    return MetricsData(resource_metrics=[ResourceMetrics(
        resource=resource,
        scope_metrics=[ScopeMetrics(scope=scope, metrics=sdk_metrics, schema_url="")],
        schema_url="")])


def series_count(metrics: Sequence[OtelMetric]) -> int:
    return sum(len(m.series) for m in metrics)


def batches(metrics: Sequence[OtelMetric], max_points: int) -> list[list[OtelMetric]]:
    """Metrics in groups of at most ``max_points`` data points, one OTLP request each;
    a large metric is split over several requests (same identity in each)."""
    out: list[list[OtelMetric]] = []
    current: list[OtelMetric] = []
    room = max_points
    for metric in metrics:
        series = metric.series
        lo = 0
        while lo < len(series):
            take = series[lo:lo + room]
            part = metric if lo == 0 and len(take) == len(series) else OtelMetric(
                metric.name, metric.description, metric.unit, metric.kind, take)
            current.append(part)
            lo += len(take)
            room -= len(take)
            if room == 0:
                out.append(current)
                current, room = [], max_points
    if current:
        out.append(current)
    return out
