"""GenAI metrics over OTLP (``gen_ai.client.operation.duration``,
``gen_ai.client.token.usage``, ``gen_ai.client.operation.time_to_first_chunk`` and
``gen_ai.client.operation.time_per_output_chunk``) as increments of the exporter's own GenAI
histograms: the rows spans and ``llm_call`` events feed (the duration's
``gen_ai.response.model`` label included; token usage points of the types input, output,
cache_read, cache_creation and reasoning, which also add to ``ai_llm_tokens_total``). The
MCP histograms (``mcp.{client,server}.{operation,session}.duration``) merge the
same way into the rows ``mcp_call`` / ``mcp_session`` events feed, on the MCP bounds.

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
from dataclasses import dataclass, field
from typing import Any, NamedTuple

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
# the streaming histograms, on the catalog's (advisory) bounds
TIME_TO_FIRST_CHUNK = "gen_ai.client.operation.time_to_first_chunk"
TIME_PER_OUTPUT_CHUNK = "gen_ai.client.operation.time_per_output_chunk"
GENAI_METRICS = {DURATION: tuple(float(b) for b in catalog.DURATION_BUCKETS),
                 TOKEN_USAGE: tuple(float(b) for b in catalog.TOKEN_BUCKETS),
                 TIME_TO_FIRST_CHUNK: tuple(float(b) for b in catalog.TTFT_BUCKETS),
                 TIME_PER_OUTPUT_CHUNK: tuple(float(b) for b in catalog.TPOC_BUCKETS)}
STREAMING = {TIME_TO_FIRST_CHUNK: catalog.GEN_AI_CLIENT_TIME_TO_FIRST_CHUNK.name,
             TIME_PER_OUTPUT_CHUNK: catalog.GEN_AI_CLIENT_TIME_PER_OUTPUT_CHUNK.name}
# gen_ai.token.type: the conventions' input and output, and the exporter's subset types
TOKEN_TYPES = ("input", "output", "cache_read", "cache_creation", "reasoning")
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
    # the mcp.* histogram increments (``Aggregator.merge_rows``)
    rows: list[RowDelta] = field(default_factory=list)

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
        if metric.name in MCP_METRICS:
            _mcp_metric(identity, resource, scope, metric, streams=streams,
                        signal_of=signal_of, out=out)
            continue
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
            operation = OPERATION_ALIASES.get(op, op)
            model_label = str(model)[:256] if model else "unknown"
            streaming = STREAMING.get(metric.name)
            if streaming is not None:  # the same rows as an llm_call's (op, provider, model)
                out.rows.append(RowDelta(streaming, (operation, provider_of(attrs),
                                                     model_label), tuple(buckets), total))
                out.mapped += 1
                continue
            response_model = ""
            if metric.name == DURATION:
                detail = str(attrs.get("error.type") or "")
                kind = "duration"
                answered = attrs.get("gen_ai.response.model")
                response_model = answered[:256] if isinstance(answered, str) else ""
            else:
                detail = str(attrs.get("gen_ai.token.type") or "")
                kind = "token_usage"
                if detail not in TOKEN_TYPES:
                    out.reject(f"{metric.name}: gen_ai.token.type is {detail!r}, not one of "
                               f"{', '.join(TOKEN_TYPES)}")
                    continue
            deltas.append(HistogramDelta(
                kind, operation, provider_of(attrs), model_label, detail[:256],
                tuple(buckets), total, response_model))
            out.mapped += 1
    return deltas, out


# --- mcp.* metric points --------------------------------------------
MCP_METRICS = {spec.otel_name: spec for spec in (
    catalog.MCP_CLIENT_OPERATION_DURATION, catalog.MCP_SERVER_OPERATION_DURATION,
    catalog.MCP_CLIENT_SESSION_DURATION, catalog.MCP_SERVER_SESSION_DURATION)}
MCP_BOUNDS = tuple(float(b) for b in catalog.MCP_BUCKETS)


class RowDelta(NamedTuple):
    """An increment of one row of an MCP histogram: the store (Prometheus name), the
    label values in the catalog's attribute order, per-bucket counts (+Inf last), sum."""

    metric: str
    key: tuple[str, ...]
    buckets: tuple[float, ...]
    total: float


def _mcp_metric(identity: bytes, resource: Attributes, scope: str,
                metric: metrics_pb2.Metric, *, streams: MetricStreams, signal_of: Any,
                out: Outcome) -> None:
    """The points of one ``mcp.*`` histogram, as the GenAI ones: differenced per stream,
    merged where ``signal_of`` says metrics count for the resource (the spans are ignored
    there), on the spec's bounds only. The labels are the catalog's attributes, an absent
    one empty; every other attribute (``mcp.session.id``, ``server.address``, ...) is
    dropped, so a stream per session adds to one row."""
    which = metric.WhichOneof("data")
    points = getattr(metric, which).data_points if which else ()
    signal = signal_of(resource)
    if signal == "forbidden":
        for _ in points:
            out.reject("forbidden_scope: service.name outside the credential's scope")
        return
    if which != "histogram" or signal != "metrics":
        out.ignored += len(points)
        return
    temporality = metric.histogram.aggregation_temporality
    if temporality not in (CUMULATIVE, DELTA):
        for _ in points:
            out.reject("unspecified aggregation temporality")
        return
    spec = MCP_METRICS[metric.name]
    for point in metric.histogram.data_points:
        if tuple(point.explicit_bounds) != MCP_BOUNDS:
            out.reject(f"{metric.name}: bucket bounds differ from the MCP advisory bounds "
                       "the exporter uses")
            continue
        if len(point.bucket_counts) != len(MCP_BOUNDS) + 1:
            out.reject(f"{metric.name}: {len(point.bucket_counts)} bucket counts for "
                       f"{len(MCP_BOUNDS)} bounds")
            continue
        attrs = attributes(point.attributes)
        step = streams.increment(_stream_key(identity, scope, metric.name, attrs),
                                 temporality, point)
        if step is None:
            out.duplicate += 1
            continue
        buckets, total = step
        key = tuple(str(attrs.get(a, ""))[:256] for a in spec.attributes)
        out.rows.append(RowDelta(spec.name, key, tuple(buckets), total))
        out.mapped += 1
