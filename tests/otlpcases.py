"""Builders of OTLP requests (opentelemetry-proto messages) for the intake tests and the
benchmark: GenAI spans, MCP spans, ``ai.*`` log records, GenAI histogram points."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2

from exporter import catalog

SECOND = 1_000_000_000
CLIENT = 3
SERVER = 2


def kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def chat_attrs(model: str = "gpt-4o-mini", provider: str = "openai", input_tokens: int = 10,
               output_tokens: int = 5, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"gen_ai.operation.name": "chat", "gen_ai.provider.name": provider,
            "gen_ai.request.model": model, "gen_ai.response.model": model,
            "gen_ai.usage.input_tokens": input_tokens,
            "gen_ai.usage.output_tokens": output_tokens, "server.address": "127.0.0.1",
            **(extra or {})}


def traces(spans: Sequence[dict[str, Any]], service: str = "agent-svc",
           trace: int = 1, scope: str = "tests") -> ExportTraceServiceRequest:
    """One resource with ``spans``: each a dict of ``attrs`` and optional ``name``,
    ``kind``, ``span`` (its id number), ``parent`` (the parent's id number), ``error``
    (status ERROR), ``seconds``."""
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.append(kv("service.name", service))
    ss = rs.scope_spans.add()
    ss.scope.name = scope
    for i, spec in enumerate(spans):
        span = ss.spans.add()
        span.trace_id = trace.to_bytes(16, "big")
        span.span_id = int(spec.get("span", i + 1)).to_bytes(8, "big")
        if "parent" in spec:
            span.parent_span_id = int(spec["parent"]).to_bytes(8, "big")
        span.name = str(spec.get("name", "chat gpt-4o-mini"))
        span.kind = int(spec.get("kind", CLIENT))
        span.start_time_unix_nano = 100 * SECOND
        span.end_time_unix_nano = 100 * SECOND + int(float(spec.get("seconds", 0.5)) * SECOND)
        if spec.get("error"):
            span.status.code = 2
        span.attributes.extend(kv(k, v) for k, v in spec["attrs"].items())
    return request


def logs(records: Sequence[dict[str, Any]], service: str = "agent-svc",
         event_names: Sequence[str] = ()) -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    rl = request.resource_logs.add()
    rl.resource.attributes.append(kv("service.name", service))
    sl = rl.scope_logs.add()
    for i, attrs in enumerate(records):
        record = sl.log_records.add()
        record.time_unix_nano = (200 + i) * SECOND
        if i < len(event_names):
            record.event_name = event_names[i]
        record.attributes.extend(kv(k, v) for k, v in attrs.items())
    return request


def histogram_point(values: Sequence[float], bounds: Sequence[float], attrs: dict[str, Any],
                    start: int = 50, end: int = 60) -> metrics_pb2.HistogramDataPoint:
    point = metrics_pb2.HistogramDataPoint()
    point.start_time_unix_nano = start * SECOND
    point.time_unix_nano = end * SECOND
    counts = [0] * (len(bounds) + 1)
    for value in values:
        counts[sum(1 for b in bounds if value > b)] += 1
    point.bucket_counts.extend(counts)
    point.explicit_bounds.extend(bounds)
    point.count = len(values)
    point.sum = float(sum(values))
    point.attributes.extend(kv(k, v) for k, v in attrs.items())
    return point


def genai_metrics(durations: Sequence[float], input_tokens: Sequence[int],
                  service: str = "metrics-svc", temporality: int = 2, start: int = 50,
                  end: int = 60, bounds: Sequence[float] | None = None,
                  model: str = "gpt-4o-mini") -> ExportMetricsServiceRequest:
    """gen_ai.client.operation.duration and gen_ai.client.token.usage (input) points;
    temporality 2 is cumulative, 1 delta."""
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
             "gen_ai.request.model": model}
    request = ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    rm.resource.attributes.append(kv("service.name", service))
    sm = rm.scope_metrics.add()
    sm.scope.name = "tests"
    duration = sm.metrics.add()
    duration.name = "gen_ai.client.operation.duration"
    duration.unit = "s"
    duration.histogram.aggregation_temporality = temporality
    duration.histogram.data_points.append(histogram_point(
        durations, bounds if bounds is not None else catalog.DURATION_BUCKETS, attrs,
        start, end))
    usage = sm.metrics.add()
    usage.name = "gen_ai.client.token.usage"
    usage.histogram.aggregation_temporality = temporality
    usage.histogram.data_points.append(histogram_point(
        [float(t) for t in input_tokens], catalog.TOKEN_BUCKETS,
        {**attrs, "gen_ai.token.type": "input"}, start, end))
    other = sm.metrics.add()
    other.name = "http.client.request.duration"
    other.histogram.aggregation_temporality = temporality
    other.histogram.data_points.append(histogram_point([0.1], (0.5,), {}, start, end))
    return request


def histogram_metrics(metrics: Sequence[tuple[str, Sequence[float], Sequence[float],
                                              dict[str, Any]]],
                      service: str = "metrics-svc", temporality: int = 2, start: int = 50,
                      end: int = 60) -> ExportMetricsServiceRequest:
    """One resource with a histogram per (name, values, bounds, point attributes)."""
    request = ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    rm.resource.attributes.append(kv("service.name", service))
    sm = rm.scope_metrics.add()
    sm.scope.name = "tests"
    for name, values, bounds, attrs in metrics:
        metric = sm.metrics.add()
        metric.name = name
        metric.histogram.aggregation_temporality = temporality
        metric.histogram.data_points.append(histogram_point(values, bounds, attrs, start, end))
    return request
