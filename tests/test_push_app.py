"""``POST /api/v1/events`` in process (Flask's test client on ``create_app``): the push
API's answers, counters and views request by request, without starting the exporter (the
fast tier). ``test_push.py`` keeps what needs the real process: a mixed batch read back
from the scraped /metrics, the body limit as the server enforces it on the socket, RSS of
the process, the rejection log, PromQL over a real Prometheus."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.test import TestResponse

from exporter import config
from exporter.runtime import Runtime
from exporter.web import create_app
from tests.procs import ROOT, sample_value
from tests.pushcases import JSON, NDJSON, TOKEN_A, TOKEN_B, URL, VALID_BY_KIND, Delta, every_kind


class App:
    """A started runtime and a test client on its app, read as the push tests read the
    real exporter."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.runtime = Runtime(config.build(settings))
        self.runtime.start()
        self.client: FlaskClient = create_app(self.runtime).test_client()

    def post(self, body: bytes | str, headers: dict[str, str] | None = None) -> TestResponse:
        return self.client.post(URL, data=body, headers=headers or {})

    def metrics(self) -> str:
        return self.client.get("/metrics").text

    def metric(self, name: str, **labels: str) -> float:
        found = sample_value(self.metrics(), name, labels)
        return 0.0 if found is None else found

    def delta(self) -> Delta:
        return Delta(self)


def _json(response: TestResponse) -> Any:
    return response.get_json(force=True)


@pytest.fixture(scope="module")
def push() -> Iterator[App]:
    """Push on, its defaults otherwise, and a daily budget (as test_push's exporter)."""
    app = App({"ai": {"budgets": [{"scope": "total", "usd_per_day": 20}],
                      "log_interval_seconds": 60}})
    yield app
    app.runtime.stop()


def test_valid_arrays_are_counted_per_kind(push: App) -> None:
    delta = push.delta()
    events = every_kind("app-fast") * 3
    response = push.post(json.dumps(events), JSON)
    assert response.status_code == 200
    assert _json(response) == {"accepted": len(events), "rejected": 0}
    assert delta() == ({k: 3 * n for k, n in VALID_BY_KIND.items()}, {})
    assert push.metric("ai_tasks_total", component="app-fast", status="queued") == 6


def test_single_object_and_empty_array(push: App) -> None:
    one = push.post(json.dumps({"kind": "error", "component": "app-single",
                                "category": "auth"}), JSON)
    assert one.status_code == 200 and _json(one)["accepted"] == 1
    empty = push.post(b" [ ] ", JSON)
    assert empty.status_code == 200 and _json(empty) == {"accepted": 0, "rejected": 0}
    assert push.metric("ai_errors_total", component="app-single") == 1


def test_ndjson_gzip_reports_rejected_lines_by_number(push: App) -> None:
    delta = push.delta()
    lines = [
        json.dumps({"kind": "error", "component": "app-ndjson", "category": "network"}),
        "",
        '{"kind":"error","component":"app-ndjson","category":"network"',
        json.dumps({"kind": "tool_call", "tool": "app-ndjson-tool"}),
        "   ",
        json.dumps({"kind": "error", "component": "app-ndjson", "category": "bogus"}),
        json.dumps({"kind": "error", "component": "app-ndjson", "category": "network"}),
    ]
    body = gzip.compress("\r\n".join(lines).encode())
    response = push.post(body, {**NDJSON, "Content-Encoding": "gzip"})
    assert response.status_code == 207
    result = _json(response)
    assert (result["accepted"], result["rejected"]) == (3, 2)
    assert [(e["index"], e["line"], e["reason"]) for e in result["errors"]] == [
        (1, 3, "malformed_json"), (3, 6, "invalid_value")]
    assert delta() == ({"error": 2, "tool_call": 1},
                       {"malformed_json": 1, "invalid_value": 1})
    assert push.metric("ai_errors_total", component="app-ndjson", category="network") == 2


def test_whole_request_refusals_are_counted_with_reasons(push: App) -> None:
    delta = push.delta()
    event = json.dumps({"kind": "error", "component": "app-refused", "category": "auth"})
    cases: list[tuple[dict[str, str], bytes, int, str]] = [
        ({"Content-Type": "text/plain"}, event.encode(), 415, "wrong_content_type"),
        ({}, event.encode(), 415, "wrong_content_type"),
        ({**JSON, "Content-Encoding": "br"}, event.encode(), 415, "wrong_content_type"),
        ({**JSON, "Content-Encoding": "gzip"}, b"not gzip at all", 400, "malformed_json"),
        ({**JSON, "Content-Encoding": "gzip"}, gzip.compress(event.encode())[:-6], 400,
         "malformed_json"),
        (JSON, b"", 400, "empty"),
        (JSON, b"   \n ", 400, "empty"),
        (JSON, b"nonsense", 400, "malformed_json"),
        (JSON, b"[1, 2]", 400, "not_an_object"),
    ]
    for headers, body, status, reason in cases:
        response = push.post(body, headers)
        assert response.status_code == status, (headers, body[:20], response.text)
        assert _json(response)["errors"][0]["reason"] == reason
    assert delta() == ({}, {"wrong_content_type": 3, "malformed_json": 3, "empty": 2,
                            "not_an_object": 2})
    assert push.metric("ai_errors_total", component="app-refused") == 0


def test_gzip_bomb_is_refused_before_inflating(push: App) -> None:
    delta = push.delta()
    bomb = gzip.compress(b"[" + b" " * (64 * 1024 * 1024) + b"]", compresslevel=9)
    assert len(bomb) < 200_000
    response = push.post(bomb, {**JSON, "Content-Encoding": "gzip"})
    assert response.status_code == 413
    assert delta() == ({}, {"too_large": 1})


def test_json_views_and_schema(push: App) -> None:
    push.post(json.dumps([{"kind": "component_status", "component": "app-views",
                           "component_kind": "gateway", "version": "3.1"},
                          {"kind": "error", "component": "app-views", "category": "server"}]),
              JSON)
    status = push.client.get("/api/status/ai")
    assert status.headers["Cache-Control"] == "no-store"
    [row] = [c for c in _json(status)["components"] if c["component"] == "app-views"]
    assert (row["kind"], row["version"], row["status"], row["fresh"]) == (
        "gateway", "3.1", "up", True)
    aggregates = push.client.get("/api/metrics/ai")
    assert aggregates.headers["Cache-Control"] == "no-store"
    rows = _json(aggregates)["ai_errors_total"]
    assert {"labels": {"component": "app-views", "category": "server"}, "value": 1.0} in rows
    schema = push.client.get("/api/v1/schema")
    assert schema.status_code == 200
    published = json.loads((ROOT / "docs" / "events.schema.json").read_text())
    assert _json(schema) == published


def test_bearer_tokens_when_configured(tmp_path: Path) -> None:
    tokens_file = tmp_path / "push-tokens"
    tokens_file.write_text(f"# one token a line\n\n{TOKEN_B}\n")
    tokens_file.chmod(0o600)
    app = App({"sources": {"push": {"tokens": [TOKEN_A], "tokens_file": str(tokens_file)}}})
    try:
        event = json.dumps([{"kind": "error", "component": "authz", "category": "auth"}])
        for auth in ({}, {"Authorization": "Bearer wrong-token-of-some-length"},
                     {"Authorization": f"Basic {TOKEN_A}"},
                     {"Authorization": f"Bearer {TOKEN_A}x"}):
            response = app.post(event, {**JSON, **auth})
            assert response.status_code == 401, auth
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            assert TOKEN_A not in response.text
        for token in (TOKEN_A, TOKEN_B):
            response = app.post(event, {**JSON, "Authorization": f"Bearer {token}"})
            assert response.status_code == 200, response.text
        assert app.client.get("/metrics").status_code == 200  # reads stay open
        assert app.metric("ai_errors_total", component="authz") == 2
        failures = sum(s.value for f in text_string_to_metric_families(app.metrics())
                       for s in f.samples if s.name == "ai_exporter_http_auth_failures_total")
        assert failures == 4
    finally:
        app.runtime.stop()
