"""Configuration: YAML file, ``AI_EXPORTER_*`` environment and flags, in that precedence.

The layering is checked on the real process (through headers and routes that expose the
effective value), and every kind of invalid configuration must end the process with exit
code 2 and a single line naming the field, whether serving or running ``check-config``.
"""

from __future__ import annotations

import math
import os
import re
import socket
import subprocess
from pathlib import Path
from typing import Any

import msgspec
import pytest
import requests
import yaml

from exporter import catalog, cli, config
from exporter.config import ConfigError
from exporter.runtime import Runtime
from exporter.web import routes_admin
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

@pytest.mark.e2e
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


@pytest.mark.e2e
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


@pytest.mark.e2e
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
    # Each of these passed check-config before and broke the running exporter.
    "infinite_timeout": ("collectors:\n  timeout_seconds: .inf\n", "collectors.timeout_seconds"),
    "nan_interval": ("sources:\n  tail:\n    poll_interval_seconds: .nan\n",
                     "sources.tail.poll_interval_seconds"),
    "reserved_label": ({"ai": {"extra_labels": {"job": "x"}}}, "ai.extra_labels.job"),
    "label_in_use": ({"ai": {"extra_labels": {"component": "x"}}},
                     "ai.extra_labels.component"),
    "duplicate_section": ("web:\n  security:\n    anonymous_role: viewer\nweb:\n  threads: 4\n",
                          "web"),
    "too_many_threads": ({"web": {"threads": 100_000}}, "web.threads"),
    "tokens_file_directory": ({"web": {"security": {"tokens_file": "/"}}},
                              "web.security.tokens_file"),
    "token_file_device": ({"components": {"probes": [
        {"name": "p", "url": "http://127.0.0.1:9/", "bearer_token_file": "/dev/zero"}]}},
        "components.probes.0.bearer_token_file"),
    "relative_telemetry_path": ({"web": {"telemetry_path": "metrics"}}, "web.telemetry_path"),
    "deep_nesting": ("web: " + "[" * 10_000 + "]" * 10_000 + "\n", "config.file"),
    "bad_listen_host": ({"web": {"listen_address": "bad host:9100"}}, "web.listen_address"),
}
# Cases about the listen address itself: the test's own --web.listen-address would win.
LISTEN_CASES = {"bad_port", "bad_listen_host"}


def _assert_one_line_naming(result: subprocess.CompletedProcess[str], field: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(PREFIX + field), lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["serve", "check-config"])
@pytest.mark.parametrize("case", sorted(INVALID))
@pytest.mark.e2e
def test_invalid_file_exits_2_naming_field(tmp_path: Path, case: str, command: str) -> None:
    data, field = INVALID[case]
    path = _write(tmp_path / f"{case}.yml", data)
    # Serving would bind this port if the configuration were (wrongly) accepted.
    result = _run([command, f"--config.file={path}",
                   *([f"--web.listen-address={LOOPBACK}:{free_port()}"]
                     if case not in LISTEN_CASES else [])])
    _assert_one_line_naming(result, field)


@pytest.mark.parametrize("command", ["serve", "check-config"])
@pytest.mark.e2e
def test_unreadable_file_exits_2(tmp_path: Path, command: str) -> None:
    missing = tmp_path / "missing.yml"
    result = _run([command, f"--config.file={missing}"])
    _assert_one_line_naming(result, "config.file")
    assert str(missing) in result.stderr
    directory = _run([command, f"--config.file={tmp_path}"])
    _assert_one_line_naming(directory, "config.file")


@pytest.mark.parametrize("command", ["serve", "check-config"])
@pytest.mark.e2e
def test_invalid_environment_exits_2(command: str) -> None:
    result = _run([command, f"--web.listen-address={LOOPBACK}:{free_port()}"],
                  env={"AI_EXPORTER_WEB__THREADS": "lots"})
    _assert_one_line_naming(result, "web.threads")
    unknown = _run([command], env={"AI_EXPORTER_WEB__NO_SUCH": "1"})
    _assert_one_line_naming(unknown, "web.no_such")


@pytest.mark.parametrize("command", ["serve", "check-config"])
@pytest.mark.e2e
def test_environment_clashing_with_a_file_section_exits_2(tmp_path: Path, command: str) -> None:
    path = _write(tmp_path / "c.yml", {"web": {"security": {"anonymous_role": "viewer"}}})
    result = _run([command, f"--config.file={path}",
                   f"--web.listen-address={LOOPBACK}:{free_port()}"],
                  env={"AI_EXPORTER_WEB__SECURITY": "admin"})
    _assert_one_line_naming(result, "web.security")
    assert "the environment sets a single value where the file has a section" in result.stderr
    both = _run([command, f"--web.listen-address={LOOPBACK}:{free_port()}"],
                env={"AI_EXPORTER_WEB": "x", "AI_EXPORTER_WEB__THREADS": "4"})
    _assert_one_line_naming(both, "web")


@pytest.mark.parametrize("command", ["serve", "check-config"])
@pytest.mark.e2e
def test_invalid_flag_value_exits_2(command: str) -> None:
    result = _run([command, "--web.listen-address=127.0.0.1:0"])
    _assert_one_line_naming(result, "web.listen_address")


@pytest.mark.e2e
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


# --- the same errors through the command line's main(), in process (the fast tier) --------
# Only check-config: an accepted configuration would make ``serve`` serve for good.


def _main(args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
          env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``cli.main(args)`` with exactly ``env`` as the AI_EXPORTER_ environment, read back as
    ``_run`` reads the process."""
    for key in [k for k in os.environ if k.startswith("AI_EXPORTER_")]:
        monkeypatch.delenv(key)
    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    capsys.readouterr()
    code = cli.main(args)
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


@pytest.mark.parametrize("case", sorted(INVALID))
def test_check_config_in_process_exits_2_naming_field(
        tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    data, field = INVALID[case]
    path = _write(tmp_path / f"{case}.yml", data)
    _assert_one_line_naming(_main(["check-config", f"--config.file={path}"], capsys,
                                  monkeypatch), field)


def test_check_config_in_process_names_bad_files_and_environment(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "missing.yml"
    result = _main(["check-config", f"--config.file={missing}"], capsys, monkeypatch)
    _assert_one_line_naming(result, "config.file")
    assert str(missing) in result.stderr
    _assert_one_line_naming(_main(["check-config", f"--config.file={tmp_path}"], capsys,
                                  monkeypatch), "config.file")
    _assert_one_line_naming(_main(["check-config"], capsys, monkeypatch,
                                  {"AI_EXPORTER_WEB__THREADS": "lots"}), "web.threads")
    _assert_one_line_naming(_main(["check-config"], capsys, monkeypatch,
                                  {"AI_EXPORTER_WEB__NO_SUCH": "1"}), "web.no_such")
    section = _write(tmp_path / "c.yml", {"web": {"security": {"anonymous_role": "viewer"}}})
    clash = _main(["check-config", f"--config.file={section}"], capsys, monkeypatch,
                  {"AI_EXPORTER_WEB__SECURITY": "admin"})
    _assert_one_line_naming(clash, "web.security")
    assert "the environment sets a single value where the file has a section" in clash.stderr
    _assert_one_line_naming(_main(["check-config", "--web.listen-address=127.0.0.1:0"],
                                  capsys, monkeypatch), "web.listen_address")


def test_check_config_in_process_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path / "ok.yml", {"web": {"cors_origin": "https://grafana.example"},
                                        "collectors": {"enabled": {"battery": False}},
                                        "health": {"disk_paths": ["/"]}})
    result = _main(["check-config", f"--config.file={path}"], capsys, monkeypatch)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"configuration OK: {path}"
    defaults = _main(["check-config"], capsys, monkeypatch)
    assert defaults.returncode == 0, defaults.stderr
    assert defaults.stdout.strip() == "configuration OK: built-in defaults"


@pytest.mark.e2e
def test_check_config_does_not_serve(tmp_path: Path) -> None:
    """check-config returns at once even when the listen port is taken by someone else."""
    with socket.socket() as busy:
        busy.bind((LOOPBACK, 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _run(["check-config", f"--web.listen-address={LOOPBACK}:{port}"])
    assert result.returncode == 0, result.stderr


# --- settings that used to pass validation and break at run time ---------------------

def _float_paths(info: msgspec.inspect.Type, path: str = "") -> list[str]:
    """Dotted paths of every float setting in the schema; list items as ``.0``."""
    if isinstance(info, msgspec.inspect.UnionType):
        return [p for t in info.types for p in _float_paths(t, path)]
    if isinstance(info, msgspec.inspect.FloatType):
        return [path]
    if isinstance(info, msgspec.inspect.ListType):
        return _float_paths(info.item_type, f"{path}.0")
    if isinstance(info, msgspec.inspect.StructType):
        return [p for f in info.fields
                for p in _float_paths(f.type, f"{path}.{f.name}" if path else f.name)]
    return []


# The required fields of list items, so that only the float under test is wrong.
_LIST_ITEMS: dict[str, dict[str, Any]] = {
    "ai.budgets": {"usd_per_day": 1.0},
    "components.probes": {"name": "p", "url": "http://127.0.0.1:9/"},
    "ai.pricing.overrides": {"model": "m", "input": 1.0, "output": 1.0},
}


def _layer_setting(dotted: str, value: Any) -> dict[str, Any]:
    """``{"a": {"b": [{..., "c": value}]}}`` for ``a.b.0.c``."""
    root: dict[str, Any] = {}
    node: dict[str, Any] = root
    parts = dotted.split(".")
    i = 0
    while i < len(parts) - 1:
        part = parts[i]
        if parts[i + 1] == "0":
            item = dict(_LIST_ITEMS[".".join(parts[:i + 1])])
            node[part] = [item]
            node, i = item, i + 2
        else:
            node = node.setdefault(part, {})
            i += 1
    node[parts[-1]] = value
    return root


FLOAT_PATHS = sorted(set(_float_paths(msgspec.inspect.type_info(config.Config))))


def test_the_schema_walk_finds_the_float_settings() -> None:
    assert len(FLOAT_PATHS) >= 25, FLOAT_PATHS  # the walk is not vacuous
    assert {"collectors.timeout_seconds", "ai.budgets.0.usd_per_day",
            "components.probes.0.timeout_seconds", "health.max_disk_utilization",
            "otlp.interval_seconds"} <= set(FLOAT_PATHS)


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan], ids=["inf", "-inf", "nan"])
@pytest.mark.parametrize("path", FLOAT_PATHS)
def test_every_float_setting_refuses_infinity_and_nan(path: str, value: float) -> None:
    config.build(_layer_setting(path, 1.0))  # the layer is valid with a finite number
    with pytest.raises(ConfigError) as info:
        config.build(_layer_setting(path, value))
    assert str(info.value).startswith(f"{path}: must be a finite number"), str(info.value)


@pytest.mark.parametrize("spelling", [".inf", "-.inf", ".nan", ".Inf", ".NaN"])
def test_yaml_infinity_and_nan_in_a_file_name_the_field(tmp_path: Path, spelling: str) -> None:
    path = _write(tmp_path / "c.yml", f"sources:\n  tail:\n    poll_interval_seconds: {spelling}\n")
    with pytest.raises(ConfigError, match=r"^sources\.tail\.poll_interval_seconds: must be a "
                                          r"finite number"):
        config.load(str(path), environ={})


def test_infinite_flag_and_environment_values_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"^collectors\.timeout_seconds: must be a finite"):
        config.load(None, flags={"collectors": {"timeout_seconds": math.inf}}, environ={})
    with pytest.raises(ConfigError, match=r"^ai\.heartbeat_timeout_seconds: must be a finite"):
        config.load(None, environ={"AI_EXPORTER_AI__HEARTBEAT_TIMEOUT_SECONDS": ".inf"})


def test_durations_past_a_year_are_refused() -> None:
    """1e300 s is finite, but waiting on it raises OverflowError on the thread that does."""
    with pytest.raises(ConfigError, match=r"^sources\.snapshot\.interval_seconds: at most"):
        config.build({"sources": {"snapshot": {"interval_seconds": 1e300}}})
    config.build({"sources": {"snapshot": {"interval_seconds": config.MAX_SECONDS}}})


@pytest.mark.parametrize("name", ["job", "instance", "demo", "le", "quantile", "__name__",
                                  "__meta", "component", "gen_ai_provider_name", "outcome",
                                  "status", "bad-name", "1st", "é"])
def test_extra_labels_refuse_reserved_used_and_invalid_names(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.build({"ai": {"extra_labels": {name: "x"}}})
    assert str(info.value).startswith(f"ai.extra_labels.{name}:"), str(info.value)


def test_extra_labels_refuse_every_label_an_ai_metric_has() -> None:
    for spec in catalog.all_metrics():
        if spec.area in (catalog.Area.AI, catalog.Area.GENAI, catalog.Area.COMPONENTS):
            for label in spec.labels:
                with pytest.raises(ConfigError, match=rf"^ai\.extra_labels\.{label}:"):
                    config.build({"ai": {"extra_labels": {label: "x"}}})


def test_extra_labels_accept_new_names() -> None:
    cfg = config.build({"ai": {"extra_labels": {"team": "search", "env": "prod",
                                                "_private": "1"}}})
    assert cfg.ai.extra_labels["team"] == "search"


@pytest.mark.parametrize(("text", "field", "lines"), [
    # The first web block (security included) would be silently dropped.
    ("web:\n  security:\n    anonymous_role: \"\"\nlog_level: info\nweb:\n  threads: 4\n",
     "web", "lines 1 and 5"),
    ("web:\n  threads: 4\n  cors_origin: x\n  threads: 5\n", "web.threads", "lines 2 and 4"),
    ("web: {threads: 4, threads: 5}\n", "web.threads", "lines 1 and 1"),
    ("components:\n  probes:\n    - name: a\n      url: http://127.0.0.1:9/\n      name: b\n",
     "components.probes.0.name", "lines 3 and 5"),
    ("collectors:\n  enabled:\n    loadavg: true\n    loadavg: false\n",
     "collectors.enabled.loadavg", "lines 3 and 4"),
])
def test_duplicate_keys_at_any_level_name_the_key_and_lines(tmp_path: Path, text: str,
                                                             field: str, lines: str) -> None:
    path = _write(tmp_path / "dup.yml", text)
    with pytest.raises(ConfigError) as info:
        config.read_file(str(path))
    assert str(info.value).startswith(f"{field}: key given twice ({lines})"), str(info.value)


def test_merge_keys_may_override_what_they_merge(tmp_path: Path) -> None:
    path = _write(tmp_path / "merge.yml", (
        "components:\n  probes:\n"
        "    - &base {name: a, url: 'http://127.0.0.1:9/', timeout_seconds: 2}\n"
        "    - {<<: *base, name: b}\n"))
    cfg = config.build(config.read_file(str(path)))
    assert [(p.name, p.timeout_seconds) for p in cfg.components.probes] == [("a", 2.0),
                                                                         ("b", 2.0)]


@pytest.mark.parametrize(("text", "field"), [
    ("[" * 10_000 + "]" * 10_000, "config.file"),
    ("web: " + "[" * 10_000 + "]" * 10_000 + "\n", "config.file"),
    ("".join("  " * i + "a:\n" for i in range(2_000)), "config.file"),
    # Each alias is shallow; together they nest a hundred levels deep.
    ("".join(f"a{i}: &a{i} [{f'*a{i - 1}' if i else 'x'}]\n" for i in range(100)),
     "config.file"),
    ("web: &loop\n  x: *loop\n", "web.x"),
])
def test_deep_or_recursive_yaml_is_a_clean_error(tmp_path: Path, text: str, field: str) -> None:
    path = _write(tmp_path / "deep.yml", text)
    with pytest.raises(ConfigError) as info:
        config.read_file(str(path))
    assert str(info.value).startswith(f"{field}:"), str(info.value)
    assert "nested deeper" in str(info.value) or "contains it" in str(info.value)


def test_alias_bomb_is_read_without_expanding(tmp_path: Path) -> None:
    """A billion laughs: each anchor is walked once, and the typed check refuses it."""
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 10)]
    path = _write(tmp_path / "bomb.yml", "\n".join(lines) + "\n")
    data = config.read_file(str(path))
    with pytest.raises(ConfigError, match=r"^l0: "):
        config.build(data)


def test_deep_yaml_in_an_environment_value_is_a_clean_error() -> None:
    with pytest.raises(ConfigError, match=r"^web\.security: nested deeper"):
        config.from_environment({"AI_EXPORTER_WEB__SECURITY": "[" * 10_000})


@pytest.mark.parametrize(("layer", "field"), [
    ({"web": {"threads": 0}}, "web.threads"),
    ({"web": {"threads": 257}}, "web.threads"),
    ({"web": {"threads": 100_000}}, "web.threads"),
    ({"components": {"probe_concurrency": 0}}, "components.probe_concurrency"),
    ({"components": {"probe_concurrency": 1000}}, "components.probe_concurrency"),
])
def test_thread_counts_are_bounded(layer: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=f"^{re.escape(field)}:"):
        config.build(layer)


def test_thread_counts_at_the_bounds_are_accepted() -> None:
    assert config.build({"web": {"threads": 256}}).web.threads == 256
    assert config.build({"web": {"threads": 1}}).web.threads == 1


FILE_SETTINGS = [
    "web.security.tokens_file", "web.security.web_config_file",
    "web.security.jwt.hs256_secret_file", "web.security.jwt.rs256_public_key_file",
    "sources.push.tokens_file", "sources.redis_streams.password_file",
    "sources.redis_streams.state_file", "components.probes.0.bearer_token_file",
    "components.probes.0.tls.ca_file", "components.probes.0.tls.cert_file",
    "otlp.certificate", "otlp.client_certificate", "otlp.client_key",
]


@pytest.fixture
def not_regular(tmp_path: Path) -> dict[str, str]:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    return {"directory": str(tmp_path), "device": "/dev/zero", "FIFO": str(fifo)}


@pytest.mark.parametrize("kind", ["directory", "device", "FIFO"])
@pytest.mark.parametrize("setting", FILE_SETTINGS)
def test_file_settings_refuse_what_is_not_a_regular_file(
        setting: str, kind: str, not_regular: dict[str, str], tmp_path: Path) -> None:
    regular = _write(tmp_path / "regular", "x\n")
    checked = config.build(_layer_setting(setting, str(regular)))  # the layer is valid
    assert checked is not None
    with pytest.raises(ConfigError) as info:
        config.build(_layer_setting(setting, not_regular[kind]))
    message = str(info.value)
    assert message.startswith(f"{setting}: {not_regular[kind]} is "), message
    assert "a regular file is needed" in message


def test_a_missing_file_is_left_to_the_code_that_reads_it() -> None:
    config.build(_layer_setting("components.probes.0.bearer_token_file", "/no/such/token"))


@pytest.mark.parametrize("path", ["metrics", "", "/livez", "/", "/-/reload", "/api/v1/events",
                                  "/a//b", "/a/../b", "/./metrics", "/<name>", "/m?x=1",
                                  "/m#x", "/m etrics", "/m%20x", "/m\\x"])
def test_telemetry_path_must_be_a_plain_absolute_path_of_its_own(path: str) -> None:
    with pytest.raises(ConfigError, match=r"^web\.telemetry_path:"):
        config.build({"web": {"telemetry_path": path}})


@pytest.mark.parametrize("path", ["/metrics", "/prom/metrics", "/metrics/", "/-/metrics"])
def test_telemetry_path_accepts_plain_paths(path: str) -> None:
    assert config.build({"web": {"telemetry_path": path}}).web.telemetry_path == path


def test_open_routes_must_be_absolute_paths() -> None:
    cfg = config.build({"web": {"security": {"open_routes": ["livez"]}}})
    with pytest.raises(ConfigError, match=r"^web\.security\.open_routes\.0:"):
        Runtime.validate(cfg)


def test_served_routes_list_every_route_of_the_app() -> None:
    """SERVED_ROUTES is what the telemetry path may not take; it must follow the app."""
    from exporter.web import create_app

    runtime = Runtime(config.build({}))
    try:
        rules = {rule.rule for rule in create_app(runtime).url_map.iter_rules()
                 if "<" not in rule.rule}
    finally:
        runtime.stop()
    assert rules - {"/metrics"} == config.SERVED_ROUTES


@pytest.mark.parametrize("address", ["bad host:9100", "::1:9100", "[::1:9100", "[zz]:9100",
                                     "[::1]9100", "host:port", "host:\u0669\u0661",
                                     "999.1.1.1:9100", "-bad-:9100", "a/b:9100",
                                     ":65536", ":0", ":9100 ", " :9100", "host:", ":"])
def test_listen_address_refuses_bad_hosts_and_ports(address: str) -> None:
    with pytest.raises(ConfigError, match=r"^web\.listen_address:"):
        config.build({"web": {"listen_address": address}})


@pytest.mark.parametrize(("address", "host", "port"), [
    (":9100", "0.0.0.0", 9100), ("0.0.0.0:9100", "0.0.0.0", 9100),
    ("[::]:9100", "::", 9100), ("[::1]:65535", "::1", 65535),
    ("localhost:1", "localhost", 1), ("exporter.internal:9100", "exporter.internal", 9100),
    ("ai_exporter:9100", "ai_exporter", 9100), ("[fe80::1%eth0]:9100", "fe80::1%eth0", 9100),
])
def test_listen_address_accepts_hosts_and_ipv6(address: str, host: str, port: int) -> None:
    assert config.build({"web": {"listen_address": address}}).listen_host_port() == (host,
                                                                                     port)


@pytest.mark.parametrize(("file", "environ", "field"), [
    ({"web": {"threads": 4}}, {"AI_EXPORTER_WEB": "9000"}, "web"),
    ({"web": {"security": {"anonymous_role": "viewer"}}},
     {"AI_EXPORTER_WEB__SECURITY": "admin"}, "web.security"),
    ({}, {"AI_EXPORTER_WEB": "x", "AI_EXPORTER_WEB__THREADS": "4"}, "web"),
    ({}, {"AI_EXPORTER_WEB__THREADS": "4", "AI_EXPORTER_web__threads": "5"}, "web.threads"),
    ({"web": "x"}, {"AI_EXPORTER_WEB__THREADS": "4"}, "web"),
    ({}, {"AI_EXPORTER_WEB": "x"}, "web"),
])
def test_environment_overrides_that_clash_with_a_section_name_it(
        tmp_path: Path, file: dict[str, Any], environ: dict[str, str], field: str) -> None:
    path = _write(tmp_path / "c.yml", file)
    with pytest.raises(ConfigError) as info:
        config.load(str(path), environ=environ)
    assert str(info.value).startswith(f"{field}:"), str(info.value)


def test_environment_may_set_a_section_as_a_mapping() -> None:
    cfg = config.load(None, environ={"AI_EXPORTER_WEB__SECURITY": "{anonymous_role: admin}"})
    assert cfg.web.security.anonymous_role == "admin"


def test_set_dotted_refuses_a_value_where_a_section_is() -> None:
    layer: dict[str, Any] = {}
    config.set_dotted(layer, "web.threads", 4)
    with pytest.raises(ConfigError, match=r"^web:"):
        config.set_dotted(layer, "web", "x")
    with pytest.raises(ConfigError, match=r"^web\.threads:"):
        config.set_dotted(layer, "web.threads.x", 1)


def test_a_huge_or_endless_config_file_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^config\.file: /dev/zero is larger than"):
        config.read_file("/dev/zero")


@pytest.mark.parametrize(("message", "detail"), [
    ("web.threads: Expected `int` <= 256", "configuration rejected at web.threads: "
                                           "Expected `int` <= 256"),
    ("web: key given twice (lines 1 and 5); YAML would keep only the last",
     "configuration rejected at web: key given twice (lines 1 and 5); YAML would keep only "
     "the last"),
    # A path or a quoted value stays in the log.
    ("web.security.tokens_file: /etc/x is a directory; a regular file is needed",
     "configuration rejected at web.security.tokens_file; see the exporter log"),
    ("sources.redis_streams.url: expected redis://, got 'x://u:secret@h'",
     "configuration rejected at sources.redis_streams.url; see the exporter log"),
    ("no field here", "configuration rejected; see the exporter log"),
])
def test_reload_body_gives_plain_reasons_only(message: str, detail: str) -> None:
    assert routes_admin.public_reload_error(message) == detail
