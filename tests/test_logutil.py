"""Log lines: ``--log.format=logfmt|json`` as Prometheus and node_exporter write them, the
``log`` config section (with the older ``log_level`` still read), all in process."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter import cli, config
from exporter.config import ConfigError
from exporter.logutil import (
    JsonFormatter,
    LogfmtFormatter,
    configure_logging,
    formatter,
    logfmt_key,
    logfmt_value,
)
from tests.procs import Exporter

TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    """A logger of its own, not propagating, so nothing reaches pytest's capture or root."""
    log = logging.getLogger("tests.logutil")
    log.propagate = False
    yield log
    for handler in list(log.handlers):
        log.removeHandler(handler)
    log.propagate = True


@pytest.mark.parametrize(("value", "written"), [
    ("plain", "plain"),
    ("", '""'),
    ("two words", '"two words"'),
    ("a=b", '"a=b"'),
    ('say "hi"', '"say \\"hi\\""'),
    ("line\nbreak", '"line\\nbreak"'),
    ("tab\there", '"tab\\there"'),
    ("back\\slash", "back\\slash"),  # a backslash alone needs no quotes
    ("bell\x07", '"bell\\x07"'),
    ("zero\u200bwidth", '"zero\\u200bwidth"'),
    ("ünïcode", "ünïcode"),
    (None, "null"),
    (True, "true"),
    (3, "3"),
    (0.25, "0.25"),
])
def test_logfmt_values_quote_as_slog_does(value: object, written: str) -> None:
    assert logfmt_value(value) == written


def test_logfmt_keys_never_break_the_line() -> None:
    assert logfmt_key("path") == "path"
    assert logfmt_key("a b=c\"d\n") == "a_b_c_d_"
    assert logfmt_key("") == "_"


def test_logfmt_line(logger: logging.Logger) -> None:
    out = io.StringIO()
    configure_logging("info", "logfmt", stream=out, logger=logger)
    logger.info("listening on %s", ":10102", extra={"path": "/tmp/a b"})
    logger.debug("not written at info")
    line = out.getvalue()
    assert line.count("\n") == 1
    match = re.fullmatch(r'ts=(\S+) caller=test_logutil\.py:\d+ level=info '
                         r'logger=tests\.logutil msg="listening on :10102" '
                         r'path="/tmp/a b"\n', line)
    assert match, line
    assert TS.fullmatch(match.group(1))


def test_json_line(logger: logging.Logger) -> None:
    out = io.StringIO()
    configure_logging("debug", "json", stream=out, logger=logger)
    logger.warning("disk %s\nfull", "/var", extra={"free_bytes": 12})
    record = json.loads(out.getvalue())
    assert list(record)[:5] == ["ts", "caller", "level", "logger", "msg"]
    assert TS.fullmatch(record["ts"])
    assert record["level"] == "warn"
    assert record["logger"] == "tests.logutil"
    assert record["caller"].startswith("test_logutil.py:")
    assert record["msg"] == "disk /var\nfull"
    assert record["free_bytes"] == 12


def test_exceptions_stay_on_one_line(logger: logging.Logger) -> None:
    for log_format in ("logfmt", "json"):
        out = io.StringIO()
        configure_logging("info", log_format, stream=out, logger=logger)
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logger.exception("failed")
        text = out.getvalue()
        assert text.count("\n") == 1, text
        if log_format == "json":
            record = json.loads(text)
            assert "RuntimeError: boom" in record["exc"] and record["level"] == "error"
        else:
            assert "RuntimeError: boom" in text and " level=error " in text


def test_configure_replaces_only_its_own_handler(logger: logging.Logger) -> None:
    mine = logging.StreamHandler(io.StringIO())
    logger.addHandler(mine)
    first, second = io.StringIO(), io.StringIO()
    configure_logging("info", "logfmt", stream=first, logger=logger)
    configure_logging("error", "json", stream=second, logger=logger)
    logger.error("once")
    assert first.getvalue() == "" and json.loads(second.getvalue())["msg"] == "once"
    assert mine in logger.handlers
    assert [type(h).__name__ for h in logger.handlers].count("_ConfiguredHandler") == 1
    assert logger.level == logging.ERROR


def test_formatter_names() -> None:
    assert isinstance(formatter("logfmt"), LogfmtFormatter)
    assert isinstance(formatter("json"), JsonFormatter)
    with pytest.raises(ValueError, match="logfmt"):
        formatter("text")


def test_log_config_section_flags_and_older_spelling() -> None:
    assert config.build({}).log == config.LogConfig(level="info", format="logfmt")
    args = cli.build_parser().parse_args(["serve", "--log.format=json", "--log.level=debug"])
    assert cli.flags_layer(args)["log"] == {"format": "json", "level": "debug"}
    assert config.build(cli.flags_layer(args)).log == config.LogConfig(level="debug", format="json")
    # The top-level log_level of earlier versions still works, in any layer, and a later
    # layer wins whichever spelling each uses.
    assert config.build({"log_level": "warning"}).log.level == "warning"
    assert config.build({"log_level": "debug"}, {"log": {"level": "error"}}).log.level \
        == "error"
    assert config.build({"log": {"level": "error"}}, {"log_level": "debug"}).log.level \
        == "debug"
    assert config.load(None, environ={"AI_EXPORTER_LOG__FORMAT": "json",
                                      "AI_EXPORTER_LOG_LEVEL": "error"}).log \
        == config.LogConfig(level="error", format="json")


@pytest.mark.parametrize(("layer", "field"), [
    ({"log": {"format": "text"}}, "log.format"),
    ({"log": {"level": "loud"}}, "log.level"),
    ({"log_level": "loud"}, "log_level"),
    ({"log_level": "info", "log": {"level": "info"}}, "log_level"),
])
def test_log_errors_name_the_field(layer: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.build(layer)
    assert str(info.value).startswith(f"{field}:"), str(info.value)


def test_bad_log_format_flag_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check-config", "--log.format=text"]) == 2
    assert "log.format" in capsys.readouterr().err


@pytest.mark.e2e
@pytest.mark.parametrize("log_format", ["logfmt", "json"])
def test_the_exporter_writes_every_line_in_the_format(log_format: str, tmp_path: Path) -> None:
    exporter = Exporter(tmp_path, args=[f"--log.format={log_format}",
                                        f"--storage.path={tmp_path / 'data'}"])
    try:
        assert exporter.get("/livez").status_code == 200
    finally:
        exporter.stop()
    lines = [line for line in exporter.log().splitlines() if line]
    assert any("listening on" in line for line in lines), lines
    for line in lines:
        if log_format == "json":
            record = json.loads(line)
            assert {"ts", "caller", "level", "logger", "msg"} <= set(record), line
        else:
            assert re.match(r"ts=\S+ caller=\S+ level=\w+ logger=\S+ msg=", line), line
