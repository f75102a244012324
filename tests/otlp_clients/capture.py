"""Records what a client script sends: a loopback OTLP receiver (HTTP, and gRPC with
``--grpc``) that decodes every export request, runs the script against it and the stand-in
provider, and writes a JSON dump of every span, metric data point and log record.

    python tests/otlp_clients/capture.py openai_official /tmp/coord/spans/openai_official.json \\
        [--grpc] [--env NAME=VALUE ...]
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import os
import subprocess
import sys
import threading
import zlib
from collections.abc import Callable
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as logs_service
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as metrics_service
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as trace_service
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from tests.llm_standin import LlmStandin
from tests.procs import LOOPBACK, free_port

HERE = Path(__file__).resolve().parent
MAX_KEPT = 2000
TIMEOUT_S = 120

# the signal, the request type, the response type
SIGNALS: dict[str, tuple[type[Message], type[Message]]] = {
    "traces": (trace_service.ExportTraceServiceRequest, trace_service.ExportTraceServiceResponse),
    "metrics": (metrics_service.ExportMetricsServiceRequest,
                metrics_service.ExportMetricsServiceResponse),
    "logs": (logs_service.ExportLogsServiceRequest, logs_service.ExportLogsServiceResponse),
}


class Captured:
    """The decoded export requests, by signal (bounded)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: dict[str, list[Message]] = {s: [] for s in SIGNALS}
        self.headers: list[dict[str, str]] = []

    def add(self, signal: str, request: Message, headers: dict[str, str]) -> None:
        with self.lock:
            if len(self.requests[signal]) < MAX_KEPT:
                self.requests[signal].append(request)
                self.headers.append({"signal": signal, **headers})


def http_receiver(captured: Captured, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            signal = self.path.removeprefix("/v1/")
            if signal not in SIGNALS:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            encoding = self.headers.get("Content-Encoding", "")
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            kind, answer = SIGNALS[signal]
            request = kind()
            request.ParseFromString(body)
            captured.add(signal, request, {"path": self.path,
                                           "content-type": self.headers.get("Content-Type", ""),
                                           "content-encoding": encoding,
                                           "user-agent": self.headers.get("User-Agent", "")})
            payload = answer().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = ThreadingHTTPServer((LOOPBACK, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                     daemon=True).start()
    return server


def grpc_receiver(captured: Captured, port: int) -> Any:
    import grpc
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc as logs_grpc
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc as metrics_grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as trace_grpc

    def export(signal: str) -> Callable[[Any, Any], Any]:
        def handle(request: Any, context: Any) -> Any:
            metadata = {k: str(v) for k, v in context.invocation_metadata()}
            captured.add(signal, request, {"grpc": "1",
                                           "user-agent": metadata.get("user-agent", "")})
            return SIGNALS[signal][1]()
        return handle

    class Traces(trace_grpc.TraceServiceServicer):
        Export = staticmethod(export("traces"))

    class Metrics(metrics_grpc.MetricsServiceServicer):
        Export = staticmethod(export("metrics"))

    class Logs(logs_grpc.LogsServiceServicer):
        Export = staticmethod(export("logs"))

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_grpc.add_TraceServiceServicer_to_server(Traces(), server)  # type: ignore[no-untyped-call]
    metrics_grpc.add_MetricsServiceServicer_to_server(Metrics(), server)  # type: ignore[no-untyped-call]
    logs_grpc.add_LogsServiceServicer_to_server(Logs(), server)  # type: ignore[no-untyped-call]
    server.add_insecure_port(f"{LOOPBACK}:{port}")
    server.start()
    return server


# --- decoding ---------------------------------------------------------------------------
def value(v: AnyValue) -> Any:
    field = v.WhichOneof("value")
    if field is None:
        return None
    if field == "array_value":
        return [value(x) for x in v.array_value.values]
    if field == "kvlist_value":
        return attrs(v.kvlist_value.values)
    if field == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    return getattr(v, field)


def attrs(kvs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in kvs:
        assert isinstance(kv, KeyValue)
        out[kv.key] = value(kv.value)
    return out


SPAN_KINDS = {v: k.removeprefix("SPAN_KIND_") for k, v in trace_pb2.Span.SpanKind.items()}
STATUS_CODES = {v: k.removeprefix("STATUS_CODE_") for k, v in trace_pb2.Status.StatusCode.items()}
TEMPORALITY = {v: k.removeprefix("AGGREGATION_TEMPORALITY_")
               for k, v in metrics_pb2.AggregationTemporality.items()}


def spans_of(request: Any) -> list[dict[str, Any]]:
    out = []
    for rs in request.resource_spans:
        for ss in rs.scope_spans:
            for span in ss.spans:
                out.append({
                    "name": span.name,
                    "kind": SPAN_KINDS.get(span.kind, str(span.kind)),
                    "status": {"code": STATUS_CODES.get(span.status.code, str(span.status.code)),
                               "message": span.status.message},
                    "attributes": attrs(span.attributes),
                    "events": [{"name": e.name, "attributes": attrs(e.attributes)}
                               for e in span.events],
                    "links": len(span.links),
                    "trace_id": span.trace_id.hex(),
                    "span_id": span.span_id.hex(),
                    "parent_span_id": span.parent_span_id.hex(),
                    "duration_ms": round((span.end_time_unix_nano - span.start_time_unix_nano)
                                         / 1e6, 3),
                    "scope": {"name": ss.scope.name, "version": ss.scope.version,
                              "schema_url": ss.schema_url},
                    "resource": attrs(rs.resource.attributes),
                    "resource_schema_url": rs.schema_url,
                })
    return out


def _point(kind: str, p: Any) -> dict[str, Any]:
    point: dict[str, Any] = {"attributes": attrs(p.attributes)}
    if kind in ("sum", "gauge"):
        point["value"] = p.as_double if p.WhichOneof("value") == "as_double" else p.as_int
    elif kind == "histogram":
        point.update(count=p.count, sum=p.sum, bounds=list(p.explicit_bounds),
                     bucket_counts=list(p.bucket_counts),
                     min=p.min if p.HasField("min") else None,
                     max=p.max if p.HasField("max") else None)
    elif kind == "exponential_histogram":
        point.update(count=p.count, sum=p.sum, scale=p.scale, zero_count=p.zero_count)
    elif kind == "summary":
        point.update(count=p.count, sum=p.sum)
    return point


def metrics_of(request: Any) -> list[dict[str, Any]]:
    out = []
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                kind = metric.WhichOneof("data")
                data = getattr(metric, kind)
                out.append({
                    "name": metric.name,
                    "unit": metric.unit,
                    "description": metric.description,
                    "type": kind,
                    "temporality": TEMPORALITY.get(getattr(data, "aggregation_temporality", 0)),
                    "monotonic": getattr(data, "is_monotonic", None),
                    "points": [_point(kind, p) for p in data.data_points],
                    "scope": {"name": sm.scope.name, "version": sm.scope.version},
                    "resource": attrs(rm.resource.attributes),
                })
    return out


def logs_of(request: Any) -> list[dict[str, Any]]:
    out = []
    for rl in request.resource_logs:
        for sl in rl.scope_logs:
            for record in sl.log_records:
                out.append({
                    "event_name": record.event_name,
                    "severity_text": record.severity_text,
                    "severity_number": record.severity_number,
                    "body": value(record.body),
                    "attributes": attrs(record.attributes),
                    "trace_id": record.trace_id.hex(),
                    "span_id": record.span_id.hex(),
                    "scope": {"name": sl.scope.name, "version": sl.scope.version},
                    "resource": attrs(rl.resource.attributes),
                })
    return out


def dump(captured: Captured) -> dict[str, Any]:
    with captured.lock:
        requests = {s: list(r) for s, r in captured.requests.items()}
        headers = list(captured.headers)
    return {
        "export_requests": {s: len(r) for s, r in requests.items()},
        "export_headers": headers[:6],
        "spans": [s for r in requests["traces"] for s in spans_of(r)],
        "metrics": [m for r in requests["metrics"] for m in metrics_of(r)],
        "logs": [x for r in requests["logs"] for x in logs_of(r)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("client", help="a script of tests/otlp_clients, without .py")
    parser.add_argument("output", type=Path)
    parser.add_argument("--grpc", action="store_true", help="export over OTLP/gRPC")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the client")
    args = parser.parse_args()
    captured = Captured()
    port = free_port()
    server: Any = grpc_receiver(captured, port) if args.grpc else http_receiver(captured, port)
    extra = dict(item.split("=", 1) for item in args.env)
    with LlmStandin() as standin:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("OTEL_", "AI_EXPORTER_"))}
        env.update({
            "STANDIN_URL": standin.base_url,
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{LOOPBACK}:{port}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc" if args.grpc else "http/protobuf",
            "OTEL_SERVICE_NAME": args.client,
            **extra,
        })
        run = subprocess.run([sys.executable, str(HERE / f"{args.client}.py")], env=env,
                             capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
        calls = [{"path": c.path, "model": c.model, "stream": c.stream, "status": c.status,
                  "tokens": None if c.tokens is None else vars(c.tokens)}
                 for c in standin.answered()]
    if args.grpc:
        server.stop(2).wait(5)
    else:
        server.shutdown()
        server.server_close()
    result = {"client": args.client, "protocol": env["OTEL_EXPORTER_OTLP_PROTOCOL"],
              "client_env": {k: v for k, v in env.items()
                             if k.startswith("OTEL_") or k in extra},
              "returncode": run.returncode, "stdout": run.stdout, "stderr": run.stderr[-4000:],
              "standin_calls": calls, **dump(captured)}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1, sort_keys=False) + "\n")
    print(f"{args.output}: rc={run.returncode} spans={len(result['spans'])} "
          f"metrics={len(result['metrics'])} logs={len(result['logs'])}")
    if run.returncode:
        print(run.stderr[-4000:], file=sys.stderr)
        raise SystemExit(run.returncode)


if __name__ == "__main__":
    main()
