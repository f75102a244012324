"""Rate-limited logging, so that a flood of bad input cannot flood the log."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any


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
