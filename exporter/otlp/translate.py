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
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

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
SeriesKey = tuple[str, tuple[tuple[str, str], ...]]


def seconds_to_ns(seconds: float) -> int:
    """Unix seconds → nanoseconds, rounded to the microsecond a float can hold exactly."""
    return round(seconds * 1_000_000) * 1000


@dataclass(slots=True)
class HistValue:
    """One histogram series: OTel (non-cumulative) bucket counts, one more than bounds."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    total: float
    count: int


@dataclass(slots=True)
class Series:
    """One data point before it becomes an SDK point (so deltas can be taken first)."""

    attributes: dict[str, str]
    start_ns: int
    value: float | HistValue

    @property
    def key(self) -> tuple[tuple[str, str], ...]:
        return tuple(self.attributes.items())


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
    attributes: Mapping[str, str]


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
            ident = _Identity(spec.otel_name, spec.description, spec.unit,
                              dict(zip(spec.labels, spec.attributes, strict=True)))
        else:
            ident = _Identity(fallback_name, family.documentation, family.unit or "", {})
        self._identities[cache_key] = ident
        return ident

    def translate(self, families: Iterable[PromFamily], default_start_ns: int) -> list[OtelMetric]:
        """Every family as OTel metrics; families with no samples are left out."""
        out: list[OtelMetric] = []
        for family in families:
            if not family.samples:
                continue
            if family.type == "counter":
                out.append(self._counter(family, default_start_ns))
            elif family.type == "gauge":
                out.append(self._gauge(family, family.name, family.samples))
            elif family.type == "histogram":
                out.append(self._histogram(family, default_start_ns))
            else:
                out.extend(self._as_gauges(family))
        return out

    @staticmethod
    def _attrs(ident: _Identity, labels: Mapping[str, str]) -> dict[str, str]:
        names = ident.attributes
        return {names.get(k, k): v for k, v in labels.items()}

    def _counter(self, family: PromFamily, default_start_ns: int) -> OtelMetric:
        ident = self._identity(family, "counter", f"{family.name}_total")
        total, created = f"{family.name}_total", f"{family.name}_created"
        starts: dict[tuple[tuple[str, str], ...], int] = {}
        for s in family.samples:
            if s.name == created:
                starts[tuple(s.labels.items())] = seconds_to_ns(s.value)
        metric = OtelMetric(ident.name, ident.description, ident.unit, "counter")
        names = ident.attributes
        append = metric.series.append
        for s in family.samples:
            if s.name == total:
                start = (starts.get(tuple(s.labels.items()), default_start_ns) if starts
                         else default_start_ns)
                append(Series({names.get(k, k): v for k, v in s.labels.items()}, start,
                              float(s.value)))
        return metric

    def _gauge(self, family: PromFamily, name: str, samples: Sequence[Any]) -> OtelMetric:
        ident = self._identity(family, "gauge", name)
        metric = OtelMetric(ident.name, ident.description, ident.unit, "gauge")
        metric.series.extend(Series(self._attrs(ident, s.labels), 0, float(s.value))
                             for s in samples if s.name == name)
        return metric

    def _as_gauges(self, family: PromFamily) -> list[OtelMetric]:
        """info, stateset, summary, untyped: each sample name becomes a gauge of that name
        (the OTel SDK data model has no summary; these keep their exposition names)."""
        by_name: dict[str, list[Any]] = {}
        for s in family.samples:
            by_name.setdefault(s.name, []).append(s)
        out = []
        for name, samples in by_name.items():
            ident = _Identity(name, family.documentation, "", {})
            metric = OtelMetric(name, ident.description, "", "gauge")
            metric.series.extend(Series(dict(s.labels), 0, float(s.value)) for s in samples)
            out.append(metric)
        return out

    def _histogram(self, family: PromFamily, default_start_ns: int) -> OtelMetric:
        ident = self._identity(family, "histogram", family.name)
        base = family.name
        groups: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
        for s in family.samples:
            suffix = s.name[len(base):]
            if suffix == "_bucket":
                key = tuple(item for item in s.labels.items() if item[0] != "le")
                group = groups.get(key)
                if group is None:
                    group = groups[key] = {"labels": dict(key), "le": []}
                group["le"].append((float(s.labels["le"]), s.value))
            elif suffix in ("_sum", "_count", "_created"):
                group = groups.setdefault(tuple(s.labels.items()),
                                          {"labels": dict(s.labels), "le": []})
                group[suffix] = s.value
        metric = OtelMetric(ident.name, ident.description, ident.unit, "histogram")
        for group in groups.values():
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
            metric.series.append(Series(
                self._attrs(ident, group["labels"]), start,
                HistValue(bounds, tuple(counts), float(group.get("_sum", 0.0)), count)))
        return metric


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
                prev = self._values.get((metric.name, s.key))
                delta.series.append(_delta(s, prev))
            out.append(delta)
        return out

    def commit(self, metrics: Sequence[OtelMetric], time_ns: int) -> None:
        """Make this (cumulative) snapshot the baseline of the next delta."""
        self._values = {(m.name, s.key): (time_ns, s.value)
                        for m in metrics if m.kind != "gauge" for s in m.series}


def _delta(s: Series, prev: tuple[int, float | HistValue] | None) -> Series:
    if prev is None:
        return s  # a new series: everything since its start is new
    prev_ns, prev_value = prev
    value = s.value
    if isinstance(value, HistValue):
        if (not isinstance(prev_value, HistValue) or prev_value.bounds != value.bounds
                or value.count < prev_value.count):
            return s  # reset or re-bucketed: the cumulative value is the delta
        return Series(s.attributes, prev_ns, HistValue(
            value.bounds, tuple(a - b for a, b in zip(value.counts, prev_value.counts,
                                                      strict=True)),
            value.total - prev_value.total, value.count - prev_value.count))
    if isinstance(prev_value, HistValue) or value < prev_value:
        return s  # counter reset
    return Series(s.attributes, prev_ns, value - prev_value)


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
                    attributes=s.attributes, start_time_unix_nano=s.start_ns,
                    time_unix_nano=time_ns, count=h.count, sum=h.total,
                    bucket_counts=h.counts, explicit_bounds=h.bounds,
                    # Prometheus histograms carry no min/max; None leaves the field unset.
                    min=None, max=None))  # type: ignore[arg-type]
            data = Histogram(data_points=points, aggregation_temporality=temporality)
        else:
            numbers = [NumberDataPoint(attributes=s.attributes, start_time_unix_nano=s.start_ns,
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
