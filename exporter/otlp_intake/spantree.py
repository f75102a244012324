"""The spans of an ExportTraceServiceRequest as plain tuples, the shape the mapping reads:
``[(resource attributes, [(scope name, [span, ...]), ...]), ...]``.

A span is either the general tuple ``(key, name, kind, start_ns, end_ns, status_code,
attributes, trace_id, span_id, parent_span_id)`` (the ids as lowercase hex, "" for an id
that is absent, all zero or not of its size) or, for a GenAI inference span with the
current attribute names, the fast tuple ``("llm_call", key, response_key, provider,
event_json)``: the ``llm_call`` the mapping would make (``mapping._llm_call``), as JSON
for the native event path. ``key`` is the span's identity (FNV-1a of trace id and span
id), ``response_key`` that of ``service.name`` and ``gen_ai.response.id`` (0 without one).

``exporter/_otlp.c`` reads them from the protobuf bytes: through the protobuf Python
binding each attribute costs about 1.9 us, 17 us for the nine of a GenAI chat span
(benchmarks/otlp_intake.py). Without the extension, or if it cannot read a body, the
general tuples come from the parsed message. ``tests/test_otlp_intake.py`` holds the
reader to the binding and the fast tuples to the mapping.

The agent behind a call: an inference or tool span's agent is the
``gen_ai.agent.name`` of the nearest enclosing ``invoke_agent`` span in the same request
(``enclosing_agents``). A body that holds an ``invoke_agent`` span at all is read without
fast tuples (the C reader sees the bytes ``invoke_agent`` and takes the general way), so the
mapping can walk the parents. An agent span ends after its calls: it is in the same request
only where the SDK's batch holds both (BatchSpanProcessor; never with SimpleSpanProcessor),
otherwise the call's component is its own ``gen_ai.agent.name`` or the service name.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from exporter.otlp_intake.mapping import attributes

GeneralSpan = tuple[int, str, int, int, int, int, dict[str, Any], str, str, str]
Tree = list[tuple[dict[str, Any], list[tuple[str, list[Any]]]]]
FAST = "llm_call"
_FNV_BASIS = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_MASK = (1 << 64) - 1
MAX_AGENT_DEPTH = 64  # parents walked to find an enclosing invoke_agent span


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


def hex_id(raw: bytes, size: int) -> str:
    """A trace or span id as lowercase hex; "" unless it is ``size`` bytes, not all zero
    (W3C trace context: an all-zero id is invalid)."""
    return raw.hex() if len(raw) == size and any(raw) else ""


def from_message(request: Any) -> Tree:
    """The tree from a parsed request (the Python path): general tuples only."""
    return [(attributes(rs.resource.attributes),
             [(ss.scope.name,
               [(fnv64(span.trace_id + span.span_id), span.name, span.kind,
                 span.start_time_unix_nano, span.end_time_unix_nano, span.status.code,
                 attributes(span.attributes), hex_id(span.trace_id, 16),
                 hex_id(span.span_id, 8), hex_id(span.parent_span_id, 8))
                for span in ss.spans])
              for ss in rs.scope_spans])
            for rs in request.resource_spans]


def enclosing_agents(spans: Tree) -> dict[tuple[str, str], str]:
    """(trace id, span id) → the ``gen_ai.agent.name`` of the nearest enclosing
    ``invoke_agent`` span in the request, for every general span that has one (an agent
    span's own entry is its parent agent's). Empty, at the cost of one look per span, for a
    request without agent spans."""
    agents: dict[tuple[str, str], str] = {}
    general = [span for _, scopes in spans for _, group in scopes for span in group
               if span[0] != FAST]
    for span in general:
        attrs = span[6]
        if attrs.get("gen_ai.operation.name") == "invoke_agent" and span[8]:
            name = attrs.get("gen_ai.agent.name")
            if isinstance(name, str) and name:
                agents[(span[7], span[8])] = name
    if not agents:
        return {}
    parents = {(span[7], span[8]): span[9] for span in general if span[8]}
    found: dict[tuple[str, str], str] = {}
    for (trace, span_id), first in parents.items():
        parent = first
        for _ in range(MAX_AGENT_DEPTH):
            if not parent:
                break
            name = agents.get((trace, parent))
            if name is not None:
                found[(trace, span_id)] = name
                break
            parent = parents.get((trace, parent), "")
    return found


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
