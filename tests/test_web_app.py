"""The web routes in process (Flask's test client on ``create_app``): status, headers and
JSON shape of every route, without starting the exporter.

Security headers go on every response (errors included), JSON routes are never cached,
CORS headers appear only when an origin is configured, unknown routes and wrong methods
answer in JSON, and /metrics is gzip-compressed only when the client asks for it.
``test_web.py`` runs the shared header checks (``tests/webchecks.py``) through the real
server and keeps what only it shows: gzip framing, keep-alive, the Server header.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from exporter import config
from exporter.runtime import Runtime
from exporter.web import create_app
from tests.webchecks import JSON_ROUTES, ORIGIN, assert_route_headers, assert_security_headers


def _running(settings: dict[str, Any]) -> Iterator[Runtime]:
    runtime = Runtime(config.build(settings))
    runtime.start()
    try:
        yield runtime
    finally:
        runtime.stop()


@pytest.fixture(scope="module")
def runtime() -> Iterator[Runtime]:
    """Default configuration: real host metrics, no demo, no credentials."""
    yield from _running({})


@pytest.fixture(scope="module")
def configured() -> Iterator[Runtime]:
    """CORS on, and health thresholds no host can meet: every check must fail."""
    yield from _running({
        "web": {"cors_origin": ORIGIN},
        "health": {"max_memory_utilization": 0.0, "max_disk_utilization": 0.0,
                   "disk_paths": ["/", "/no/such/mount"]},
    })


@pytest.fixture
def client(runtime: Runtime) -> FlaskClient:
    return create_app(runtime).test_client()


@pytest.fixture
def configured_client(configured: Runtime) -> FlaskClient:
    return create_app(configured).test_client()


def _json(response: TestResponse) -> Any:
    return response.get_json(force=True)


@pytest.mark.parametrize("path", ["/", "/metrics", *JSON_ROUTES])
def test_route_headers(client: FlaskClient, path: str) -> None:
    assert_route_headers(path, client.get(path))


def test_landing_page_links_every_route_it_advertises(client: FlaskClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    version = _json(client.get("/api/status/version"))["version"]
    assert "ai-metrics-exporter" in response.text
    assert version in response.text
    links = set(re.findall(r'href="([^"]+)"', response.text))
    assert {"/metrics", "/healthz", "/readyz", "/livez", "/api/status/version",
            "/api/status/system", "/api/metrics/system"} <= links
    for link in links:
        assert client.get(link).status_code in (200, 503), link


def test_metrics_plain_text_unless_gzip_is_asked(client: FlaskClient) -> None:
    plain = client.get("/metrics", headers={"Accept-Encoding": "identity"})
    assert plain.status_code == 200
    assert plain.headers["Content-Type"].startswith("text/plain; version=")
    assert "Content-Encoding" not in plain.headers
    assert "# TYPE system_memory_limit_bytes gauge" in plain.text
    assert 'ai_exporter_collector_success{collector="cpu"} 1.0' in plain.text
    zipped = client.get("/metrics", headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert zipped.headers["Vary"] == "Accept-Encoding"
    assert "# TYPE system_cpu_time_seconds_total counter" in gzip.decompress(
        zipped.data).decode()


def test_livez_and_readyz(client: FlaskClient) -> None:
    live = client.get("/livez")
    assert live.status_code == 200 and _json(live) == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    body = _json(ready)
    assert body["status"] == "ok"
    assert body["checks"]["started"] == {"ok": True}
    assert body["checks"]["source:push"]["ok"] is True


def test_healthz_reports_each_check_with_its_threshold(client: FlaskClient) -> None:
    response = client.get("/healthz")
    body = _json(response)
    assert set(body) == {"status", "checks"}
    assert set(body["checks"]) == {"memory", "disk:/"}
    for check in body["checks"].values():
        assert set(check) == {"ok", "utilization", "threshold"}
        assert 0 <= check["utilization"] <= 1
        assert check["threshold"] == 0.95
    ok = all(c["ok"] for c in body["checks"].values())
    assert response.status_code == (200 if ok else 503)
    assert body["status"] == ("ok" if ok else "fail")


def test_healthz_503_names_each_failed_check(configured_client: FlaskClient) -> None:
    response = configured_client.get("/healthz")
    assert response.status_code == 503
    body = _json(response)
    assert body["status"] == "fail"
    assert set(body["checks"]) == {"memory", "disk:/", "disk:/no/such/mount"}
    assert body["checks"]["memory"]["ok"] is False
    assert body["checks"]["memory"]["threshold"] == 0.0
    assert body["checks"]["disk:/"]["ok"] is False
    assert body["checks"]["disk:/no/such/mount"] == {"ok": False, "error": "cannot stat"}
    assert_security_headers(response, "/healthz")
    assert response.headers["Cache-Control"] == "no-store"


def test_version_has_no_paths_or_config(client: FlaskClient) -> None:
    response = client.get("/api/status/version")
    assert response.status_code == 200
    body = _json(response)
    assert set(body) == {"version", "revision", "build_date", "python_version"}
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", body["version"])
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", body["revision"])
    assert re.fullmatch(r"\d+\.\d+\.\d+", body["python_version"])
    for secret_ish in ("/", "\\", "listen", "config", "token", "secret"):
        assert secret_ish not in response.text, f"{secret_ish!r} in {response.text}"


def test_status_system_shape(client: FlaskClient) -> None:
    body = _json(client.get("/api/status/system"))
    assert set(body) == {"cpu", "memory", "uptime_seconds", "filesystems"}
    assert body["cpu"]["logical_count"] >= 1
    assert set(body["cpu"]["load_average"]) == {"1m", "5m", "15m"}
    assert body["memory"]["limit_bytes"] > 0
    assert 0 <= body["memory"]["used_utilization"] <= 1
    assert body["uptime_seconds"] > 0
    assert any(fs["mountpoint"] == "/" for fs in body["filesystems"]), body["filesystems"]
    for fs in body["filesystems"]:
        assert set(fs) == {"mountpoint", "type", "utilization"}


def test_metrics_system_view_uses_the_series_names(client: FlaskClient) -> None:
    view: dict[str, list[dict[str, Any]]] = _json(client.get("/api/metrics/system"))
    assert "system_memory_limit_bytes" in view
    assert "system_cpu_time_seconds_total" in view
    row = view["system_cpu_time_seconds_total"][0]
    assert set(row) == {"labels", "value"}
    assert set(row["labels"]) == {"cpu_logical_number", "cpu_mode"}
    text = client.get("/metrics").text
    for name in view:
        if not name.endswith("_created"):
            assert f"\n{name}" in text, name


def test_ai_routes_shape(client: FlaskClient) -> None:
    status = _json(client.get("/api/status/ai"))
    assert set(status) == {"components", "probes", "sources", "ingest"}
    assert status["sources"]["push"]["ok"] is True
    assert isinstance(status["sources"]["push"]["detail"], str)
    assert isinstance(_json(client.get("/api/metrics/ai")), dict)
    assert _json(client.get("/api/v1/schema"))["$schema"].startswith("https://json-schema.org/")


def test_unknown_route_is_404_json_without_echoing_input(client: FlaskClient) -> None:
    response = client.get("/no/such/route?x=<script>")
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    assert_security_headers(response, "/no/such/route")
    body = _json(response)
    assert body["status"] == 404 and body["error"] == "Not Found"
    assert "script" not in response.text


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/metrics"), ("DELETE", "/healthz"), ("PUT", "/api/status/version"),
    ("GET", "/-/reload"), ("GET", "/api/v1/events"),
])
def test_wrong_method_is_405_json(client: FlaskClient, method: str, path: str) -> None:
    response = client.open(path, method=method)
    assert response.status_code == 405
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Allow"]
    assert method not in response.headers["Allow"].split(", ")
    assert_security_headers(response, path)
    assert _json(response)["status"] == 405


def test_cors_only_when_configured(configured_client: FlaskClient) -> None:
    for path in ("/metrics", "/livez", "/api/status/version", "/no/such/route"):
        response = configured_client.get(path, headers={"Origin": ORIGIN})
        assert response.headers["Access-Control-Allow-Origin"] == ORIGIN, path
        assert "Origin" in response.headers["Vary"]
        assert_security_headers(response, path)
