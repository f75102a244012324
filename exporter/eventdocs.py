"""Generates ``docs/events.schema.json`` and ``docs/events.md`` from the event model.

Both files are derived, never edited by hand: the schema from the typed structs in
``exporter.events``, the reference page from the same structs (field descriptions,
constraints, defaults), the kind → metric table in ``exporter.aggregator.FEEDS`` and the
metric catalog. ``python -m exporter.eventdocs`` rewrites them; ``--check`` (and the test
suite) fails when they are stale.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from exporter import catalog
from exporter.aggregator import CONFIG_FED, FEEDS
from exporter.events import EVENT_TYPES, KIND_OF, KINDS, REASONS, json_schema

DOCS = Path(__file__).resolve().parent.parent / "docs"
SCHEMA_PATH = DOCS / "events.schema.json"
MARKDOWN_PATH = DOCS / "events.md"
REGENERATE = "python -m exporter.eventdocs"

# One example per kind: shown in docs/events.md and decoded by the tests, so every
# example in the documentation is known to be accepted.
EXAMPLES: dict[str, dict[str, Any]] = {
    "llm_call": {"kind": "llm_call", "provider": "openai", "model": "gpt-4o",
                 "response_model": "gpt-4o-2024-08-06", "operation": "chat",
                 "input_tokens": 1200, "output_tokens": 310, "cache_read_input_tokens": 800,
                 "duration_seconds": 2.41, "time_to_first_token_seconds": 0.38,
                 "time_per_output_chunk_seconds": 0.021, "component": "coder",
                 "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7"},
    "task": {"kind": "task", "component": "coder", "queue": "default",
             "status": "succeeded", "task_id": "t-8812", "duration_seconds": 41.5},
    "tool_call": {"kind": "tool_call", "tool": "run_tests", "agent": "coder",
                  "tool_type": "function", "duration_seconds": 12.7, "error_type": ""},
    "quality_gate": {"kind": "quality_gate", "gate": "code_review", "decision": "rejected",
                     "score": 0.55},
    "resolution": {"kind": "resolution", "loop_id": "loop-17", "component": "remediator",
                   "action": "attempt"},
    "guardian": {"kind": "guardian", "guardian": "criteria_gate", "guardian_type": "threshold",
                 "verdict": "deny", "duration_seconds": 0.0021},
    "intervention": {"kind": "intervention", "intervention_id": "iv-3", "type": "approval",
                     "priority": "high", "status": "requested"},
    "security_event": {"kind": "security_event", "category": "prompt_injection",
                       "severity": "high", "event_id": "sec-41"},
    "error": {"kind": "error", "component": "planner", "category": "rate_limit"},
    "provider_limit": {"kind": "provider_limit", "provider": "anthropic",
                       "remaining_requests": 412, "limit_requests": 4000,
                       "remaining_tokens": 180000, "limit_tokens": 400000,
                       "reset_at": 1767225600},
    "component_status": {"kind": "component_status", "component": "mcp-github",
                         "component_kind": "mcp_server", "version": "1.4.2",
                         "status": "up"},
    "mcp_call": {"kind": "mcp_call", "side": "client", "method": "tools/call",
                 "tool": "get_weather", "duration_seconds": 0.084, "error_type": "tool_error",
                 "protocol_version": "2025-06-18", "transport": "pipe",
                 "session_id": "191c4850af6c49e08843a3f6c80e5046",
                 "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
                 "span_id": "00f067aa0ba902b7"},
    "mcp_session": {"kind": "mcp_session", "side": "server", "duration_seconds": 312.5,
                    "protocol_version": "2025-06-18", "transport": "tcp"},
}


def render_schema() -> str:
    """The JSON Schema file's text (stable key order, trailing newline)."""
    return json.dumps(json_schema(), indent=2) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _number(value: float) -> str:
    """1099511627776 -> 2^40, 1e9 -> 1e+09, 0 -> 0: bounds readable in a table."""
    if isinstance(value, int) and value > 1 << 20 and value & (value - 1) == 0:
        return f"2^{value.bit_length() - 1}"
    return f"{value:g}"


def _type_of(prop: dict[str, Any]) -> str:
    """A short human rendering of one property's JSON Schema."""
    if "anyOf" in prop:
        options = [o for o in prop["anyOf"] if o.get("type") != "null"]
        nullable = len(options) < len(prop["anyOf"])
        text = " or ".join(_type_of(o) for o in options)
        return f"{text} or null" if nullable else text
    if "enum" in prop:
        return "one of " + ", ".join(f"`{v}`" for v in prop["enum"])
    kind = str(prop.get("type", "any"))
    bounds = []
    if "minimum" in prop:
        bounds.append(f">= {_number(prop['minimum'])}")
    if "maximum" in prop:
        bounds.append(f"<= {_number(prop['maximum'])}")
    if "minLength" in prop:
        bounds.append("non-empty")
    if "maxLength" in prop:
        bounds.append(f"<= {prop['maxLength']} chars")
    return kind + (f" ({', '.join(bounds)})" if bounds else "")


def _default(prop: dict[str, Any], required: bool) -> str:
    if required:
        return "required"
    return f"`{json.dumps(prop.get('default'))}`"


def _metric_row(spec: catalog.MetricSpec) -> str:
    labels = ", ".join(f"`{label}`" for label in spec.labels) or "-"
    return (f"| `{spec.name}` | {spec.kind.value} | {labels} | "
            f"{_cell(spec.description)} |")


def _kind_section(cls: type, schema: dict[str, Any]) -> Iterator[str]:
    kind = KIND_OF[cls]
    definition = schema["$defs"][cls.__name__]
    required = set(definition.get("required", ()))
    yield f"### `{kind}`"
    yield ""
    yield _cell(definition.get("description", ""))
    yield ""
    yield "| Field | Type | Default | Meaning |"
    yield "|---|---|---|---|"
    for name, prop in definition["properties"].items():
        if name in ("kind", "ts"):
            continue
        yield (f"| `{name}` | {_cell(_type_of(prop))} | {_default(prop, name in required)} | "
               f"{_cell(prop.get('description', ''))} |")
    yield ""
    yield "Feeds:"
    yield ""
    yield "| Metric | Type | Labels | Description |"
    yield "|---|---|---|---|"
    for spec in FEEDS[kind]:
        yield _metric_row(spec)
    yield ""
    yield "```json"
    yield json.dumps(EXAMPLES[kind])
    yield "```"
    yield ""


def render_markdown() -> str:
    """docs/events.md."""
    schema = json_schema()
    out = [
        "# AI activity events",
        "",
        f"<!-- Generated by `{REGENERATE}` from exporter/events.py, the kind -> metric table",
        "     in exporter/aggregator.py and the metric catalog. Do not edit by hand. -->",
        "",
        "AI platforms report what they do as small JSON events. Every source feeds the same",
        "model: HTTP push (`POST /api/v1/events`), tailed JSONL files, Redis Streams and the",
        "built-in demo workload. Each event is validated on its own: a bad event is rejected",
        "with a reason and counted, the events around it still count exactly once.",
        "",
        "The machine-readable schema is [`events.schema.json`](events.schema.json) (JSON Schema",
        "2020-12), also served by the exporter at `GET /api/v1/schema`.",
        "",
        "## Common fields",
        "",
        "| Field | Type | Default | Meaning |",
        "|---|---|---|---|",
        "| `kind` | one of " + ", ".join(f"`{k}`" for k in KINDS)
        + " | required | Selects the event type below. |",
    ]
    ts = schema["$defs"]["Error"]["properties"]["ts"]
    out.append(f"| `ts` | {_cell(_type_of(ts))} | `null` | {_cell(ts['description'])} |")
    out.extend([
        "",
        "No other field is accepted: an unknown field rejects the event (`unknown_field`), so",
        "that a typo never silently drops data. Label values are capped at 128 characters",
        "and stripped of control characters.",
        "",
        "## Pushing events over HTTP",
        "",
        "`POST /api/v1/events` with one of:",
        "",
        "- `Content-Type: application/json`: a JSON array of events, or one event object;",
        "- `Content-Type: application/x-ndjson` (or `application/jsonl`): one event per line,",
        "  blank lines ignored.",
        "",
        "`Content-Encoding: gzip` is accepted (every member of a multi-member body is",
        "decoded; anything else after a member refuses the body). The body, chunked or",
        "not, and after decompression, may be at most `web.max_request_bytes` (default",
        "16 MiB; a body over it is refused whole) and each event at most `ai.max_event_bytes`",
        "(default 1 MiB). When `sources.push.tokens` or `sources.push.tokens_file` is set, a",
        "request must carry `Authorization: Bearer <token>`.",
        "",
        "| Status | When |",
        "|---|---|",
        "| 200 | every event accepted (an empty array too) |",
        "| 207 | some events accepted, some rejected: see `errors` |",
        "| 400 | no event accepted: the body is empty, not JSON, not valid gzip, or every "
        "event was rejected |",
        "| 401 | tokens are configured and the request has no valid bearer token (counted "
        "in `ai_exporter_http_auth_failures_total{reason}`) |",
        "| 413 | the body (chunked or not), or its decompressed form, is over "
        "`web.max_request_bytes`; nothing of it is applied |",
        "| 503 | every worker for slow routes is busy (`Retry-After: 1`); nothing was read |",
        "| 415 | a Content-Type or Content-Encoding other than the above |",
        "",
        "The response body always has `accepted` and `rejected` counts; `errors` lists each",
        "rejected event with its 0-based `index` in the batch (for NDJSON also its 1-based",
        "`line`), a `reason` and a `detail`. A refusal of the whole request has `index: null`.",
        "At most 1,000 errors are listed (`errors_truncated: true` past that); the counts are",
        "always exact. A JSON array with a syntax error inside one element is cut at its",
        "top-level commas, so the other elements are still decoded on their own.",
        "",
        "```console",
        "$ curl -s -X POST http://localhost:10102/api/v1/events \\",
        "    -H 'Content-Type: application/json' \\",
        "    -d '[{\"kind\":\"error\",\"component\":\"planner\",\"category\":\"timeout\"},",
        "         {\"kind\":\"task\",\"component\":\"coder\",\"status\":\"paused\"}]'",
        '{"accepted":1,"rejected":1,"errors":[{"index":1,"reason":"invalid_value",'
        '"detail":"Invalid enum value \'paused\' - at `$.status`"}]}',
        "```",
        "",
        "## Rejection reasons",
        "",
        "Every rejected event (or refused request) adds one to",
        "`ai_exporter_events_rejected_total{source, reason}` and is logged at most once per",
        "`ai.log_interval_seconds` per source.",
        "",
        "| Reason | Meaning |",
        "|---|---|",
        *(f"| `{reason}` | {_cell(text)} |" for reason, text in REASONS.items()),
        "",
        "## Event kinds",
        "",
    ])
    for cls in EVENT_TYPES:
        out.extend(_kind_section(cls, schema))
    out.extend([
        "## Served from configuration",
        "",
        "These AI series come from the configuration (`ai.budgets`,",
        "`ai.llm_latency_threshold_seconds`, `ai.task_success_objective`), so that alert rules",
        "can compare activity with them:",
        "",
        "| Metric | Type | Labels | Description |",
        "|---|---|---|---|",
        *(_metric_row(spec) for spec in CONFIG_FED),
        "",
        "## Bounded state",
        "",
        "Each metric holds at most `ai.max_series_per_metric` label sets (default 10,000),",
        "and all of them together expose at most `ai.max_total_samples` samples (default",
        "50,000). Past either, new label sets fold into one whose values are all `other`, and",
        "each folded observation is counted in `ai_exporter_series_overflow_total{metric}`;",
        "`ai_exporter_series{metric}` shows how many label sets each metric holds, and",
        "`ai_exporter_samples` against `ai_exporter_samples_limit` how full the total is. Ids",
        "(task, loop, intervention, security event) are never labels: at most",
        "`ai.max_tracked_ids` (default 100,000) open ids are tracked per gauge, the oldest",
        "forgotten (and counted as overflow) past that.",
        "",
        "### Sizing the sample budget",
        "",
        "A label set takes its samples from the budget when it first appears and keeps them: a",
        "counter or gauge 1, a histogram its buckets plus `+Inf`, `_sum` and `_count` (13 to",
        "19 here), open items 1 or 2 (count and oldest age), a component heartbeat 3. The",
        "`other` label sets are not charged (one per metric at most), nor are the series",
        "served from configuration.",
        "",
        "Each sample costs about 120 bytes of /metrics text, 7 to 8 µs of one core to build and",
        "render, and 1 KB of resident memory while a scrape is served (measured on a 2-vCPU",
        "machine against the real process after 30 s of pushing new label values of every",
        "kind). The default of 50,000 samples gives a 6 MB scrape served in 0.4 to 0.5 s",
        "(median), far inside the default 5 s collector timeout (`collectors.timeout_seconds`),",
        "and a peak of 205 MB resident while scraping, of which about 90 MB are the open ids",
        "the attack filled too (100,000 per gauge, `ai.max_tracked_ids`; 115 MB with that at",
        "1,000). At 100,000 samples it was 1 s and 275 MB. With the per-metric cap alone, such",
        "an attack made /metrics 312 MB and 12 to 15 s, past the scrape timeout: nothing was",
        "scraped at all.",
        "",
        "Each collector's families are built and rendered in its own thread under the scrape",
        "deadline; an AI state too large for the time left fails the `ai` collector alone",
        "(`ai_exporter_collector_success{collector=\"ai\"} 0`) while the host metrics are",
        "served.",
        "",
        "## Ingest self-metrics",
        "",
        "| Metric | Type | Labels | Description |",
        "|---|---|---|---|",
        *(_metric_row(spec) for spec in (catalog.EXPORTER_EVENTS,
                                         catalog.EXPORTER_EVENTS_REJECTED,
                                         catalog.EXPORTER_EVENTS_LAST_TIMESTAMP,
                                         catalog.EXPORTER_SERIES_OVERFLOW,
                                         catalog.EXPORTER_SERIES,
                                         catalog.EXPORTER_SAMPLES,
                                         catalog.EXPORTER_SAMPLES_LIMIT)),
        "",
    ])
    return "\n".join(out)


def outputs() -> dict[Path, str]:
    """Every generated file and its expected content."""
    return {SCHEMA_PATH: render_schema(), MARKDOWN_PATH: render_markdown()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m exporter.eventdocs",
        description="Generate docs/events.schema.json and docs/events.md from the event model.")
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 when a file differs from the model")
    args = parser.parse_args(argv)
    stale = []
    for path, text in outputs().items():
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current == text:
            continue
        if args.check:
            stale.append(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        for path in stale:
            print(f"{path} is stale; regenerate with: {REGENERATE}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
