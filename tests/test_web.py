"""Every route of the real exporter process: status, headers and JSON shape.

Security headers go on every response (errors included), JSON routes are never cached,
CORS headers appear only when an origin is configured, unknown routes and wrong methods
answer in JSON, and /metrics is gzip-compressed only when the client asks for it.
"""

from __future__ import annotations

import gzip
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.procs import LOOPBACK, Exporter

pytestmark = pytest.mark.e2e

SECURITY_HEADERS = ("X-Content-Type-Options", "X-Frame-Options", "Content-Security-Policy",
                    "Referrer-Policy")
JSON_ROUTES = ("/healthz", "/readyz", "/livez", "/api/status/version", "/api/status/system",
               "/api/metrics/system", "/api/status/ai", "/api/metrics/ai", "/api/v1/schema")
CORS_HEADERS = ("Access-Control-Allow-Origin", "Access-Control-Allow-Methods",
                "Access-Control-Allow-Headers")
ORIGIN = "https://grafana.example"


@pytest.fixture(scope="module")
def configured(workdir: Path) -> Iterator[Exporter]:
    """CORS on, and health thresholds no host can meet: every check must fail."""
    proc = Exporter(workdir, config={
        "web": {"cors_origin": ORIGIN},
        "health": {"max_memory_utilization": 0.0, "max_disk_utilization": 0.0,
                   "disk_paths": ["/", "/no/such/mount"]},
    })
    yield proc
    proc.stop()


def _assert_security_headers(response: requests.Response) -> None:
    for name in SECURITY_HEADERS:
        assert response.headers.get(name), f"{response.url}: {name} missing"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]


@pytest.mark.parametrize("path", ["/", "/metrics", *JSON_ROUTES])
def test_route_headers(exporter: Exporter, path: str) -> None:
    response = exporter.get(path)
    assert response.status_code in (200, 503), (path, response.status_code)
    _assert_security_headers(response)
    for name in CORS_HEADERS:
        assert name not in response.headers, f"{path}: CORS header {name} without an origin"
    if path in JSON_ROUTES:
        assert response.headers["Content-Type"] == "application/json"
        assert response.headers["Cache-Control"] == "no-store"
        response.json()


def test_landing_page(exporter: Exporter) -> None:
    response = exporter.get("/")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    version = exporter.get("/api/status/version").json()["version"]
    assert "ai-metrics-exporter" in response.text
    assert version in response.text
    links = set(re.findall(r'href="([^"]+)"', response.text))
    assert {"/metrics", "/healthz", "/readyz", "/livez", "/api/status/version",
            "/api/status/system", "/api/metrics/system"} <= links
    for link in links:  # every advertised link answers
        assert exporter.get(link).status_code in (200, 503), link


def test_metrics_plain_text(exporter: Exporter) -> None:
    response = exporter.get("/metrics", headers={"Accept-Encoding": "identity"})
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    assert "Content-Encoding" not in response.headers
    assert "# TYPE system_memory_limit_bytes gauge" in response.text
    assert 'ai_exporter_collector_success{collector="cpu"} 1.0' in response.text


def test_metrics_gzip_when_asked(exporter: Exporter) -> None:
    response = requests.get(f"{exporter.url}/metrics", headers={"Accept-Encoding": "gzip"},
                            timeout=10, stream=True)
    assert response.headers["Content-Encoding"] == "gzip"
    assert response.headers["Vary"] == "Accept-Encoding"
    raw = response.raw.read(decode_content=False)
    text = gzip.decompress(raw).decode()
    assert "# TYPE system_cpu_time_seconds_total counter" in text
    assert int(response.headers["Content-Length"]) == len(raw)


def test_livez(exporter: Exporter) -> None:
    response = exporter.get("/livez")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz(exporter: Exporter) -> None:
    response = exporter.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["started"] == {"ok": True}
    assert body["checks"]["source:push"]["ok"] is True


def test_healthz_ok_with_default_thresholds(exporter: Exporter) -> None:
    response = exporter.get("/healthz")
    body = response.json()
    assert set(body) == {"status", "checks"}
    assert set(body["checks"]) == {"memory", "disk:/"}
    for check in body["checks"].values():
        assert set(check) == {"ok", "utilization", "threshold"}
        assert 0 <= check["utilization"] <= 1
        assert check["threshold"] == 0.95
    ok = all(c["ok"] for c in body["checks"].values())
    assert response.status_code == (200 if ok else 503)
    assert body["status"] == ("ok" if ok else "fail")


def test_healthz_503_names_each_failed_check(configured: Exporter) -> None:
    response = configured.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "fail"
    assert set(body["checks"]) == {"memory", "disk:/", "disk:/no/such/mount"}
    assert body["checks"]["memory"]["ok"] is False
    assert body["checks"]["memory"]["threshold"] == 0.0
    assert body["checks"]["disk:/"]["ok"] is False
    assert body["checks"]["disk:/no/such/mount"] == {"ok": False, "error": "cannot stat"}
    _assert_security_headers(response)
    assert response.headers["Cache-Control"] == "no-store"


def test_version_has_no_paths_or_config(exporter: Exporter) -> None:
    response = exporter.get("/api/status/version")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"version", "revision", "build_date", "python_version"}
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", body["version"])
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", body["revision"])
    assert re.fullmatch(r"\d+\.\d+\.\d+", body["python_version"])
    text = response.text
    for secret_ish in ("/", "\\", "listen", "config", "token", "secret"):
        assert secret_ish not in text, f"{secret_ish!r} in {text}"


def test_status_system_shape(exporter: Exporter) -> None:
    body = exporter.get("/api/status/system").json()
    assert set(body) == {"cpu", "memory", "uptime_seconds", "filesystems"}
    assert body["cpu"]["logical_count"] >= 1
    assert set(body["cpu"]["load_average"]) == {"1m", "5m", "15m"}
    assert body["memory"]["limit_bytes"] > 0
    assert 0 <= body["memory"]["used_utilization"] <= 1
    assert body["uptime_seconds"] > 0
    assert any(fs["mountpoint"] == "/" for fs in body["filesystems"]), body["filesystems"]
    for fs in body["filesystems"]:
        assert set(fs) == {"mountpoint", "type", "utilization"}


def test_metrics_system_matches_series_names(exporter: Exporter) -> None:
    view: dict[str, list[dict[str, Any]]] = exporter.get("/api/metrics/system").json()
    assert "system_memory_limit_bytes" in view
    assert "system_cpu_time_seconds_total" in view
    row = view["system_cpu_time_seconds_total"][0]
    assert set(row) == {"labels", "value"}
    assert set(row["labels"]) == {"cpu_logical_number", "cpu_mode"}
    text = exporter.metrics()
    for name in view:  # the JSON view and /metrics use the same names
        if not name.endswith("_created"):
            assert f"\n{name}" in text, name


def test_ai_routes_shape(exporter: Exporter) -> None:
    status = exporter.get("/api/status/ai").json()
    assert set(status) == {"components", "probes", "sources", "ingest"}
    assert status["sources"]["push"]["ok"] is True
    assert isinstance(status["sources"]["push"]["detail"], str)
    assert isinstance(exporter.get("/api/metrics/ai").json(), dict)
    schema = exporter.get("/api/v1/schema").json()
    assert schema["$schema"].startswith("https://json-schema.org/")


def test_unknown_route_is_404_json(exporter: Exporter) -> None:
    response = exporter.get("/no/such/route?x=<script>")
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    _assert_security_headers(response)
    body = response.json()
    assert body["status"] == 404
    assert body["error"] == "Not Found"
    assert "script" not in response.text  # input is never echoed


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/metrics"), ("DELETE", "/healthz"), ("PUT", "/api/status/version"),
    ("GET", "/-/reload"), ("GET", "/api/v1/events"),
])
def test_wrong_method_is_405_json(exporter: Exporter, method: str, path: str) -> None:
    response = requests.request(method, f"{exporter.url}{path}", timeout=10)
    assert response.status_code == 405
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Allow"]
    assert method not in response.headers["Allow"].split(", ")
    _assert_security_headers(response)
    assert response.json()["status"] == 405


def test_cors_only_when_configured(configured: Exporter) -> None:
    for path in ("/metrics", "/livez", "/api/status/version", "/no/such/route"):
        response = configured.get(path, headers={"Origin": ORIGIN})
        assert response.headers["Access-Control-Allow-Origin"] == ORIGIN, path
        assert "Origin" in response.headers["Vary"]
        _assert_security_headers(response)


def test_http_1_1_keep_alive_and_server_header(exporter: Exporter) -> None:
    """Two requests on one connection (Prometheus reuses connections); no dev server."""
    with socket.create_connection((LOOPBACK, exporter.port), timeout=10) as conn:
        request = f"GET /livez HTTP/1.1\r\nHost: {LOOPBACK}\r\n\r\n".encode()
        replies = b""
        for sent in (1, 2):
            conn.sendall(request)
            while replies.count(b'{"status":"ok"}') < sent:
                chunk = conn.recv(65536)
                assert chunk, "connection closed between requests"
                replies += chunk
    assert replies.count(b"HTTP/1.1 200") == 2
    assert b"Werkzeug" not in replies
