"""The spans of an ExportTraceServiceRequest as plain tuples, the shape the mapping reads:
``[(resource attributes, [(scope name, [span, ...]), ...]), ...]``.

A span is either the general tuple ``(key, name, kind, start_ns, end_ns, status_code,
attributes)`` or, for a GenAI inference span with the current attribute names, the fast
tuple ``("llm_call", key, response_key, provider, event_json)``: the ``llm_call`` the
mapping would make (``mapping._llm_call``), as JSON for the native event path. ``key`` is
the span's identity (FNV-1a of trace id and span id), ``response_key`` that of
``service.name`` and ``gen_ai.response.id`` (0 without one).

``exporter/_otlp.c`` reads them from the protobuf bytes: through the protobuf Python
binding each attribute costs about 1.9 us, 17 us for the nine of a GenAI chat span
(benchmarks/otlp_intake.py). Without the extension, or if it cannot read a body, the
general tuples come from the parsed message. ``tests/test_otlp_intake.py`` holds the
reader to the binding and the fast tuples to the mapping.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from exporter.otlp_intake.mapping import attributes

GeneralSpan = tuple[int, str, int, int, int, int, dict[str, Any]]
Tree = list[tuple[dict[str, Any], list[tuple[str, list[Any]]]]]
FAST = "llm_call"
_FNV_BASIS = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_MASK = (1 << 64) - 1


def _native() -> ModuleType | None:
    try:
        from exporter import _otlp
    except ImportError:
        return None
    module: ModuleType = _otlp
    return module


NATIVE = _native()


def _fnv64_python(data: bytes) -> int:
    h = _FNV_BASIS
    for byte in data:
        h = ((h ^ byte) * _FNV_PRIME) & _MASK
    return h


def fnv64(data: bytes) -> int:
    """FNV-1a, 64 bits (the C reader's, so both paths remember the same identities)."""
    if NATIVE is not None:
        value: int = NATIVE.fnv64(data)
        return value
    return _fnv64_python(data)


def from_message(request: Any) -> Tree:
    """The tree from a parsed request (the Python path): general tuples only."""
    return [(attributes(rs.resource.attributes),
             [(ss.scope.name,
               [(fnv64(span.trace_id + span.span_id), span.name, span.kind,
                 span.start_time_unix_nano, span.end_time_unix_nano, span.status.code,
                 attributes(span.attributes)) for span in ss.spans])
              for ss in rs.scope_spans])
            for rs in request.resource_spans]


def tree(request: Any, body: bytes | None, fast: bool = True) -> Tree:
    """The tree of a request whose protobuf ``body`` is given (None for one that came as
    JSON: it is serialized first, so both encodings take the same reader). ``fast``: GenAI
    inference spans as fast tuples where the reader can make them."""
    if NATIVE is None:
        return from_message(request)
    data = body if body is not None else request.SerializeToString()
    try:
        result: Tree = NATIVE.spans(data, fast)
    except ValueError:
        return from_message(request)
    return result
