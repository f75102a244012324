"""The native line path: JSONL lines validated and aggregated in C (``exporter/_lines.c``).

Why: in Python a JSONL line costs ~2.7 us (msgspec decode, the duplicate-key proof, the
handler), which caps file ingest at well under 4x mtail. The extension takes the lines it
is certain about (flat objects of the common kinds, plain ASCII strings, numbers in range)
and applies them to the aggregator's own containers with the same operations as the
Python handlers; every other line goes through ``EventDecoder`` and the Python handler,
in order. The outcome (state, counts, rejections) is the Python path's exactly; only the
speed differs. Without a compiler at install time the extension is absent and
``available()`` is False: everything still works, at the Python path's speed
(``ai.native_lines: false`` chooses that too).

The field constraints come from the event model (``msgspec.inspect``), never from a copy:
a kind whose fields no longer match what the C handler knows is left to Python.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import msgspec

from exporter.aggregator import FEEDS, Aggregator, HistogramStore, _Tracked
from exporter.events import EVENT_TYPES, KIND_OF, AnyEvent, EventDecoder, Rejection

_lines: ModuleType | None
try:
    from exporter import _lines
except ImportError:  # built without a C compiler: the Python path does everything
    _lines = None


def available() -> bool:
    """Whether the extension is built (it is optional: see setup.py)."""
    return _lines is not None


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
            raise ValueError(f"{info.name}: patterns are not native")
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


def model_spec() -> dict[str, dict[str, tuple[Any, ...]]]:
    """Per kind, per field, the constraints the C validator enforces (from the model)."""
    spec: dict[str, dict[str, tuple[Any, ...]]] = {}
    for cls in EVENT_TYPES:
        try:
            info = msgspec.inspect.type_info(cls)
            assert isinstance(info, msgspec.inspect.StructType)
            spec[KIND_OF[cls]] = {f.encode_name: _field(f) for f in info.fields}
        except ValueError:
            continue  # a field the validator cannot check: the kind stays in Python
    return spec


def _store(store: Any) -> tuple[Any, ...]:
    if isinstance(store, HistogramStore):
        return (store.values, store.row, tuple(store.bounds))
    return (store.values, store.add_new, None)


def _tracked(tracked: _Tracked) -> tuple[Any, ...]:
    return (tracked.open, tracked.where, tracked.by_key, tracked.limit)


class NativeLines:
    """The extension bound to one aggregator, and the loop that hands it lines."""

    def __init__(self, aggregator: Aggregator) -> None:
        if _lines is None:
            raise RuntimeError("the native line path is not built")
        self.aggregator: Aggregator = aggregator
        # A delegated kind whose handler feeds a store shadowed here must have that
        # store's values written back before its handler runs.
        shadowed = {getattr(aggregator, name).spec for name in _lines.STORES}
        self._lines: Any = _lines.Lines(
            spec=model_spec(),
            stores={name: _store(getattr(aggregator, name)) for name in _lines.STORES},
            tracked={name: _tracked(getattr(aggregator, name)) for name in _lines.TRACKED},
            spend_for=aggregator.spend_for,
            delegate={KIND_OF[cls]: (cls, aggregator.handler(cls),
                                     bool(set(FEEDS[KIND_OF[cls]]) & shadowed))
                      for cls in EVENT_TYPES})
        self.kinds: tuple[str, ...] = self._lines.kinds()
        self.enabled: tuple[str, ...] = self._lines.enabled()

    def apply_lines(self, body: bytes | memoryview, max_line: int, decoder: EventDecoder,
                    counts: dict[str, int]) -> tuple[int, list[tuple[int, Rejection]]]:
        """Apply ``body`` (complete lines without the last newline), line by line in
        order: the native run until a line it does not take, that line through
        ``decoder`` and the Python handler, and on. Adds the events per kind to
        ``counts``; returns the lines handled and (line index, rejection) pairs. Takes
        the aggregator's lock for the whole body.

        One thread: parsing the next slice in a second thread (without the GIL) while
        this one is applied was measured slower on the 2-vCPU machine (records crossing
        caches, both vCPUs slowing each other), see docs/files.md."""
        rejects: list[tuple[int, Rejection]] = []
        size, pos, lines = len(body), 0, 0
        kinds, run = self.kinds, self._lines.run
        limit = min(max_line, decoder.max_event_bytes)
        with self.aggregator.batch() as (now, apply):
            try:
                while pos <= size:
                    pos, done, per_kind, failures, stopped, end = run(body, pos, now, limit)
                    lines += done
                    for kind, n in zip(kinds, per_kind, strict=True):
                        if n:
                            counts[kind] = counts.get(kind, 0) + n
                    for kind, exc in failures:
                        self.aggregator.failed(kind, exc)
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


def _decode_line(line: bytes, max_line: int, decoder: EventDecoder
                 ) -> AnyEvent | Rejection | None:
    """One line the native run left: None when blank, else the event or why not."""
    if len(line) > max_line:
        return Rejection("too_large", f"line of {len(line)} bytes over {max_line}")
    if not line.strip():
        return None
    return decoder.decode_one(line)
