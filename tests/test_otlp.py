"""OTLP push end to end: the real exporter process pushing into a real OTLP receiver.

The receiver (``tests/otlp_receiver.py``) is an HTTP server on a loopback port that
decodes the protobuf; its content is translated back by the OTel→Prometheus compatibility
rules and compared with ``/metrics``. To compare moving counters exactly, a test scrapes
once and waits for the export that re-used that very scrape (its points carry the
scrape's collection time), so both sides come from the same snapshot.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import json
import math
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from exporter import catalog, config, exposition
from exporter.otlp.pusher import OtlpPusher
from exporter.otlp.settings import resolve
from exporter.otlp.translate import otlp_unit
from exporter.runtime import Runtime
from exporter.server import build_server
from tests.otlp_receiver import (
    OtlpReceiver,
    Received,
    attrs,
    metrics_of,
    point_time,
    prometheus_name,
    same,
    scraped,
    to_prometheus,
)
from tests.procs import (
    EXPORTER_BIN,
    LOOPBACK,
    ROOT,
    Exporter,
    free_port,
    sample,
    sample_value,
    wait_until,
)

DEMO = ["--demo.rate=300", "--demo.episode=none"]


def _exporter(workdir: Path, otlp: dict[str, Any], demo: bool = True,
              env: dict[str, str] | None = None) -> Exporter:
    cfg = {"otlp": {"interval_seconds": 0.5, "max_backoff_seconds": 1.0, **otlp}}
    return Exporter(workdir, config=cfg, command="demo" if demo else None,
                    args=DEMO if demo else [], env=env)


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as r:
        yield r


def scrape_and_match(exp: Exporter, pushed: Callable[[], list[ExportMetricsServiceRequest]],
                     tries: int = 10) -> tuple[str, ExportMetricsServiceRequest]:
    """A /metrics body and the OTLP request exported from that very scrape.

    The push's own collection may also fall inside the request's time window, but only
    before the scrape collected (afterwards the fresh scrape is re-used), so once the push
    has moved past the window the latest request inside it is the scrape's."""
    for _ in range(tries):
        t0 = time.time()
        text = exp.metrics()
        t1 = time.time()
        def after(b: float = t1) -> list[ExportMetricsServiceRequest]:
            return [r for r in pushed() if point_time(r) > b]

        try:
            wait_until(after, 5, interval=0.05, what="an export after this scrape")
        except AssertionError:
            continue  # the push was backing off; scrape again
        inside = [r for r in pushed() if t0 <= point_time(r) <= t1]
        if inside:
            latest = point_time(max(inside, key=point_time))
            parts = [r for r in inside if point_time(r) == latest]
            if len(parts) == 1:
                return text, parts[0]
            # One round in several requests (the SDK's gRPC exporter sends at most 512
            # points in one): the scrape's export is all of them.
            merged = ExportMetricsServiceRequest()
            for part in parts:
                merged.resource_metrics.extend(part.resource_metrics)
            return text, merged
    raise AssertionError("no export re-used a scrape")


def same_snapshot(exp: Exporter, receiver: OtlpReceiver) -> tuple[str, Received]:
    text, request = scrape_and_match(exp, lambda: [r.request for r in receiver.requests()])
    return text, next(r for r in receiver.requests() if r.request is request)


def assert_same_series(text: str, request: ExportMetricsServiceRequest) -> int:
    served, pushed = scraped(text), to_prometheus(request)
    assert set(served) - set(pushed) == set(), "served but not pushed"
    assert set(pushed) - set(served) == set(), "pushed but not served"
    wrong = {k: (served[k], pushed[k]) for k in served if not same(served[k], pushed[k])}
    assert wrong == {}
    return len(served)


def counter(text: str, name: str) -> float:
    return sample_value(text, name) or 0.0


def exports(exp: Exporter, outcome: str) -> float:
    return sample_value(exp.metrics(), "ai_exporter_otlp_exports_total",
                        {"outcome": outcome}) or 0.0


# --- identity -------------------------------------------------------------------------
@pytest.mark.e2e
def test_push_matches_metrics_name_for_name_and_value_for_value(
        workdir: Path, receiver: OtlpReceiver) -> None:
    env = {"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test,team=ai%20platform",
           "OTEL_SERVICE_NAME": "agents-exporter",
           "OTEL_EXPORTER_OTLP_HEADERS": "x-tenant=t1"}
    exp = _exporter(workdir, {"endpoint": receiver.base_url}, env=env)
    try:
        # Let the demo fill every AI metric before comparing.
        wait_until(lambda: sample_value(exp.metrics(),
                                        "gen_ai_client_operation_duration_seconds_count"),
                   20, what="demo LLM calls")
        text, got = same_snapshot(exp, receiver)
        count = assert_same_series(text, got.request)
        assert count > 300
        assert got.headers.get("x-tenant") == "t1"
        assert got.headers.get("content-type") == "application/x-protobuf"

        (rm,) = got.request.resource_metrics
        resource = attrs(rm.resource.attributes)
        assert resource["service.name"] == "agents-exporter"
        assert resource["service.instance.id"].endswith(f":{exp.port}")
        assert resource["deployment.environment"] == "test"
        assert resource["team"] == "ai platform"
        assert resource["host.name"] and resource["service.version"]

        # Every catalog metric /metrics serves arrives under its catalog identity.
        pushed = {m.name: m for m in metrics_of(got.request)}
        served_families = {s[0] for s in scraped(text)}
        kinds = {catalog.Kind.COUNTER: "sum", catalog.Kind.GAUGE: "gauge",
                 catalog.Kind.HISTOGRAM: "histogram"}
        checked = 0
        for spec in catalog.all_metrics():
            if not set(spec.series_names) & served_families:
                continue
            metric = pushed[spec.otel_name]
            # The catalog's unit, written so that a collector derives the served name.
            assert metric.unit == otlp_unit(spec.unit), spec.otel_name
            assert prometheus_name(metric) == spec.name
            assert metric.description == spec.description
            data = metric.WhichOneof("data")
            assert data == kinds[spec.kind], spec.otel_name
            points = getattr(metric, data).data_points
            for point in points:
                assert set(attrs(point.attributes)) <= {*spec.attributes, "demo"}
            if data == "sum":
                assert metric.sum.is_monotonic and metric.sum.aggregation_temporality == 2
            if data == "histogram":
                assert metric.histogram.aggregation_temporality == 2
                assert all(tuple(p.explicit_bounds) == spec.buckets for p in points)
            checked += 1
        assert checked >= 40
        cpu = pushed["system.cpu.time"]
        assert {"cpu.mode", "cpu.logical_number"} <= set(attrs(cpu.sum.data_points[0].attributes))
        assert "process_cpu_seconds_total" in pushed  # outside the catalog: Prometheus name
    finally:
        exp.stop()


@pytest.mark.e2e
def test_own_collections_never_collide_with_scrapes(workdir: Path,
                                                    receiver: OtlpReceiver) -> None:
    """With scrape re-use off, the push collects every 0.2 s while scrapes run back to
    back: no scrape (and no push) ever sees a collector busy from the other."""
    exp = _exporter(workdir, {"endpoint": receiver.base_url, "interval_seconds": 0.2,
                              "reuse_scrape": False}, demo=False)
    try:
        receiver.wait_for(lambda rs: len(rs) >= 2)
        deadline = time.monotonic() + 4
        scrapes = 0
        while time.monotonic() < deadline and scrapes < 400:
            text = exp.metrics()
            scrapes += 1
            served = scraped(text)
            failed = [k for k, v in served.items()
                      if k[0] == "ai_exporter_collector_success" and v != 1.0]
            assert failed == [], f"scrape {scrapes}: {failed}"
        pushed_requests = receiver.requests()
        assert len(pushed_requests) >= 5
        for r in pushed_requests:
            ok = {k: v for k, v in to_prometheus(r.request).items()
                  if k[0] == "ai_exporter_collector_success"}
            assert ok and set(ok.values()) == {1.0}
        # Same series and labels on both paths; values equal where they do not move.
        text = exp.metrics()
        last = receiver.requests()[-1].request
        served, pushed = scraped(text), to_prometheus(last)
        moving_free = {k for k in served if k[0] in {
            "system_memory_limit_bytes", "system_cpu_logical_cpus", "system_boot_timestamp_seconds",
            "ai_exporter_build_info", "ai_exporter_config_last_reload_success_timestamp_seconds",
            "process_start_time_seconds", "system_filesystem_limit_bytes"}}
        assert len(moving_free) >= 6
        assert all(served[k] == pushed[k] for k in moving_free)
        ignore = {"ai_exporter_otlp_exports_total"}  # an export may have happened between
        assert {k for k in served if k[0] not in ignore} == {
            k for k in pushed if k[0] not in ignore}
        cpu = [k for k in served if k[0] == "system_cpu_time_seconds_total"]
        assert cpu and all(pushed[k] <= served[k] for k in cpu)
    finally:
        exp.stop()


# --- outages --------------------------------------------------------------------------
@pytest.mark.e2e
def test_receiver_down_then_up_loses_nothing(workdir: Path) -> None:
    receiver = OtlpReceiver()  # not started: connection refused
    # A short timeout ends each failing round (the OTLP exporter retries a refused
    # connection with back-off until its timeout).
    exp = _exporter(workdir, {"endpoint": receiver.base_url, "timeout_seconds": 1.5})
    try:
        wait_until(lambda: exports(exp, "failure") >= 3, 20, what="failed exports")
        assert exports(exp, "success") == 0
        during = exp.metrics()
        assert sample_value(during, "ai_exporter_otlp_last_success_timestamp_seconds") == 0
        events_during = counter(during, "ai_exporter_events_total")
        assert events_during > 0
        receiver.start()
        try:
            first = receiver.wait_for(lambda rs: rs, 15, what="first export after outage")[0]
            pushed = to_prometheus(first.request)
            # Cumulative: the first export after the outage already holds every increment.
            events_pushed = sum(v for k, v in pushed.items()
                                if k[0] == "ai_exporter_events_total")
            assert events_pushed >= events_during
            text, got = same_snapshot(exp, receiver)
            assert_same_series(text, got.request)
            assert sample(text, "ai_exporter_otlp_last_success_timestamp_seconds") > 0
        finally:
            receiver.stop()
    finally:
        exp.stop()


def sum_deltas(requests: list[Received]) -> dict[Any, float]:
    """Counter and histogram deltas added up per series, gauges dropped."""
    total: dict[Any, float] = {}
    for r in requests:
        for metric in metrics_of(r.request):
            if metric.WhichOneof("data") == "gauge":
                continue
            for key, value in to_prometheus_single(metric).items():
                total[key] = total.get(key, 0.0) + value
    return total


def to_prometheus_single(metric: Any) -> dict[Any, float]:
    request = ExportMetricsServiceRequest()
    request.resource_metrics.add().scope_metrics.add().metrics.append(metric)
    return to_prometheus(request)


@pytest.mark.e2e
def test_delta_temporality_adds_up_across_an_outage(workdir: Path) -> None:
    port = free_port()
    receiver = OtlpReceiver(port).start()
    exp = _exporter(workdir, {"endpoint": receiver.base_url, "temporality": "delta",
                              "timeout_seconds": 1.5})
    try:
        receiver.wait_for(lambda rs: len(rs) >= 2)
        receiver.stop()
        wait_until(lambda: exports(exp, "failure") >= 2, 20, what="failed exports")
        receiver.start()
        text, got = same_snapshot(exp, receiver)
        kept = [r for r in receiver.requests() if point_time(r.request) <= point_time(got.request)]
        for r in kept:
            sums = [m for m in metrics_of(r.request) if m.WhichOneof("data") == "sum"]
            assert sums and all(m.sum.aggregation_temporality == 1 for m in sums)  # DELTA
        totals = sum_deltas(kept)
        served = scraped(text)
        compared = 0
        for key, value in totals.items():
            if key in served:
                assert math.isclose(value, served[key], rel_tol=1e-9, abs_tol=1e-9), key
                compared += 1
        events = [k for k in totals if k[0] == "ai_exporter_events_total"]
        assert events and compared > 100
    finally:
        receiver.stop()
        exp.stop()


@pytest.mark.e2e
def test_retry_after_is_honoured_on_429_and_503(workdir: Path, receiver: OtlpReceiver) -> None:
    receiver.replies = [(503, {"Retry-After": "2"}), (429, {"Retry-After": "2"})]
    exp = _exporter(workdir, {"endpoint": receiver.base_url, "interval_seconds": 1.0})
    try:
        receiver.wait_for(lambda rs: rs, 20, what="export after the retries")
        first, second, third = receiver.attempts[:3]
        # The exporter's own back-off would be ~1 s then ~2 s; Retry-After says 2 s each.
        assert second - first >= 1.9 and third - second >= 1.9
        wait_until(lambda: exports(exp, "retry") >= 2 and exports(exp, "success") >= 1, 10,
                   what="retry and success counted")
        assert exports(exp, "failure") == 0

        # Answers that outlast the exporter's own retries fail the round; the next
        # round after back-off delivers everything.
        receiver.replies = [(503, {"Retry-After": "1"})] * 40
        wait_until(lambda: exports(exp, "failure") >= 1, 30, what="failed round")
        receiver.replies = []
        text, got = same_snapshot(exp, receiver)
        assert_same_series(text, got.request)
    finally:
        exp.stop()


@pytest.mark.e2e
def test_a_hung_collector_does_not_hold_up_scrapes(workdir: Path,
                                                   receiver: OtlpReceiver) -> None:
    receiver.hang_seconds = 3.0
    exp = _exporter(workdir, {"endpoint": receiver.base_url, "timeout_seconds": 1.0,
                              "interval_seconds": 0.2, "reuse_scrape": False}, demo=False)
    try:
        wait_until(lambda: len(receiver.attempts) >= 1, 10, what="a hung export")
        latencies = []
        for _ in range(20):
            start = time.monotonic()
            text = exp.metrics()
            latencies.append(time.monotonic() - start)
            assert {v for k, v in scraped(text).items()
                    if k[0] == "ai_exporter_collector_success"} == {1.0}
        wait_until(lambda: exports(exp, "failure") >= 1, 20, what="timed-out export counted")
        # Not a performance assertion: a scrape must simply never wait for the push's
        # 1 s HTTP timeout (the benchmark measures latency).
        assert max(latencies) < 1.0, latencies
    finally:
        receiver.hang_seconds = 0
        exp.stop()


# --- rounds of several requests (in-process pushers, real receiver) ---------------------
def _ai_events(count: int, offset: int = 0) -> list[bytes]:
    out = []
    for i in range(offset, offset + count):
        event = {"kind": "task", "component": f"c{i % 40}", "queue": f"q{i % 3}",
                 "status": "succeeded", "duration_seconds": 0.5 + i % 7}
        out.append(json.dumps(event).encode())
    return out


@pytest.fixture
def runtime(receiver: OtlpReceiver) -> Iterator[Runtime]:
    cfg = config.build({"web": {"listen_address": f"{LOOPBACK}:{free_port()}"},
                        "otlp": {"endpoint": receiver.base_url, "interval_seconds": 60.0,
                                 "timeout_seconds": 2.0}})
    rt = Runtime(cfg)
    accepted, rejected = rt.ingestor.ingest_raw("test", _ai_events(400))
    assert accepted == 400 and not rejected
    yield rt
    rt.stop()


def _pusher(rt: Runtime, temporality: str = "cumulative", **kwargs: Any) -> OtlpPusher:
    settings = resolve(rt.config)
    assert settings is not None
    return OtlpPusher(dataclasses.replace(settings, temporality=temporality), rt, **kwargs)


def _fresh_scrape(rt: Runtime) -> str:
    """A scrape the next round re-uses, as /metrics text."""
    families = rt.families()
    return exposition.render(families).decode()


def test_a_round_in_several_requests_carries_the_scrape_on_both_routes(
        runtime: Runtime, receiver: OtlpReceiver) -> None:
    """The direct encoder and the SDK route, in requests of at most 60 points: together
    the requests of one round are the scrape, name for name and value for value."""
    direct, sdk = _pusher(runtime, max_points=60), _pusher(runtime, direct=False,
                                                           max_points=60)
    try:
        assert direct._encoder is not None and sdk._encoder is None
        rounds = []
        for pusher in (direct, sdk):
            text = _fresh_scrape(runtime)
            before = len(receiver.requests())
            assert pusher.export_once()
            got = [r.request for r in receiver.requests()[before:]]
            assert len(got) >= 5
            assert all(sum(len(getattr(m, m.WhichOneof("data") or "").data_points)
                           for m in metrics_of(r)) <= 60 for r in got)
            merged = ExportMetricsServiceRequest()
            for r in got:
                merged.MergeFrom(r)
            assert assert_same_series(text, merged) > 200
            rounds.append(to_prometheus(merged))
        assert set(rounds[0]) == set(rounds[1])
        assert direct.stats()[0]["success"] == 1 and direct.last_series > 200
    finally:
        direct.stop()
        sdk.stop()


def test_a_round_refused_midway_loses_nothing_with_delta(
        runtime: Runtime, receiver: OtlpReceiver) -> None:
    """The collector takes the first request of a round and refuses the second: the
    delivered series advance, the others carry their increments into the next round."""
    pusher = _pusher(runtime, temporality="delta", max_points=40)
    try:
        _fresh_scrape(runtime)
        assert pusher.export_once()
        runtime.ingestor.ingest_raw("test", _ai_events(300, offset=400))
        receiver.replies = [None, (400, {})]  # the first request through, then refused
        _fresh_scrape(runtime)
        assert not pusher.export_once()
        assert pusher.stats()[0] == {"success": 1, "failure": 1, "retry": 0}
        runtime.ingestor.ingest_raw("test", _ai_events(200, offset=700))
        text = _fresh_scrape(runtime)
        assert pusher.export_once()
        totals = sum_deltas(receiver.requests())
        served = scraped(text)
        compared = [k for k in totals if k in served
                    and k[0].startswith(("ai_tasks_total", "ai_task_duration_seconds"))]
        assert len(compared) > 100
        for key in compared:
            assert math.isclose(totals[key], served[key], abs_tol=1e-9), key
    finally:
        pusher.stop()


def test_a_round_gives_way_to_a_scrape_being_served(runtime: Runtime,
                                                    receiver: OtlpReceiver) -> None:
    pusher = _pusher(runtime)
    pusher.yield_budget = 0.5
    try:
        _fresh_scrape(runtime)
        with runtime.collect_gate.serving():
            start = time.monotonic()
            assert pusher.export_once()  # waited, up to its budget, then went on
            assert time.monotonic() - start >= 0.5
        _fresh_scrape(runtime)
        start = time.monotonic()
        assert pusher.export_once()
        assert time.monotonic() - start < 0.5
    finally:
        pusher.stop()


def test_metrics_requests_are_known_to_the_gate_until_written(
        runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real server: every /metrics request ends its "being served" mark once the
    response is written, including gzip and HEAD requests."""
    server = build_server(runtime)
    server.prepare()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    gate = runtime.collect_gate
    seen: list[int] = []
    original = gate.begin_serving

    def spy() -> Callable[[], None]:
        end = original()
        seen.append(gate.requests_in_flight)
        return end

    monkeypatch.setattr(gate, "begin_serving", spy)
    try:
        url = f"http://{runtime.config.listen_host_port()[0]}:" \
              f"{runtime.config.listen_host_port()[1]}/metrics"
        with requests.Session() as session:
            for headers in ({}, {"Accept-Encoding": "gzip"}):
                response = session.get(url, headers=headers, timeout=10)
                assert response.status_code == 200 and b"ai_tasks_total" in response.content
            assert session.head(url, timeout=10).status_code == 200
        assert seen == [1, 1, 1]
        wait_until(lambda: gate.requests_in_flight == 0, 5, what="responses closed")
    finally:
        server.stop()
        thread.join(5)


# --- TLS and gRPC -----------------------------------------------------------------------
def _certificate(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "otlp-test-receiver")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(LOOPBACK))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "otlp-cert.pem", directory / "otlp-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.mark.e2e
def test_tls_with_a_generated_certificate(workdir: Path, tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with OtlpReceiver(tls=context) as receiver:
        assert receiver.base_url.startswith("https://")
        # Trusting the certificate through the standard variable: delivered.
        exp = _exporter(workdir, {"endpoint": receiver.base_url, "compression": "gzip"},
                        env={"OTEL_EXPORTER_OTLP_CERTIFICATE": str(cert)})
        try:
            got = receiver.wait_for(lambda rs: rs, 20, what="export over TLS")[0]
            assert got.headers.get("content-encoding") == "gzip"
            assert "system.cpu.time" in {m.name for m in metrics_of(got.request)}
        finally:
            exp.stop()
        before = len(receiver.requests())
        # Without it the certificate does not verify: failures, nothing delivered.
        untrusting = _exporter(workdir, {"endpoint": receiver.base_url}, demo=False)
        try:
            wait_until(lambda: exports(untrusting, "failure") >= 1, 30,
                       what="failed TLS export")
            assert exports(untrusting, "success") == 0
            assert len(receiver.requests()) == before
        finally:
            untrusting.stop()


class _GrpcReceiver(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self) -> None:
        self.received: list[ExportMetricsServiceRequest] = []
        self.lock = threading.Lock()

    def Export(self, request: ExportMetricsServiceRequest,
               context: Any) -> metrics_service_pb2.ExportMetricsServiceResponse:
        with self.lock:
            self.received.append(request)
        return metrics_service_pb2.ExportMetricsServiceResponse()


@pytest.mark.e2e
def test_grpc_protocol(workdir: Path) -> None:
    servicer = _GrpcReceiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(  # type: ignore[no-untyped-call]
        servicer, server)
    port = server.add_insecure_port(f"{LOOPBACK}:0")
    server.start()
    try:
        exp = _exporter(workdir, {}, env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{LOOPBACK}:{port}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
        try:
            wait_until(lambda: servicer.received, 20, what="gRPC export")
            text, request = scrape_and_match(exp, lambda: list(servicer.received))
            assert_same_series(text, request)
        finally:
            exp.stop()
    finally:
        server.stop(0)


# --- configuration ----------------------------------------------------------------------
@pytest.mark.e2e
def test_check_config_names_the_bad_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yml"
    path.write_text(yaml.safe_dump({"otlp": {"endpoint": "http://127.0.0.1:4318",
                                             "temporality": "sometimes"}}))
    done = subprocess.run([EXPORTER_BIN, "check-config", f"--config.file={path}"],
                          check=False, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "otlp.temporality" in done.stderr
    env_bad = subprocess.run([EXPORTER_BIN, "check-config"], check=False, capture_output=True,
                             text=True,
                             timeout=30, env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:1",
                                              "OTEL_METRIC_EXPORT_INTERVAL": "soon",
                                              "PATH": "/usr/bin:/bin"})
    assert env_bad.returncode == 2
    assert "OTEL_METRIC_EXPORT_INTERVAL" in env_bad.stderr


@pytest.mark.e2e
def test_push_is_off_without_an_endpoint(exporter: Exporter) -> None:
    text = exporter.metrics()
    assert sample_value(text, "ai_exporter_otlp_exports_total", {"outcome": "success"}) is None
    assert sample_value(text, "ai_exporter_collector_success", {"collector": "otlp"}) == 1.0


def test_otel_collector_config_structure() -> None:
    """No collector binary here: check the pipeline the compose stack relies on."""
    cfg = yaml.safe_load((ROOT / "otel-collector" / "config.yaml").read_text())
    receivers, exporters = cfg["receivers"], cfg["exporters"]
    protocols = receivers["otlp"]["protocols"]
    assert protocols["http"]["endpoint"].endswith(":4318")
    assert protocols["grpc"]["endpoint"].endswith(":4317")
    pipeline = cfg["service"]["pipelines"]["metrics"]
    assert pipeline["receivers"] == ["otlp"]
    for name in pipeline["exporters"]:
        assert name in exporters
    for name in pipeline.get("processors", []):
        assert name in cfg["processors"]
    prom = exporters["prometheus"]
    assert prom["endpoint"].endswith(":8889")
    assert prom["resource_to_telemetry_conversion"]["enabled"] is False
    extensions = cfg["service"].get("extensions", [])
    assert set(extensions) <= set(cfg.get("extensions", {}))
