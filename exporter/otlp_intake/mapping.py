"""Spans and log records onto the event model (the table in docs/otlp-intake.md).

* GenAI inference spans (``gen_ai.operation.name`` chat, text_completion, embeddings,
  generate_content, ...; OpenLLMetry's ``llm.request.type``) → ``llm_call``.
* ``execute_tool`` → ``tool_call``; ``invoke_agent``, ``create_agent`` and workflow or
  agent spans (OpenLLMetry's ``traceloop.span.kind``) → ``task`` (succeeded or failed,
  with the span's duration).
* MCP spans (``mcp.method.name``, and OpenLLMetry's MCP spans): ``mcp_call`` /
  ``mcp_session`` (``map_mcp``); a client's ``tools/call`` → ``tool_call`` too (the
  MCP server's own span of the same call is not counted again). OpenLLMetry's tool spans
  (``traceloop.span.kind`` ``tool``, the tool in ``traceloop.entity.name``; what its MCP
  instrumentation emits, with no ``gen_ai.*`` attribute) → ``tool_call``.
* Log records named ``ai.<kind>`` (``event_name``, or the ``event.name`` attribute) → that
  event kind, the attributes as its fields.

Older attribute names are read too: ``gen_ai.system`` (provider), ``gen_ai.usage.prompt_tokens``
/ ``completion_tokens``, OpenLLMetry's ``llm.usage.*`` and ``gen_ai.usage.cache_*``. The
resource's ``service.name`` is the component where an event needs one.

cache-read, cache-creation and reasoning tokens (subsets of the
input and output tokens, see ``_subsets``), ``gen_ai.response.model``, a given
``gen_ai.usage.cost``, the span's trace and span ids, ``gen_ai.tool.type``, the operation of
agent spans, and the agent of the enclosing ``invoke_agent`` span (``spantree``) as the
component of a call (docs/otlp-intake.md, "Tokens, agents and ids").

Only scalar attribute values are read (strings, numbers, booleans); arrays, maps and
bytes are skipped without being walked, so no nesting depth or size can cost more than
one look at the key.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import KeyValue

Attributes = dict[str, Any]

STATUS_ERROR = 2  # opentelemetry.proto.trace.v1.Status.STATUS_CODE_ERROR
SPAN_KIND_SERVER = 2

INFERENCE = frozenset({"chat", "text_completion", "embeddings", "generate_content",
                       "completion", "embedding", "responses"})
OPERATION_ALIASES = {"completion": "text_completion", "embedding": "embeddings"}
AGENT_OPERATIONS = frozenset({"invoke_agent", "create_agent", "invoke_workflow"})
TRACELOOP_TASK_KINDS = frozenset({"workflow", "agent"})
TRACELOOP_OPERATIONS = {"agent": "invoke_agent", "workflow": "invoke_workflow"}
# gen_ai.system values of older conventions → gen_ai.provider.name.
PROVIDER_ALIASES = {
    "az.ai.inference": "azure.ai.inference", "az.ai.openai": "azure.ai.openai",
    "azure": "azure.ai.openai", "gemini": "gcp.gemini", "vertex_ai": "gcp.vertex_ai",
    "vertexai": "gcp.vertex_ai", "bedrock": "aws.bedrock", "aws_bedrock": "aws.bedrock",
    "google": "gcp.gemini", "mistral": "mistral_ai", "mistralai": "mistral_ai",
    "watsonx": "ibm.watsonx.ai", "xai": "x_ai", "cohere": "cohere", "groq": "groq",
    "deepseek": "deepseek", "perplexity": "perplexity", "anthropic": "anthropic",
    "openai": "openai",
}
_INPUT = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.usage.prompt_tokens")
_OUTPUT = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens",
           "llm.usage.completion_tokens")
# Cache and reasoning tokens: the current names first, then the
# anthropic SDK's and opentelemetry-util-genai's cache_write, OpenLLMetry's older ones.
_CACHE_READ = ("gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens",
               "gen_ai.usage.cached_input_tokens", "llm.usage.cache_read_input_tokens",
               "gen_ai.usage.input_tokens.cached")
_CACHE_CREATION = ("gen_ai.usage.cache_creation.input_tokens",
                   "gen_ai.usage.cache_write.input_tokens",
                   "gen_ai.usage.cache_creation_input_tokens",
                   "llm.usage.cache_creation_input_tokens",
                   "gen_ai.usage.input_tokens.cache_write")
_REASONING = ("gen_ai.usage.reasoning.output_tokens", "gen_ai.usage.reasoning_tokens",
              "llm.usage.reasoning_tokens", "gen_ai.usage.output_tokens.reasoning")
_CACHED = _CACHE_READ  # the older name
_COST = "gen_ai.usage.cost"  # OpenLIT's, in US dollars
_TOKEN_MAX = 1 << 40  # events.Tokens' bound
_TTFT = ("gen_ai.response.time_to_first_chunk", "gen_ai.server.time_to_first_token",
         "gen_ai.response.time_to_first_token", "llm.response.time_to_first_token")
_MAX_LABEL = 256


def attributes(items: Iterable[KeyValue]) -> Attributes:
    """The scalar attributes of a list (later duplicates win, as the SDKs do)."""
    out: Attributes = {}
    for kv in items:
        value = kv.value
        which = value.WhichOneof("value")
        if which == "string_value":
            out[kv.key] = value.string_value
        elif which == "int_value":
            out[kv.key] = value.int_value
        elif which == "double_value":
            out[kv.key] = value.double_value
        elif which == "bool_value":
            out[kv.key] = value.bool_value
    return out


def _first(attrs: Attributes, keys: tuple[str, ...]) -> Any:
    for key in keys:
        value = attrs.get(key)
        if value is not None:
            return value
    return None


def _count(attrs: Attributes, keys: tuple[str, ...]) -> Any:
    """A token count as given (0 when absent); a bad one is left for validation."""
    value = _first(attrs, keys)
    if value is None:
        return 0
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def provider_of(attrs: Attributes) -> str:
    provider = attrs.get("gen_ai.provider.name")
    if isinstance(provider, str) and provider:
        return provider
    system = attrs.get("gen_ai.system")
    if isinstance(system, str) and system:
        lowered = system.lower()
        return PROVIDER_ALIASES.get(lowered, lowered)
    return "unknown"


def _label(value: Any, default: str) -> str:
    if isinstance(value, str) and value:
        return value
    return default


def _error_type(attrs: Attributes, status_code: int) -> str:
    error = attrs.get("error.type")
    if isinstance(error, str) and error:
        return error
    return "_OTHER" if status_code == STATUS_ERROR else ""


def operation_of(attrs: Attributes) -> str:
    """The GenAI operation, from the current attribute or OpenLLMetry's older ones."""
    op = attrs.get("gen_ai.operation.name")
    if isinstance(op, str) and op:
        return op
    legacy = attrs.get("llm.request.type")
    if isinstance(legacy, str) and legacy:
        return OPERATION_ALIASES.get(legacy, legacy)
    return ""


def map_span(attrs: Attributes, name: str, kind: int, status_code: int, *, start_ns: int,
             end_ns: int, service: str, trace_id: str = "", span_id: str = "",
             agent: str = "") -> dict[str, Any] | None:
    """The event a span stands for (a dict with ``kind``, to be validated), or None for a
    span that is not GenAI or MCP. ``trace_id`` / ``span_id``: the span's (hex, "" for
    none); ``agent``: the agent name of the enclosing ``invoke_agent`` span, if any."""
    duration = max(end_ns - start_ns, 0) / 1e9
    op = operation_of(attrs)
    mcp_method = attrs.get("mcp.method.name")
    if op in INFERENCE and mcp_method is None:
        return _llm_call(attrs, op, status_code, duration, service, trace_id=trace_id,
                         span_id=span_id, agent=agent)
    if op == "execute_tool" and mcp_method is None:
        return _ids({"kind": "tool_call",
                     "tool": _label(attrs.get("gen_ai.tool.name"), name or "unknown"),
                     "agent": _label(attrs.get("gen_ai.agent.name"), agent),
                     "tool_type": _label(attrs.get("gen_ai.tool.type"), ""),
                     "duration_seconds": duration,
                     "error_type": _error_type(attrs, status_code)}, trace_id, span_id)
    span_kind = attrs.get("traceloop.span.kind")
    if span_kind == "tool" and op in ("", "execute_tool"):
        # OpenLLMetry (the MCP instrumentation, traceloop's @tool): "{tool}.tool" spans
        # with no gen_ai.* attribute; the tool is the entity.
        return {"kind": "tool_call",
                "tool": _label(_first(attrs, ("gen_ai.tool.name", "traceloop.entity.name")),
                               name.removesuffix(".tool") or "unknown"),
                "agent": _label(attrs.get("gen_ai.agent.name"), ""),
                "duration_seconds": duration,
                "error_type": _error_type(attrs, status_code)}
    if mcp_method is not None:
        if mcp_method == "tools/call" and kind != SPAN_KIND_SERVER:
            tool = _first(attrs, ("gen_ai.tool.name", "mcp.tool.name"))
            return {"kind": "tool_call", "tool": _label(tool, "unknown"),
                    "agent": _label(attrs.get("gen_ai.agent.name"), service),
                    "duration_seconds": duration,
                    "error_type": _error_type(attrs, status_code)}
        return {"kind": "_mcp"}  # recognised; metrics come with the MCP metrics
    if op in AGENT_OPERATIONS or span_kind in TRACELOOP_TASK_KINDS:
        own = _first(attrs, ("gen_ai.agent.name", "traceloop.entity.name"))
        # OpenLLMetry's agent spans are agent invocations too.
        operation = op or TRACELOOP_OPERATIONS.get(str(span_kind), "")
        return _ids({"kind": "task", "component": _label(own, service or "unknown"),
                     "queue": op or f"traceloop.{span_kind}", "operation": operation,
                     "status": "failed" if status_code == STATUS_ERROR else "succeeded",
                     "duration_seconds": duration}, trace_id, span_id)
    return None


def _ids(event: dict[str, Any], trace_id: str, span_id: str) -> dict[str, Any]:
    """``event`` with the span's trace and span ids, where it has them."""
    if trace_id:
        event["trace_id"] = trace_id
    if span_id:
        event["span_id"] = span_id
    return event


def _llm_call(attrs: Attributes, op: str, status_code: int, duration: float, service: str,
              *, trace_id: str = "", span_id: str = "", agent: str = "") -> dict[str, Any]:
    """The common case, kept to plain lookups (the current attribute names first).

    ``agent``: the ``gen_ai.agent.name`` of the enclosing ``invoke_agent`` span (spantree),
    the component unless the span names its own agent; the service name otherwise. Cache
    and reasoning tokens are subsets of input and output tokens (the GenAI conventions,
    which every instrumentation known here follows, Anthropic's included: they add the
    cache reads and writes to Anthropic's uncached ``input_tokens``); where the subset
    exceeds its total, the instrumentation left it out, and it is added."""
    get = attrs.get
    provider = get("gen_ai.provider.name")
    model = get("gen_ai.request.model") or get("gen_ai.response.model")
    inputs, outputs = get("gen_ai.usage.input_tokens"), get("gen_ai.usage.output_tokens")
    read = get("gen_ai.usage.cache_read.input_tokens")
    creation = get("gen_ai.usage.cache_creation.input_tokens")
    reasoning = get("gen_ai.usage.reasoning.output_tokens")
    error = get("error.type")
    own_agent = get("gen_ai.agent.name")
    component = own_agent if type(own_agent) is str and own_agent else (agent or service)
    event: dict[str, Any] = {
        "kind": "llm_call",
        "provider": provider if type(provider) is str and provider else provider_of(attrs),
        "model": model if type(model) is str and model else "unknown",
        "operation": OPERATION_ALIASES.get(op, op),
        "input_tokens": inputs if type(inputs) is int else _count(attrs, _INPUT),
        "output_tokens": outputs if type(outputs) is int else _count(attrs, _OUTPUT),
        "cache_read_input_tokens": read if type(read) is int else _count(attrs, _CACHE_READ),
        "cache_creation_input_tokens": creation if type(creation) is int else _count(
            attrs, _CACHE_CREATION),
        "reasoning_output_tokens": reasoning if type(reasoning) is int else _count(
            attrs, _REASONING),
        "duration_seconds": duration,
        "error_type": error if type(error) is str and error else (
            "_OTHER" if status_code == STATUS_ERROR else ""),
        "component": component[:_MAX_LABEL]}
    _subsets(event)
    response_model = get("gen_ai.response.model")
    if type(response_model) is str and response_model:
        event["response_model"] = response_model
    if trace_id:
        event["trace_id"] = trace_id
    if span_id:
        event["span_id"] = span_id
    cost = get(_COST)
    if type(cost) is float or type(cost) is int:
        event["cost_usd"] = cost
    ttft = get("gen_ai.response.time_to_first_chunk")
    if ttft is None:
        ttft = _first(attrs, _TTFT[1:])
    if isinstance(ttft, int | float) and not isinstance(ttft, bool):
        event["time_to_first_token_seconds"] = ttft
    return event


def _in_range(*values: Any) -> bool:
    return all(type(v) is int and 0 <= v <= _TOKEN_MAX for v in values)


def _subsets(event: dict[str, Any]) -> None:
    """Cache tokens within the input tokens, reasoning ones within the output tokens: a
    subset larger than its total was reported beside it, not in it (exporter/_otlp.c does
    the same)."""
    inputs, read, creation = (event["input_tokens"], event["cache_read_input_tokens"],
                              event["cache_creation_input_tokens"])
    if (read or creation) and _in_range(inputs, read, creation) and read + creation > inputs:
        event["input_tokens"] = inputs + read + creation
    outputs, reasoning = event["output_tokens"], event["reasoning_output_tokens"]
    if reasoning and _in_range(outputs, reasoning) and reasoning > outputs:
        event["output_tokens"] = outputs + reasoning


def map_log(attrs: Attributes, event_name: str) -> dict[str, Any] | None:
    """A log record named ``ai.<kind>``: the event, its attributes as fields; None for any
    other record."""
    name = event_name or attrs.get("event.name")
    if not isinstance(name, str) or not name.startswith("ai."):
        return None
    fields = {k: v for k, v in attrs.items() if k != "event.name"}
    fields["kind"] = name[3:]
    return fields


# --- MCP spans → mcp_call / mcp_session ---------------------------
# OpenLLMetry's opentelemetry-instrumentation-mcp (its tracer's scope): no mcp.* or gen_ai.*
# attributes; the method is in the span name (docs/otlp-intake.md, "MCP").
OPENLLMETRY_MCP_SCOPE = "opentelemetry.instrumentation.mcp.instrumentation"
_MCP_TOOL = ("gen_ai.tool.name", "mcp.tool.name")


def map_mcp(attrs: Attributes, name: str, kind: int, status_code: int, *, start_ns: int,
            end_ns: int, scope: str = "", trace_id: str = "", span_id: str = ""
            ) -> dict[str, Any] | None:
    """The ``mcp_call`` or ``mcp_session`` a span stands for (a dict with ``kind``, to be
    validated), besides the event ``map_span`` makes of it (a client's ``tools/call`` is a
    ``tool_call`` too), or None.

    * a span with ``mcp.method.name`` (the MCP semantic conventions): an operation, on the
      server side for span kind SERVER, else the client's;
    * OpenLLMetry's MCP spans (scope ``OPENLLMETRY_MCP_SCOPE``): ``{method}.mcp`` and
      ``{tool}.tool`` (``traceloop.span.kind`` tool: tools/call, the tool in
      ``traceloop.entity.name``) are client operations (the instrumentation traces no
      server-side operation of the ``mcp`` SDK's servers); ``mcp.client.session``
      (``traceloop.span.kind`` session, the standalone fastmcp client) is a client session.
      Its ``ResponseStreamWriter`` spans (one per message written to the transport) and the
      fastmcp server's ``mcp.server`` wrapper are no operations of their own.
    """
    duration = max(end_ns - start_ns, 0) / 1e9
    method = attrs.get("mcp.method.name")
    side = "client"
    tool: Any = None
    if isinstance(method, str) and method:
        side = "server" if kind == SPAN_KIND_SERVER else "client"
        tool = _first(attrs, _MCP_TOOL)
    elif scope != OPENLLMETRY_MCP_SCOPE:
        return None
    elif attrs.get("traceloop.span.kind") == "tool" and name.endswith(".tool"):
        method = "tools/call"
        tool = _first(attrs, ("traceloop.entity.name", *_MCP_TOOL)) or name[:-5]
    elif name.endswith(".mcp") and len(name) > 4:
        method = name[:-4]
    elif name == "mcp.client.session" and attrs.get("traceloop.span.kind") == "session":
        return _mcp_ids({"kind": "mcp_session", "side": "client",
                         "duration_seconds": duration,
                         "error_type": _error_type(attrs, status_code)}, attrs,
                        trace_id, span_id)
    else:
        return None
    event: dict[str, Any] = {
        "kind": "mcp_call", "side": side, "method": method[:_MAX_LABEL],
        "tool": _label(tool, "")[:_MAX_LABEL],
        "prompt": _label(attrs.get("gen_ai.prompt.name"), "")[:_MAX_LABEL],
        "duration_seconds": duration, "error_type": _error_type(attrs, status_code)}
    return _mcp_ids(event, attrs, trace_id, span_id)


def _mcp_ids(event: dict[str, Any], attrs: Attributes, trace_id: str, span_id: str
             ) -> dict[str, Any]:
    """The fields every MCP event takes from its span: protocol version, transport,
    session (informational, never a label) and the ids for the exemplar."""
    for field, key in (("protocol_version", "mcp.protocol.version"),
                       ("transport", "network.transport"), ("session_id", "mcp.session.id")):
        value = attrs.get(key)
        if isinstance(value, str) and value:
            event[field] = value[:_MAX_LABEL]
    if trace_id:
        event["trace_id"] = trace_id
        event["span_id"] = span_id
    return event
