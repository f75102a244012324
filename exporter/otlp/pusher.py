"""The periodic OTLP push: one background thread, off the scrape path, bounded in memory.

Each round takes one snapshot of the families /metrics serves, translates it
(``translate``), encodes it (``encode``: the protobuf request written directly, ~10x
cheaper than the SDK's encoder) and hands it to the official ``opentelemetry-exporter-otlp``
exporter, which does the serialization, TLS, headers, compression, and retries with
back-off that honour ``Retry-After``. Where the official exporter takes only SDK
``MetricsData`` (gRPC, or an HTTP exporter without a request-level entry), the SDK route is
used instead.

Scrapes come first. The push runs in the same process, so its CPU work competes with
scrapes for the GIL; it is therefore done in slices of about a millisecond, and
between two slices the round waits while a ``/metrics`` request is being served
(``CollectGate.pacer``), at most ``MAX_YIELD_PER_ROUND`` (10 s) per round so that a round
still ends under constant scraping. A round is sent as several
requests of at most ``max_points`` data points; a failed request ends the round (the
collector is down: the next round will carry everything).

Where the snapshot comes from:

* **the last scrape's families, when a scrape happened within the export interval** and
  was not exported yet (``otlp.reuse_scrape``, on by default). The push then costs no
  collection at all, cannot disturb collectors whose values are "since the previous
  scrape" (CPU utilization), and both paths carry the very same values;
* otherwise the push collects itself, under ``CollectGate.acquire_exclusive`` so that it
  never runs while a scrape is collecting (``CollectorRunner`` would see a busy
  collector and report it failed); if scrapes keep the gate busy, a scrape has just
  finished and its families are used.

Nothing is queued: a failed round is not kept. With cumulative temporality the next
round's snapshot carries every increment made meanwhile, so nothing is lost once the
collector is back; with delta temporality the baseline only advances for the series whose
request was accepted, so the next delta of the others spans the outage. Memory is one
snapshot plus, for delta, one value per series. After a failure the next round waits
``interval * 2^(failures-1)`` (capped by ``otlp.max_backoff_seconds``, with jitter). Logs —
ours and the OTel exporter's — are rate-limited.
"""

from __future__ import annotations

import inspect
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import requests
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    MetricExportResult,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client.metrics_core import Metric as PromFamily

from exporter.config import ConfigError
from exporter.logutil import RateLimitedLogger
from exporter.otlp.gate import CollectGate
from exporter.otlp.settings import SERVICE_NAME, OtlpSettings
from exporter.otlp.translate import (
    DeltaBaseline,
    OtelMetric,
    Translator,
    batches,
    seconds_to_ns,
    series_count,
    to_metrics_data,
)
from exporter.version import build_info

if TYPE_CHECKING:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )
    from requests.sessions import _Settings

    from exporter.otlp.encode import DirectEncoder

log = RateLimitedLogger(logging.getLogger(__name__), interval=60.0)

OUTCOMES = ("success", "failure", "retry")
# Loggers of the OTel exporters: they log every failed attempt; rate-limit them too.
_OTEL_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.proto.http._common",
    "opentelemetry.exporter.otlp.common.http",
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
)
# Longest a stop waits for the last export before leaving it to the daemon thread.
STOP_WAIT = 5.0
# Data points per OTLP request: requests written by the direct encoder, and requests
# encoded by the SDK (whose encoding is one uninterruptible ~5 ms step per 512 points).
MAX_POINTS = 4096
MAX_POINTS_SDK = 512
# Longest a round waits, in all, for /metrics requests being served: under constant
# scraping a round still ends, at most this much later.
MAX_YIELD_PER_ROUND = 10.0

Snapshot = tuple[float, list[PromFamily]]


class FamilySource(Protocol):
    """What the pusher needs from the Runtime."""

    started_at: float
    collect_gate: CollectGate
    last_collection: Snapshot | None

    def families(self, deadline: float | None = None) -> list[PromFamily]: ...


class _RateLimitFilter(logging.Filter):
    """Lets each message template through at most once per interval."""

    def __init__(self, interval: float) -> None:
        super().__init__("otlp-rate-limit")
        self.interval = interval
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key = f"{record.name}:{record.msg}"
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(key, -self.interval) < self.interval:
                return False
            if len(self._last) > 1000:
                self._last.clear()
            self._last[key] = now
        return True


def _rate_limit_otel_logs(interval: float = 60.0) -> None:
    for name in _OTEL_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RateLimitFilter) for f in logger.filters):
            logger.addFilter(_RateLimitFilter(interval))


class CountingSession(requests.Session):
    """The HTTP exporter's session: counts attempts (retries are the attempts beyond the
    first in one export) and remembers the last error for our own log line."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0
        self.last_error = ""

    def request(self, method: str | bytes, url: str | bytes, *args: Any,
                **kwargs: Any) -> requests.Response:
        self.attempts += 1
        try:
            response = super().request(method, url, *args, **kwargs)
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            raise
        self.last_error = (f"HTTP {response.status_code} {response.reason}"
                           if response.status_code >= 400 else "")
        return response

    def merge_environment_settings(self, url: str | bytes | None, proxies: Any, stream: Any,
                                   verify: Any, cert: Any) -> _Settings:
        """A configured CA file (``otlp.certificate`` / ``OTEL_EXPORTER_OTLP_CERTIFICATE``)
        must win over an ambient ``REQUESTS_CA_BUNDLE``, which requests otherwise prefers
        to the session's own ``verify``."""
        settings = super().merge_environment_settings(
            url, proxies, stream, verify, cert)
        if isinstance(self.verify, str) and verify is None:
            settings["verify"] = self.verify
        return settings


def build_exporter(settings: OtlpSettings) -> tuple[MetricExporter, CountingSession | None]:
    """The official OTLP exporter for the configured protocol."""
    if settings.protocol == "grpc":
        return _grpc_exporter(settings), None
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter,
    )

    compression = {"none": Compression.NoCompression, "gzip": Compression.Gzip,
                   "deflate": Compression.Deflate}[settings.compression]
    session = CountingSession()
    exporter = OTLPMetricExporter(
        endpoint=settings.endpoint, certificate_file=settings.certificate or None,
        client_key_file=settings.client_key or None,
        client_certificate_file=settings.client_certificate or None,
        headers=settings.headers, timeout=settings.timeout, compression=compression,
        session=session)
    return exporter, session


def request_sender(exporter: MetricExporter
                   ) -> Callable[[ExportMetricsServiceRequest], MetricExportResult] | None:
    """The official exporter's entry for an already built protobuf request, if it has one.

    ``opentelemetry-exporter-otlp-proto-http`` (1.4x) sends every request through
    ``_export_batch(request)``: serialization, size check, compression, retries with
    back-off and ``Retry-After``, its own metrics. Older versions and the gRPC exporter only
    take SDK ``MetricsData``; for them the pusher uses the SDK encoder (None here)."""
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter,
    )

    send = getattr(exporter, "_export_batch", None)
    if not isinstance(exporter, OTLPMetricExporter) or not callable(send):
        return None
    try:
        if len(inspect.signature(send).parameters) != 1:
            return None
    except (TypeError, ValueError):
        return None
    return send  # type: ignore[no-any-return]


def _grpc_exporter(settings: OtlpSettings) -> MetricExporter:
    try:
        # Optional extra: imported only when gRPC is selected.
        import grpc
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
            OTLPMetricExporter as GrpcMetricExporter,
        )
    except ImportError:
        raise ConfigError("otlp.protocol: grpc needs the optional gRPC exporter: "
                          "pip install 'ai-metrics-exporter[grpc]'") from None
    compression = {"none": grpc.Compression.NoCompression, "gzip": grpc.Compression.Gzip,
                   "deflate": grpc.Compression.Deflate}[settings.compression]
    insecure = settings.insecure
    if insecure is None:
        insecure = settings.endpoint.startswith("http://")
    credentials = None
    if not insecure:
        def read(path: str) -> bytes | None:
            if not path:
                return None
            with open(path, "rb") as f:
                return f.read()

        credentials = grpc.ssl_channel_credentials(
            root_certificates=read(settings.certificate),
            private_key=read(settings.client_key),
            certificate_chain=read(settings.client_certificate))
    exporter: MetricExporter = GrpcMetricExporter(
        endpoint=settings.endpoint, insecure=insecure, credentials=credentials,
        headers=settings.headers, timeout=settings.timeout, compression=compression)
    return exporter


class OtlpPusher:
    """Pushes a snapshot every interval; exposes its own outcome counters."""

    def __init__(self, settings: OtlpSettings, source: FamilySource,
                 exporter: MetricExporter | None = None, *, direct: bool = True,
                 max_points: int | None = None) -> None:
        self.settings = settings
        self._source = source
        if exporter is None:
            self._exporter, self._session = build_exporter(settings)
        else:
            self._exporter, self._session = exporter, None
        self._translator = Translator()
        # The direct encoder when the official exporter can send a built request.
        self._send = request_sender(self._exporter) if direct else None
        self._encoder: DirectEncoder | None = None
        if self._send is not None:
            from exporter.otlp.encode import DirectEncoder

            self._encoder = DirectEncoder(settings.resource,
                                          InstrumentationScope(SERVICE_NAME,
                                                               build_info().version))
        self.max_points = max_points or (MAX_POINTS if self._encoder else MAX_POINTS_SDK)
        # Longest a round waits, in total, for scrapes being served.
        self.yield_budget = MAX_YIELD_PER_ROUND
        self._resource = Resource(dict(settings.resource))
        self._scope = InstrumentationScope(SERVICE_NAME, build_info().version)
        delta = settings.temporality == "delta"
        self._temporality = (AggregationTemporality.DELTA if delta
                             else AggregationTemporality.CUMULATIVE)
        self._baseline = DeltaBaseline() if delta else None
        self._start_ns = seconds_to_ns(source.started_at)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._round_lock = threading.Lock()
        self.exports = dict.fromkeys(OUTCOMES, 0)
        self.last_success = 0.0
        self.last_duration = 0.0
        self.last_series = 0
        self.consecutive_failures = 0
        self._last_exported = 0.0  # collection time of the last snapshot delivered
        _rate_limit_otel_logs()

    # --- lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="otlp-push", daemon=True)
        self._thread.start()
        logging.getLogger(__name__).info(
            "OTLP push to %s (%s, %s) every %.1fs", self.settings.endpoint,
            self.settings.protocol, self.settings.temporality, self.settings.interval)

    def stop(self) -> None:
        """Push once more (the process's counters die with it), then shut the exporter."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(STOP_WAIT)
        # Aborts a retry wait still in progress; the daemon thread then ends by itself.
        self._exporter.shutdown(timeout_millis=1000)

    def _run(self) -> None:
        delay = self.settings.interval
        while not self._stop.wait(delay):
            ok = self.export_once()
            delay = self.next_delay(ok)
        if self.consecutive_failures == 0:
            self.export_once()

    def next_delay(self, ok: bool) -> float:
        """Interval after success; doubling with each failure, capped, with ±20% jitter."""
        if ok:
            return self.settings.interval
        base = self.settings.interval * 2.0 ** min(self.consecutive_failures - 1, 30)
        return min(base, self.settings.max_backoff) * random.uniform(0.8, 1.2)  # noqa: S311

    # --- one round ------------------------------------------------------------------
    def _fresh(self, snap: Snapshot | None) -> bool:
        return (snap is not None and snap[0] > self._last_exported
                and time.time() - snap[0] <= self.settings.interval)

    def snapshot(self) -> Snapshot | None:
        """The families to export this round (see the module docstring for the policy)."""
        src = self._source
        if self.settings.reuse_scrape and self._fresh(src.last_collection):
            return src.last_collection
        if src.collect_gate.acquire_exclusive(timeout=min(self.settings.interval, 5.0)):
            try:
                if self.settings.reuse_scrape and self._fresh(src.last_collection):
                    return src.last_collection
                families = src.families()
                return time.time(), families
            finally:
                src.collect_gate.release_exclusive()
        last = src.last_collection  # scrapes held the gate throughout: one just finished
        if last is not None and last[0] > self._last_exported:
            return last
        return None

    def export_once(self) -> bool:
        """One round: snapshot, translate, send. True when the collector took it."""
        with self._round_lock:
            return self._export_once()

    def _export_once(self) -> bool:
        started = time.perf_counter()
        give_way = self._source.collect_gate.pacer(self.yield_budget)
        attempts = self._session.attempts if self._session is not None else 0
        requests_sent = 0
        delivered: list[OtelMetric] = []
        cumulative: list[OtelMetric] = []
        collected_at, time_ns = 0.0, 0
        ok = False
        try:
            snap = self.snapshot()
            if snap is None:
                log.warning("OTLP push: no snapshot this round (collection busy)")
                return True
            collected_at, families = snap
            for _ in self._translator.steps(families, self._start_ns, cumulative):
                give_way()
            time_ns = seconds_to_ns(collected_at)
            ok = True
            for batch in batches(cumulative, self.max_points):
                to_send = self._baseline.deltas(batch) if self._baseline is not None else batch
                give_way()
                requests_sent += 1
                if not self._send_batch(to_send, time_ns, give_way):
                    ok = False
                    break
                delivered.extend(batch)
        except Exception as exc:  # a bug here must not kill the thread
            log.error("OTLP push: export round failed: %s: %s", type(exc).__name__, exc)
            ok = False
        retries = 0
        if self._session is not None:
            retries = max(self._session.attempts - attempts - requests_sent, 0)
        if delivered:
            if self._baseline is not None:
                if ok:
                    self._baseline.commit(cumulative, time_ns)
                else:
                    self._baseline.advance(delivered, cumulative, time_ns)
            self._last_exported = collected_at
        self._record(ok, retries, time.perf_counter() - started, series_count(delivered))
        if not ok:
            detail = self._session.last_error if self._session is not None else ""
            log.warning("OTLP push to %s failed%s (%d in a row); next try in about %.0fs",
                        self.settings.endpoint, f": {detail}" if detail else "",
                        self.consecutive_failures, self.next_delay(False),
                        key="otlp-failed")
        return ok

    def _send_batch(self, metrics: list[OtelMetric], time_ns: int,
                    give_way: Callable[[], None]) -> bool:
        """One OTLP request through the official exporter; True when accepted."""
        if self._encoder is not None and self._send is not None:
            encoded: list[bytes] = []
            for _ in self._encoder.steps(metrics, time_ns, self._temporality, encoded):
                give_way()
            request = self._encoder.assemble(encoded)
            del encoded
            give_way()
            return self._send(request) is MetricExportResult.SUCCESS
        data = to_metrics_data(metrics, self._resource, self._scope, time_ns,
                               self._temporality)
        give_way()
        result = self._exporter.export(data, timeout_millis=self.settings.timeout * 1000)
        return result is MetricExportResult.SUCCESS

    def _record(self, ok: bool, retries: int, duration: float, series: int = 0) -> None:
        with self._lock:
            self.exports["success" if ok else "failure"] += 1
            self.exports["retry"] += retries
            self.last_duration = duration
            if ok:
                self.last_success = time.time()
                self.last_series = series
                self.consecutive_failures = 0
            else:
                self.consecutive_failures += 1

    def stats(self) -> tuple[dict[str, int], float, float]:
        """(exports by outcome, last success Unix time, last export duration)."""
        with self._lock:
            return dict(self.exports), self.last_success, self.last_duration
