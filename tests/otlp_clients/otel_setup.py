"""The OTel SDK set-up every client script shares: a TracerProvider, a MeterProvider and a
LoggerProvider exporting over OTLP, configured by the standard environment variables.

- ``OTEL_EXPORTER_OTLP_ENDPOINT`` (``http://127.0.0.1:PORT``; the HTTP exporters append
  ``/v1/traces`` etc.), ``OTEL_EXPORTER_OTLP_HEADERS``, ``..._TIMEOUT``, ``..._COMPRESSION``,
  ``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE``: read by the exporters themselves;
- ``OTEL_EXPORTER_OTLP_PROTOCOL``: ``http/protobuf`` (the default) or ``grpc``, which picks
  the exporter classes (the SDK reads it only in auto-instrumentation);
- ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``: the resource.

Spans go through a SimpleSpanProcessor (exported as each ends), metrics through a periodic
reader with a long interval, so what is exported is the final ``shutdown()`` flush.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter

EXPORT_INTERVAL_MS = 600_000


def protocol() -> str:
    return os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf").strip() or \
        "http/protobuf"


def _exporters() -> tuple[SpanExporter, MetricExporter, LogRecordExporter]:
    wanted = protocol()
    if wanted == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import (
            OTLPLogExporter as GrpcLogs,
        )
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
            OTLPMetricExporter as GrpcMetrics,
        )
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcSpans,
        )
        return GrpcSpans(), GrpcMetrics(), GrpcLogs()
    if wanted != "http/protobuf":
        raise SystemExit(f"OTEL_EXPORTER_OTLP_PROTOCOL={wanted!r}: only http/protobuf and grpc")
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    return OTLPSpanExporter(), OTLPMetricExporter(), OTLPLogExporter()


@dataclass
class Telemetry:
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    logger_provider: LoggerProvider

    def shutdown(self) -> None:
        """Flush everything (spans, the metrics' final collection, logs), then shut down."""
        self.tracer_provider.force_flush(10_000)
        self.logger_provider.force_flush(10_000)
        self.meter_provider.force_flush(10_000)
        self.tracer_provider.shutdown()
        self.logger_provider.shutdown()
        self.meter_provider.shutdown(10_000)


def setup() -> Telemetry:
    """Providers exporting over OTLP, set as the global ones too."""
    from opentelemetry import _logs, metrics, trace

    resource = Resource.create()
    spans, points, logs = _exporters()
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = PeriodicExportingMetricReader(points, export_interval_millis=EXPORT_INTERVAL_MS)
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(logs))
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    _logs.set_logger_provider(logger_provider)
    return Telemetry(tracer_provider, meter_provider, logger_provider)


def count(name: str, default: int) -> int:
    """A call count from the environment (``0`` skips that kind of call), at most 1000."""
    value = int(os.environ.get(name, default))
    if not 0 <= value <= 1000:
        raise SystemExit(f"{name}={value}: must be 0..1000")
    return value


def standin_url() -> str:
    url = os.environ.get("STANDIN_URL", "")
    if not url:
        raise SystemExit("STANDIN_URL (the stand-in provider's base URL) is not set")
    return url.rstrip("/")
