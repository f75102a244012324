"""Durations: Prometheus' ``model.ParseDuration`` grammar, and every duration setting of
the config (file, environment, flags) taking it next to plain numbers, with errors that
name the field."""

from __future__ import annotations

from typing import Any, get_args, get_origin

import msgspec
import pytest

from exporter import cli, config
from exporter.config import ConfigError
from exporter.duration import parse_milliseconds, parse_prometheus_duration, parse_seconds


@pytest.mark.parametrize(("text", "seconds"), [
    ("0", 0.0), ("0s", 0.0), ("500ms", 0.5), ("5s", 5.0), ("1m", 60.0), ("1h30m", 5400.0),
    ("2d", 172800.0), ("1w", 604800.0), ("1y", 31536000.0), ("1m30s500ms", 90.5),
    ("1h0m0s", 3600.0), ("10ms", 0.01),
])
def test_prometheus_durations(text: str, seconds: float) -> None:
    assert parse_prometheus_duration(text) == pytest.approx(seconds)
    assert parse_seconds(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "1.5s", "30s1m", "1m1m", "5 s", "-5s", "5S",
                                  "1h 30m", "ms", "1us", "inf", "nan", "5min"])
def test_what_prometheus_refuses_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a valid duration"):
        parse_prometheus_duration(text)


@pytest.mark.parametrize(("text", "seconds"), [
    ("2", 2.0), ("0.25", 0.25), (" 10 ", 10.0), ("1e2", 100.0), (".5", 0.5), ("-1", -1.0)])
def test_plain_numbers_are_seconds(text: str, seconds: float) -> None:
    assert parse_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "inf", "nan", "5 minutes", "1.5s", "2x"])
def test_bad_seconds_name_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match=r"expected a number of seconds or a duration such "
                                         r"as 500ms"):
        parse_seconds(text)


def test_milliseconds_keep_plain_numbers_as_milliseconds() -> None:
    assert parse_milliseconds("250") == 250
    assert parse_milliseconds("2s") == 2000
    assert parse_milliseconds("1m") == 60000
    assert parse_milliseconds("1.5") == 1.5  # left for msgspec to refuse on an int field
    with pytest.raises(ValueError, match="number of milliseconds"):
        parse_milliseconds("soon")


def test_every_duration_field_takes_a_prometheus_duration() -> None:
    cfg = config.build({
        "collectors": {"timeout_seconds": "1m30s"},
        "ai": {"heartbeat_timeout_seconds": "2m", "log_interval_seconds": "30s"},
        "sources": {
            "tail": {"poll_interval_seconds": "500ms", "rotate_wait_seconds": "0"},
            "snapshot": {"interval_seconds": "10s"},
            "redis_streams": {"block_ms": "2s", "reclaim_idle_ms": "1m",
                              "backoff_max_seconds": "1m"},
        },
        "components": {"probes": [{"name": "a", "url": "http://a.example/",
                                   "timeout_seconds": "3s"}]},
        "otlp": {"interval_seconds": "15s", "timeout_seconds": "10s"},
        "demo": {"episode_after_seconds": "1h"},
        "web": {"security": {"jwt": {"leeway_seconds": "1m"},
                             "limits": {"tls_handshake_timeout_seconds": "2s"}}},
    })
    assert cfg.collectors.timeout_seconds == 90.0
    assert cfg.ai.heartbeat_timeout_seconds == 120.0 and cfg.ai.log_interval_seconds == 30.0
    assert cfg.sources.tail.poll_interval_seconds == 0.5
    assert cfg.sources.tail.rotate_wait_seconds == 0.0
    assert cfg.sources.snapshot.interval_seconds == 10.0
    assert cfg.sources.redis_streams.block_ms == 2000
    assert cfg.sources.redis_streams.reclaim_idle_ms == 60000
    assert cfg.sources.redis_streams.backoff_max_seconds == 60.0
    assert cfg.components.probes[0].timeout_seconds == 3.0
    assert cfg.otlp.interval_seconds == 15.0 and cfg.otlp.timeout_seconds == 10.0
    assert cfg.demo.episode_after_seconds == 3600.0
    assert cfg.web.security.jwt.leeway_seconds == 60.0
    assert cfg.web.security.limits.tls_handshake_timeout_seconds == 2.0


def _duration_fields(struct: type[msgspec.Struct], prefix: str = "") -> list[str]:
    """Every ``*_seconds`` / ``*_ms`` field reachable from ``struct`` outside lists, dotted."""
    found: list[str] = []
    for field in msgspec.structs.fields(struct):
        where = f"{prefix}{field.name}"
        if field.name.endswith(("_seconds", "_ms")):
            found.append(where)
        kind = field.type
        # A struct or an optional one; lists of structs (probes) are tested on their own.
        inner = () if get_origin(kind) is list else get_args(kind)
        for candidate in (kind, *inner):
            if isinstance(candidate, type) and issubclass(candidate, msgspec.Struct):
                found.extend(_duration_fields(candidate, f"{where}."))
    return found


def test_no_duration_field_is_left_out() -> None:
    """A field added later is covered without a list to keep up to date: each one found
    in the types reads a duration string."""
    fields = _duration_fields(config.Config)
    assert {"collectors.timeout_seconds", "sources.redis_streams.block_ms",
            "otlp.interval_seconds"} <= set(fields)
    for dotted in fields:
        layer: dict[str, Any] = {}
        config.set_dotted(layer, dotted, "2s" if not dotted.endswith("_ms") else "1s")
        cfg: Any = config.build(layer)
        for part in dotted.split("."):
            cfg = getattr(cfg, part)
        assert cfg in (2.0, 1000), dotted


@pytest.mark.parametrize(("layer", "field"), [
    ({"collectors": {"timeout_seconds": "5 minutes"}}, "collectors.timeout_seconds"),
    ({"sources": {"tail": {"poll_interval_seconds": "1.5s"}}},
     "sources.tail.poll_interval_seconds"),
    ({"components": {"probes": [{"name": "a", "url": "http://a.example/",
                                 "timeout_seconds": "soon"}]}},
     "components.probes.0.timeout_seconds"),
    ({"sources": {"redis_streams": {"block_ms": "fast"}}}, "sources.redis_streams.block_ms"),
    ({"collectors": {"timeout_seconds": "400d"}}, "collectors.timeout_seconds"),
    ({"collectors": {"timeout_seconds": "0s"}}, "collectors.timeout_seconds"),
])
def test_bad_durations_name_the_field(layer: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.build(layer)
    assert str(info.value).startswith(f"{field}:"), str(info.value)


def test_labels_named_like_durations_are_left_alone() -> None:
    cfg = config.build({"components": {"probes": [{
        "name": "a", "url": "http://a.example/", "headers": {"x_seconds": "5s"}}]}})
    assert cfg.components.probes[0].headers == {"x_seconds": "5s"}


def test_environment_and_flags_take_durations() -> None:
    cfg = config.load(None, environ={"AI_EXPORTER_AI__HEARTBEAT_TIMEOUT_SECONDS": "5m"},
                      flags=cli.flags_layer(cli.build_parser().parse_args(
                          ["serve", "--collector.timeout=1500ms"])))
    assert cfg.ai.heartbeat_timeout_seconds == 300.0
    assert cfg.collectors.timeout_seconds == 1.5
    with pytest.raises(ConfigError, match=r"^ai\.heartbeat_timeout_seconds: expected a number"):
        config.load(None, environ={"AI_EXPORTER_AI__HEARTBEAT_TIMEOUT_SECONDS": "5 mins"})


def test_a_bad_duration_flag_exits_2_naming_flag_and_field(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.build_parser().parse_args(["serve", "--collector.timeout=5minutes"])
    assert done.value.code == cli.EXIT_CONFIG == 2
    err = capsys.readouterr().err
    assert "--collector.timeout" in err and "collectors.timeout_seconds" in err


def test_a_bad_duration_in_the_file_exits_2(tmp_path: Any,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.yml"
    path.write_text("sources:\n  tail:\n    checkpoint_interval_seconds: 5 min\n")
    assert cli.main(["check-config", f"--config.file={path}"]) == 2
    assert "sources.tail.checkpoint_interval_seconds: expected" in capsys.readouterr().err
    path.write_text("sources:\n  tail:\n    checkpoint_interval_seconds: 5m\n")
    assert cli.main(["check-config", f"--config.file={path}"]) == 0
