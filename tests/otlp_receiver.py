"""A real OTLP/HTTP metrics receiver for tests, plus the OTel→Prometheus translation.

The receiver is an ``http.server`` on a loopback port that decodes each POST body as an
``ExportMetricsServiceRequest`` (``opentelemetry-proto``), optionally over TLS, and can be
told to answer the next requests with an error status and ``Retry-After``. It can be
stopped and started again on the same port to simulate a collector outage.
"""

from __future__ import annotations

import gzip
import math
import re
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

from tests.procs import LOOPBACK, free_port, wait_until

MAX_KEPT = 500


@dataclass
class Received:
    at: float
    headers: dict[str, str]
    request: ExportMetricsServiceRequest


class OtlpReceiver:
    """OTLP/HTTP receiver on 127.0.0.1; ``received`` holds decoded requests (bounded)."""

    def __init__(self, port: int | None = None, tls: ssl.SSLContext | None = None) -> None:
        self.port = port or free_port()
        self.tls = tls
        scheme = "https" if tls else "http"
        self.base_url = f"{scheme}://{LOOPBACK}:{self.port}"
        self.url = f"{self.base_url}/v1/metrics"
        self.received: list[Received] = []
        self.attempts: list[float] = []  # arrival time of every POST, answered or not
        # Answers for the next POSTs; None lets one POST through normally.
        self.replies: list[tuple[int, dict[str, str]] | None] = []
        self.hang_seconds = 0.0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------
    def start(self) -> OtlpReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                receiver.attempts.append(time.time())
                if receiver.hang_seconds:
                    time.sleep(receiver.hang_seconds)
                with receiver._lock:
                    reply = receiver.replies.pop(0) if receiver.replies else None
                if reply is not None:
                    status, headers = reply
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                request = ExportMetricsServiceRequest()
                try:
                    request.ParseFromString(body)
                except Exception:
                    self.send_response(400)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                with receiver._lock:
                    receiver.received.append(Received(
                        time.time(), {k.lower(): v for k, v in self.headers.items()}, request))
                    del receiver.received[:-MAX_KEPT]
                payload = ExportMetricsServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        server = ThreadingHTTPServer((LOOPBACK, self.port), Handler)
        server.daemon_threads = True
        if self.tls is not None:
            server.socket = self.tls.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- reading --------------------------------------------------------------------
    def requests(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def wait_for(self, check: Callable[[list[Received]], Any], timeout: float = 20.0,
                 what: str = "OTLP requests") -> Any:
        return wait_until(lambda: check(self.requests()), timeout, interval=0.05, what=what)


# --- OTLP content helpers -------------------------------------------------------------
def attrs(kvs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in kvs:
        assert isinstance(kv, KeyValue)
        field = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, field) if field else None
    return out


def metrics_of(request: ExportMetricsServiceRequest) -> Iterator[metrics_pb2.Metric]:
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            yield from sm.metrics


def point_time(request: ExportMetricsServiceRequest) -> float:
    """Collection time of a request (every point carries the snapshot's time)."""
    for metric in metrics_of(request):
        kind = metric.WhichOneof("data")
        points = getattr(metric, kind or "").data_points
        if points:
            return float(points[0].time_unix_nano) / 1e9
    return 0.0


# The OTel→Prometheus name translation a collector applies (its Prometheus exporters and
# Prometheus's OTLP receiver share ``prometheus/otlptranslator``, strategy
# UnderscoreEscapingWithSuffixes): a port of its ``normalizeName`` and unit maps. Units
# outside the map are appended as written — no lower-casing.
_UNIT_MAP = {"d": "days", "h": "hours", "min": "minutes", "s": "seconds",
             "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds", "By": "bytes",
             "KiBy": "kibibytes", "MiBy": "mebibytes", "GiBy": "gibibytes",
             "TiBy": "tibibytes", "KBy": "kilobytes", "MBy": "megabytes", "GBy": "gigabytes",
             "TBy": "terabytes", "m": "meters", "V": "volts", "A": "amperes", "J": "joules",
             "W": "watts", "g": "grams", "Cel": "celsius", "Hz": "hertz", "1": "",
             "%": "percent"}
_PER_UNIT_MAP = {"s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week",
                 "mo": "month", "y": "year"}
_INVALID = re.compile(r"[^a-zA-Z0-9_:]")
_NOT_NAME_CHAR = re.compile(r"[^a-zA-Z0-9:]+")

SampleKey = tuple[str, frozenset[tuple[str, str]]]


def _clean_unit(unit: str) -> str:
    return re.sub(r"_+", "_", _INVALID.sub("_", unit)).removeprefix("_")


def collector_name(name: str, unit: str, kind: str) -> str:
    """Prometheus name a collector derives for an OTLP metric; ``kind`` is ``counter``
    (monotonic sum), ``sum``, ``gauge`` or ``histogram``."""
    tokens = [t for t in _NOT_NAME_CHAR.split(name) if t]
    main, _, per = unit.partition("/")
    main, per = main.strip(), per.strip()
    main = _UNIT_MAP.get(main, main) if main and not set(main) & set("{}") else ""
    per = _PER_UNIT_MAP.get(per, per) if per and not set(per) & set("{}") else ""
    main, per = _clean_unit(main), _clean_unit(f"per_{per}" if per else "")
    if main in tokens:
        main = ""
    per = "" if per == "per_" else per.removesuffix("_")
    if per in tokens:
        per = ""
    if per:
        main = main.removesuffix("_")
    tokens += [t for t in (main, per) if t]
    if kind == "counter":
        tokens = [t for t in tokens if t != "total"] + ["total"]
    if unit == "1" and kind == "gauge":
        tokens = [t for t in tokens if t != "ratio"] + ["ratio"]
    out = "_".join(tokens)
    return f"_{out}" if out[:1].isdigit() else out


def prometheus_name(metric: metrics_pb2.Metric) -> str:
    """OTLP metric → Prometheus metric name, as a collector translates it."""
    kind: str = metric.WhichOneof("data") or ""
    if kind == "sum" and metric.sum.is_monotonic:
        kind = "counter"
    return collector_name(metric.name, metric.unit, kind)


def _labels(kvs: Any, extra: dict[str, str] | None = None) -> frozenset[tuple[str, str]]:
    out = {_INVALID.sub("_", k): str(v) for k, v in attrs(kvs).items()}
    out.update(extra or {})
    return frozenset(out.items())


def _fmt_le(bound: float) -> str:
    return str(floatToGoString(bound))  # type: ignore[no-untyped-call]


def to_prometheus(request: ExportMetricsServiceRequest) -> dict[SampleKey, float]:
    """Every sample the compatibility rules derive from a (cumulative) OTLP request."""
    out: dict[SampleKey, float] = {}
    for metric in metrics_of(request):
        name = prometheus_name(metric)
        kind = metric.WhichOneof("data")
        if kind in ("gauge", "sum"):
            for p in getattr(metric, kind).data_points:
                value = p.as_double if p.WhichOneof("value") == "as_double" else float(p.as_int)
                out[(name, _labels(p.attributes))] = value
        elif kind == "histogram":
            for hp in metric.histogram.data_points:
                cumulative = 0
                for bound, count in zip([*hp.explicit_bounds, math.inf], hp.bucket_counts,
                                        strict=True):
                    cumulative += count
                    out[(f"{name}_bucket", _labels(hp.attributes, {"le": _fmt_le(bound)}))] = \
                        float(cumulative)
                out[(f"{name}_sum", _labels(hp.attributes))] = hp.sum
                out[(f"{name}_count", _labels(hp.attributes))] = float(hp.count)
        else:
            raise AssertionError(f"unexpected OTLP data type {kind} for {metric.name}")
    return out


def scraped(text: str) -> dict[SampleKey, float]:
    """/metrics text as the same (name, labels) → value map; ``_created`` samples are
    carried as start times in OTLP, not as samples, so they are left out."""
    out: dict[SampleKey, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            labels = dict(s.labels)
            if "le" in labels:  # canonical form, as the compatibility rules write it
                labels["le"] = _fmt_le(float(labels["le"]))
            out[(s.name, frozenset(labels.items()))] = float(s.value)
    return out


def same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))
