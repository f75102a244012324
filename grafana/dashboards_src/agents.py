"""Agents and tasks: what agents do and the health of each component.

Tasks and queues, tool calls, quality gates, resolution loops, guardians, human
interventions, probes, heartbeats and matched processes.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import timeseries as timeseries_builder
from grafana_foundation_sdk.models import dashboard as model

from .layout import UID_AGENTS, Board, Section, component_variable
from .panels import Cell, Target, bargauge, heatmap, rising, stat, steps, table, ts
from .parameters import Parameters
from .promql import APPROVED, COMP, FAILED, jsel, quantile, rate, sel, task_ratio


def build(params: Parameters) -> Board:
    """The dashboard, with the alert thresholds of ``params``."""
    alert = params.threshold
    tasks = "ai_tasks_total"
    task_panels = [
        ts("Task throughput by status", "Task status transitions per second: queued, "
           "started, succeeded, failed, retried, cancelled.", "cps",
           Target(f"sum by (status) ({rate(tasks, COMP)})", "{{status}}"), width=8),
        stat("Success, failure and retry", "Share of finished tasks that succeeded and "
             "failed (cancelled not counted), and retries per started task.", "percentunit",
             Target(task_ratio("succeeded", "succeeded|failed", COMP), "success"),
             Target(task_ratio("failed", "succeeded|failed", COMP), "failure"),
             Target(task_ratio("retried", "started", COMP), "retries per start"),
             width=8, height=8, decimals=2),
        ts("Success ratio by component (5m)", "Share of finished tasks that succeeded over "
           "the last 5 minutes per component, against the success objective.", "percentunit",
           Target("sum by (component) ("
                  + rate("ai_tasks_total", COMP, 'status="succeeded"')
                  + ") / sum by (component) ("
                  + rate("ai_tasks_total", COMP, 'status=~"succeeded|failed"') + ")",
                  "{{component}}"),
           Target(f"max({sel('ai_task_success_objective_ratio')})", "objective"), width=8),
        ts("Queue depth", "Tasks queued and not yet started, per component and queue.",
           "short",
           Target("sum by (component, queue) ("
                  + sel("ai_task_queue_depth", COMP) + ")",
                  "{{component}}/{{queue}}"), width=8),
        ts("Oldest queued task", "Age of the oldest task waiting in each queue. The backlog "
           "alert also needs a growing queue.", "s",
           Target("max by (component, queue) ("
                  + sel("ai_task_queue_oldest_age_seconds", COMP) + ")",
                  "{{component}}/{{queue}}"), width=8,
           thresholds=rising(alert("ai_task_queue_oldest_age_seconds", "warning")),
           dashed=True),
        ts("Tasks in progress", "Tasks started and not finished, per component.", "short",
           Target(f"sum by (component) ({sel('ai_task_in_progress', COMP)})", "{{component}}"),
           width=8, stack=True),
        ts("Task duration", "p50 and p95 duration of finished tasks by final status. "
           "Points are exemplars (the trace of a task).", "s",
           Target(quantile(0.5, "ai_task_duration_seconds_bucket", "status", COMP),
                  "p50 {{status}}"),
           Target(quantile(0.95, "ai_task_duration_seconds_bucket", "status", COMP),
                  "p95 {{status}}", exemplar=True)),
        heatmap("Task duration distribution", "Finished tasks per second in each duration "
                "bucket.", "s", f"sum by (le) ({rate('ai_task_duration_seconds_bucket', COMP)})"),
    ]
    tools = "ai_tool_calls_total"
    tool_panels = [
        ts("Tool calls per second", "Tool calls by agents per second, by tool and outcome.",
           "cps",
           Target(f"sum by (gen_ai_tool_name, outcome) ({rate(tools)})",
                  "{{gen_ai_tool_name}} {{outcome}}"), width=8),
        ts("Tool failure ratio", "Share of each tool's calls that failed.", "percentunit",
           Target(f"sum by (gen_ai_tool_name) ({rate(tools, FAILED)}) / "
                  f"sum by (gen_ai_tool_name) ({rate(tools)})", "{{gen_ai_tool_name}}"),
           width=8),
        ts("Tool-call p95 duration", "95th percentile duration of tool executions by tool. "
           "Points are exemplars (the trace of a call).", "s",
           Target(quantile(0.95, "gen_ai_execute_tool_duration_seconds_bucket",
                           "gen_ai_tool_name"), "{{gen_ai_tool_name}}", exemplar=True),
           width=8),
    ]
    gates = "ai_quality_gate_decisions_total"
    gate_panels = [
        ts("Approval ratio by gate", "Share of each quality gate's decisions that approved "
           "the work.", "percentunit",
           Target(f"sum by (gate) ({rate(gates, APPROVED)}) / "
                  f"sum by (gate) ({rate(gates)})", "{{gate}}"), width=8, maximum=1),
        ts("Rejection ratio (15m) by gate", "Share of decisions that rejected the work over "
           "the last 15 minutes, over every exporter replica (the series the spike alert "
           "compares with the last day; the instance filter does not apply).",
           "percentunit",
           Target(jsel("job_gate:ai_quality_gate_rejections_per_decisions:ratio_rate15m"),
                  "{{gate}}"), width=8,
           thresholds=rising(alert("ai_quality_gate_rejection_ratio", "warning")),
           dashed=True),
        ts("Mean rubric score", "Average rubric score given by each quality gate, "
           "normalised to 0..1.", "percentunit",
           Target(f"sum by (gate) ({rate('ai_quality_gate_score_sum')}) / "
                  f"sum by (gate) ({rate('ai_quality_gate_score_count')})", "{{gate}}"),
           width=8, maximum=1),
    ]
    loop_panels = [
        ts("Active resolution loops", "Resolution loops open and not closed, per component.",
           "short",
           Target(f"sum by (component) ({sel('ai_resolution_active', COMP)})", "{{component}}"),
           width=8, stack=True),
        ts("Attempts, incidents and closures", "Per second: attempts made inside loops, "
           "incidents raised, and loops closed by outcome.", "cps",
           Target(f"sum({rate('ai_resolution_attempts_total', COMP)})", "attempts"),
           Target(f"sum({rate('ai_resolution_incidents_total', COMP)})", "incidents"),
           Target(f"sum by (outcome) ({rate('ai_resolution_closures_total', COMP)})",
                  "closed {{outcome}}"), width=8),
        stat("Oldest open loop", "Age of the oldest open resolution loop per component; "
             "orange at the stuck-loop alert threshold.", "s",
             Target("max by (component) ("
                    + sel("ai_resolution_oldest_active_age_seconds", COMP) + ")",
                    "{{component}}"),
             width=4, height=8,
             thresholds=rising(alert("ai_resolution_oldest_active_age_seconds", "warning"))),
        stat("Attempts per closed loop", "Attempts made per loop closed, over the selected "
             "rate window: how hard loops work before closing.", "short",
             Target(f"sum({rate('ai_resolution_attempts_total', COMP)}) / "
                    f"sum({rate('ai_resolution_closures_total', COMP)})", "attempts/closure"),
             width=4, height=8, decimals=1),
    ]
    guardian = "ai_guardian_decisions_total"
    guardian_panels = [
        ts("Guardian verdicts by type", "Policy-gate verdicts per second by guardian type "
           "and verdict (allow, deny, modify, warn, escalate).", "cps",
           Target(f"sum by (guardian_type, verdict) ({rate(guardian)})",
                  "{{guardian_type}} {{verdict}}"), width=8),
        bargauge("Verdict mix", "Share of all guardian verdicts taken by each verdict.",
                 "percentunit",
                 Target(f"sum by (verdict) ({rate(guardian)}) / ignoring (verdict) "
                        f"group_left () sum({rate(guardian)})", "{{verdict}}"),
                 minimum=0, maximum=1),
        ts("Guardian decision time", "95th percentile time each guardian takes to decide.",
           "s",
           Target(quantile(0.95, "ai_guardian_duration_seconds_bucket", "guardian"),
                  "{{guardian}}"), width=8),
    ]
    intervention_panels = [
        ts("Open interventions by priority", "Human interventions requested and not yet "
           "resolved or expired.", "short",
           Target(f"sum by (priority) ({sel('ai_intervention_open')})", "{{priority}}"),
           width=8, stack=True),
        stat("Oldest open intervention", "Age of the oldest open intervention by priority; "
             "orange at the alert threshold.", "s",
             Target(f"max by (priority) ({sel('ai_intervention_oldest_open_age_seconds')})",
                    "{{priority}}"), width=4, height=8,
             thresholds=rising(alert("ai_intervention_oldest_open_age_seconds", "warning"))),
        ts("Time to resolve", "p50 and p95 time from request to resolution, by priority.",
           "s",
           Target(quantile(0.5, "ai_intervention_time_to_resolve_seconds_bucket", "priority"),
                  "p50 {{priority}}"),
           Target(quantile(0.95, "ai_intervention_time_to_resolve_seconds_bucket",
                           "priority"), "p95 {{priority}}"), width=6),
        ts("Intervention transitions", "Intervention lifecycle transitions per second: "
           "requested, acknowledged, resolved, expired.", "cps",
           Target(f"sum by (status) ({rate('ai_interventions_total')})", "{{status}}"),
           width=6),
    ]
    component_panels = [
        ts("Probe duration", "Duration of each component's last HTTP health probe.", "s",
           Target(f"max by (component) ({sel('ai_component_probe_duration_seconds', COMP)})",
                  "{{component}}"), width=8),
        table("Probe status", "Last HTTP status of each probed component (0: no response) "
              "and whether the probe passed.", "none",
              f"max by (component, kind) ({sel('ai_component_probe_http_status', COMP)})",
              width=8, rename={"Value": "HTTP status"}),
        stat("TLS certificate expires in", "Time until each probed HTTPS component's "
             "certificate expires.", "s",
             Target("min by (component) ("
                    + sel("ai_component_probe_tls_cert_expiry_timestamp_seconds", COMP)
                    + ") - time()",
                    "{{component}}"), width=8, height=8,
             thresholds=steps(("red", None), ("orange", 7 * 86400), ("green", 21 * 86400))),
        ts("Seconds since last heartbeat", "Time since each component last sent a "
           "heartbeat.", "s",
           Target("time() - max by (component) ("
                  + sel("ai_component_heartbeat_last_seen_timestamp_seconds", COMP) + ")",
                  "{{component}}"), width=8),
        table("Component versions", "Version and status each component reported in its "
              "last heartbeat.", "none",
              f"max by (component, kind, version, status) ({sel('ai_component_info', COMP)})",
              width=8, hide=("Value",)),
        stat("Processes running", "Processes matching each component's pattern; 0 means "
             "the component's process is gone.", "short",
             Target(f"sum by (component) ({sel('ai_process_running', COMP)})", "{{component}}"),
             width=8, height=8, thresholds=steps(("red", None), ("green", 1))),
        ts("Process CPU", "CPU used by each component's processes, in cores.", "short",
           Target(f"sum by (component) ({rate('ai_process_cpu_time_seconds_total', COMP)})",
                  "{{component}}"), width=6),
        ts("Process memory", "Resident memory of each component's processes.", "bytes",
           Target(f"sum by (component) ({sel('ai_process_memory_usage_bytes', COMP)})",
                  "{{component}}"), width=6),
        ts("Process threads and file descriptors", "Threads and open file descriptors of "
           "each component's processes.", "short",
           Target(f"sum by (component) ({sel('ai_process_threads', COMP)})",
                  "{{component}} threads"),
           Target(f"sum by (component) ({sel('ai_process_open_file_descriptors', COMP)})",
                  "{{component}} fds"), width=6),
        stat("Process uptime", "Time since each component's oldest process started.", "s",
             Target("time() - min by (component) ("
                    + sel("ai_process_start_timestamp_seconds", COMP) + ")",
                    "{{component}}"), width=6, height=8),
    ]
    return Board(
        UID_AGENTS, "Agents and tasks",
        "What agents do: tasks and queues, tool calls, quality gates, resolution loops, "
        "guardians, human interventions, and the health of each component.",
        ["agents", "tasks"], [component_variable()],
        [Section("Tasks and queues", task_panels), Section("Tool calls", tool_panels),
         Section("Quality gates", gate_panels), Section("Resolution loops", loop_panels),
         Section("Guardians", guardian_panels), Section("Human interventions", intervention_panels),
         Section("Components: probes, heartbeats and processes", component_panels),
         Section("MCP servers", mcp_panels()),
         Section("Anomaly bands", anomaly_panels(params))])


# --- MCP servers, from the MCP conventions' histograms ---------------
MCP_SIDES = (("client", "mcp_client_operation_duration_seconds"),
             ("server", "mcp_server_operation_duration_seconds"))
MCP_ERROR = 'error_type!=""'
MCP_TOOLS = 'mcp_method_name="tools/call"'


def _mcp_error_ratio(metric: str, by: str, *matchers: str) -> str:
    count = f"{metric}_count"
    return (f"sum by ({by}) ({rate(count, MCP_ERROR, *matchers)}) / "
            f"sum by ({by}) ({rate(count, *matchers)})")


def mcp_panels() -> list[Cell]:
    """Rate, error ratio and p95 latency of MCP operations by method and by tool, as the
    client (the caller's view, server and network time) and the server saw them, and
    session durations. Errors: every ``error.type``, ``tool_error`` included (a tool
    result with isError)."""
    panels: list[Cell] = []
    for by, legend, matchers, what in (
            ("mcp_method_name", "{{mcp_method_name}}", (), "method"),
            ("gen_ai_tool_name", "{{gen_ai_tool_name}}", (MCP_TOOLS,), "tool")):
        panels += [
            ts(f"MCP operations per second by {what}", f"MCP requests and notifications "
               f"per second by {what}{' (tools/call)' if what == 'tool' else ''}, as the "
               "client and the server saw them.", "reqps",
               *(Target(f"sum by ({by}) ({rate(f'{metric}_count', *matchers)})",
                        f"{side} {legend}") for side, metric in MCP_SIDES), width=8),
            ts(f"MCP error ratio by {what}", f"Share of MCP operations by {what} that "
               "failed (any error.type: JSON-RPC error codes, timeouts, tool_error for a "
               "tool result with isError). The MCP error alert fires on it.",
               "percentunit",
               *(Target(_mcp_error_ratio(metric, by, *matchers), f"{side} {legend}")
                 for side, metric in MCP_SIDES), width=8, maximum=1),
            ts(f"MCP p95 latency by {what}", f"95th percentile duration of MCP operations "
               f"by {what}: the client's view includes the transport. Points are exemplars "
               "(the trace of an operation).", "s",
               *(Target(quantile(0.95, f"{metric}_bucket", by, *matchers),
                        f"{side} {legend}", exemplar=side == "client")
                 for side, metric in MCP_SIDES), width=8),
        ]
    panels.append(ts(
        "MCP session duration", "p50 and p95 duration of ended MCP sessions, as the client "
        "and the server saw them.", "s",
        *(Target(quantile(q, f"mcp_{side}_session_duration_seconds_bucket", ""),
                 f"p{int(q * 100)} {side}") for side in ("client", "server")
          for q in (0.5, 0.95)), width=24))
    return panels


# --- a signal against its band (prometheus/rules/anomaly.rules.yml)
def _band(title: str, description: str, unit: str, signal: str, *, legend: str,
          z: float) -> Cell:
    """The recorded 5m rate with the band mean ± z standard deviations of its last week
    (dashed), the band the z-score alert compares it with. All three are recorded at the
    job level, summed over every exporter replica, so the instance filter does not apply."""
    value, avg, spread = (jsel(f"{signal}{suffix}") for suffix in ("", "_avg1w", "_stddev1w"))
    cell = ts(title, description, unit,
              Target(value, legend),
              Target(f"{avg} + {z:g} * {spread}", f"{legend} upper"),
              Target(f"clamp_min({avg} - {z:g} * {spread}, 0)", f"{legend} lower"))
    if isinstance(cell.panel, timeseries_builder.Panel):
        cell.panel.override_by_regexp(".* (upper|lower)$", [
            model.DynamicConfigValue(id_val="custom.lineStyle",
                                     value={"fill": "dash", "dash": [10, 10]}),
            model.DynamicConfigValue(id_val="custom.fillOpacity", value=0)])
    return cell


def anomaly_panels(params: Parameters) -> list[Cell]:
    """Token burn per agent and model and tool calls per agent and tool, each against the
    band of the anomaly alerts: the week's mean ± z standard deviations, with z the
    alerts' parameter. The band needs the recorded series' history: on a new Prometheus
    it is as wide as the few minutes recorded so far."""
    z = params.threshold("ai_anomaly_zscore", "warning")
    return [
        _band("Token burn against its weekly band", "Tokens per second (5m rate) of each "
              f"agent and model, and the band mean ± {z:g} standard deviations of its last "
              "week (dashed). The token-burn anomaly alert fires above the band, with a "
              "minimum spread and traffic floor.", "short",
              "job_agent_model:ai_agent_tokens:rate5m",
              legend="{{gen_ai_agent_name}} {{gen_ai_request_model}}", z=z),
        _band("Tool calls against their weekly band", "Calls per second (5m rate) of each "
              f"agent and tool, and the band mean ± {z:g} standard deviations of its last "
              "week (dashed). An agent looping on one tool leaves the band upwards.", "cps",
              "job_agent_tool:ai_tool_calls:rate5m",
              legend="{{gen_ai_agent_name}} {{gen_ai_tool_name}}", z=z),
    ]
