"""The native ingest path: JSON events validated and aggregated in C (``exporter/_lines.c``).

Why: in Python an event costs ~2.5 us (msgspec decode, the duplicate-key proof, the
handler), which caps file ingest at well under 4x mtail and push at a few hundred
thousand events per CPU second. The extension takes the events it is certain about (flat
objects of the known kinds, plain ASCII strings, numbers in range) and applies them with
the same operations as the Python handlers; every other event goes through
``EventDecoder`` and the Python handler, in order. The outcome (state, counts, rejections)
is the Python path's exactly; only the speed differs. Without a compiler at install time
the extension is absent and ``available()`` is False: everything still works, at the
Python path's speed (``ai.native_lines: false`` chooses that too).

Three entry points, one per shape of input, all through the same validator and handlers:
``apply_lines`` (JSONL: the tail), ``apply_items`` (single-event byte slices: Redis
entries, NDJSON lines, ``Ingestor.ingest_raw``) and ``apply_array`` (a whole JSON array
body of ``POST /api/v1/events``, cut exactly as ``exporter.bodies.split_array`` cuts it).

Native contract (version 3: ``exporter.aggregation.contract.NATIVE_CONTRACT_VERSION``, which
must equal ``_lines.CONTRACT_VERSION``)
------------------------------------------------------------------------------------------
The C never names an attribute of the aggregator. It binds to the one table
``Aggregator.native_table()`` exports (``exporter.aggregation.contract``)::

    {"version": 3,
     "histogram_row": ("buckets", "+Inf", "sum"),   # per-bucket counts, +Inf count, sum
     "stores":  {catalog metric name: NativeStore(labels, values, admit, bounds, offer)},
     "tracked": {catalog metric name: NativeTracked(labels, where, groups, open, limit)},
     "spend_for": Aggregator.spend_for,               # (today's spend dict, budgets)
     "price_for": PriceTable.rates,                   # (provider, model) -> Rates | None
     "handlers": {event type: handler(event, now)}}   # for the kinds C only validates

At bind time the C checks the version, the row layout, that every metric it feeds is in
the table, is a histogram exactly where it expects one, and has the label names in the
order its handlers build keys; any mismatch refuses the bind with ``ValueError`` (a
refactor of the aggregator that breaks the contract fails loudly, in
``tests/test_native.py``, instead of being misread). A new label set is never created in
C: ``admit`` / ``open`` (the store's own Python slow path) admits it or folds it into
``other`` and charges the sample budget, so both paths fold alike. Changing any of this
(a row layout, a label order, what a tracked map holds) means bumping both versions.

Version 3: an ``llm_call`` without ``cost_usd`` is priced in C from the
``Rates`` that ``price_for`` gives for its label set, asked once per C slot and kept there
as five doubles; the cost is ``Rates.cost``'s expression in the same order (the extension
is built with ``-ffp-contract=off`` so no multiply-add is fused). A histogram observation
of an event with a trace id calls the store's ``offer`` (``offer_exemplar``) with the key
it was stored under, as the Python handlers do. Trace and span ids are validated in C as
``hex`` fields (exactly N lowercase hex digits, or empty).

Why a store table and not plain records applied by one Python step: that step alone is
the Python aggregation, measured at 250-315k events per CPU second on the push mix
(``benchmarks/push.py``, "Python aggregate only"), so records could never reach the
1M events/s target, while validate + apply in C runs the same mix at 0.6-0.9M events per
CPU second on the same loaded 2-vCPU machine (~4x the Python path, in the same run).

What stays duplicated: the per-kind handler logic (which store gets which key, e.g. the
``llm_call`` handler) exists in Python (``exporter.aggregation.handlers``) and in C for
the seven common kinds; the table pins the stores and key layouts both write, and the
differential tests in ``tests/test_native.py`` pin the operations, bit for bit. The four
rare kinds are only validated in C and applied by the Python handler from the table.

The field constraints come from the event model (``msgspec.inspect``), never from a copy:
a kind whose fields no longer match what the C handler knows is left to Python.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import msgspec

from exporter.aggregator import FEEDS, NATIVE_CONTRACT_VERSION, Aggregator
from exporter.events import EVENT_TYPES, KIND_OF, AnyEvent, EventDecoder, Rejection

_lines: ModuleType | None
try:
    from exporter import _lines
except ImportError:  # built without a C compiler: the Python path does everything
    _lines = None


def available() -> bool:
    """Whether the extension is built (it is optional: see setup.py) for this contract."""
    # an extension built from an older _lines.c (no version, or another) is not used
    return (_lines is not None
            and getattr(_lines, "CONTRACT_VERSION", None) == NATIVE_CONTRACT_VERSION)


# The one string pattern the C validates: trace and span ids (events.TraceId, SpanId).
_HEX_PATTERN = re.compile(r"\^\(\?:\[0-9a-f\]\{(\d+)\}\)\?\$")


def _field(info: msgspec.inspect.Field) -> tuple[Any, ...]:
    """(type, nullable, required, min_len, max_len, ge, le, enum values, default)."""
    t = info.type
    if isinstance(t, msgspec.inspect.Metadata):
        t = t.type
    nullable = False
    if isinstance(t, msgspec.inspect.UnionType):
        rest = [x for x in t.types if not isinstance(x, msgspec.inspect.NoneType)]
        nullable = len(rest) < len(t.types)
        if len(rest) != 1:
            raise ValueError(f"{info.name}: unions other than X | None are not native")
        t = rest[0]
        if isinstance(t, msgspec.inspect.Metadata):
            t = t.type
    default = None if info.default is msgspec.NODEFAULT else info.default
    if isinstance(t, msgspec.inspect.StrType):
        if t.pattern is not None:
            match = _HEX_PATTERN.fullmatch(t.pattern)
            if match is None:
                raise ValueError(f"{info.name}: patterns are not native")
            width = int(match.group(1))  # N lowercase hex digits, or empty
            return ("hex", nullable, info.required, width, width, None, None, None,
                    default)
        return ("str", nullable, info.required, t.min_length, t.max_length, None, None, None,
                default)
    if isinstance(t, msgspec.inspect.LiteralType):
        return ("enum", nullable, info.required, None, None, None, None, tuple(t.values),
                default)
    if isinstance(t, msgspec.inspect.BoolType):
        return ("bool", nullable, info.required, None, None, None, None, None, default)
    if isinstance(t, msgspec.inspect.IntType | msgspec.inspect.FloatType):
        if t.gt is not None or t.lt is not None or t.multiple_of is not None:
            raise ValueError(f"{info.name}: only ge/le bounds are native")
        kind = "int" if isinstance(t, msgspec.inspect.IntType) else "float"
        ge = None if t.ge is None else float(t.ge)
        le = None if t.le is None else float(t.le)
        return (kind, nullable, info.required, None, None, ge, le, None, default)
    raise ValueError(f"{info.name}: type {t!r} is not native")


@functools.cache
def model_spec() -> dict[str, dict[str, tuple[Any, ...]]]:
    """Per kind, per field, the constraints the C validator enforces (from the model).
    Cached: it depends on the model only and costs ~50 ms (msgspec.inspect), paid at every
    binding otherwise; the extension only reads it."""
    spec: dict[str, dict[str, tuple[Any, ...]]] = {}
    for cls in EVENT_TYPES:
        try:
            info = msgspec.inspect.type_info(cls)
            assert isinstance(info, msgspec.inspect.StructType)
            spec[KIND_OF[cls]] = {f.encode_name: _field(f) for f in info.fields}
        except ValueError:
            continue  # a field the validator cannot check: the kind stays in Python
    return spec


Counts = dict[str, int]


class NativeLines:
    """The extension bound to one aggregator's native table, and the loops that hand it
    lines, items or an array, giving what it leaves to ``EventDecoder``."""

    def __init__(self, aggregator: Aggregator) -> None:
        if _lines is None or not available():
            raise RuntimeError("the native ingest path is not built for this contract")
        self.aggregator: Aggregator = aggregator
        table = aggregator.native_table()
        # A delegated kind whose handler feeds a store shadowed here must have that
        # store's values written back before its handler runs.
        shadowed = set(_lines.STORES)
        handlers = table["handlers"]
        self._lines: Any = _lines.Lines(
            spec=model_spec(), table=table,
            delegate={KIND_OF[cls]: (cls, handlers[cls],
                                     bool({s.name for s in FEEDS[KIND_OF[cls]]} & shadowed))
                      for cls in EVENT_TYPES})
        self.kinds: tuple[str, ...] = self._lines.kinds()
        self.enabled: tuple[str, ...] = self._lines.enabled()

    def _add(self, counts: Counts, per_kind: tuple[int, ...],
             failures: list[tuple[str, BaseException]]) -> None:
        for kind, n in zip(self.kinds, per_kind, strict=True):
            if n:
                counts[kind] = counts.get(kind, 0) + n
        for kind, exc in failures:
            self.aggregator.failed(kind, exc)

    def apply_lines(self, body: bytes | memoryview, max_line: int, decoder: EventDecoder,
                    counts: Counts, now: float | None = None
                    ) -> tuple[int, list[tuple[int, Rejection]]]:
        """Apply ``body`` (complete lines without the last newline), line by line in
        order: the native run until a line it does not take, that line through
        ``decoder`` and the Python handler, and on. Adds the events per kind to
        ``counts``; returns the lines handled and (line index, rejection) pairs. Takes
        the aggregator's lock for the whole body; ``now`` is the batch's time (the
        aggregator's clock when None).

        One thread: parsing the next slice in a second thread (without the GIL) while
        this one is applied was measured slower on the 2-vCPU machine (records crossing
        caches, both vCPUs slowing each other), see docs/files.md."""
        rejects: list[tuple[int, Rejection]] = []
        size, pos, lines = len(body), 0, 0
        run = self._lines.run
        limit = min(max_line, decoder.max_event_bytes)
        with self.aggregator.batch(now) as (clock, apply):
            try:
                while pos <= size:
                    pos, done, per_kind, failures, stopped, end = run(body, pos, clock, limit)
                    lines += done
                    self._add(counts, per_kind, failures)
                    if not stopped:
                        break
                    result = _decode_line(bytes(body[pos:end]), max_line, decoder)
                    if isinstance(result, Rejection):
                        rejects.append((lines, result))
                    elif result is not None:
                        apply(result)
                        kind = KIND_OF[type(result)]
                        counts[kind] = counts.get(kind, 0) + 1
                    lines += 1
                    pos = end + 1
            finally:
                self._lines.finish()
        return lines, rejects

    def apply_items(self, items: list[Any], decoder: EventDecoder, counts: Counts,
                    now: float | None = None, events: Sequence[AnyEvent] = ()
                    ) -> list[tuple[int, Rejection]]:
        """Apply ``events`` (already valid), then each single JSON object of ``items``
        (bytes-like) in order, in one batch: what the native run does not take goes
        through ``decoder.decode_one``. Returns (item index, rejection) pairs."""
        rejects: list[tuple[int, Rejection]] = []
        run, size, index = self._lines.run_items, len(items), 0
        with self.aggregator.batch(now) as (clock, apply):
            try:
                for event in events:
                    apply(event)
                    kind = KIND_OF[type(event)]
                    counts[kind] = counts.get(kind, 0) + 1
                while index < size:
                    index, _, per_kind, failures, stopped = run(items, index, clock,
                                                                decoder.max_event_bytes)
                    self._add(counts, per_kind, failures)
                    if not stopped:
                        break
                    refused = self._python(items[index], decoder, apply, counts)
                    if refused is not None:
                        rejects.append((index, refused))
                    index += 1
            finally:
                self._lines.finish()
        return rejects

    def apply_array(self, body: bytes, decoder: EventDecoder, counts: Counts,
                    now: float | None = None) -> tuple[int, list[tuple[int, Rejection]]]:
        """Apply the elements of the JSON array ``body`` (its first non-blank byte is
        ``[``), cut as ``exporter.bodies.split_array`` cuts them. Returns the element
        count and (element index, rejection) pairs."""
        rejects: list[tuple[int, Rejection]] = []
        run, index = self._lines.run_array, 0
        pos, state = body.index(b"[") + 1, 0
        with self.aggregator.batch(now) as (clock, apply):
            try:
                while state != 2:
                    pos, state, taken, per_kind, failures, stopped, start, end = run(
                        body, pos, state, index, clock, decoder.max_event_bytes)
                    index += taken
                    self._add(counts, per_kind, failures)
                    if not stopped:
                        break
                    refused = self._python(body[start:end], decoder, apply, counts)
                    if refused is not None:
                        rejects.append((index, refused))
                    index += 1
            finally:
                self._lines.finish()
        return index, rejects

    @staticmethod
    def _python(raw: Any, decoder: EventDecoder, apply: Callable[[AnyEvent], None],
                counts: Counts) -> Rejection | None:
        """One event the native run left: decoded and applied in Python, or refused."""
        result = decoder.decode_one(raw)
        if isinstance(result, Rejection):
            return result
        apply(result)
        kind = KIND_OF[type(result)]
        counts[kind] = counts.get(kind, 0) + 1
        return None


def _decode_line(line: bytes, max_line: int, decoder: EventDecoder
                 ) -> AnyEvent | Rejection | None:
    """One line the native run left: None when blank, else the event or why not."""
    if len(line) > max_line:
        return Rejection("too_large", f"line of {len(line)} bytes over {max_line}")
    if not line.strip():
        return None
    return decoder.decode_one(line)
