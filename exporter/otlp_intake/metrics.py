"""GenAI metrics over OTLP (``gen_ai.client.operation.duration``,
``gen_ai.client.token.usage``) as increments of the exporter's own GenAI histograms.

Cumulative streams are differenced per stream identity (resource, scope, metric name and
point attributes): the increment is the point minus the last one seen. A point that
starts later (a new ``start_time_unix_nano``) or whose count went down is a reset, and
counts whole. The first point of a stream counts whole: the stream started at its start
time, and everything since was never counted. Delta points count as they are, each once
(a retried export repeats the same start and end time, so it is recognised). The last
point of every stream is part of the state store's cursor, so a restart neither loses nor
repeats an increment.

Points whose bucket bounds are not the catalog's cannot be merged bucket by bucket: they
are rejected with that reason (an SDK view can set the advisory bounds the GenAI
conventions give, which the catalog uses).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.metrics.v1 import metrics_pb2

from exporter import catalog
from exporter.aggregator import HistogramDelta
from exporter.otlp_intake.mapping import (
    OPERATION_ALIASES,
    Attributes,
    attributes,
    operation_of,
    provider_of,
)

DURATION = "gen_ai.client.operation.duration"
TOKEN_USAGE = "gen_ai.client.token.usage"  # noqa: S105 - a metric name
GENAI_METRICS = {DURATION: tuple(float(b) for b in catalog.DURATION_BUCKETS),
                 TOKEN_USAGE: tuple(float(b) for b in catalog.TOKEN_BUCKETS)}
CUMULATIVE = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
DELTA = metrics_pb2.AGGREGATION_TEMPORALITY_DELTA


@dataclass
class Outcome:
    """What one request came to, by item (span, data point or log record): the counts of
    ``ai_exporter_otlp_intake_items_total`` and the first rejection's reason."""

    mapped: int = 0
    ignored: int = 0
    duplicate: int = 0
    rejected: int = 0
    reason: str = ""

    def reject(self, why: str, n: int = 1) -> None:
        self.rejected += n
        self.reason = self.reason or why


def _stream_key(resource: bytes, scope: str, name: str, point: Attributes) -> str:
    """A stable identity of one stream (kept in the state store, so not Python's hash)."""
    material = b"\0".join((resource, scope.encode(), name.encode(),
                           repr(sorted(point.items())).encode()))
    return hashlib.blake2b(material, digest_size=12).hexdigest()


class MetricStreams:
    """The last point of each cumulative stream, and the delta points already counted."""

    def __init__(self, max_streams: int) -> None:
        self.max_streams = max_streams
        # key -> [start_ns, count, sum, *buckets]
        self.last: OrderedDict[str, list[float]] = OrderedDict()
        self.seen_deltas: OrderedDict[str, None] = OrderedDict()

    def snapshot(self) -> dict[str, Any]:
        return {"last": dict(self.last), "deltas": list(self.seen_deltas)}

    def restore(self, saved: Any) -> None:
        if not isinstance(saved, dict):
            return
        last = saved.get("last")
        if isinstance(last, dict):
            self.last = OrderedDict((str(k), [float(x) for x in v]) for k, v in last.items()
                                    if isinstance(v, list))
        deltas = saved.get("deltas")
        if isinstance(deltas, list):
            self.seen_deltas = OrderedDict.fromkeys(str(k) for k in deltas)

    def _remember(self, table: OrderedDict[str, Any], key: str, value: Any) -> None:
        table[key] = value
        table.move_to_end(key)
        while len(table) > self.max_streams:
            table.popitem(last=False)

    def increment(self, key: str, temporality: int, point: metrics_pb2.HistogramDataPoint
                  ) -> tuple[list[float], float] | None:
        """(bucket increments, sum increment) of one point, or None for a repeat."""
        buckets = [float(c) for c in point.bucket_counts]
        total = point.sum
        if temporality == DELTA:
            ident = f"{key}:{point.start_time_unix_nano}:{point.time_unix_nano}"
            if ident in self.seen_deltas:
                return None
            self._remember(self.seen_deltas, ident, None)
            return buckets, total
        start = float(point.start_time_unix_nano)
        prev = self.last.get(key)
        self._remember(self.last, key, [start, float(point.count), total, *buckets])
        if (prev is None or prev[0] != start or point.count < prev[1]
                or len(prev) != len(buckets) + 3):
            return buckets, total
        increments = [c - p for c, p in zip(buckets, prev[3:], strict=True)]
        if any(i < 0 for i in increments):  # a reset the start time did not show
            return buckets, total
        if not any(increments) and total == prev[2]:
            return None
        return increments, total - prev[2]


def genai_points(request: Any) -> Iterator[tuple[bytes, Attributes, str, metrics_pb2.Metric]]:
    """(resource identity, resource attributes, scope name, metric) of each metric."""
    for rm in request.resource_metrics:
        resource = attributes(rm.resource.attributes)
        identity = rm.resource.SerializeToString(deterministic=True)
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                yield identity, resource, sm.scope.name, metric


def map_metrics(request: Any, streams: MetricStreams, signal_of: Any
                ) -> tuple[list[HistogramDelta], Outcome]:
    """The GenAI histogram increments of one ExportMetricsServiceRequest.

    ``signal_of(resource attributes)`` says which signal counts GenAI calls for that
    resource; where it is "traces", the GenAI metrics are ignored (counted as such)."""
    out = Outcome()
    deltas: list[HistogramDelta] = []
    for identity, resource, scope, metric in genai_points(request):
        which = metric.WhichOneof("data")
        points = getattr(metric, which).data_points if which else ()
        bounds = GENAI_METRICS.get(metric.name)
        signal = signal_of(resource) if bounds is not None else ""
        if signal == "forbidden":
            for _ in points:
                out.reject("forbidden_scope: service.name outside the credential's scope")
            continue
        if bounds is None or which != "histogram" or signal != "metrics":
            out.ignored += len(points)
            continue
        temporality = metric.histogram.aggregation_temporality
        if temporality not in (CUMULATIVE, DELTA):
            for _ in points:
                out.reject("unspecified aggregation temporality")
            continue
        for point in metric.histogram.data_points:
            if tuple(point.explicit_bounds) != bounds:
                out.reject(f"{metric.name}: bucket bounds differ from the GenAI advisory "
                           "bounds the exporter uses")
                continue
            if len(point.bucket_counts) != len(bounds) + 1:
                out.reject(f"{metric.name}: {len(point.bucket_counts)} bucket counts for "
                           f"{len(bounds)} bounds")
                continue
            attrs = attributes(point.attributes)
            key = _stream_key(identity, scope, metric.name, attrs)
            step = streams.increment(key, temporality, point)
            if step is None:
                out.duplicate += 1
                continue
            buckets, total = step
            op = operation_of(attrs) or "chat"
            model = attrs.get("gen_ai.request.model") or attrs.get("gen_ai.response.model")
            if metric.name == DURATION:
                detail = str(attrs.get("error.type") or "")
                kind = "duration"
            else:
                detail = str(attrs.get("gen_ai.token.type") or "")
                kind = "token_usage"
                if detail not in ("input", "output"):
                    out.reject(f"{metric.name}: gen_ai.token.type is {detail!r}, not input "
                               "or output")
                    continue
            deltas.append(HistogramDelta(
                kind, OPERATION_ALIASES.get(op, op), provider_of(attrs),
                str(model)[:256] if model else "unknown", detail[:256],
                tuple(buckets), total))
            out.mapped += 1
    return deltas, out
