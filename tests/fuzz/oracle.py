"""The fuzz oracle: one input through the native path and the Python path, compared.

An input is one configuration byte and a body (any bytes). Both paths get the same body
into fresh aggregators of the same configuration, through one of the ingestor's public
entry points; they must agree on everything tests/test_native.py compares: the result
(lines, events, rejections with reason and detail), the aggregator's state bit for bit
(floats by their bits), the ingest counters, and no handler failure. Not just "no crash":
a line the C validator takes that the model refuses, or a count that differs, is a
finding too.

The configuration byte (bits), so that mutations reach what the limits guard:

* 0-1: the size limit: 1 MiB, 64, 300 or 4096 bytes (the line limit of ``ingest_lines``,
  the event limit of the other two);
* 2: tight caps (3 series, 4 tracked ids, a budget of 120 samples) or the defaults;
* 3: the native side gets views: the body as a range of a larger buffer (as the tail
  source hands over a read), or memoryviews for ``ingest_raw``;
* 4: the body is ingested a second time into the same state (counters that exist,
  tracked ids that close);
* 5: the clock starts 2 s before a UTC midnight and advances 0.7 s per read (the daily
  spend restarts), else it stands still;
* 6-7: the entry point: 0 and 3 ``ingest_lines`` (the tail), 1 ``ingest_raw`` with the
  body's lines as the objects (Redis entries), 2 ``ingest_array`` with ``[`` and the body
  (a push).

Used by the atheris target (tests/fuzz/target.py) and, with the regular build, by the
replay of the corpus and the regressions (tests/test_native_sanitized.py).
"""


from __future__ import annotations

import calendar
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from exporter.aggregator import Aggregator
from exporter.events import Rejection
from exporter.ingest import Ingestor

SOURCE = "file"
LIMITS = (1 << 20, 64, 300, 4096)
ENTRIES = ("lines", "raw", "array", "lines")
NOW = 1.76e9
MIDNIGHT = float(calendar.timegm((2025, 12, 31, 0, 0, 0)))
BUDGETS = {"openai": 1.0, "p": 0.5}

Outcome = tuple[int, int, list[tuple[int, str, str]]]


class Mismatch(AssertionError):
    """The native path and the Python path disagree on an input."""


@dataclass(frozen=True)
class Config:
    """What the configuration byte chooses (see the module docstring)."""

    limit: int
    tight: bool
    view: bool
    twice: bool
    ticking: bool
    entry: str

    @classmethod
    def of(cls, byte: int) -> Config:
        return cls(limit=LIMITS[byte & 3], tight=bool(byte & 4), view=bool(byte & 8),
                   twice=bool(byte & 16), ticking=bool(byte & 32), entry=ENTRIES[byte >> 6])

    def clock(self) -> Callable[[], float]:
        if not self.ticking:
            return lambda: NOW
        counter = itertools.count()
        return lambda: MIDNIGHT - 2.0 + 0.7 * next(counter)

    def ingestor(self, native: bool) -> Ingestor:
        """A fresh aggregator of this configuration, and its ingestor on one path."""
        limits: dict[str, Any] = (dict(max_series=3, max_tracked=4, max_samples=120)
                                  if self.tight else {})
        aggregator = Aggregator(clock=self.clock(), budgets=dict(BUDGETS), **limits)
        event_limit = self.limit if self.entry != "lines" else 1 << 20
        return Ingestor(aggregator, max_event_bytes=event_limit, native=native)


def canon(value: Any) -> Any:
    """``value`` with every float as its exact bits (-0.0 is not 0.0, the last bit of a
    sum counts) and tuples as lists; list order kept (insertion order matters)."""
    if isinstance(value, float):
        return ("float", value.hex())
    if isinstance(value, dict):
        return {k: canon(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [canon(v) for v in value]
    return value


def outcome(result: tuple[int, int, list[tuple[int, Rejection]]]
            | tuple[int, list[tuple[int, Rejection]]]) -> Outcome:
    """(lines or -1, events, rejections as (index, reason, detail))."""
    if len(result) == 3:
        lines, events, rejects = result
    else:
        lines, (events, rejects) = -1, result
    return lines, events, [(index, r.reason, r.detail) for index, r in rejects]


def counters(ingestor: Ingestor) -> dict[str, Any]:
    """The ingest counters without ``last_event`` (wall time), rows sorted."""
    snap = ingestor.snapshot()
    return {"accepted": sorted(snap["accepted"]), "rejected": sorted(snap["rejected"])}


def feed(config: Config, ingestor: Ingestor, body: bytes, view: bool) -> Outcome:
    """``body`` through ``ingestor``'s entry point of ``config``; rejections of lines are
    counted as the tail source counts them (the other two count their own)."""
    if config.entry == "raw":
        lines = body.split(b"\n")
        if not view:
            return outcome(ingestor.ingest_raw(SOURCE, lines))
        whole = memoryview(b"}" + body + b"{")
        starts = itertools.accumulate((len(line) + 1 for line in lines), initial=1)
        return outcome(ingestor.ingest_raw(SOURCE, [whole[at:at + len(line)] for at, line
                                                    in zip(starts, lines, strict=False)]))
    if config.entry == "array":
        return outcome(ingestor.ingest_array(SOURCE, b"[" + body))
    if view:
        buffer = b"}\n" + body + b"\n{"
        result = outcome(ingestor.ingest_lines(SOURCE, buffer, config.limit, 2,
                                               len(buffer) - 2))
    else:
        result = outcome(ingestor.ingest_lines(SOURCE, body, config.limit))
    for index, reason, detail in result[2]:
        ingestor.reject(SOURCE, Rejection(reason, detail), where=f"line {index + 1}")
    return result


def check(data: bytes) -> Outcome | None:
    """Feed ``data`` (configuration byte, body) through both paths; raises ``Mismatch``
    where they disagree. Returns the outcome (None for an empty input)."""
    if not data:
        return None
    config, body = Config.of(data[0]), data[1:]
    python, fast = config.ingestor(native=False), config.ingestor(native=True)
    result: Outcome | None = None
    for step in range(2 if config.twice else 1):
        expected = feed(config, python, body, view=False)
        actual = feed(config, fast, body, view=config.view)
        if fast._native is None:
            raise RuntimeError("the native path is not built")
        if actual != expected:
            raise Mismatch(f"step {step}: native {actual!r} != python {expected!r}")
        failures = (python.aggregator.failures, fast.aggregator.failures)
        if failures != (0, 0):
            raise Mismatch(f"step {step}: handler failures (python, native): {failures}")
        state = canon(python.aggregator.snapshot()), canon(fast.aggregator.snapshot())
        if state[0] != state[1]:
            raise Mismatch(f"step {step}: aggregator state differs: native "
                           f"{fast.aggregator.snapshot()!r} python "
                           f"{python.aggregator.snapshot()!r}")
        if counters(fast) != counters(python):
            raise Mismatch(f"step {step}: ingest counters differ: native {counters(fast)!r} "
                           f"python {counters(python)!r}")
        result = expected
    return result
