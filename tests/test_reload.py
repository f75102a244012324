"""Configuration reload on SIGHUP and ``POST /-/reload``, on the real process.

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

from tests.procs import Exporter, sample_value, wait_until

RELOAD_OK = "ai_exporter_config_last_reload_successful"
RELOAD_TIME = "ai_exporter_config_last_reload_success_timestamp_seconds"


@pytest.fixture
def proc(workdir: Path) -> Iterator[Exporter]:
    exporter = Exporter(workdir, config={"web": {"cors_origin": "https://one.example"}})
    yield exporter
    exporter.stop()


def _write(proc: Exporter, data: dict[str, Any] | str) -> None:
    proc.config_path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))


def _origin(proc: Exporter) -> str | None:
    return proc.get("/livez").headers.get("Access-Control-Allow-Origin")


def _gauge(proc: Exporter, name: str) -> float | None:
    return sample_value(proc.metrics(), name)


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


def test_sighup_applies_new_config(proc: Exporter) -> None:
    _write(proc, {"web": {"cors_origin": "https://hup.example"}})
    proc.signal(signal.SIGHUP)
    wait_until(lambda: _origin(proc) == "https://hup.example", 10, what="SIGHUP reload")
    assert _gauge(proc, RELOAD_OK) == 1.0
    assert proc.alive()


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
