"""Configuration: YAML file, ``AI_EXPORTER_*`` environment and flags, in that precedence.

The layering is checked on the real process (through headers and routes that expose the
effective value), and every kind of invalid configuration must end the process with exit
code 2 and a single line naming the field, whether serving or running ``check-config``.
"""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from exporter import config
from exporter.config import ConfigError
from tests.procs import EXPORTER_BIN, LOOPBACK, Exporter, Proc, free_port, wait_until

PREFIX = "ai-metrics-exporter: invalid configuration: "


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AI_EXPORTER_")}
    env.update(extra or {})
    return env


def _run(args: list[str], env: dict[str, str] | None = None,
         cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EXPORTER_BIN, *args], capture_output=True, text=True, timeout=30,
                          env=_env(env), cwd=cwd, check=False)


def _write(path: Path, data: dict[str, Any] | str) -> Path:
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


# --- layers, in process ------------------------------------------------------------------

def test_environment_double_underscore_nests_and_keeps_types() -> None:
    layer = config.from_environment({
        "AI_EXPORTER_WEB__LISTEN_ADDRESS": "127.0.0.1:9000",
        "AI_EXPORTER_AI__MAX_SERIES_PER_METRIC": "5000",
        "AI_EXPORTER_COLLECTORS__ENABLED__BATTERY": "false",
        "AI_EXPORTER_LOG_LEVEL": "debug",
        "AI_EXPORTER_REVISION": "abc123",  # build identity, not configuration
        "HOME": "/root",
    })
    assert layer == {"web": {"listen_address": "127.0.0.1:9000"},
                     "ai": {"max_series_per_metric": 5000},
                     "collectors": {"enabled": {"battery": False}},
                     "log_level": "debug"}


def test_precedence_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.yml", {"web": {"cors_origin": "https://file.example",
                                               "telemetry_path": "/file-metrics"},
                                       "ai": {"max_series_per_metric": 11}})
    cfg = config.load(str(path), flags={"web": {"cors_origin": "https://flag.example"}},
                      environ={"AI_EXPORTER_WEB__CORS_ORIGIN": "https://env.example",
                               "AI_EXPORTER_WEB__TELEMETRY_PATH": "/env-metrics"})
    assert cfg.web.cors_origin == "https://flag.example"
    assert cfg.web.telemetry_path == "/env-metrics"
    assert cfg.ai.max_series_per_metric == 11
    assert cfg.health.max_memory_utilization == 0.95  # default untouched
    assert cfg.web.config_file == str(path)


@pytest.mark.parametrize(("layer", "field"), [
    ({"web": {"listen_addres": ":1"}}, "web.listen_addres"),
    ({"nope": 1}, "nope"),
    ({"web": {"threads": "many"}}, "web.threads"),
    ({"health": {"max_disk_utilization": 1.5}}, "health.max_disk_utilization"),
    ({"web": {"listen_address": "127.0.0.1:70000"}}, "web.listen_address"),
    ({"web": {"listen_address": "localhost"}}, "web.listen_address"),
    ({"host": {"disk_exclude_devices": "("}}, "host.disk_exclude_devices"),
    ({"log_level": "loud"}, "log_level"),
    ({"ai": {"budgets": [{"scope": "x"}]}}, "ai.budgets.0"),
])
def test_build_errors_name_the_field(layer: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.build(layer)
    assert str(info.value).startswith(f"{field}:"), str(info.value)


# --- real process: precedence ------------------------------------------------------------

def test_process_precedence_file_env_flag(workdir: Path) -> None:
    cfg = {"web": {"cors_origin": "https://file.example"},
           "health": {"max_memory_utilization": 0.91}}
    env = {"AI_EXPORTER_WEB__CORS_ORIGIN": "https://env.example"}
    procs: list[Exporter] = []
    try:
        procs.append(Exporter(workdir, config=cfg))
        procs.append(Exporter(workdir, config=cfg, env=env))
        procs.append(Exporter(workdir, config=cfg, env=env,
                              args=["--web.cors-origin=https://flag.example"]))
        origins = [p.get("/livez").headers.get("Access-Control-Allow-Origin") for p in procs]
        assert origins == ["https://file.example", "https://env.example",
                           "https://flag.example"]
        # A file value no other layer sets stays in force under every combination.
        for proc in procs:
            memory = proc.get("/healthz").json()["checks"]["memory"]
            assert memory["threshold"] == 0.91
    finally:
        for proc in procs:
            proc.stop()


def test_listen_address_from_environment(workdir: Path) -> None:
    """``AI_EXPORTER_WEB__LISTEN_ADDRESS`` alone (no flag) decides where the process listens."""
    port = free_port()
    proc = Proc([EXPORTER_BIN], workdir / f"env-listen-{port}.log",
                env=_env({"AI_EXPORTER_WEB__LISTEN_ADDRESS": f"{LOOPBACK}:{port}"}),
                cwd=workdir)
    try:
        def up() -> bool:
            assert proc.alive(), proc.log()
            return requests.get(f"http://{LOOPBACK}:{port}/livez", timeout=1).ok

        wait_until(up, 20, what="exporter on the environment's listen address")
    finally:
        assert proc.stop() == 0


def test_collector_flags_override_file(workdir: Path) -> None:
    proc = Exporter(workdir, config={"collectors": {"enabled": {"loadavg": False}}},
                    args=["--collector.loadavg", "--no-collector.uptime"])
    try:
        text = proc.metrics()
        assert 'ai_exporter_collector_success{collector="loadavg"} 1.0' in text
        assert 'collector="uptime"' not in text
        assert "system_uptime_seconds" not in text
    finally:
        proc.stop()


# --- real process: invalid configuration -------------------------------------------------

INVALID: dict[str, tuple[dict[str, Any] | str, str]] = {
    "unknown_key": ({"web": {"listen_adress": ":1"}}, "web.listen_adress"),
    "unknown_section": ({"collector": {}}, "collector"),
    "wrong_type": ({"collectors": {"timeout_seconds": "soon"}}, "collectors.timeout_seconds"),
    "wrong_type_nested": ({"ai": {"max_series_per_metric": [1]}}, "ai.max_series_per_metric"),
    "bad_port": ({"web": {"listen_address": "127.0.0.1:99999"}}, "web.listen_address"),
    "unknown_collector": ({"collectors": {"enabled": {"gpu_magic": True}}},
                          "collectors.enabled.gpu_magic"),
    "not_yaml": ("web: [unclosed\n", "config.file"),
    "not_a_mapping": ("- a\n- b\n", "config.file"),
}


def _assert_one_line_naming(result: subprocess.CompletedProcess[str], field: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(PREFIX + field), lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["serve", "check-config"])
@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_file_exits_2_naming_field(tmp_path: Path, case: str, command: str) -> None:
    data, field = INVALID[case]
    path = _write(tmp_path / f"{case}.yml", data)
    # Serving would bind this port if the configuration were (wrongly) accepted.
    result = _run([command, f"--config.file={path}",
                   *([f"--web.listen-address={LOOPBACK}:{free_port()}"]
                     if case != "bad_port" else [])])
    _assert_one_line_naming(result, field)


@pytest.mark.parametrize("command", ["serve", "check-config"])
def test_unreadable_file_exits_2(tmp_path: Path, command: str) -> None:
    missing = tmp_path / "missing.yml"
    result = _run([command, f"--config.file={missing}"])
    _assert_one_line_naming(result, "config.file")
    assert str(missing) in result.stderr
    directory = _run([command, f"--config.file={tmp_path}"])
    _assert_one_line_naming(directory, "config.file")


@pytest.mark.parametrize("command", ["serve", "check-config"])
def test_invalid_environment_exits_2(command: str) -> None:
    result = _run([command, f"--web.listen-address={LOOPBACK}:{free_port()}"],
                  env={"AI_EXPORTER_WEB__THREADS": "lots"})
    _assert_one_line_naming(result, "web.threads")
    unknown = _run([command], env={"AI_EXPORTER_WEB__NO_SUCH": "1"})
    _assert_one_line_naming(unknown, "web.no_such")


@pytest.mark.parametrize("command", ["serve", "check-config"])
def test_invalid_flag_value_exits_2(command: str) -> None:
    result = _run([command, "--web.listen-address=127.0.0.1:0"])
    _assert_one_line_naming(result, "web.listen_address")


def test_check_config_ok(tmp_path: Path) -> None:
    path = _write(tmp_path / "ok.yml", {"web": {"cors_origin": "https://grafana.example"},
                                        "collectors": {"enabled": {"battery": False}},
                                        "health": {"disk_paths": ["/"]}})
    result = _run(["check-config", f"--config.file={path}"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"configuration OK: {path}"
    defaults = _run(["check-config"])
    assert defaults.returncode == 0, defaults.stderr
    assert defaults.stdout.strip() == "configuration OK: built-in defaults"


def test_check_config_does_not_serve(tmp_path: Path) -> None:
    """check-config returns at once even when the listen port is taken by someone else."""
    with socket.socket() as busy:
        busy.bind((LOOPBACK, 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _run(["check-config", f"--web.listen-address={LOOPBACK}:{port}"])
    assert result.returncode == 0, result.stderr
