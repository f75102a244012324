"""The native ingest path (exporter/_lines.c) against the Python path, and its memory.

Three entry points share the C validator and handlers: JSON lines (``ingest_lines``),
single objects (``ingest_raw`` / ``apply_raw``: Redis entries, NDJSON lines) and a whole
JSON array (``ingest_array``: a push body, cut as ``exporter.bodies.split_array`` cuts it);
the native contract (``Aggregator.native_table``) is checked at bind time.

The C extension takes the lines it is certain about and hands every other line back to the
Python path; the outcome must be the Python path's exactly: the same (lines, events,
rejections), the same aggregator state bit for bit (float sums included: the C shadows add
the same doubles in the same order), the same ingest counters. These tests feed the same
generated JSONL bodies to an aggregator on each path and compare everything, then run the
extension under the debug allocator and check that repeated high-cardinality ingest does not
leak.

Generated lines are built as JSON text, not serialized objects, so that the spelling is
under the test's control: key order, whitespace, number forms, escapes, raw UTF-8.
"""

from __future__ import annotations

import calendar
import itertools
import json
import os
import subprocess
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter import native
from exporter.aggregation.stores import HistogramStore
from exporter.aggregator import Aggregator
from exporter.bodies import split_array
from exporter.events import (
    EVENT_TYPES,
    KIND_OF,
    KINDS,
    AnyEvent,
    ComponentKind,
    ComponentState,
    ErrorCategory,
    EventDecoder,
    GateDecision,
    InterventionStatus,
    Rejection,
    ResolutionAction,
    Severity,
    TaskStatus,
    Verdict,
)
from exporter.ingest import Ingestor
from exporter.pricing import PriceTable, Rates

ROOT = Path(__file__).resolve().parent.parent
SOURCE = "file"
PUSH = "push"
NOW = 1.76e9
BIG_LINE = 1 << 20  # the default max line: only the event size limit applies
SMALL_LINE = 300  # small enough that generated lines go over it
NATIVE_KINDS = ("llm_call", "task", "tool_call", "quality_gate", "resolution", "guardian",
                "error")
EXAMPLES = 250
PROPERTY = settings(max_examples=EXAMPLES, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

Entry = tuple[str, str]  # (key as JSON text, value as JSON text)
Strategy = st.SearchStrategy

# ====================================================================================
# Strategies: JSON text of events, valid, tricky-but-valid and invalid
# ====================================================================================

# Printable ASCII without '"' and '\\': strings the C path may take (no escapes needed).
PLAIN = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) not in '"\\')
WS = st.text(alphabet=" \t\r", max_size=2)  # JSON whitespace (a line holds no newline)


@dataclass(frozen=True)
class Pools:
    """Label values and ids to draw from: small pools make label sets and ids repeat, so
    counters accumulate, tracked ids open and close, and caps are reached."""

    labels: tuple[str, ...]
    ids: tuple[str, ...]
    random_labels: bool = True  # also arbitrary plain strings (new label sets)


DEFAULT_POOLS = Pools(labels=("a", "other", "openai", "anthropic", "gpt-4o", "planner",
                              "x y", "default", "chat", "B" * 127, "C" * 128),
                      ids=("t1", "t2", "t3", "t4", "t5", "loop-1", "loop-2"))
# For the caps: more label sets than max_series=3 and more ids than max_tracked=4,
# and labels that are literally "other".
CAPS_POOLS = Pools(labels=("other", "openai", "p1", "p2", "p3", "m1", "m2", "m3", "m4"),
                   ids=("i1", "i2", "i3", "i4", "i5", "i6", "i7"), random_labels=False)


def jstr(values: Strategy[str]) -> Strategy[str]:
    """A JSON string literal of plain values (no escapes are needed)."""
    return values.map(lambda s: f'"{s}"')


def labels(pools: Pools) -> Strategy[str]:
    pool = st.sampled_from(pools.labels)
    if not pools.random_labels:
        return pool
    return st.one_of(pool, pool, st.text(PLAIN, min_size=1, max_size=16))


def enum(values: tuple[str, ...]) -> Strategy[str]:
    return jstr(st.sampled_from(values))


def nullable(values: Strategy[str]) -> Strategy[str]:
    return st.one_of(values, st.just("null"))


def ints(high: int) -> Strategy[str]:
    """A JSON integer in 0..high, mostly small; ``-0`` is 0 too."""
    return st.one_of(st.integers(0, 5000).map(str), st.integers(0, high).map(str),
                     st.sampled_from(["0", "-0", str(high), "1099511627776"]))


# Number spellings that are valid for any float field with ge=0 and le>=200: exponents,
# more digits than a double holds (strtod rather than the fast path), negative zero,
# subnormal and underflow to zero.
FLOAT_SPECIALS = ("0", "-0", "-0.0", "0.0", "1e-3", "2E+2", "2e2", "1E-3", "0e0",
                  "0.1234567890123456789", "0.30000000000000004", "5e-324", "1e-400",
                  "0.000000000000000000000123", "123456789.123456789123456789",
                  "0." + "1" * 140, "1.5e-7", "0.1", "0.2", "0.3")


@st.composite
def floats_in(draw: st.DrawFn, high: float) -> str:
    """A JSON number in 0..high, spelled in one of several ways (all in range)."""
    value = draw(st.one_of(st.floats(0, high), st.floats(0, min(10.0, high)),
                           st.sampled_from([0.0, high])))
    style = draw(st.sampled_from(["repr", "repr", "e", "E", "g17", "f20", "int", "special"]))
    if style == "special":
        text: str = draw(st.sampled_from(FLOAT_SPECIALS))
        return text if float(text) <= high else repr(value)
    if style == "e":
        return f"{value:e}"
    if style == "E":
        return f"{value:E}"
    if style == "g17":
        return f"{value:.17g}"
    if style == "f20":
        return f"{value:.20f}"
    if style == "int":
        return str(int(value))
    return repr(value)


def score() -> Strategy[str]:
    return st.one_of(floats_in(1.0), st.sampled_from(["1", "1.0", "1.00000000000000001",
                                                      "0.99999999999999999", "1e0"]))


HEX = "0123456789abcdef"
# W3C ids: empty (none), a few that repeat, random ones.
TRACE_IDS = jstr(st.one_of(st.just(""),
                           st.sampled_from(["0" * 32, "4bf92f3577b34da6a3ce929d0e0e4736"]),
                           st.text(HEX, min_size=32, max_size=32)))
SPAN_IDS = jstr(st.one_of(st.just(""), st.sampled_from(["00f067aa0ba902b7"]),
                          st.text(HEX, min_size=16, max_size=16)))


def kind_fields(pools: Pools) -> dict[str, dict[str, tuple[bool, Strategy[str]]]]:
    """Per kind: field -> (required, strategy of its JSON value), from the event model."""
    label = jstr(labels(pools))
    opt = jstr(st.one_of(st.just(""), labels(pools)))
    some_id = jstr(st.one_of(st.just(""), st.sampled_from(pools.ids)))
    an_id = jstr(st.sampled_from(pools.ids))
    seconds = nullable(floats_in(1e9))
    tokens = ints(1 << 40)
    opt_tokens = nullable(tokens)
    ts = nullable(floats_in(1e11))

    def args(alias: Any) -> tuple[str, ...]:
        return typing.get_args(alias)

    fields: dict[str, dict[str, tuple[bool, Strategy[str]]]] = {
        "llm_call": {"provider": (True, label), "model": (True, label),
                     "operation": (False, label), "input_tokens": (False, tokens),
                     "output_tokens": (False, tokens), "cached_input_tokens": (False, tokens),
                     "cache_read_input_tokens": (False, tokens),
                     "cache_creation_input_tokens": (False, tokens),
                     "reasoning_output_tokens": (False, tokens),
                     "duration_seconds": (False, seconds),
                     "time_to_first_token_seconds": (False, seconds),
                     "time_per_output_chunk_seconds": (False, seconds),
                     "cost_usd": (False, nullable(floats_in(1e9))), "error_type": (False, opt),
                     "component": (False, opt), "response_model": (False, opt),
                     "trace_id": (False, TRACE_IDS), "span_id": (False, SPAN_IDS)},
        "task": {"component": (True, label), "status": (True, enum(args(TaskStatus))),
                 "queue": (False, label), "task_id": (False, some_id),
                 "duration_seconds": (False, seconds),
                 "operation": (False, jstr(st.one_of(st.just("invoke_agent"), st.just(""),
                                                     labels(pools)))),
                 "trace_id": (False, TRACE_IDS), "span_id": (False, SPAN_IDS)},
        "tool_call": {"tool": (True, label), "agent": (False, opt),
                      "duration_seconds": (False, seconds), "error_type": (False, opt),
                      "tool_type": (False, opt), "trace_id": (False, TRACE_IDS),
                      "span_id": (False, SPAN_IDS)},
        "quality_gate": {"gate": (True, label), "decision": (True, enum(args(GateDecision))),
                         "score": (False, nullable(score()))},
        "resolution": {"loop_id": (True, an_id), "action": (True, enum(args(ResolutionAction))),
                       "component": (False, label), "outcome": (False, opt)},
        "guardian": {"guardian": (True, label), "verdict": (True, enum(args(Verdict))),
                     "guardian_type": (False, opt), "duration_seconds": (False, seconds)},
        "intervention": {"intervention_id": (True, an_id), "type": (True, label),
                         "status": (True, enum(args(InterventionStatus))),
                         "priority": (False, label), "wait_seconds": (False, seconds)},
        "security_event": {"category": (True, label), "severity": (True, enum(args(Severity))),
                           "event_id": (False, some_id),
                           "resolved": (False, st.sampled_from(["true", "false"])),
                           "component": (False, opt)},
        "error": {"component": (True, label), "category": (True, enum(args(ErrorCategory)))},
        "provider_limit": {"provider": (True, label), "remaining_requests": (False, opt_tokens),
                           "remaining_tokens": (False, opt_tokens),
                           "limit_requests": (False, opt_tokens),
                           "limit_tokens": (False, opt_tokens),
                           "reset_at": (False, nullable(floats_in(1e11)))},
        "component_status": {"component": (True, label),
                             "component_kind": (False, enum(args(ComponentKind))),
                             "version": (False, opt),
                             "status": (False, enum(args(ComponentState)))},
        # delegated to the Python handlers (ids have a pattern)
        "mcp_call": {"method": (True, label), "duration_seconds": (True, floats_in(1e9)),
                     "side": (False, enum(("client", "server"))), "tool": (False, opt),
                     "prompt": (False, opt), "error_type": (False, opt),
                     "protocol_version": (False, opt), "transport": (False, opt),
                     "session_id": (False, some_id),
                     "trace_id": (False, enum(("", "4bf92f3577b34da6a3ce929d0e0e4736"))),
                     "span_id": (False, enum(("", "00f067aa0ba902b7")))},
        "mcp_session": {"duration_seconds": (True, floats_in(1e9)),
                        "side": (False, enum(("client", "server"))),
                        "error_type": (False, opt), "protocol_version": (False, opt),
                        "transport": (False, opt), "session_id": (False, some_id),
                        "trace_id": (False, enum(("", "4bf92f3577b34da6a3ce929d0e0e4736"))),
                        "span_id": (False, enum(("", "00f067aa0ba902b7")))},
    }
    for table in fields.values():
        table["ts"] = (False, ts)
    return fields


FIELDS = {pools: kind_fields(pools) for pools in (DEFAULT_POOLS, CAPS_POOLS)}
STRING_FIELDS = {name for table in FIELDS[DEFAULT_POOLS].values() for name in table
                 if name not in {"status", "decision", "action", "verdict", "severity",
                                 "category", "component_kind"}
                 and not name.endswith(("_tokens", "_seconds", "_requests"))
                 and name not in {"ts", "reset_at", "cost_usd", "score", "resolved"}}


@st.composite
def event_entries(draw: st.DrawFn, pools: Pools, kinds: tuple[str, ...] = KINDS
                  ) -> list[Entry]:
    """A valid event of a random kind: required fields, a random subset of the optional
    ones (``null`` where nullable), in random order with "kind" anywhere."""
    kind = draw(st.sampled_from(kinds))
    entries = [('"kind"', f'"{kind}"')]
    for name, (required, values) in FIELDS[pools][kind].items():
        if required or draw(st.booleans()):
            entries.append((f'"{name}"', draw(values)))
    return list(draw(st.permutations(entries)))


@st.composite
def render(draw: st.DrawFn, entries: list[Entry]) -> bytes:
    """One line of JSON text, with random whitespace around every token."""
    parts = [draw(WS) + key + draw(WS) + ":" + draw(WS) + value + draw(WS)
             for key, value in entries]
    return (draw(WS) + "{" + ",".join(parts) + "}" + draw(WS)).encode()


def escape_one(text: str, index: int) -> str:
    """``text`` with the character at ``index`` spelled as a \\u escape (same value)."""
    return text[:index] + f"\\u{ord(text[index]):04x}" + text[index + 1:]


def _string_entries(entries: list[Entry]) -> list[int]:
    return [i for i, (_, v) in enumerate(entries) if v.startswith('"')]


@st.composite
def tricky_entries(draw: st.DrawFn, pools: Pools) -> list[Entry]:
    """A valid event the C path must hand to Python: escapes (in values, enum values and
    keys), non-ASCII text, strings of 129..256 characters, control characters that the
    aggregator sanitizes away."""
    entries = draw(event_entries(pools))
    how = draw(st.sampled_from(["escape_value", "append_escape", "non_ascii", "long",
                                "escape_key", "control"]))
    strings = _string_entries(entries)
    i = draw(st.sampled_from(strings))  # "kind" is always a string
    key, value = entries[i]
    name, inner = key.strip('"'), value[1:-1]
    labelled = name in STRING_FIELDS
    if how == "escape_key" or not inner:
        at = draw(st.integers(0, len(name) - 1))
        entries[i] = ('"' + escape_one(name, at) + '"', value)
    elif how == "escape_value" or not labelled:  # same value, escaped: enums and kind too
        at = draw(st.integers(0, len(inner) - 1))
        entries[i] = (key, '"' + escape_one(inner, at) + '"')
    elif how == "append_escape":
        extra = draw(st.sampled_from(['\\"', "\\\\", "\\u00e9", "\\/", "\\n", "\\t",
                                      "\\ud83d\\ude00", "\\u2028"]))
        entries[i] = (key, '"' + inner[:120] + extra + '"')
    elif how == "non_ascii":
        extra = draw(st.sampled_from(["é", "日本", "😀", "\u00a0", "\u200b", "ß"]))
        entries[i] = (key, '"' + inner[:120] + extra + '"')
    elif how == "long":
        text = draw(st.text(PLAIN, min_size=129, max_size=256))
        entries[i] = (key, f'"{text}"')
    else:
        extra = draw(st.sampled_from(["\\u0000", "\\u0007", "\\u001f", "\\u007f", "\\u0085",
                                      "\\u202e"]))
        entries[i] = (key, '"' + inner[:100] + extra + '"')
    return entries


# Values that are wrong for most fields: the wrong type, out of range, non-finite, nested.
BAD_VALUES = ('"5"', "1.0", "true", "false", "5", '"x"', "null", '""', "-1", "1.5",
              "1099511627777", "1e10", "100000000001", "1.7976931348623157e308",
              "12345678901234567", "1234567890123456789012", "-0.5", "NaN", "Infinity",
              "-Infinity", "1e400", '{"a":1}', "[1,2]", "[]", "{}", '"bogus"', "2E+2",
              "1e-3", "0.1234567890123456789", "-0", "-0.0")


# Out of range for every numeric field (or of the wrong type where it is not numeric).
OUT_OF_RANGE = ("-1", "-0.5", "-1e-300", "1.5", "1099511627777", "1e10", "100000000001",
                "1000000000.0000002", "1e400", "1.7976931348623157e308", "12345678901234567",
                "-12345678901234567", "2e11", "4.9e-324e1")


@st.composite
def invalid_entries(draw: st.DrawFn, pools: Pools) -> list[Entry]:
    """An event with one defect in its fields (a duplicate, an unknown or missing field,
    an unknown kind, a wrong or out-of-range value). Some "defects" leave it valid (a
    removed optional field, a value that fits): the property is agreement, not refusal."""
    entries = draw(event_entries(pools))
    how = draw(st.sampled_from(["dup", "dup_kind", "unknown_field", "unknown_kind",
                                "missing", "bad_value", "out_of_range", "out_of_range",
                                "empty_string", "many_keys"]))
    i = draw(st.integers(0, len(entries) - 1))
    if how == "dup":
        key = entries[i][0]
        value = draw(st.sampled_from([entries[i][1], '"v"', "1"]))
        entries.insert(draw(st.integers(0, len(entries))), (key, value))
    elif how == "dup_kind":
        other = draw(st.sampled_from(KINDS))
        entries.insert(draw(st.integers(0, len(entries))), ('"kind"', f'"{other}"'))
    elif how == "unknown_field":
        entries.insert(draw(st.integers(0, len(entries))),
                       (draw(st.sampled_from(['"bogus"', '"Kind"', '""', '"model "'])), "1"))
    elif how == "unknown_kind":
        k = next(j for j, (key, _) in enumerate(entries) if key == '"kind"')
        entries[k] = ('"kind"', draw(st.sampled_from(['"llm_calls"', '"LLM_CALL"', '""',
                                                      '"kind"', "1", "null", '["task"]'])))
    elif how == "missing":
        del entries[i]
    elif how == "bad_value":
        entries[i] = (entries[i][0], draw(st.sampled_from(BAD_VALUES)))
    elif how == "out_of_range":
        numbers = [j for j, (_, v) in enumerate(entries) if v[0] in "-0123456789"]
        if numbers:
            i = draw(st.sampled_from(numbers))
        entries[i] = (entries[i][0], draw(st.sampled_from(OUT_OF_RANGE)))
    elif how == "empty_string":
        entries[i] = (entries[i][0], '""')
    else:
        entries.extend(entries[i:i + 1] * draw(st.integers(20, 30)))
    return entries


@st.composite
def broken_line(draw: st.DrawFn, pools: Pools) -> bytes:
    """A line that is not one JSON object: truncated, with trailing garbage, two objects,
    another JSON value, invalid UTF-8, an over-long line, or a blank one."""
    line = draw(render(draw(event_entries(pools))))
    how = draw(st.sampled_from(["truncate", "trailing", "two", "not_object", "utf8",
                                "pad", "blank"]))
    if how == "truncate":
        return line[:draw(st.integers(1, len(line) - 1))]
    if how == "trailing":
        return line + draw(st.sampled_from([b"x", b"}", b",", b" 1", b"]", b"\x00"]))
    if how == "two":
        second = draw(render(draw(event_entries(pools))))
        return line + draw(st.sampled_from([b"", b" ", b","])) + second
    if how == "not_object":
        return draw(st.sampled_from([b"[]", b"[" + line + b"]", b"1", b'"str"', b"null",
                                     b"{}", b" { } ", b"true", b"-0", b"{", b"}", b'{"kind"}',
                                     b'{"kind":}', b'{"kind":"error",}', b'{,}']))
    if how == "utf8":
        bad = draw(st.sampled_from([b"\xff", b"\xc3", b"\xc3(", b"\xed\xa0\x80", b"\xe2\x82",
                                    b"\x80", b"\xf4\x90\x80\x80"]))
        quotes = [i for i, c in enumerate(line) if c == ord('"')]
        at = draw(st.sampled_from(quotes)) + 1
        return line[:at] + bad + line[at:]
    if how == "pad":  # valid JSON around the over-long limit of the small max_line
        size = draw(st.integers(SMALL_LINE - 5, SMALL_LINE + 100))
        return line + b" " * max(0, size - len(line))
    return draw(st.sampled_from([b"", b" ", b"\t", b"\r", b" \r\t ", b"\x0c", b"\x0b",
                                 b" \x0c ", b"\x1c"]))


@st.composite
def any_line(draw: st.DrawFn, pools: Pools) -> bytes:
    """Mostly valid events (so the C path runs long), the rest tricky or invalid."""
    category = draw(st.sampled_from(["valid"] * 6 + ["tricky"] * 2 + ["invalid"] * 2
                                    + ["broken"] * 2))
    if category == "valid":
        return draw(render(draw(event_entries(pools))))
    if category == "tricky":
        return draw(render(draw(tricky_entries(pools))))
    if category == "invalid":
        return draw(render(draw(invalid_entries(pools))))
    return draw(broken_line(pools))


def bodies(pools: Pools = DEFAULT_POOLS, max_lines: int = 30) -> Strategy[bytes]:
    """Complete lines joined by newlines, without the last one (what ``ingest_lines``
    takes)."""
    return st.lists(any_line(pools), min_size=4, max_size=max_lines).map(b"\n".join)


def valid_bodies(pools: Pools = DEFAULT_POOLS, max_lines: int = 20) -> Strategy[bytes]:
    """Bodies of valid events only (at least one)."""
    return st.lists(event_entries(pools).flatmap(render), min_size=1,
                    max_size=max_lines).map(b"\n".join)


def max_lines() -> Strategy[int]:
    return st.sampled_from([BIG_LINE, SMALL_LINE])


# ====================================================================================
# The pair of aggregators, one per path, and the comparison
# ====================================================================================


def canon(value: Any) -> Any:
    """``value`` with every float as its exact bits (``float.hex``: -0.0 is not 0.0, and
    the last bit of a sum counts) and tuples as lists; dict order ignored, list order
    kept (it is the insertion order of the state, which eviction depends on)."""
    if isinstance(value, float):
        return ("float", value.hex())
    if isinstance(value, dict):
        return {k: canon(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [canon(v) for v in value]
    return value


def outcome(result: tuple[int, int, list[tuple[int, Rejection]]]
            ) -> tuple[int, int, list[tuple[int, str, str]]]:
    lines, events, rejects = result
    return lines, events, [(index, r.reason, r.detail) for index, r in rejects]


def counters(ingestor: Ingestor) -> dict[str, Any]:
    """The ingest counters without ``last_event`` (wall time), rows sorted."""
    snap = ingestor.snapshot()
    return {"accepted": sorted(snap["accepted"]), "rejected": sorted(snap["rejected"])}


class FixedPrices(PriceTable):
    """A price table of a few (provider, model) pairs of the pools, at rates whose sums
    round (so that the order of the cost expression shows); the rest has no price."""

    PROVIDERS = ("openai", "anthropic", "a")
    MODELS: typing.ClassVar[dict[str, Rates]] = {
        "gpt-4o": Rates(2.5e-6, 1e-5, 1.25e-6, 3.1e-6, 1.1e-5),
        "a": Rates(3e-7, 0.7e-6, 0.3e-7, 0.37e-6, 0.9e-6),
        "planner": Rates(1e-6, 1e-6, 2e-6, 0.0, 1e-6),  # cache dearer: no saving
        "chat": Rates(0.1, 0.2, 0.3, 0.4, 0.5)}

    def __init__(self) -> None:
        super().__init__(library=False)
        self.asked: list[tuple[str, str]] = []

    def rates(self, provider: str, model: str) -> Rates | None:
        self.asked.append((provider, model))
        return self.MODELS.get(model) if provider in self.PROVIDERS else None


Offer = tuple[str, tuple[str, ...], float, str, str, float]


def record_offers(aggregator: Aggregator) -> list[Offer]:
    """Every exemplar offer the aggregator's histograms get, in order (the real method
    still runs after the record)."""
    offers: list[Offer] = []
    for name, store in aggregator.stores.items():
        if isinstance(store, HistogramStore):
            def offer(key: tuple[str, ...], value: float, trace_id: str, span_id: str,
                      ts: float, _name: str = name,
                      _real: Callable[..., None] = store.offer_exemplar) -> None:
                offers.append((_name, key, value, trace_id, span_id, ts))
                _real(key, value, trace_id, span_id, ts)
            store.offer_exemplar = offer  # type: ignore[method-assign]
    return offers


def exemplars_of(aggregator: Aggregator) -> dict[str, dict[tuple[str, ...], list[Any]]]:
    """The exemplars every histogram holds, by metric name and label set."""
    return {name: {key: list(row) for key, row in store.exemplars.items()}
            for name, store in aggregator.stores.items()
            if isinstance(store, HistogramStore) and store.exemplars}


class Pair:
    """Two identical aggregators, one fed through the Python path, one through the native
    path; every step is applied to both and its result compared (exemplars held too).
    Both price with a ``FixedPrices`` unless ``prices`` is given."""

    def __init__(self, clock: Callable[[], Callable[[], float]] = lambda: lambda: NOW,
                 prices: Callable[[], PriceTable] = FixedPrices, **config: Any) -> None:
        self.python = Aggregator(clock=clock(), prices=prices(), **config)
        self.native = Aggregator(clock=clock(), prices=prices(), **config)
        self.python_offers = record_offers(self.python)
        self.native_offers = record_offers(self.native)
        self.python_ingestor = Ingestor(self.python, native=False)
        self.native_ingestor = Ingestor(self.native)

    def ingest_lines(self, body: bytes, max_line: int = BIG_LINE, view: bool = False
                     ) -> tuple[int, int, list[tuple[int, str, str]]]:
        """``ingest_lines`` on both; the results must be equal. Rejections are then counted
        as the tail source counts them. ``view``: the native side gets the body as a range
        of a larger buffer, as the tail source hands over a read."""
        expected = self.python_ingestor.ingest_lines(SOURCE, body, max_line)
        if view:
            buffer = b"}\n" + body + b"\n{"
            actual = self.native_ingestor.ingest_lines(SOURCE, buffer, max_line, 2,
                                                       len(buffer) - 2)
        else:
            actual = self.native_ingestor.ingest_lines(SOURCE, body, max_line)
        assert self.python_ingestor._native is None
        assert self.native_ingestor._native is not None
        assert outcome(actual) == outcome(expected), body
        for ingestor, (_, _, rejects) in ((self.python_ingestor, expected),
                                          (self.native_ingestor, actual)):
            for index, rejection in rejects:
                ingestor.reject(SOURCE, rejection, where=f"line {index + 1}")
        return outcome(expected)

    def ingest_raw(self, raws: list[bytes], events: list[AnyEvent] | None = None
                   ) -> tuple[int, list[tuple[int, str, str]]]:
        """``apply_raw`` on both (``events`` first, then the raw objects, as the Redis
        source hands them over), then ``ingest_raw``-style reporting; results equal."""
        expected = self.python_ingestor.apply_raw(PUSH, raws, events=events or ())
        actual = self.native_ingestor.apply_raw(PUSH, list(raws), events=events or ())
        assert self.python_ingestor._native is None
        assert self.native_ingestor._native is not None
        result = (expected[0], [(i, r.reason, r.detail) for i, r in expected[1]])
        assert (actual[0], [(i, r.reason, r.detail) for i, r in actual[1]]) == result, raws
        for ingestor, (_, rejects) in ((self.python_ingestor, expected),
                                       (self.native_ingestor, actual)):
            for index, rejection in rejects:
                ingestor.reject(PUSH, rejection, where=f"event {index}")
        return result

    def ingest_array(self, body: bytes) -> tuple[int, list[tuple[int, str, str]]]:
        """``ingest_array`` (a push body) on both; the results must be equal."""
        expected = self.python_ingestor.ingest_array(PUSH, body)
        actual = self.native_ingestor.ingest_array(PUSH, body)
        result = (expected[0], [(i, r.reason, r.detail) for i, r in expected[1]])
        assert (actual[0], [(i, r.reason, r.detail) for i, r in actual[1]]) == result, body
        return result

    def apply(self, events: list[AnyEvent]) -> None:
        """Python-only ingestion (already-decoded events) on both."""
        self.python_ingestor.apply("push", events)
        self.native_ingestor.apply("push", events)

    def restore(self, state: dict[str, Any]) -> None:
        self.python.restore(state)
        self.native.restore(state)

    def assert_same(self, context: object = "") -> None:
        assert self.python.failures == self.native.failures == 0
        assert canon(self.native.snapshot()) == canon(self.python.snapshot()), context
        assert counters(self.native_ingestor) == counters(self.python_ingestor), context
        # the exemplars held, not the offers made: the native path skips an offer that
        # HistogramStore.offer_exemplar would refuse (the bucket's exemplar is fresh)
        assert canon(exemplars_of(self.native)) == canon(exemplars_of(self.python)), context


def decoded(body: bytes) -> list[AnyEvent]:
    """The events of a body of valid lines, decoded by msgspec (for Python-only ingest)."""
    decoder = EventDecoder()
    events = [decoder.decode_one(line) for line in body.split(b"\n")]
    assert not any(isinstance(e, Rejection) for e in events), events
    return typing.cast(list[AnyEvent], events)


def ticking(start: float, step: float) -> Callable[[], Callable[[], float]]:
    """A clock factory: each clock advances by ``step`` on every call."""
    def make() -> Callable[[], float]:
        counter = itertools.count()
        return lambda: start + step * next(counter)
    return make


class SetClock:
    """A clock the test moves between calls."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def utc_midnight(year: int, month: int, day: int) -> float:
    return float(calendar.timegm((year, month, day, 0, 0, 0)))


# ====================================================================================
# The extension is there, and it does take the lines it should
# ====================================================================================


def test_native_extension_is_built() -> None:
    assert native.available(), "exporter._lines is not importable: the C build failed"
    lines = native.NativeLines(Aggregator())
    assert set(NATIVE_KINDS) <= set(lines.enabled) <= set(KINDS), lines.enabled


def test_generators_cover_every_field_of_every_kind() -> None:
    """The strategies above know every field of the model (a new field must be generated
    too, or the differential tests would never send it)."""
    for cls in EVENT_TYPES:
        expected = {f.encode_name for f in msgspec.structs.fields(cls)}
        for pools in FIELDS:
            assert set(FIELDS[pools][KIND_OF[cls]]) == expected, KIND_OF[cls]


PLAIN_LINES = [
    b'{"kind":"llm_call","provider":"openai","model":"gpt-4o","input_tokens":10,'
    b'"output_tokens":5,"cached_input_tokens":2,"duration_seconds":0.25,'
    b'"time_to_first_token_seconds":0.1,"cost_usd":0.001,"error_type":"","component":"a"}',
    b' { "model" : "m" ,\t"kind":"llm_call" ,"provider":"p", "ts" : null }\r',
    b'{"kind":"task","component":"w","status":"started","task_id":"t1"}',
    b'{"kind":"task","component":"w","status":"succeeded","task_id":"t1","queue":"q"}',
    b'{"kind":"tool_call","tool":"search","agent":"a","duration_seconds":2E+2}',
    b'{"kind":"quality_gate","gate":"review","decision":"approved","score":1e-3}',
    b'{"kind":"resolution","loop_id":"l1","action":"attempt"}',
    b'{"kind":"resolution","loop_id":"l1","action":"closed","outcome":"fixed"}',
    b'{"kind":"guardian","guardian":"g","verdict":"deny","duration_seconds":0.1234567890123456789}',
    b'{"kind":"error","component":"c","category":"timeout","ts":1760000000.5}',
    b"",
    b" \t\r",
]


@pytest.fixture
def handed_over(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The lines the native path hands to the Python path (``native._decode_line`` is
    where each of them goes), in order."""
    seen: list[bytes] = []
    decode_line = native._decode_line

    def spy(line: bytes, max_line: int, decoder: EventDecoder) -> AnyEvent | Rejection | None:
        seen.append(line)
        return decode_line(line, max_line, decoder)

    monkeypatch.setattr(native, "_decode_line", spy)
    return seen


def test_native_path_takes_plain_lines(handed_over: list[bytes]) -> None:
    """Plain lines of the native kinds are applied in C (no hand-over), so the differential
    tests below do compare the C handlers, not the Python path with itself."""
    pair = Pair()
    assert pair.ingest_lines(b"\n".join(PLAIN_LINES)) == (len(PLAIN_LINES),
                                                          len(PLAIN_LINES) - 2, [])
    assert handed_over == []
    pair.assert_same()


HANDED_OVER = [
    pytest.param(b'{"kind":"error","component":"a\\"b","category":"tool"}', id="escaped-quote"),
    pytest.param(b'{"kind":"error","component":"a\\\\b","category":"tool"}', id="backslash"),
    pytest.param(b'{"kind":"error","component":"caf\\u00e9","category":"tool"}', id="u-escape"),
    pytest.param(b'{"kind":"error","component":"a\\/b","category":"tool"}', id="slash-escape"),
    pytest.param('{"kind":"error","component":"café","category":"tool"}'.encode(), id="utf8"),
    pytest.param(b'{"kind":"error","component":"' + b"x" * 129 + b'","category":"tool"}',
                 id="129-chars"),
    pytest.param(b'{"kin\\u0064":"error","component":"a","category":"tool"}', id="escaped-key"),
    pytest.param(b'{"kind":"error","component":"a","category":"t\\u006fol"}', id="escaped-enum"),
    pytest.param(b'{"kind":"error","kind":"error","component":"a","category":"tool"}',
                 id="duplicate-kind"),
    pytest.param(b'{"kind":"error","component":"a","component":"a","category":"tool"}',
                 id="duplicate-key"),
    pytest.param(b'{"kind":"error","component":"a","category":"tool","x":1}', id="unknown"),
    pytest.param(b'{"kind":"llm_call","provider":"p","model":"m","input_tokens":1.0}',
                 id="float-for-int"),
    pytest.param(b'{"kind":"llm_call","provider":"p","model":"m","input_tokens":1e2}',
                 id="exponent-for-int"),
    pytest.param(b'{"kind":"llm_call","provider":"p","model":"m","input_tokens":1234567890123456}',
                 id="16-digits"),
    pytest.param(b'{"kind":"llm_call","provider":"p","model":"m","cost_usd":1.7976931348623157e308}',
                 id="huge-float"),
    pytest.param(b'{"kind":"quality_gate","gate":"g","decision":"approved","score":1.5}',
                 id="score-range"),
    pytest.param(b'{"kind":"error","component":"a","category":"tool","ts":-1}', id="ts-negative"),
    pytest.param(b'{"kind":"error","component":"","category":"tool"}', id="empty-label"),
    pytest.param(b'{"kind":"error","component":"a","category":"tool","ts":NaN}', id="nan"),
    pytest.param(b'{"kind":"error","component":{},"category":"tool"}', id="nested"),
    pytest.param(b"{}", id="empty-object"),
    pytest.param(b"\x0c", id="form-feed"),
    pytest.param(b'{"kind":"error","component":"a","category":"tool"} x', id="trailing"),
]


@pytest.mark.parametrize("line", HANDED_OVER)
def test_native_path_hands_over_what_it_is_not_sure_of(line: bytes,
                                                       handed_over: list[bytes]) -> None:
    """The native path leaves each of these lines to the Python path, at its place between
    lines it applies itself; both paths then agree on it (event or rejection, with the
    same reason and detail)."""
    pair = Pair()
    pair.ingest_lines(b"\n".join([PLAIN_LINES[2], line, PLAIN_LINES[3]]))
    assert handed_over == [line]
    pair.assert_same(line)


BAD_LINES = [
    # invalid UTF-8 wherever it sits: msgspec <= 0.19 raised UnicodeDecodeError, 0.23 a
    # DecodeError, and a schema error may come first; every one is invalid_utf8
    pytest.param(b'{"kind":"error","component":"\xff\xfe","category":"client"}',
                 "invalid_utf8", id="utf8-ff"),
    pytest.param(b'{"kind":"error","component":"a\xc3","category":"client"}', "invalid_utf8",
                 id="utf8-truncated"),
    pytest.param(b'{"kind":"error","component":"\xed\xa0\x80","category":"client"}',
                 "invalid_utf8", id="utf8-surrogate"),
    pytest.param(b'{"kind":"error","component":"\xf4\x90\x80\x80","category":"client"}',
                 "invalid_utf8", id="utf8-over-max"),
    pytest.param(b'{"kind":"error","component":"a","category":"client","x\x80":1}',
                 "invalid_utf8", id="utf8-in-unknown-key"),
    pytest.param(b'{"kind":"nope","component":"\xff"}', "invalid_utf8",
                 id="utf8-with-unknown-kind"),
    pytest.param(b'\xff{"kind":"error","component":"a","category":"client"}', "invalid_utf8",
                 id="utf8-before-object"),
    pytest.param(b'{"kind":"error","component":"a","category":"client"\xff', "invalid_utf8",
                 id="utf8-malformed"),
    pytest.param(b'{"kind":"llm_call","provider":"p","model":"m","cost_usd":NaN}',
                 "non_finite_number", id="nan"),
    pytest.param(b'{"kind":"llm_call","provider":"p","model":"m","cost_usd":-Infinity}',
                 "non_finite_number", id="minus-infinity"),
    pytest.param(b'{"kind":"llm_call","provider":"p","model":"m","cost_usd":1e999}',
                 "non_finite_number", id="out-of-range"),
    pytest.param(b'{"kind":"error","component":"a"', "malformed_json", id="truncated"),
    pytest.param(b'{"kind":"error","component":"a","category":"client"} {}', "malformed_json",
                 id="trailing"),
    pytest.param(b'{"kind":"error","component":"a","category":"client","component":"b"}',
                 "duplicate_key", id="duplicate-key"),
    pytest.param(b'{"kind":"error","component":"a","\\u0063omponent":"b","category":"client"}',
                 "duplicate_key", id="duplicate-escaped-key"),
    pytest.param(b'[{"kind":"error","component":"a","category":"client"}]', "not_an_object",
                 id="array"),
    pytest.param(b'{"kind":"llm_cal","provider":"p","model":"m"}', "unknown_kind",
                 id="unknown-kind"),
    pytest.param(b'{"kind":"llm_call","provider":"p"}', "missing_field", id="missing"),
    pytest.param(b'{"kind":"llm_call","provider":"p","model":"m","tokens":3}', "unknown_field",
                 id="unknown-field"),
    pytest.param(b'{"kind":"llm_call","provider":3,"model":"m"}', "wrong_type", id="wrong-type"),
    pytest.param(b'{"kind":"llm_call","provider":"p","model":"m","input_tokens":-1}',
                 "invalid_value", id="negative"),
]


@pytest.mark.parametrize(("line", "reason"), BAD_LINES)
def test_bad_lines_get_the_same_reason_on_both_paths(line: bytes, reason: str) -> None:
    """Each bad line, between two valid ones, is refused with its reason by the Python
    path and the native line path alike, and the valid lines around it count once; the
    same reason as the push source's decoder gives for the line alone."""
    pair = Pair()
    lines, events, rejects = pair.ingest_lines(b"\n".join([PLAIN_LINES[2], line,
                                                            PLAIN_LINES[3]]))
    assert (lines, events) == (3, 2)
    assert [(index, got) for index, got, _ in rejects] == [(1, reason)]
    assert EventDecoder().decode_one(line) == Rejection(reason, rejects[0][2])
    pair.assert_same(line)


def test_over_long_lines_are_refused_alike() -> None:
    """A line one byte over max_line is refused as too large, one of exactly max_line
    bytes is applied, on both paths."""
    pair = Pair()
    long_line = PLAIN_LINES[0] + b" " * (SMALL_LINE - len(PLAIN_LINES[0]) + 1)
    exact = PLAIN_LINES[0] + b" " * (SMALL_LINE - len(PLAIN_LINES[0]))
    result = pair.ingest_lines(b"\n".join([long_line, exact, b"\x0c", long_line]), SMALL_LINE)
    assert result[:2] == (4, 1)
    assert [(i, reason) for i, reason, _ in result[2]] == [(0, "too_large"), (3, "too_large")]
    pair.assert_same()


# ====================================================================================
# Differential properties: the same bodies through both paths, the same outcome
# ====================================================================================


@PROPERTY
@given(body=bodies(), max_line=max_lines(), view=st.booleans())
def test_one_body_agrees(body: bytes, max_line: int, view: bool) -> None:
    """Valid, tricky and invalid lines of every kind in one body, into fresh state."""
    pair = Pair()
    pair.ingest_lines(body, max_line, view)
    pair.assert_same(body)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(lines=st.lists(any_line(DEFAULT_POOLS), min_size=5, max_size=40), view=st.booleans(),
       max_line=max_lines())
def test_large_bodies_agree(lines: list[bytes], view: bool, max_line: int) -> None:
    """A body of about 192 KiB, as the tail source hands over whole reads: long native
    runs whose shadows stay loaded across many lines, broken by lines for the Python path
    anywhere (each one writes the shadows back first); then the same shifted by a few
    bytes."""
    block = b"\n".join(lines)
    body = b"\n".join([block] * (3 * (1 << 16) // (len(block) + 1) + 1))
    pair = Pair(budgets={"openai": 1.0})
    pair.ingest_lines(body, max_line, view)
    pair.ingest_lines(b"\n".join([b" " * (len(lines[0]) % 7), body]), max_line, view)
    pair.assert_same()


@PROPERTY
@given(steps=st.lists(st.tuples(bodies(max_lines=15), max_lines(), st.booleans(),
                                st.one_of(st.none(), valid_bodies(max_lines=5))),
                      min_size=2, max_size=6))
def test_bodies_in_sequence_with_python_only_ingest_agree(
        steps: list[tuple[bytes, int, bool, bytes | None]]) -> None:
    """State persists across calls (the C shadows reload on every run), with Python-only
    ingestion (decoded events, as push applies them) in between on both sides."""
    pair = Pair(budgets={"openai": 1.0, "anthropic": 2.0})
    for body, max_line, view, pushed in steps:
        pair.ingest_lines(body, max_line, view)
        if pushed is not None:
            pair.apply(decoded(pushed))
        pair.assert_same(body)


@PROPERTY
@given(lines=st.lists(any_line(DEFAULT_POOLS), min_size=1, max_size=30),
       pushed=st.one_of(st.none(), valid_bodies(max_lines=5)))
def test_raw_items_agree(lines: list[bytes], pushed: bytes | None) -> None:
    """Single objects (Redis entries, NDJSON lines, push elements) through
    ``apply_raw``: every item is one event or one rejection (a blank item too), with
    already-built events applied first, as the Redis source does."""
    pair = Pair(budgets={"openai": 1.0})
    pair.ingest_raw(lines, decoded(pushed) if pushed is not None else None)
    pair.ingest_raw([b"  " + line + b"\n" for line in lines])
    pair.assert_same(lines)


SEPARATORS = st.sampled_from([b",", b", ", b" ,\n", b",,", b"\x0c,", b" ] , ", b"]"])


@st.composite
def arrays(draw: st.DrawFn, pools: Pools = DEFAULT_POOLS) -> bytes:
    """JSON array bodies, mostly well formed, some broken: a stray separator, a nested
    value, escapes, an unterminated string, trailing data after the closing bracket."""
    lines = draw(st.lists(any_line(pools), min_size=0, max_size=20))
    if draw(st.booleans()):
        separators = [b","] * max(len(lines) - 1, 0)
    else:
        separators = [draw(SEPARATORS) for _ in range(max(len(lines) - 1, 0))]
    body = draw(st.sampled_from([b"[", b" [", b"\n[ "]))
    for i, line in enumerate(lines):
        body += (separators[i - 1] if i else b"") + draw(WS.map(str.encode)) + line
    end = draw(st.sampled_from([b"]", b" ]", b"]\n", b"", b"] x", b"] , 1", b"]]",
                                b'] "a,b"', b'{"a":[1,"]"]}]', b',"\\', b',"x\\"]']))
    return body + end


@PROPERTY
@given(body=arrays())
def test_push_arrays_agree(body: bytes) -> None:
    """A push body through ``ingest_array``: the native cut of the elements is
    ``split_array``'s (strict for a valid array, tolerant for a broken one), so every
    element gets the same index, event or reason."""
    pair = Pair(budgets={"openai": 1.0})
    pair.ingest_array(body)
    pair.assert_same(body)


@pytest.mark.parametrize("body", [b"[]", b"[ ]", b"[", b"[,]", b"[1,]", b"[] x", b"[ ] 1, 2",
                                  b"[{}]", b'[{"kind":"error"}', b'["a\\', b'[{"a":"}"}, 1]',
                                  b'[{"kind":"error","component":"c","category":"internal"}}]',
                                  b'[{"kind":"error","component":"c","category":"internal"}]]'])
def test_push_array_edges_agree(body: bytes) -> None:
    pair = Pair()
    pair.ingest_array(body)
    pair.assert_same(body)


def test_push_array_elements_are_cut_as_split_array_cuts_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The elements handed to the Python path are exactly ``split_array``'s, by index."""
    body = (b'[{"kind":"error","component":"c","category":"internal"} , 1,{"a":[1,"]"]},'
            b' "x,y" ,{"kind":"error","component":"\\u00e9","category":"internal"}] tail, 2')
    ingestor = Ingestor(Aggregator())
    native_lines = ingestor._bind_native()
    assert native_lines is not None
    seen: list[bytes] = []
    original = native_lines._python

    def spy(raw: Any, decoder: EventDecoder, apply: Callable[[AnyEvent], None],
            counts: dict[str, int]) -> Rejection | None:
        seen.append(bytes(raw))
        return original(raw, decoder, apply, counts)

    monkeypatch.setattr(native_lines, "_python", spy)
    accepted, rejections = ingestor.ingest_array(PUSH, body)
    assert seen == split_array(body)[1:]
    assert accepted == 2
    assert [i for i, _ in rejections] == [1, 2, 3, 5]


def test_native_table_is_versioned_and_checked() -> None:
    """The C binds to the aggregator's table only: a wrong version, row layout or label
    order is refused at bind time, never misread."""
    from exporter import _lines

    aggregator = Aggregator()
    table = aggregator.native_table()
    assert table["version"] == _lines.CONTRACT_VERSION
    assert table["histogram_row"] == _lines.HISTOGRAM_ROW
    assert set(_lines.STORES) <= set(table["stores"])
    assert set(_lines.TRACKED) <= set(table["tracked"])
    spec, delegate = native.model_spec(), dict[str, Any]()
    _lines.Lines(spec=spec, table=table, delegate=delegate)
    name = _lines.STORES[0]
    broken: list[dict[str, Any]] = [
        {**table, "version": table["version"] + 1},
        {**table, "histogram_row": ("sum", "buckets", "+Inf")},
        {**table, "stores": {**table["stores"], name: table["stores"][name]._replace(
            labels=tuple(reversed(table["stores"][name].labels)))}},
        {**table, "stores": {k: v for k, v in table["stores"].items() if k != name}},
    ]
    for bad in broken:
        with pytest.raises(ValueError, match="native table"):
            _lines.Lines(spec=spec, table=bad, delegate=delegate)


def test_given_batch_time_is_used_on_both_paths() -> None:
    """``now`` (a log replay's original time) replaces the clock on every method."""
    clock_reads: list[int] = []

    def clock() -> Callable[[], float]:
        def read() -> float:
            clock_reads.append(1)
            return NOW
        return read

    pair = Pair(clock=clock)
    lines = [b'{"kind":"task","component":"c","status":"started","task_id":"t1"}',
             b'{"kind":"task","component":"c","status":"succeeded","task_id":"t1"}']
    for ingestor in (pair.python_ingestor, pair.native_ingestor):
        ingestor.ingest_lines(SOURCE, lines[0], BIG_LINE, now=NOW - 30)
        ingestor.ingest_raw(PUSH, [lines[1]], now=NOW - 20)
        ingestor.ingest_array(PUSH, b"[" + lines[0].replace(b"t1", b"t2") + b"]", now=NOW - 10)
        ingestor.apply(PUSH, decoded(lines[1].replace(b"t1", b"t2")), now=NOW)
        assert ingestor.last_event[PUSH] == NOW
    assert not clock_reads
    pair.assert_same()
    rows = pair.native.snapshot()["stores"]["ai_task_duration_seconds"]
    assert [row[1][-1] for row in rows] == [20.0]


@PROPERTY
@given(steps=st.lists(st.tuples(bodies(CAPS_POOLS, max_lines=20), max_lines()),
                      min_size=1, max_size=5))
def test_caps_agree(steps: list[tuple[bytes, int]]) -> None:
    """Past max_series label sets fold into ``other`` (some labels are "other" already) and
    are counted as overflow; past max_tracked the oldest id is evicted; spend is kept per
    budgeted provider."""
    pair = Pair(max_series=3, max_tracked=4, budgets={"openai": 1.0})
    for body, max_line in steps:
        pair.ingest_lines(body, max_line)
        pair.assert_same(body)


def test_caps_fold_and_evict_alike() -> None:
    """A fixed sequence that reaches every cap, so the property above is known to."""
    pair = Pair(max_series=3, max_tracked=4, budgets={"openai": 1.0})
    lines = []
    for i in range(8):
        lines.append(b'{"kind":"llm_call","provider":"%s","model":"m%d","input_tokens":%d,'
                     b'"duration_seconds":0.%d,"cost_usd":0.1}'
                     % (b"openai" if i % 2 else b"other", i, i + 1, i + 1))
        lines.append(b'{"kind":"task","component":"c%d","status":"queued","task_id":"t%d"}'
                     % (i % 5, i))
        lines.append(b'{"kind":"resolution","loop_id":"l%d","action":"incident",'
                     b'"component":"other"}' % i)
    pair.ingest_lines(b"\n".join(lines))
    pair.assert_same()
    overflow = pair.native.snapshot()["overflow"]
    assert overflow["gen_ai_client_operation_duration_seconds"] > 0
    assert overflow["ai_task_queue_depth"] > 0
    assert len(pair.native.state.queued.where) == 4
    assert pair.native.spend["openai"] == pair.python.spend["openai"] > 0


@PROPERTY
@given(steps=st.lists(st.tuples(bodies(max_lines=20), max_lines()), min_size=1, max_size=5),
       budget=st.integers(1, 120))
def test_sample_budget_agrees(steps: list[tuple[bytes, int]], budget: int) -> None:
    """Past the total sample budget (the per-metric cap out of reach) new label sets fold
    into ``other`` alike: the C path admits a label set only through the Python store
    (``add_new``, ``row``, ``_Tracked.open``), which charges the shared budget, in the
    same order as the Python handlers."""
    pair = Pair(max_series=1000, max_tracked=4, max_samples=budget, budgets={"openai": 1.0})
    for body, max_line in steps:
        pair.ingest_lines(body, max_line)
        pair.assert_same(body)
        assert pair.native.budget.used == pair.python.budget.used <= budget


def test_sample_budget_folds_alike() -> None:
    """A fixed sequence that exhausts the budget with every kind the C path handles, so
    the property above is known to reach it: histograms that no longer fit while a
    counter of the same event still does, tracked keys, and label sets seen before."""
    pair = Pair(max_series=1000, max_tracked=100, max_samples=150, budgets={"openai": 1.0})
    lines = []
    for i in range(12):
        lines += [b'{"kind":"llm_call","provider":"openai","model":"m%d","input_tokens":3,'
                  b'"duration_seconds":0.5,"cost_usd":0.1}' % i,
                  b'{"kind":"task","component":"c%d","status":"queued","task_id":"t%d"}'
                  % (i, i),
                  b'{"kind":"tool_call","tool":"t%d","duration_seconds":0.1}' % i,
                  b'{"kind":"resolution","loop_id":"l%d","action":"incident",'
                  b'"component":"r%d"}' % (i, i),
                  b'{"kind":"error","component":"e%d","category":"auth"}' % i,
                  b'{"kind":"llm_call","provider":"openai","model":"m0","input_tokens":3,'
                  b'"duration_seconds":0.5}']
    pair.ingest_lines(b"\n".join(lines))
    pair.assert_same()
    assert pair.native.budget.used == pair.python.budget.used
    assert pair.native.budget.used > 150 - 20  # at most one histogram row short of full
    overflow = pair.native.snapshot()["overflow"]
    for metric in ("gen_ai_client_operation_duration_seconds", "ai_tool_calls_total",
                   "ai_task_queue_depth", "ai_resolution_active", "ai_errors_total"):
        assert overflow.get(metric, 0) > 0, metric
    other = ("other",) * 5  # the duration histogram has 5 labels
    assert (pair.native.state.llm_duration.values[other][-1]
            == pair.python.state.llm_duration.values[other][-1] > 0)


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(first=valid_bodies(), checkpointed=valid_bodies(), rest=st.lists(bodies(), min_size=1,
                                                                         max_size=3))
def test_restored_checkpoint_continues_alike(first: bytes, checkpointed: bytes,
                                             rest: list[bytes]) -> None:
    """A checkpoint (the state of another aggregator, through JSON) restored into both,
    after the native path is bound and has run once, then more bodies."""
    source = Aggregator(clock=lambda: NOW, budgets={"openai": 1.0})
    Ingestor(source, native=False).ingest_lines(SOURCE, checkpointed, BIG_LINE)
    state = json.loads(json.dumps(source.snapshot()))
    pair = Pair(budgets={"openai": 1.0})
    pair.ingest_lines(first)
    pair.restore(state)
    pair.assert_same("restored")
    for body in rest:
        pair.ingest_lines(body)
        pair.assert_same(body)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(steps=st.lists(st.tuples(valid_bodies(max_lines=8), bodies(max_lines=8)),
                      min_size=1, max_size=5))
def test_clock_advancing_per_call_agrees(steps: list[tuple[bytes, bytes]]) -> None:
    """Each aggregator's clock advances 0.7 s per call and crosses a UTC midnight after a
    few calls (daily spend restarts). Every body holds at least one valid event, so each
    path reads its clock exactly once per body (and a body without: see below)."""
    start = utc_midnight(2025, 10, 9) - 2.0
    pair = Pair(clock=ticking(start, 0.7), budgets={"openai": 1.0, "anthropic": 1.0})
    for valid, mixed in steps:
        pair.ingest_lines(valid + b"\n" + mixed)
        pair.assert_same(mixed)


def test_clock_reads_agree_for_a_body_without_events() -> None:
    """A body without any event reads no clock on either path (the batch's time is read at
    its first use), so a clock that advances per read gives both the same timestamps."""
    pair = Pair(clock=ticking(NOW, 1.0))
    pair.ingest_lines(b'{"kind":"task","component":"c","status":"started","task_id":"t"}')
    pair.ingest_lines(b"not json")
    pair.ingest_lines(b'{"kind":"task","component":"c","status":"succeeded","task_id":"t"}')
    pair.assert_same()


def test_integer_minus_zero_is_zero_in_a_gauge() -> None:
    """msgspec reads the JSON integer ``-0`` in a float field as the int 0, so 0.0; the C
    validator must too (``-0.0`` stays -0.0 on both). ``reset_at`` is stored as given."""
    pair = Pair()
    pair.ingest_lines(b'{"kind":"provider_limit","provider":"p","remaining_requests":1,'
                      b'"reset_at":-0}')
    pair.assert_same()


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(steps=st.lists(st.tuples(st.floats(-3.0, 3.0), bodies(max_lines=12)),
                      min_size=2, max_size=6))
def test_daily_spend_resets_alike_across_utc_midnight(steps: list[tuple[float, bytes]]
                                                      ) -> None:
    """The test moves both clocks between calls, around a UTC midnight (and back: a clock
    that steps backwards restarts the day too)."""
    midnight = utc_midnight(2025, 12, 31)
    clocks: list[SetClock] = []

    def make() -> Callable[[], float]:
        clocks.append(SetClock(midnight))
        return clocks[-1]

    pair = Pair(clock=make, budgets={"openai": 1.0, "other": 5.0})
    for offset, body in steps:
        for clock in clocks:
            clock.now = midnight + offset
        pair.ingest_lines(body)
        pair.assert_same(body)


def test_daily_spend_resets_at_midnight_on_both_paths() -> None:
    midnight = utc_midnight(2026, 1, 1)
    clocks: list[SetClock] = []

    def make() -> Callable[[], float]:
        clocks.append(SetClock(midnight - 0.5))
        return clocks[-1]

    pair = Pair(clock=make, budgets={"openai": 1.0})
    call = b'{"kind":"llm_call","provider":"openai","model":"m","cost_usd":0.1}'
    pair.ingest_lines(b"\n".join([call] * 3))
    pair.assert_same()
    assert pair.native.spend_day == "2025-12-31"
    assert pair.native.spend == pair.python.spend == {"total": 0.1 + 0.1 + 0.1,
                                                      "openai": 0.1 + 0.1 + 0.1}
    for clock in clocks:
        clock.now = midnight + 0.5
    pair.ingest_lines(call)
    pair.assert_same()
    assert pair.native.spend_day == "2026-01-01"
    assert pair.native.spend == {"total": 0.1, "openai": 0.1}


# ====================================================================================
# Memory: the debug allocator, and no growth over repeated high-cardinality ingest
# ====================================================================================

# Shared by both subprocess scripts: deterministic lines without hypothesis.
_LINES_LIB = r'''
import gc, json, os, random, sys
from exporter.aggregator import Aggregator
from exporter.ingest import Ingestor

BAD = [b'{"kind":"error","component":"a","component":"b","category":"tool"}',
       b'{"kind":"error","component":"caf\\u00e9","category":"tool"}',
       '{"kind":"error","component":"\u00e9t\u00e9","category":"tool"}'.encode(),
       b'{"kind":"llm_call","provider":"p","model":"' + b"m" * 200 + b'"}',
       b'{"kind":"llm_call","provider":"p","model":"m","input_tokens":-1}',
       b'{"kind":"task","component":"c","status":"nope"}', b'{"kind":"error"', b"[]", b"",
       b'{"kind":"error","component":"a","category":"tool","ts":NaN}', b"\x0c", b"\xff\xfe",
       b'{"kind":"intervention","intervention_id":"i1","type":"t","status":"requested"}',
       b'{"kind":"security_event","category":"c","severity":"low","event_id":"e1"}']

def llm(rng, model):
    fields = {"kind": "llm_call", "provider": rng.choice(["openai", "anthropic", "p"]),
              "model": model, "input_tokens": rng.randrange(1, 5000),
              "output_tokens": rng.randrange(0, 500), "duration_seconds": rng.random() * 30,
              "time_to_first_token_seconds": rng.random(), "cost_usd": rng.random() / 100,
              "error_type": rng.choice(["", "", "", "timeout"])}
    return json.dumps(fields, separators=(",", ":")).encode()

def mixed(rng):
    n = rng.randrange(100000)
    choice = rng.randrange(6)
    if choice == 0:
        status = rng.choice(["queued", "started", "succeeded", "failed", "retried"])
        return (b'{"kind":"task","component":"c%d","status":"%s","task_id":"t%d"}'
                % (n % 50, status.encode(), n % 3000))
    if choice == 1:
        return b'{"kind":"tool_call","tool":"tool%d","duration_seconds":%r}' % (n, rng.random())
    if choice == 2:
        return (b'{"kind":"resolution","loop_id":"l%d","action":"%s","component":"c%d"}'
                % (n % 2000, rng.choice([b"attempt", b"incident", b"closed"]), n % 7))
    if choice == 3:
        return b'{"kind":"guardian","guardian":"g%d","verdict":"deny","duration_seconds":0.5}' % n
    if choice == 4:
        return b'{"kind":"quality_gate","gate":"gate%d","decision":"approved","score":0.5}' % n
    return rng.choice(BAD)

def body(rng, models, n_mixed):
    lines = [llm(rng, m) for m in models] + [mixed(rng) for _ in range(n_mixed)]
    rng.shuffle(lines)
    return b"\n".join(lines)

def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")
'''

_MEMCHECK = _LINES_LIB + r'''
rng = random.Random(7)
config = dict(max_series=20000, max_tracked=1000, budgets={"openai": 1.0})
python = Aggregator(clock=lambda: 1.76e9, **config)
fast = Aggregator(clock=lambda: 1.76e9, **config)
ip, inat = Ingestor(python, native=False), Ingestor(fast)
models = [f"model-{i}" for i in range(70000)]
chunks = [models[i:i + 14000] for i in range(0, len(models), 14000)]
total = 0
for round_, chunk in enumerate(chunks):
    data = body(rng, chunk, 1000)
    expected = ip.ingest_lines("f", data, 1 << 20)
    # every other body as a range of a larger buffer, as the tail source hands it over
    if round_ % 2:
        buffer = b"x\n" + data + b"\ny"
        actual = inat.ingest_lines("f", buffer, 1 << 20, 2, len(buffer) - 2)
    else:
        actual = inat.ingest_lines("f", data, 1 << 20)
    assert inat._native is not None and ip._native is None
    assert actual == expected, (round_, actual[:2], expected[:2])
    assert python.failures == fast.failures == 0
    assert fast.snapshot() == python.snapshot(), f"state differs after body {round_}"
    total += actual[0]
del inat, fast
gc.collect()
print(json.dumps({"lines": total}))
'''

_RSS = _LINES_LIB + r'''
import weakref
rng = random.Random(11)
rss, blocks = [], []
for round_ in range(5):
    # new label values every round: objects a round leaks cannot be found again and reused
    data = [body(rng, [f"m{round_}-{i}" for i in range(j, j + 5000)], 0)
            for j in range(0, 100000, 5000)]
    aggregator = Aggregator(clock=lambda: 1.76e9)
    ingestor = Ingestor(aggregator)
    lines = sum(ingestor.ingest_lines("f", chunk, 1 << 20)[0] for chunk in data)
    assert lines == 100000 and ingestor._native is not None, lines
    gone = weakref.ref(aggregator)
    del ingestor, aggregator, data
    gc.collect()
    assert gone() is None, "the aggregator outlived its round"
    rss.append(rss_mb())
    blocks.append(sys.getallocatedblocks())
print(json.dumps({"rss_mb": rss, "blocks": blocks}))
'''


def run_script(script: str, *flags: str, env: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *flags, "-c", script], cwd=ROOT, text=True,
                          capture_output=True, timeout=400,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
                          check=False)


@pytest.mark.e2e
def test_native_path_is_memory_safe_under_the_debug_allocator() -> None:
    """70,000 distinct model names (the C cell cache passes its 65,536-cell limit several
    times, also within one run, and is written back and dropped), thousands of mixed and
    invalid lines, tracked ids past the cap; each body checked against the Python path.
    PYTHONMALLOC=debug catches buffer overruns, use after free and API misuse without
    the GIL; -X dev adds the runtime's own checks."""
    proc = run_script(_MEMCHECK, "-X", "dev", "-X", "faulthandler",
                      env={"PYTHONMALLOC": "debug"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Fatal Python error" not in proc.stderr
    assert "Debug memory block" not in proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1])["lines"] == 75000


@pytest.mark.e2e
def test_memory_does_not_grow_over_repeated_high_cardinality_ingest() -> None:
    """100,000 lines of distinct labels into a fresh aggregator, five times: what one round
    holds (~50 MB of state, the C caches and cells) is freed with its aggregator. RSS is
    the coarse check; the interpreter's count of allocated blocks is the fine one (a round
    that leaked one object per line would add 100,000)."""
    proc = run_script(_RSS, "-X", "faulthandler")
    assert proc.returncode == 0, proc.stderr[-4000:]
    figures = json.loads(proc.stdout.splitlines()[-1])
    rss, blocks = figures["rss_mb"], figures["blocks"]
    assert max(rss[1:]) - rss[0] < 30, figures
    assert max(blocks[1:]) - blocks[0] < 2000, figures


# ====================================================================================
# computed cost, unpriced calls, the new fields, exemplar offers
# ====================================================================================

GENAI_LINES = [
    # priced from the table (openai / gpt-4o), every token type, traced
    b'{"kind":"llm_call","provider":"openai","model":"gpt-4o","input_tokens":12345,'
    b'"output_tokens":678,"cache_read_input_tokens":1000,"cache_creation_input_tokens":77,'
    b'"reasoning_output_tokens":99,"duration_seconds":1.25,"time_to_first_token_seconds":0.3,'
    b'"time_per_output_chunk_seconds":0.021,"response_model":"gpt-4o-2024-08-06",'
    b'"component":"planner","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736",'
    b'"span_id":"00f067aa0ba902b7"}',
    # the old alias alone, and both names (the new one wins); cost null = computed
    b'{"kind":"llm_call","provider":"openai","model":"gpt-4o","input_tokens":10,'
    b'"cached_input_tokens":7,"cost_usd":null}',
    b'{"kind":"llm_call","provider":"openai","model":"gpt-4o","input_tokens":10,'
    b'"cached_input_tokens":7,"cache_read_input_tokens":3}',
    # more cache and reasoning than input and output: the cost floors at 0 per part
    b'{"kind":"llm_call","provider":"anthropic","model":"a","input_tokens":5,'
    b'"output_tokens":1,"cache_read_input_tokens":9,"reasoning_output_tokens":4}',
    # a given cost wins (0 included): nothing priced, nothing unpriced
    b'{"kind":"llm_call","provider":"nobody","model":"m","input_tokens":50,"cost_usd":0}',
    b'{"kind":"llm_call","provider":"openai","model":"gpt-4o","input_tokens":50,'
    b'"cost_usd":0.5}',
    # no cost, no price: counted as unpriced, by token type
    b'{"kind":"llm_call","provider":"nobody","model":"m","input_tokens":50,'
    b'"output_tokens":5,"cache_creation_input_tokens":2,"reasoning_output_tokens":1}',
    b'{"kind":"llm_call","provider":"nobody","model":"m2"}',
    # the cache read price above the input price: no savings
    b'{"kind":"llm_call","provider":"openai","model":"planner","input_tokens":100,'
    b'"cache_read_input_tokens":100,"trace_id":"","span_id":""}',
    b'{"kind":"tool_call","tool":"search","agent":"a","tool_type":"function",'
    b'"duration_seconds":0.2,"trace_id":"0af7651916cd43dd8448eb211c80319c"}',
    b'{"kind":"task","component":"planner","status":"started","task_id":"t9",'
    b'"operation":"invoke_agent"}',
    b'{"kind":"task","component":"planner","status":"failed","task_id":"t9",'
    b'"operation":"invoke_agent","trace_id":"0af7651916cd43dd8448eb211c80319c",'
    b'"span_id":"b7ad6b7169203331"}',
    b'{"kind":"task","component":"planner","status":"succeeded","operation":"invoke_agent",'
    b'"duration_seconds":2.5}',
]


def test_genai_lines_are_taken_natively_and_agree(handed_over: list[bytes]) -> None:
    """The new fields are native: computed cost (bit for bit, in Rates.cost's order),
    unpriced counts, cache savings, agent tokens, the new histograms and labels, and the
    exemplar offers, with the price table asked once per label set, not per event."""
    pair = Pair(budgets={"openai": 1.0})
    body = b"\n".join(GENAI_LINES * 3)
    assert pair.ingest_lines(body) == (len(GENAI_LINES) * 3, len(GENAI_LINES) * 3, [])
    assert handed_over == []
    pair.assert_same()
    native_prices = pair.native.state.prices
    assert isinstance(native_prices, FixedPrices)
    assert len(native_prices.asked) <= 9 < len(GENAI_LINES) * 3  # per C slot
    state = pair.native.state
    cost = state.llm_cost.values[("openai", "gpt-4o")]
    one = GPT4O.cost(12345, 678, 1000, 77, 99)
    alias = GPT4O.cost(10, 0, 7, 0, 0) + GPT4O.cost(10, 0, 3, 0, 0)
    assert cost == pytest.approx(3 * (one + alias + 0.5), rel=1e-12)
    assert state.llm_unpriced_requests.values == {("nobody", "m"): 3.0, ("nobody", "m2"): 3.0}
    assert state.llm_unpriced_tokens.values[("nobody", "m", "cache_creation")] == 6.0
    assert ("openai", "planner") not in state.llm_cache_savings.values
    assert state.agent_tokens.values[("planner", "gpt-4o", "input")] == 3 * 12345
    offers = pair.native_offers
    assert {o[0] for o in offers} == {
        "gen_ai_client_operation_duration_seconds",
        "gen_ai_client_operation_time_to_first_chunk_seconds",
        "gen_ai_client_operation_time_per_output_chunk_seconds", "gen_ai_client_token_usage",
        "gen_ai_execute_tool_duration_seconds", "ai_task_duration_seconds",
        "gen_ai_invoke_agent_duration_seconds"}
    assert all(o[3] for o in offers)  # only events with a trace id
    assert state.invoke_agent_duration.values[("planner", "failed")][-1] == 0.0  # now - start


GPT4O = FixedPrices.MODELS["gpt-4o"]


@pytest.mark.parametrize("line", [
    b'{"kind":"llm_call","provider":"p","model":"m","trace_id":"4BF92F3577B34DA6A3CE929D0E0E4736"}',
    b'{"kind":"llm_call","provider":"p","model":"m","trace_id":"4bf92f3577b34da6a3ce929d0e0e473"}',
    b'{"kind":"tool_call","tool":"t","span_id":"00f067aa0ba902b"}',
    b'{"kind":"task","component":"c","status":"started","span_id":"00f067aa0ba902bz"}',
    b'{"kind":"task","component":"c","status":"started","trace_id":null}',
    b'{"kind":"llm_call","provider":"p","model":"m","trace_id":"4bf92f3577b34da6a3ce929d0e0e473\\u0036"}',
])
def test_malformed_ids_are_handed_over_and_refused_alike(handed_over: list[bytes],
                                                         line: bytes) -> None:
    pair = Pair()
    _, events, rejects = pair.ingest_lines(line)
    assert handed_over == [line]
    if b"\\u0036" in line:  # an escaped but valid id: accepted by the Python path
        assert (events, rejects) == (1, [])
    else:
        assert events == 0 and [r[1] for r in rejects] in (["invalid_value"], ["wrong_type"])
    pair.assert_same()


def test_slots_past_the_cap_still_price_alike() -> None:
    """More label sets than the caps: rates asked afresh for label sets without a slot,
    costs and unpriced counts folded into other alike."""
    pair = Pair(max_series=2, budgets={"openai": 1.0})
    lines = [b'{"kind":"llm_call","provider":"openai","model":"%s","input_tokens":%d,'
             b'"output_tokens":3,"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736",'
             b'"duration_seconds":0.5}' % (model, n)
             for n in range(1, 5) for model in (b"gpt-4o", b"a", b"chat", b"zzz", b"planner")]
    pair.ingest_lines(b"\n".join(lines))
    pair.assert_same()
    assert ("other", "other") in pair.native.state.llm_cost.values
