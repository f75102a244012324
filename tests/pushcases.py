"""Push test data and counter readers shared by ``test_push.py`` (the real exporter) and
``test_push_app.py`` (Flask's test client): one copy of the request constants, the valid
events of every kind and the before/after counter delta, whichever tier reads them."""

from __future__ import annotations

from typing import Any, Protocol

from prometheus_client.parser import text_string_to_metric_families

JSON = {"Content-Type": "application/json"}
NDJSON = {"Content-Type": "application/x-ndjson"}
URL = "/api/v1/events"
TOKEN_A = "push-token-a-0123456789abcdef"
TOKEN_B = "push-token-b-from-the-file-9876"


def counts(text: str, name: str, key: str) -> dict[str, float]:
    """label value of ``key`` → value, for ``source="push"`` samples of ``name``."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels.get("source") == "push":
                out[sample.labels[key]] = sample.value
    return out


class Scraped(Protocol):
    """Anything whose exposition can be read: the real exporter or the in-process app."""

    def metrics(self) -> str: ...


class Delta:
    """Accepted (by kind) and rejected (by reason) push counters before and after."""

    def __init__(self, target: Scraped) -> None:
        self.target = target
        self.accepted, self.rejected = self._read()

    def _read(self) -> tuple[dict[str, float], dict[str, float]]:
        text = self.target.metrics()
        return (counts(text, "ai_exporter_events_total", "kind"),
                counts(text, "ai_exporter_events_rejected_total", "reason"))

    def __call__(self) -> tuple[dict[str, float], dict[str, float]]:
        accepted, rejected = self._read()
        return ({k: v - self.accepted.get(k, 0) for k, v in accepted.items()
                 if v != self.accepted.get(k, 0)},
                {k: v - self.rejected.get(k, 0) for k, v in rejected.items()
                 if v != self.rejected.get(k, 0)})


def every_kind(tag: str) -> list[dict[str, Any]]:
    """One or more valid events of every kind, with label values unique to ``tag``."""
    return [
        {"kind": "llm_call", "provider": f"{tag}-openai", "model": "gpt-4o",
         "input_tokens": 1000, "output_tokens": 200, "cached_input_tokens": 400,
         "duration_seconds": 0.3, "time_to_first_token_seconds": 0.09, "cost_usd": 0.75},
        {"kind": "llm_call", "provider": f"{tag}-openai", "model": "gpt-4o",
         "duration_seconds": 6.0, "error_type": "429"},
        {"kind": "task", "component": tag, "queue": "q", "status": "queued", "task_id": "t1"},
        {"kind": "task", "component": tag, "queue": "q", "status": "queued", "task_id": "t2"},
        {"kind": "task", "component": tag, "queue": "q", "status": "started", "task_id": "t1"},
        {"kind": "task", "component": tag, "queue": "q", "status": "succeeded",
         "task_id": "t1", "duration_seconds": 42.0},
        {"kind": "tool_call", "tool": f"{tag}-grep", "agent": "coder",
         "duration_seconds": 0.05},
        {"kind": "quality_gate", "gate": tag, "decision": "approved", "score": 0.85},
        {"kind": "quality_gate", "gate": tag, "decision": "rejected", "score": 0.4},
        {"kind": "resolution", "loop_id": f"{tag}-l1", "component": tag, "action": "incident"},
        {"kind": "resolution", "loop_id": f"{tag}-l1", "component": tag, "action": "attempt"},
        {"kind": "guardian", "guardian": tag, "guardian_type": "ttl", "verdict": "escalate",
         "duration_seconds": 0.002},
        {"kind": "intervention", "intervention_id": f"{tag}-i1", "type": tag,
         "priority": "high", "status": "requested"},
        {"kind": "intervention", "intervention_id": f"{tag}-i1", "type": tag,
         "priority": "high", "status": "resolved", "wait_seconds": 300.0},
        {"kind": "security_event", "category": tag, "severity": "critical",
         "event_id": f"{tag}-s1"},
        {"kind": "error", "component": tag, "category": "provider"},
        {"kind": "provider_limit", "provider": f"{tag}-openai", "remaining_tokens": 5000,
         "limit_tokens": 80000, "reset_at": 1767225600},
        {"kind": "component_status", "component": tag, "component_kind": "agent",
         "version": "9.9", "status": "up"},
    ]


VALID_BY_KIND = {"llm_call": 2, "task": 4, "tool_call": 1, "quality_gate": 2, "resolution": 2,
                 "guardian": 1, "intervention": 2, "security_event": 1, "error": 1,
                 "provider_limit": 1, "component_status": 1}
