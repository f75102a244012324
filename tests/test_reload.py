"""Configuration reload on SIGHUP and ``POST /-/reload``, on the real process and, for
``POST /-/reload``, in process as well.

A good new file takes effect without a restart; a bad one is rejected, the configuration
in force stays, and ``ai_exporter_config_last_reload_successful`` says so until a later
reload succeeds.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter import config
from exporter.runtime import Runtime, make_loader
from exporter.web import create_app
from tests.procs import Exporter, sample_value, wait_until

RELOAD_OK = "ai_exporter_config_last_reload_successful"
RELOAD_TIME = "ai_exporter_config_last_reload_success_timestamp_seconds"


@pytest.fixture
def proc(workdir: Path) -> Iterator[Exporter]:
    exporter = Exporter(workdir, config={"web": {"cors_origin": "https://one.example"}},
                        args=["--web.enable-lifecycle"])
    yield exporter
    exporter.stop()


def _write(proc: Exporter, data: dict[str, Any] | str) -> None:
    proc.config_path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))


def _origin(proc: Exporter) -> str | None:
    return proc.get("/livez").headers.get("Access-Control-Allow-Origin")


def _gauge(proc: Exporter, name: str) -> float | None:
    return sample_value(proc.metrics(), name)


@pytest.mark.e2e
def test_post_reload_applies_new_config(proc: Exporter) -> None:
    assert _origin(proc) == "https://one.example"
    assert _gauge(proc, RELOAD_OK) == 1.0
    first = _gauge(proc, RELOAD_TIME)
    assert 'collector="loadavg"' in proc.metrics()

    _write(proc, {"web": {"cors_origin": "https://two.example"},
                  "collectors": {"enabled": {"loadavg": False}}})
    response = proc.post("/-/reload")
    assert response.status_code == 200
    assert response.json() == {"status": "reloaded", "detail": "reloaded"}
    assert response.headers["Cache-Control"] == "no-store"

    assert _origin(proc) == "https://two.example"
    text = proc.metrics()
    assert 'collector="loadavg"' not in text
    assert "system_cpu_load_average_1m" not in text
    assert sample_value(text, RELOAD_OK) == 1.0
    second = sample_value(text, RELOAD_TIME)
    assert first is not None and second is not None and second > first


@pytest.mark.e2e
def test_post_reload_rejects_bad_config_and_keeps_old(proc: Exporter) -> None:
    _write(proc, {"web": {"cors_origin": "https://two.example", "threads": "many"}})
    response = proc.post("/-/reload")
    assert response.status_code == 400
    body = response.json()
    assert body["status"] == "rejected"
    assert "web.threads" in body["detail"]  # the field is named, the file path is not
    assert str(proc.config_path) not in body["detail"]
    assert _origin(proc) == "https://one.example"  # the old configuration is in force
    assert _gauge(proc, RELOAD_OK) == 0.0

    for bad, field in ((": not yaml: [", "config.file"),
                       ({"collectors": {"enabled": {"nope": True}}}, "collectors.enabled.nope"),
                       ({"host": {"network_exclude_interfaces": "(["}},
                        "host.network_exclude_interfaces")):
        _write(proc, bad)
        response = proc.post("/-/reload")
        assert response.status_code == 400
        assert field in response.json()["detail"], response.json()
    proc.config_path.unlink()
    response = proc.post("/-/reload")
    assert response.status_code == 400
    assert "config.file" in response.json()["detail"]
    assert _origin(proc) == "https://one.example"
    assert _gauge(proc, RELOAD_OK) == 0.0

    # A later good reload clears the failure.
    _write(proc, {"web": {"cors_origin": "https://three.example"}})
    assert proc.post("/-/reload").status_code == 200
    assert _origin(proc) == "https://three.example"
    assert _gauge(proc, RELOAD_OK) == 1.0
    assert proc.alive()
    assert "reload rejected, keeping the current configuration" in proc.log()


@pytest.mark.e2e
def test_sighup_applies_new_config(proc: Exporter) -> None:
    _write(proc, {"web": {"cors_origin": "https://hup.example"}})
    proc.signal(signal.SIGHUP)
    wait_until(lambda: _origin(proc) == "https://hup.example", 10, what="SIGHUP reload")
    assert _gauge(proc, RELOAD_OK) == 1.0
    assert proc.alive()


@pytest.mark.e2e
def test_sighup_bad_config_keeps_old(proc: Exporter) -> None:
    _write(proc, {"web": {"cors_origin": "https://hup.example"}, "no_such_section": {}})
    proc.signal(signal.SIGHUP)
    wait_until(lambda: _gauge(proc, RELOAD_OK) == 0.0, 10,
               what="last_reload_successful 0 after a bad SIGHUP reload")
    assert _origin(proc) == "https://one.example"
    assert "no_such_section" in proc.log()
    assert proc.get("/healthz").status_code in (200, 503)  # still serving

    _write(proc, {"web": {"cors_origin": "https://fixed.example"}})
    proc.signal(signal.SIGHUP)
    wait_until(lambda: _gauge(proc, RELOAD_OK) == 1.0, 10, what="recovery after SIGHUP")
    assert _origin(proc) == "https://fixed.example"


@pytest.mark.e2e
def test_reload_keeps_ai_counters(proc: Exporter) -> None:
    """Reload rebuilds collectors and sources but never resets accumulated AI state."""
    event = {"kind": "error", "component": "reload-check", "category": "tool"}
    assert proc.post("/api/v1/events", json=[event, event]).status_code == 200

    def errors() -> float | None:
        return sample_value(proc.metrics(), "ai_errors_total",
                            {"component": "reload-check", "category": "tool"})

    assert errors() == 2.0
    _write(proc, {"web": {"cors_origin": "https://two.example"}})
    assert proc.post("/-/reload").status_code == 200
    assert errors() == 2.0


# Files that passed validation before and broke the running exporter:
# (file, field named in the body, reason shown in the body or None when only the field is).
BROKE_AT_RUN_TIME: list[tuple[dict[str, Any] | str, str, str | None]] = [
    ("collectors:\n  timeout_seconds: .inf\n", "collectors.timeout_seconds",
     "must be a finite number, got inf"),
    ({"ai": {"extra_labels": {"instance": "x"}}}, "ai.extra_labels.instance",
     "a label the exporter or Prometheus already sets"),
    ("web:\n  cors_origin: https://two.example\nweb:\n  threads: 4\n", "web",
     "key given twice (lines 1 and 3)"),
    ({"web": {"threads": 100_000}}, "web.threads", "Expected `int` <= 256"),
    ({"web": {"security": {"tokens_file": "/"}}}, "web.security.tokens_file", None),
    ({"web": {"telemetry_path": "metrics"}}, "web.telemetry_path", "must be an absolute path"),
    ("web: " + "[" * 10_000 + "]" * 10_000 + "\n", "config.file", "nested deeper than"),
]


@pytest.mark.e2e
def test_post_reload_refuses_what_would_break_at_run_time(proc: Exporter) -> None:
    """Each file is refused with 400 naming the field; the configuration in force stays
    and keeps serving, the reload gauge says 0, and a good file still reloads after."""
    for bad, field, reason in BROKE_AT_RUN_TIME:
        _write(proc, bad)
        response = proc.post("/-/reload")
        assert response.status_code == 400, (field, response.text)
        body = response.json()
        assert body["status"] == "rejected"
        assert f"configuration rejected at {field}" in body["detail"], body
        if reason is not None:
            assert reason in body["detail"], body
        else:  # the reason names a path: it stays in the log
            assert body["detail"].endswith("see the exporter log"), body
        assert _origin(proc) == "https://one.example"
        assert _gauge(proc, RELOAD_OK) == 0.0
    assert proc.get("/metrics").status_code == 200  # the old telemetry path still serves
    assert proc.alive()
    assert "Traceback" not in proc.log()

    _write(proc, {"web": {"cors_origin": "https://three.example"}})
    assert proc.post("/-/reload").status_code == 200
    assert _origin(proc) == "https://three.example"
    assert _gauge(proc, RELOAD_OK) == 1.0


@pytest.mark.e2e
def test_sighup_refuses_a_duplicated_section(proc: Exporter) -> None:
    _write(proc, "web:\n  cors_origin: https://hup.example\nweb:\n  threads: 4\n")
    proc.signal(signal.SIGHUP)
    wait_until(lambda: _gauge(proc, RELOAD_OK) == 0.0, 10,
               what="last_reload_successful 0 after a duplicated key")
    assert _origin(proc) == "https://one.example"
    assert "web: key given twice" in proc.log()


def test_reload_failing_unexpectedly_keeps_the_config_and_reports_0() -> None:
    """Not a ConfigError (a bug in a loader): still refused, never a 500 with the gauge
    left at 1."""
    def broken() -> config.Config:
        raise RuntimeError("loader bug")

    cfg = config.build({"web": {"cors_origin": "https://one.example"}})
    runtime = Runtime(cfg, broken)
    try:
        assert runtime.reload() == (False, "reload failed: RuntimeError")
        assert runtime.last_reload_ok is False
        assert runtime.config is cfg
        assert sample_value(runtime.render_metrics().decode(), RELOAD_OK) == 0.0
    finally:
        runtime.stop()


# --- the same through POST /-/reload in process (the fast tier) ----------------------------


class InProcess:
    """A started runtime that re-reads ``path`` on reload, and a test client on its app."""

    def __init__(self, path: Path) -> None:
        self.config_path = path
        lifecycle = {"web": {"enable_lifecycle": True}}  # as --web.enable-lifecycle
        self.runtime = Runtime(config.load(str(path), lifecycle),
                               make_loader(str(path), lifecycle))
        self.runtime.start()
        self.client = create_app(self.runtime).test_client()

    def write(self, data: dict[str, Any] | str) -> None:
        self.config_path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))

    def reload(self) -> tuple[int, dict[str, Any]]:
        response = self.client.post("/-/reload")
        assert response.headers["Cache-Control"] == "no-store"
        body: dict[str, Any] = response.get_json(force=True)
        return response.status_code, body

    def origin(self) -> str | None:
        return self.client.get("/livez").headers.get("Access-Control-Allow-Origin")

    def metrics(self) -> str:
        return self.client.get("/metrics").text


@pytest.fixture
def app(tmp_path: Path) -> Iterator[InProcess]:
    path = tmp_path / "exporter.yml"
    path.write_text(yaml.safe_dump({"web": {"cors_origin": "https://one.example"}}))
    served = InProcess(path)
    yield served
    served.runtime.stop()


def test_post_reload_in_process_applies_new_config(app: InProcess) -> None:
    assert app.origin() == "https://one.example"
    first = sample_value(app.metrics(), RELOAD_TIME)
    assert 'collector="loadavg"' in app.metrics()
    app.write({"web": {"cors_origin": "https://two.example"},
               "collectors": {"enabled": {"loadavg": False}}})
    assert app.reload() == (200, {"status": "reloaded", "detail": "reloaded"})
    assert app.origin() == "https://two.example"
    text = app.metrics()
    assert 'collector="loadavg"' not in text
    assert "system_cpu_load_average_1m" not in text
    assert sample_value(text, RELOAD_OK) == 1.0
    second = sample_value(text, RELOAD_TIME)
    assert first is not None and second is not None and second >= first


def test_post_reload_in_process_rejects_bad_files_and_keeps_old(app: InProcess) -> None:
    for bad, field in (({"web": {"threads": "many"}}, "web.threads"),
                       (": not yaml: [", "config.file"),
                       ({"collectors": {"enabled": {"nope": True}}}, "collectors.enabled.nope"),
                       ({"host": {"network_exclude_interfaces": "(["}},
                        "host.network_exclude_interfaces")):
        app.write(bad)
        status, body = app.reload()
        assert status == 400 and body["status"] == "rejected"
        assert field in body["detail"], body
        assert str(app.config_path) not in body["detail"]
        assert app.origin() == "https://one.example"
        assert sample_value(app.metrics(), RELOAD_OK) == 0.0
    app.write({"web": {"cors_origin": "https://three.example"}})
    assert app.reload()[0] == 200
    assert app.origin() == "https://three.example"
    assert sample_value(app.metrics(), RELOAD_OK) == 1.0


@pytest.mark.parametrize(("bad", "field", "reason"), BROKE_AT_RUN_TIME,
                         ids=[field for _, field, _ in BROKE_AT_RUN_TIME])
def test_post_reload_in_process_refuses_what_would_break_at_run_time(
        app: InProcess, bad: dict[str, Any] | str, field: str, reason: str | None) -> None:
    app.write(bad)
    status, body = app.reload()
    assert status == 400 and body["status"] == "rejected", (field, body)
    assert f"configuration rejected at {field}" in body["detail"], body
    if reason is not None:
        assert reason in body["detail"], body
    else:  # the reason names a path: it stays in the log
        assert body["detail"].endswith("see the exporter log"), body
    assert app.origin() == "https://one.example"
    assert app.client.get("/metrics").status_code == 200


def test_reload_in_process_keeps_ai_counters(app: InProcess) -> None:
    event = {"kind": "error", "component": "reload-check", "category": "tool"}
    assert app.client.post("/api/v1/events", json=[event, event]).status_code == 200

    def errors() -> float | None:
        return sample_value(app.metrics(), "ai_errors_total",
                            {"component": "reload-check", "category": "tool"})

    assert errors() == 2.0
    app.write({"web": {"cors_origin": "https://two.example"}})
    assert app.reload()[0] == 200
    assert errors() == 2.0
