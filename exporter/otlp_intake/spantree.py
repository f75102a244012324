"""The spans of an ExportTraceServiceRequest as plain tuples, the shape the mapping reads:
``[(resource attributes, [(scope name, [span, ...]), ...]), ...]`` with
``span = (trace_id, span_id, name, kind, start_ns, end_ns, status_code, attributes)``.

``exporter/_otlp.c`` reads them from the protobuf bytes (about 17 us less per GenAI span
than the protobuf Python binding, measured in benchmarks/otlp_intake.py); without the
extension, or if it cannot read a body, the same tuples come from the parsed message.
``tests/test_otlp_intake.py`` holds both to the same output.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from exporter.otlp_intake.mapping import attributes

SpanTuple = tuple[bytes, bytes, str, int, int, int, int, dict[str, Any]]
Tree = list[tuple[dict[str, Any], list[tuple[str, list[SpanTuple]]]]]


def _native() -> ModuleType | None:
    try:
        from exporter import _otlp
    except ImportError:
        return None
    module: ModuleType = _otlp
    return module


NATIVE = _native()


def from_message(request: Any) -> Tree:
    """The tree from a parsed request (the Python path)."""
    return [(attributes(rs.resource.attributes),
             [(ss.scope.name,
               [(span.trace_id, span.span_id, span.name, span.kind,
                 span.start_time_unix_nano, span.end_time_unix_nano, span.status.code,
                 attributes(span.attributes)) for span in ss.spans])
              for ss in rs.scope_spans])
            for rs in request.resource_spans]


def tree(request: Any, body: bytes | None) -> Tree:
    """The tree of a request whose protobuf ``body`` is given (None for one that came as
    JSON: it is serialized first, so both encodings take the same reader)."""
    if NATIVE is None:
        return from_message(request)
    data = body if body is not None else request.SerializeToString()
    try:
        result: Tree = NATIVE.spans(data)
    except ValueError:
        return from_message(request)
    return result
