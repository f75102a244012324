"""The AI activity event model: one typed struct per kind, decoded and validated by msgspec.

Every source (HTTP push, JSONL files, Redis Streams, the demo) hands raw JSON objects to
``EventDecoder.decode_one``; it returns either an event or a ``Rejection`` with a reason
from a small fixed set (the ``reason`` label of ``ai_exporter_events_rejected_total``) and
a human-readable detail. msgspec typed structs decode at ~2M objects/s here, which is what
makes the ingest targets reachable in Python.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

import msgspec

Label = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
OptLabel = Annotated[str, msgspec.Meta(max_length=256)]
Id = Annotated[str, msgspec.Meta(max_length=256)]
Seconds = Annotated[float, msgspec.Meta(ge=0, le=1e9)]
Tokens = Annotated[int, msgspec.Meta(ge=0, le=1 << 40)]
Usd = Annotated[float, msgspec.Meta(ge=0, le=1e9)]
Timestamp = Annotated[float, msgspec.Meta(ge=0, le=1e11)]
Score = Annotated[float, msgspec.Meta(ge=0, le=1)]

TaskStatus = Literal["queued", "started", "succeeded", "failed", "retried", "cancelled"]
Verdict = Literal["allow", "deny", "modify", "warn", "escalate"]
InterventionStatus = Literal["requested", "acknowledged", "resolved", "expired"]
Severity = Literal["info", "low", "medium", "high", "critical"]
ErrorCategory = Literal["client", "server", "tool", "provider", "network", "timeout",
                        "validation", "auth", "rate_limit", "internal"]
ComponentKind = Literal["agent", "mcp_server", "model_server", "vector_db", "gateway", "other"]
ComponentState = Literal["up", "degraded", "down"]
ResolutionAction = Literal["attempt", "incident", "closed"]

KINDS = ("llm_call", "task", "tool_call", "quality_gate", "resolution", "guardian",
         "intervention", "security_event", "error", "provider_limit", "component_status")


class Event(msgspec.Struct, tag_field="kind", forbid_unknown_fields=True, kw_only=True,
            frozen=True):
    """Fields every kind has. ``ts`` is when it happened (Unix seconds); optional."""

    ts: Timestamp | None = None


class LlmCall(Event, tag="llm_call", frozen=True):
    """One LLM request: maps to the OTel GenAI client metrics plus cost and request counters."""

    provider: Label
    model: Label
    operation: Label = "chat"
    input_tokens: Tokens = 0
    output_tokens: Tokens = 0
    cached_input_tokens: Tokens = 0
    duration_seconds: Seconds | None = None
    time_to_first_token_seconds: Seconds | None = None
    cost_usd: Usd = 0.0
    error_type: OptLabel = ""
    component: OptLabel = ""


class Task(Event, tag="task", frozen=True):
    """A task status transition; ``task_id`` lets queue and in-progress gauges follow it."""

    component: Label
    status: TaskStatus
    queue: Label = "default"
    task_id: Id = ""
    duration_seconds: Seconds | None = None


class ToolCall(Event, tag="tool_call", frozen=True):
    tool: Label
    agent: OptLabel = ""
    duration_seconds: Seconds | None = None
    error_type: OptLabel = ""


class QualityGate(Event, tag="quality_gate", frozen=True):
    gate: Label
    decision: Literal["approved", "rejected"]
    score: Score | None = None


class Resolution(Event, tag="resolution", frozen=True):
    """A step of a resolution loop; the loop id is tracked, never a label."""

    loop_id: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    action: ResolutionAction
    component: Label = "default"
    outcome: OptLabel = ""


class Guardian(Event, tag="guardian", frozen=True):
    guardian: Label
    verdict: Verdict
    guardian_type: OptLabel = ""
    duration_seconds: Seconds | None = None


class Intervention(Event, tag="intervention", frozen=True):
    intervention_id: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    type: Label
    status: InterventionStatus
    priority: Label = "medium"
    wait_seconds: Seconds | None = None


class SecurityEvent(Event, tag="security_event", frozen=True):
    """A security event; with an ``event_id`` it is tracked until a resolved event arrives."""

    category: Label
    severity: Severity
    event_id: Id = ""
    resolved: bool = False


class Error(Event, tag="error", frozen=True):
    component: Label
    category: ErrorCategory


class ProviderLimit(Event, tag="provider_limit", frozen=True):
    """Rate-limit headroom as the provider reported it (e.g. from x-ratelimit headers)."""

    provider: Label
    remaining_requests: Tokens | None = None
    remaining_tokens: Tokens | None = None
    limit_requests: Tokens | None = None
    limit_tokens: Tokens | None = None
    reset_at: Timestamp | None = None


class ComponentStatus(Event, tag="component_status", frozen=True):
    """A heartbeat from an AI component."""

    component: Label
    component_kind: ComponentKind = "other"
    version: OptLabel = ""
    status: ComponentState = "up"


AnyEvent = (LlmCall | Task | ToolCall | QualityGate | Resolution | Guardian | Intervention
            | SecurityEvent | Error | ProviderLimit | ComponentStatus)


class Rejection(msgspec.Struct, frozen=True):
    """Why one input was refused: ``reason`` is a bounded label value, ``detail`` free text."""

    reason: str
    detail: str


REASONS = ("malformed_json", "invalid_utf8", "not_an_object", "unknown_kind", "missing_field",
           "unknown_field", "invalid_value", "duplicate_key", "too_large",
           "wrong_content_type", "empty")


def _defaults(cls: type[Event]) -> tuple[tuple[str, Any], ...]:
    info = msgspec.structs.fields(cls)
    return tuple((f.encode_name, f.default) for f in info)


_DEFAULTS = {cls: _defaults(cls) for cls in AnyEvent.__args__}


def _present_field_count(event: Event) -> int:
    """Fields whose value differs from the default: a lower bound on keys in the input."""
    return 1 + sum(1 for name, default in _DEFAULTS[type(event)]
                   if getattr(event, name) != default)


def _has_duplicate_keys(raw: bytes) -> bool:
    found = False

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal found
        if len({k for k, _ in pairs}) != len(pairs):
            found = True
        return dict(pairs)

    try:
        json.loads(raw, object_pairs_hook=hook)
    except ValueError:
        return False
    return found


def classify(message: str) -> str:
    """Map a msgspec error message to a bounded rejection reason."""
    if "unknown field" in message:
        return "unknown_field"
    if "missing required field" in message:
        return "missing_field"
    if "$.kind" in message:
        return "unknown_kind" if "Invalid value" in message else "missing_field"
    if message.startswith("Expected `object`"):
        return "not_an_object"
    if "malformed" in message or "truncated" in message or "trailing characters" in message:
        return "malformed_json"
    return "invalid_value"


class EventDecoder:
    """Decodes one JSON object into a typed event, or says why it cannot."""

    def __init__(self, max_event_bytes: int = 1024 * 1024) -> None:
        self.max_event_bytes = max_event_bytes
        self._decoder: msgspec.json.Decoder[AnyEvent] = msgspec.json.Decoder(AnyEvent)

    def decode_one(self, raw: bytes | memoryview) -> AnyEvent | Rejection:
        if len(raw) > self.max_event_bytes:
            return Rejection("too_large", f"event of {len(raw)} bytes exceeds "
                                          f"{self.max_event_bytes}")
        try:
            event = self._decoder.decode(raw)
        except msgspec.ValidationError as exc:
            return Rejection(classify(str(exc)), str(exc))
        except msgspec.DecodeError as exc:
            return Rejection("malformed_json", str(exc))
        except UnicodeDecodeError:
            return Rejection("invalid_utf8", "event is not valid UTF-8")
        data = bytes(raw)
        if data.count(b'":') != _present_field_count(event) and _has_duplicate_keys(data):
            return Rejection("duplicate_key", "object has a key more than once")
        return event


def json_schema() -> dict[str, Any]:
    """The published JSON Schema of the event model (docs/events.schema.json)."""
    schema: dict[str, Any] = msgspec.json.schema(AnyEvent)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "ai-metrics-exporter event"
    schema["description"] = ("One AI activity event. Push a JSON array or NDJSON of these to "
                             "POST /api/v1/events; the 'kind' field selects the type.")
    return schema
