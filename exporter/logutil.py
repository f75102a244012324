"""Logging: rate-limited messages, so that a flood of bad input cannot flood the log, and
the line formats of ``--log.format`` (logfmt and JSON, as Prometheus writes them)."""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from datetime import UTC, datetime
from typing import IO, Any


class RateLimitedLogger:
    """Logs a given message template at most once per interval; counts what it drops."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self.logger = logger
        self.interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def _log(self, level: int, msg: str, *args: Any, key: str | None = None) -> None:
        key = key or msg
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return
            self._last[key] = now
            dropped = self._suppressed.pop(key, 0)
            if len(self._last) > 10_000:
                self._last.clear()
        if dropped:
            msg = f"{msg} (and {dropped} similar messages suppressed)"
        self.logger.log(level, msg, *args)

    def warning(self, msg: str, *args: Any, key: str | None = None) -> None:
        self._log(logging.WARNING, msg, *args, key=key)

    def error(self, msg: str, *args: Any, key: str | None = None) -> None:
        self._log(logging.ERROR, msg, *args, key=key)

    def info(self, msg: str, *args: Any, key: str | None = None) -> None:
        self._log(logging.INFO, msg, *args, key=key)


# --- log line formats (``--log.format``) -------------------------------------------------

LOG_FORMATS = ("logfmt", "json")
# Level names as go-kit/log writes them in Prometheus and node_exporter lines.
_LEVEL_NAMES = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warn",
                logging.ERROR: "error", logging.CRITICAL: "error"}
# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is
# written as a field of its own.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "taskName"}
_BAD_KEY = re.compile(r'[\s="]|[^\x21-\x7e\u00a0-\uffff]')


def _level(record: logging.LogRecord) -> str:
    return _LEVEL_NAMES.get(record.levelno, record.levelname.lower())


def record_fields(record: logging.LogRecord) -> list[tuple[str, Any]]:
    """The fields of one line, in the order Prometheus writes them (``ts``, ``caller``,
    ``level``, then who logged and the message), then ``extra=`` fields and any traceback.

    ``ts`` is UTC with milliseconds (go-kit's ``DefaultTimestampUTC`` as Prometheus
    configures it); ``logger`` is the Python logger name, the role go-kit's ``component``
    plays.
    """
    ts = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
    fields: list[tuple[str, Any]] = [
        ("ts", ts.replace("+00:00", "Z")),
        ("caller", f"{record.filename}:{record.lineno}"),
        ("level", _level(record)),
        ("logger", record.name),
        ("msg", record.getMessage()),
    ]
    for key, value in vars(record).items():
        if key not in _RECORD_ATTRIBUTES and not key.startswith("_"):
            fields.append((key, value))
    if record.exc_info:
        fields.append(("exc", logging.Formatter().formatException(record.exc_info)))
    elif record.exc_text:
        fields.append(("exc", record.exc_text))
    if record.stack_info:
        fields.append(("stack", record.stack_info))
    return fields


def _go_quote(text: str) -> str:
    """Quote as Go's ``strconv.Quote`` does (what slog's text handler and go-logfmt use):
    backslash escapes for quote, backslash, newline, tab, carriage return, and ``\\xNN``,
    ``\\uNNNN`` or ``\\UNNNNNNNN`` for anything else that does not print."""
    out = ['"']
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ch == " " or ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)


def logfmt_value(value: Any) -> str:
    """One value in logfmt: bare when it can be, quoted (Go rules) when it is empty or holds
    a space, ``=``, ``"`` or anything that does not print, as slog's text handler does."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = value if isinstance(value, str) else str(value)
    if not text or any(ch in ' ="' or not ch.isprintable() for ch in text):
        return _go_quote(text)
    return text


def logfmt_key(key: str) -> str:
    """A key logfmt can carry: spaces, ``=``, quotes and control characters become ``_``."""
    return _BAD_KEY.sub("_", key) or "_"


class LogfmtFormatter(logging.Formatter):
    """``ts=2026-01-02T03:04:05.678Z caller=server.py:88 level=info logger=exporter.server
    msg="listening on :10102"``: one record per line, whatever its message holds."""

    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{logfmt_key(key)}={logfmt_value(value)}"
                        for key, value in record_fields(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line with the logfmt fields (``ts``, ``caller``, ``level``,
    ``logger``, ``msg``, ...), as Prometheus' ``--log.format=json`` writes them."""

    def format(self, record: logging.LogRecord) -> str:
        fields = dict(record_fields(record))
        return json.dumps(fields, ensure_ascii=False, default=str, separators=(",", ":"))


def formatter(log_format: str) -> logging.Formatter:
    """The formatter for ``--log.format``; ValueError for a name not in LOG_FORMATS."""
    if log_format == "logfmt":
        return LogfmtFormatter()
    if log_format == "json":
        return JsonFormatter()
    raise ValueError(f"log format: expected one of {list(LOG_FORMATS)}, got {log_format!r}")


class _ConfiguredHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler ``configure_logging`` installs, told apart from anyone else's."""


def configure_logging(level: str, log_format: str, stream: IO[str] | None = None,
                      logger: logging.Logger | None = None) -> logging.Handler:
    """Send ``logger`` (the root logger by default) to ``stream`` (stderr) in ``log_format``
    at ``level``; a second call replaces what the first installed and leaves other
    handlers (a test's capture, say) alone."""
    target = logger if logger is not None else logging.getLogger()
    handler = _ConfiguredHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter(log_format))
    for old in [h for h in target.handlers if isinstance(h, _ConfiguredHandler)]:
        target.removeHandler(old)
    target.addHandler(handler)
    target.setLevel(level.upper())
    return handler
