"""HTTP probes against real servers on loopback: healthy, down, hanging, garbage, loops, TLS."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import msgspec
import pytest
from prometheus_client.exposition import generate_latest

from exporter import config
from exporter.collectors.base import CollectorContext, CollectorDeps
from exporter.collectors.probes import ProbesCollector, ProbeService
from exporter.config import ProbeConfig
from exporter.runtime import Runtime
from exporter.scrape import StaticFamilies
from exporter.web import create_app
from tests.procs import LOOPBACK, Exporter, Prometheus, free_port, sample_value, wait_until

UP = "ai_component_up"


class Target:
    """A real HTTP server on loopback whose paths behave like healthy or broken components."""

    def __init__(self, tls_files: tuple[Path, Path] | None = None) -> None:
        self.release = threading.Event()
        self.seen: list[dict[str, str]] = []
        target = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: bytes = b"", **headers: str) -> None:
                self.send_response(code)
                for key, value in headers.items():
                    self.send_header(key.replace("_", "-"), value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                target.seen.append({"path": self.path, **dict(self.headers.items())})
                path = self.path.split("?")[0]
                if path == "/healthz":
                    self._send(200, b'{"status":"ok","model":"loaded"}')
                elif path == "/starting":
                    self._send(200, b'{"status":"starting"}')
                elif path == "/broken":
                    self._send(503, b"unavailable")
                elif path == "/hang":
                    target.release.wait(60)
                    self._send(200, b"late")
                elif path == "/loop-a":
                    self._send(302, Location="/loop-b")
                elif path == "/loop-b":
                    self._send(302, Location="/loop-a")
                elif path.startswith("/hop/"):
                    n = int(path.rsplit("/", 1)[1])
                    self._send(302, Location=f"/hop/{n + 1}")
                elif path == "/moved":
                    self._send(301, Location="/healthz")
                elif path == "/secure":
                    ok = self.headers.get("Authorization") == "Bearer s3cret"
                    self._send(200 if ok else 401)
                else:
                    self._send(404)

            do_HEAD = do_GET

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 128  # the default of 5 drops concurrent connects

            def handle_error(self, request: Any, client_address: Any) -> None:
                """Clients that hang up early (aborted probes) are expected here."""

        self.server = Server((LOOPBACK, 0), Handler)
        scheme = "http"
        if tls_files is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(tls_files[0]), str(tls_files[1]))
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.port = self.server.server_address[1]
        self.url = f"{scheme}://{LOOPBACK}:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


class GarbageServer:
    """Accepts connections and answers with bytes that are not HTTP."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind((LOOPBACK, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://{LOOPBACK}:{self.port}"
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    conn.recv(4096)
                    conn.sendall(b"\x00\x01SSH-2.0-notreally\r\n\r\n")
                except OSError:
                    pass

    def stop(self) -> None:
        self._stop = True
        self.sock.close()


@pytest.fixture
def target() -> Iterator[Target]:
    server = Target()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 made by the real openssl binary."""
    openssl = shutil.which("openssl")
    assert openssl, "openssl is required for the TLS probe test"
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "30", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True,
                   capture_output=True, timeout=60)
    return cert, key


def spec(**fields: Any) -> ProbeConfig:
    fields.setdefault("name", "c")
    fields.setdefault("timeout_seconds", 2.0)
    return msgspec.convert(fields, ProbeConfig)


def probe_one(**fields: Any) -> Any:
    service = ProbeService([spec(**fields)], 4)
    try:
        (result,) = service.run([fields.get("name", "c")], time.monotonic() + 5)
        return result
    finally:
        service.close()


# --- the prober on its own ------------------------------------------------------------
def test_healthy_component_with_body_regex(target: Target) -> None:
    r = probe_one(url=f"{target.url}/healthz", body_regex='"status":"ok"')
    assert (r.up, r.status, r.reason) == (True, 200, "")
    assert 0 < r.duration < 2


def test_body_regex_mismatch_and_unexpected_status(target: Target) -> None:
    r = probe_one(url=f"{target.url}/starting", body_regex='"status":"ok"')
    assert (r.up, r.status, r.reason) == (False, 200, "body_mismatch")
    r = probe_one(url=f"{target.url}/broken")
    assert (r.up, r.status, r.reason) == (False, 503, "unexpected_status")
    r = probe_one(url=f"{target.url}/broken", valid_status_codes=[503])
    assert (r.up, r.status) == (True, 503)


def test_refused_garbage_and_redirects(target: Target) -> None:
    r = probe_one(url=f"http://{LOOPBACK}:{free_port()}/healthz")
    assert (r.up, r.status, r.reason) == (False, 0, "connection_refused")
    garbage = GarbageServer()
    try:
        r = probe_one(url=f"{garbage.url}/healthz")
        assert (r.up, r.reason) == (False, "invalid_response")
    finally:
        garbage.stop()
    r = probe_one(url=f"{target.url}/loop-a")
    assert (r.up, r.status, r.reason) == (False, 302, "redirect_loop")
    r = probe_one(url=f"{target.url}/hop/0", max_redirects=3)
    assert (r.up, r.reason) == (False, "too_many_redirects")
    r = probe_one(url=f"{target.url}/moved")
    assert (r.up, r.status) == (True, 200)
    r = probe_one(url=f"{target.url}/moved", follow_redirects=False,
                  valid_status_codes=[301])
    assert (r.up, r.status) == (True, 301)


def test_hanging_target_is_cut_at_its_timeout(target: Target) -> None:
    start = time.monotonic()
    r = probe_one(url=f"{target.url}/hang", timeout_seconds=0.5)
    elapsed = time.monotonic() - start
    assert (r.up, r.reason) == (False, "timeout")
    assert elapsed < 1.5


def test_headers_and_bearer_token_file(target: Target, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    r = probe_one(url=f"{target.url}/secure", bearer_token_file=str(token),
                  headers={"X-Probe": "yes"})
    assert (r.up, r.status) == (True, 200)
    assert target.seen[-1]["X-Probe"] == "yes"
    r = probe_one(url=f"{target.url}/secure")
    assert (r.up, r.status, r.reason) == (False, 401, "unexpected_status")
    r = probe_one(url=f"{target.url}/secure", bearer_token_file=str(tmp_path / "missing"))
    assert (r.up, r.reason) == (False, "credentials")


@pytest.mark.e2e
def test_tls_verified_with_ca_file_reports_expiry(tls_files: tuple[Path, Path]) -> None:
    server = Target(tls_files)
    try:
        cert = str(tls_files[0])
        r = probe_one(url=f"{server.url}/healthz", tls={"ca_file": cert})
        assert (r.up, r.status) == (True, 200)
        assert r.tls_expiry is not None
        assert 29 * 86400 < r.tls_expiry - time.time() < 31 * 86400
        r = probe_one(url=f"{server.url}/healthz")
        assert (r.up, r.reason) == (False, "tls_verify")
        r = probe_one(url=f"{server.url}/healthz", tls={"insecure_skip_verify": True})
        assert r.up
        r = probe_one(url=f"{server.url}/healthz", tls={"ca_file": "/nonexistent/ca.pem"})
        assert (r.up, r.reason) == (False, "tls_config")
    finally:
        server.stop()


def test_concurrent_probes_finish_by_the_deadline(target: Target) -> None:
    specs = [spec(name=f"hang{i}", url=f"{target.url}/hang", timeout_seconds=30)
             for i in range(5)] + [spec(name="ok", url=f"{target.url}/healthz")]
    service = ProbeService(specs, 16)
    names = list(service.specs)
    try:
        start = time.monotonic()
        results = {r.component: r for r in service.run(names, start + 1.0)}
        elapsed = time.monotonic() - start
        assert elapsed < 1.5
        assert results["ok"].up
        assert all(results[f"hang{i}"].reason == "timeout" for i in range(5))
        # Probes past their deadline are aborted: no thread is left waiting on the target.
        inflight = list(service._inflight.values())
        wait_until_done = time.monotonic() + 1.0
        while time.monotonic() < wait_until_done and not all(
                a.future is not None and a.future.done() for a in inflight):
            time.sleep(0.02)
        assert all(a.future is not None and a.future.done() for a in inflight)
        # Two overlapping callers share the probes in flight instead of starting more.
        before = sum(1 for seen in target.seen if seen["path"] == "/hang")
        background = threading.Thread(
            target=service.run, args=(names, time.monotonic() + 1.5), daemon=True)
        background.start()
        time.sleep(0.2)
        short = {r.component: r for r in service.run(names, time.monotonic() + 0.3)}
        assert short["hang0"].reason == "timeout"
        background.join(5)
        after = sum(1 for seen in target.seen if seen["path"] == "/hang")
        assert after - before == 5
    finally:
        service.close()


# --- through the real exporter process --------------------------------------------------
def _exporter(workdir: Path, probes: list[dict[str, Any]], **collectors: Any) -> Exporter:
    cfg = {"components": {"probes": probes},
           "collectors": {"timeout_seconds": collectors.get("timeout", 5.0)}}
    return Exporter(workdir, cfg)


@pytest.mark.e2e
def test_component_going_down_flips_up_within_one_scrape(tmp_path: Path) -> None:
    server = Target()
    port = server.port
    exp = _exporter(tmp_path, [
        {"name": "planner", "kind": "agent", "url": f"{server.url}/healthz",
         "body_regex": "ok"},
    ])
    try:
        text = exp.metrics()
        labels = {"component": "planner", "kind": "agent"}
        assert sample_value(text, UP, labels) == 1.0
        assert sample_value(text, "ai_component_probe_http_status", labels) == 200
        server.stop()
        text = exp.metrics()
        assert sample_value(text, UP, labels) == 0.0
        assert sample_value(text, "ai_component_probe_http_status", labels) == 0
        assert sample_value(text, "ai_component_probe_failures_total",
                            {**labels, "reason": "connection_refused"}) == 1
        status = exp.get("/api/status/ai").json()["probes"]
        assert status[0]["component"] == "planner"
        assert status[0]["up"] is False and status[0]["reason"] == "connection_refused"
        assert status[0]["url"] == f"http://{LOOPBACK}:{port}/healthz"
    finally:
        server.stop()
        exp.stop()


@pytest.mark.e2e
def test_hanging_target_never_delays_the_scrape_past_its_deadline(tmp_path: Path) -> None:
    server = Target()
    garbage = GarbageServer()
    exp = _exporter(tmp_path, [
        {"name": "slow-mcp", "kind": "mcp_server", "url": f"{server.url}/hang",
         "timeout_seconds": 30},
        {"name": "gateway", "kind": "gateway", "url": f"{server.url}/healthz"},
        {"name": "garbage", "url": garbage.url},
        {"name": "loop", "url": f"{server.url}/loop-a"},
        {"name": "refused", "url": f"http://{LOOPBACK}:{free_port()}/"},
    ], timeout=10.0)
    try:
        for header in ("2", "1.5"):
            start = time.monotonic()
            response = exp.get("/metrics",
                               headers={"X-Prometheus-Scrape-Timeout-Seconds": header})
            elapsed = time.monotonic() - start
            assert response.status_code == 200
            assert elapsed < float(header), f"scrape took {elapsed:.2f}s"
            text = response.text
            assert sample_value(text, "ai_exporter_collector_success",
                                {"collector": "probes"}) == 1.0
            assert sample_value(text, UP, {"component": "gateway"}) == 1.0
            for name in ("slow-mcp", "garbage", "loop", "refused"):
                assert sample_value(text, UP, {"component": name}) == 0.0, name
        assert sample_value(text, "ai_component_probe_failures_total",
                            {"component": "garbage", "reason": "invalid_response"}) == 2
        assert sample_value(text, "ai_component_probe_failures_total",
                            {"component": "loop", "reason": "redirect_loop"}) == 2
        # /probe: one component, bounded by the same header.
        start = time.monotonic()
        response = exp.get("/probe", params={"target": "slow-mcp"},
                           headers={"X-Prometheus-Scrape-Timeout-Seconds": "1.5"})
        assert time.monotonic() - start < 1.5
        assert sample_value(response.text, UP, {"component": "slow-mcp"}) == 0.0
        assert sample_value(response.text, UP, {"component": "gateway"}) is None
        response = exp.get("/probe", params={"target": "gateway"})
        assert sample_value(response.text, UP, {"component": "gateway"}) == 1.0
        assert exp.get("/probe", params={"target": "nope"}).status_code == 400
        assert exp.alive()
    finally:
        server.stop()
        garbage.stop()
        exp.stop()


def _probes_collector(runtime: Runtime) -> ProbesCollector:
    found = [c for c in runtime.runner.collectors if isinstance(c, ProbesCollector)]
    assert len(found) == 1
    return found[0]


def test_reload_keeps_failure_counters_and_swaps_the_service(target: Target,
                                                             tmp_path: Path) -> None:
    """The runtime owns the probe service: a reload builds the new one from the old one's
    counters, hands it to the new collector and to /probe, and closes the old one."""
    refused = f"http://{LOOPBACK}:{free_port()}/"
    storage = {"storage": {"path": str(tmp_path / "data")}}
    cfg = config.build({**storage, "components": {"probes": [{"name": "a", "url": refused}]}})
    cfg2 = config.build({**storage, "components": {"probes": [
        {"name": "a", "url": refused}, {"name": "b", "url": f"{target.url}/healthz"}]}})
    runtime = Runtime(cfg, loader=lambda: cfg2)
    try:
        old = runtime.probes
        assert old is not None and _probes_collector(runtime).service is old
        list(_probes_collector(runtime).collect())
        assert runtime.reload() == (True, "reloaded")
        new = runtime.probes
        assert new is not None and new is not old
        collector = _probes_collector(runtime)
        assert collector.service is new
        text = generate_latest(StaticFamilies(list(collector.collect()))).decode()
        assert sample_value(text, "ai_component_probe_failures_total",
                            {"component": "a", "reason": "connection_refused"}) == 2
        assert sample_value(text, UP, {"component": "b"}) == 1
        probe = create_app(runtime).test_client().get("/probe", query_string={"target": "b"})
        assert sample_value(probe.text, UP, {"component": "b"}) == 1
    finally:
        runtime.stop()


def test_collector_built_alone_owns_its_service() -> None:
    cfg = config.build({"components": {"probes": [
        {"name": "a", "url": f"http://{LOOPBACK}:{free_port()}/"}]}})
    collector = ProbesCollector(CollectorContext(cfg))
    assert set(collector.service.specs) == {"a"}
    collector.close()
    shared = ProbeService(cfg.components.probes, 1)
    try:
        given = ProbesCollector(CollectorContext(cfg, CollectorDeps(probes=shared)))
        assert given.service is shared
        given.close()  # the owner (the runtime) closes a shared service, not the collector
        assert not shared._pool._shutdown
    finally:
        shared.close()


@pytest.mark.e2e
def test_prometheus_scrapes_components_through_probe(target: Target, tmp_path: Path) -> None:
    """The documented multi-target scrape config, run by a real Prometheus."""
    exp = _exporter(tmp_path, [
        {"name": "planner", "kind": "agent", "url": f"{target.url}/healthz"},
        {"name": "broken", "kind": "gateway", "url": f"{target.url}/broken"},
    ])
    prom = None
    try:
        prom = Prometheus(tmp_path, [{
            "job_name": "ai-components", "metrics_path": "/probe",
            "static_configs": [{"targets": ["planner", "broken"]}],
            "relabel_configs": [
                {"source_labels": ["__address__"], "target_label": "__param_target"},
                {"source_labels": ["__param_target"], "target_label": "instance"},
                {"target_label": "__address__", "replacement": f"{LOOPBACK}:{exp.port}"},
            ]}])
        result = prom.wait_for('ai_component_up{job="ai-components"}')
        wait_until(lambda: len(prom.query('ai_component_up{job="ai-components"}')) == 2, 20,
                   what="both components scraped")
        values = {r["metric"]["instance"]: float(r["value"][1])
                  for r in prom.query('ai_component_up{job="ai-components"}')}
        assert values == {"planner": 1.0, "broken": 0.0}, result
        up = {r["metric"]["instance"]: float(r["value"][1])
              for r in prom.query('up{job="ai-components"}')}
        assert up == {"planner": 1.0, "broken": 1.0}  # the scrape works; the probe fails
    finally:
        if prom is not None:
            prom.stop()
        exp.stop()
