"""Spans and log records onto the event model (the table in docs/otlp-intake.md).

* GenAI inference spans (``gen_ai.operation.name`` chat, text_completion, embeddings,
  generate_content, ...; OpenLLMetry's ``llm.request.type``) → ``llm_call``.
* ``execute_tool`` → ``tool_call``; ``invoke_agent``, ``create_agent`` and workflow or
  agent spans (OpenLLMetry's ``traceloop.span.kind``) → ``task`` (succeeded or failed,
  with the span's duration).
* MCP spans (``mcp.method.name``): a client's ``tools/call`` → ``tool_call`` (the MCP server's
  own span of the same call is not counted again); other MCP methods are recognised and
  counted as mapped, their metrics come with the MCP metrics. OpenLLMetry's tool spans
  (``traceloop.span.kind`` ``tool``, the tool in ``traceloop.entity.name``; what its MCP
  instrumentation emits, with no ``gen_ai.*`` attribute) → ``tool_call``.
* Log records named ``ai.<kind>`` (``event_name``, or the ``event.name`` attribute) → that
  event kind, the attributes as its fields.

Older attribute names are read too: ``gen_ai.system`` (provider), ``gen_ai.usage.prompt_tokens``
/ ``completion_tokens``, OpenLLMetry's ``llm.usage.*`` and ``gen_ai.usage.cache_*``. The
resource's ``service.name`` is the component where an event needs one.

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
_CACHED = ("gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens",
           "gen_ai.usage.cached_input_tokens", "llm.usage.cache_read_input_tokens")
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
             end_ns: int, service: str) -> dict[str, Any] | None:
    """The event a span stands for (a dict with ``kind``, to be validated), or None for a
    span that is not GenAI or MCP."""
    duration = max(end_ns - start_ns, 0) / 1e9
    op = operation_of(attrs)
    mcp_method = attrs.get("mcp.method.name")
    if op in INFERENCE and mcp_method is None:
        return _llm_call(attrs, op, status_code, duration, service)
    if op == "execute_tool" and mcp_method is None:
        return {"kind": "tool_call",
                "tool": _label(attrs.get("gen_ai.tool.name"), name or "unknown"),
                "agent": _label(attrs.get("gen_ai.agent.name"), ""),
                "duration_seconds": duration,
                "error_type": _error_type(attrs, status_code)}
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
        agent = _first(attrs, ("gen_ai.agent.name", "traceloop.entity.name"))
        return {"kind": "task", "component": _label(agent, service or "unknown"),
                "queue": op or f"traceloop.{span_kind}",
                "status": "failed" if status_code == STATUS_ERROR else "succeeded",
                "duration_seconds": duration}
    return None


def _llm_call(attrs: Attributes, op: str, status_code: int, duration: float, service: str
              ) -> dict[str, Any]:
    """The common case, kept to plain lookups (the current attribute names first)."""
    get = attrs.get
    provider = get("gen_ai.provider.name")
    model = get("gen_ai.request.model") or get("gen_ai.response.model")
    inputs, outputs = get("gen_ai.usage.input_tokens"), get("gen_ai.usage.output_tokens")
    cached = get("gen_ai.usage.cache_read.input_tokens")
    error = get("error.type")
    event: dict[str, Any] = {
        "kind": "llm_call",
        "provider": provider if type(provider) is str and provider else provider_of(attrs),
        "model": model if type(model) is str and model else "unknown",
        "operation": OPERATION_ALIASES.get(op, op),
        "input_tokens": inputs if type(inputs) is int else _count(attrs, _INPUT),
        "output_tokens": outputs if type(outputs) is int else _count(attrs, _OUTPUT),
        "cached_input_tokens": cached if type(cached) is int else _count(attrs, _CACHED),
        "duration_seconds": duration,
        "error_type": error if type(error) is str and error else (
            "_OTHER" if status_code == STATUS_ERROR else ""),
        "component": service[:_MAX_LABEL]}
    ttft = get("gen_ai.response.time_to_first_chunk")
    if ttft is None:
        ttft = _first(attrs, _TTFT[1:])
    if isinstance(ttft, int | float) and not isinstance(ttft, bool):
        event["time_to_first_token_seconds"] = ttft
    return event


def map_log(attrs: Attributes, event_name: str) -> dict[str, Any] | None:
    """A log record named ``ai.<kind>``: the event, its attributes as fields; None for any
    other record."""
    name = event_name or attrs.get("event.name")
    if not isinstance(name, str) or not name.startswith("ai."):
        return None
    fields = {k: v for k, v in attrs.items() if k != "event.name"}
    fields["kind"] = name[3:]
    return fields
