"""Security and errors: security events, what is still unresolved, error categories."""

from __future__ import annotations

from .layout import UID_SECURITY, Board, Section, component_variable
from .panels import Target, stat, steps, table, ts
from .parameters import Parameters
from .promql import COMP, CRITICAL, FAILED, jsel, rate, sel


def build(params: Parameters) -> Board:
    """The dashboard, with the alert thresholds of ``params``."""
    events = "ai_security_events_total"
    errors = "ai_errors_total"
    security_panels = [
        stat("Unresolved security events", "Security events reported and not yet resolved, "
             "by severity.", "short",
             Target(f"sum by (severity) ({sel('ai_security_unresolved')})", "{{severity}}"),
             width=12, height=6),
        stat("Unresolved critical", "Unresolved critical security events; the alert pages "
             "when any stays unresolved for 15 minutes.", "short",
             Target(f"sum({sel('ai_security_unresolved', CRITICAL)})",
                    "critical"), width=12, height=6, no_value="0",
             thresholds=steps(("green", None), ("red", 1))),
        ts("Security events by category", "Security events reported per second, by "
           "category.", "cps",
           Target(f"sum by (category) ({rate(events)})", "{{category}}"), width=8, stack=True),
        ts("Security events by severity", "Security events reported per second, by "
           "severity.", "cps",
           Target(f"sum by (severity) ({rate(events)})", "{{severity}}"), width=8, stack=True),
        ts("Unresolved by category", "Security events not yet resolved, by category.",
           "short",
           Target(f"sum by (category) ({sel('ai_security_unresolved')})", "{{category}}"),
           width=8, stack=True),
        table("Unresolved security events", "Unresolved security events by category and "
              "severity, most severe first.", "short",
              f"sort_desc(sum by (category, severity) ({sel('ai_security_unresolved')}))",
              width=24, rename={"Value": "unresolved"}),
    ]
    error_panels = [
        ts("Errors by category", "Platform errors per second, by category (client, server, "
           "tool, provider, network, timeout, ...).", "cps",
           Target(f"sum by (category) ({rate(errors, COMP)})", "{{category}}"), stack=True),
        ts("Errors by component", "Platform errors per second, by component.", "cps",
           Target(f"sum by (component) ({rate(errors, COMP)})", "{{component}}"), stack=True),
        ts("Error rate against its daily baseline", "Errors per second per category over "
           "the last 5 minutes next to the same rate averaged over the last day; the spike "
           "alert compares the two. Over every exporter replica (the instance filter does not "
           "apply).", "cps",
           Target("sum by (category) ("
                  + jsel("job_component_category:ai_errors:rate5m", COMP) + ")",
                  "{{category}} now"),
           Target("sum by (category) ("
                  + jsel("job_component_category:ai_errors:rate5m_avg1d", COMP) + ")",
                  "{{category}} daily baseline")),
        ts("LLM and tool errors", "Failed LLM requests by error.type and failed tool calls, "
           "per second.", "cps",
           Target(f"sum by (error_type) ({rate('ai_llm_requests_total', FAILED)})",
                  "LLM {{error_type}}"),
           Target(f"sum({rate('ai_tool_calls_total', FAILED)})", "tool calls")),
    ]
    return Board(
        UID_SECURITY, "Security and errors",
        "Security events by category and severity, what is still unresolved, and platform "
        "error categories over time.",
        ["security", "errors"], [component_variable()],
        [Section("Security events", security_panels), Section("Errors", error_panels)])
