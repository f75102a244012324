"""The AI platform overview: is the platform healthy right now (home dashboard).

Components, task SLO, LLM latency and throughput, spend against budget, open interventions,
security and alerts; every stat links to the dashboard that explains it.
"""

from __future__ import annotations

from .layout import (
    UID_AGENTS,
    UID_HOST,
    UID_LLM,
    UID_OVERVIEW,
    UID_SECURITY,
    Board,
    Section,
    component_variable,
)
from .panels import (
    UP_DOWN,
    Override,
    Target,
    alert_list,
    bargauge,
    falling,
    link,
    rising,
    stat,
    status,
    steps,
    ts,
)
from .parameters import Parameters
from .promql import COMP, CRITICAL, component_up, jsel, quantile, rate, sel, task_ratio


def build(params: Parameters) -> Board:
    """The dashboard, with the alert thresholds of ``params``."""
    alert = params.threshold
    budget_used = ("sum by (scope) (" + sel("ai_budget_spend_usd") + ") / "
                   "max by (scope) (" + sel("ai_budget_limit_usd") + " > 0)")
    budget_projected = ("max by (scope) ("
                        + jsel("job_scope:ai_budget_spend_usd:predict_end_of_day")
                        + ") / "
                        "max by (scope) (" + sel("ai_budget_limit_usd") + " > 0)")
    service = [
        stat("Components up", "Components whose health probe passes (or, without a probe, "
             "whose last heartbeat is healthy and fresh), and those that are down.",
             "short",
             Target(f"sum({component_up()})", "up"),
             Target(f"count({component_up()}) - sum({component_up()})", "down"),
             overrides=[Override("down", steps(("green", None), ("red", 1)), regexp=False)],
             links=[link("Agents and tasks", UID_AGENTS)]),
        stat("Task success ratio", "Share of finished tasks that succeeded (cancelled tasks "
             "are not counted), next to the configured success objective. Red below the "
             "objective.", "percentunit",
             Target(task_ratio("succeeded", "succeeded|failed", COMP), "success"),
             Target(f"max({sel('ai_task_success_objective_ratio')})", "objective"),
             thresholds=falling(0.99, 0.95), decimals=2,
             links=[link("Agents and tasks", UID_AGENTS)]),
        stat("Error budget left (3d)", "Share of the task error budget (1 - objective) not "
             "yet spent by failures over the last 3 days, per component; negative means the "
             "objective is missed over that window. Over every exporter replica (the instance "
             "filter does not apply).", "percentunit",
             Target("1 - " + jsel("job_component:ai_tasks_failed_per_finished:ratio_rate3d",
                                  COMP)
                    + " / on (job) group_left () "
                    + jsel("job:ai_task_error_budget:ratio"), "{{component}}"),
             thresholds=steps(("red", None), ("orange", 0), ("green", 0.25)),
             links=[link("Agents and tasks", UID_AGENTS)]),
        stat("LLM p95 latency", "95th percentile duration of LLM calls over the last 5 "
             "minutes, all providers, next to the configured latency objective.", "s",
             Target(quantile(0.95, "gen_ai_client_operation_duration_seconds_bucket", ""),
                    "p95"),
             Target(f"max({sel('ai_llm_latency_threshold_seconds')})", "objective"),
             links=[link("LLM providers and cost", UID_LLM)]),
        stat("Tokens per second", "LLM tokens consumed per second over the last 5 minutes, "
             "by token type (input, output, cached input).", "short",
             Target("sum by (gen_ai_token_type) (" + rate("ai_llm_tokens_total") + ")",
                    "{{gen_ai_token_type}}"),
             links=[link("LLM providers and cost", UID_LLM)]),
        stat("Spend today", "LLM spend since 00:00 UTC per budget scope (total, or one "
             "provider).", "currencyUSD",
             Target(f"sum by (scope) ({sel('ai_budget_spend_usd')})", "{{scope}}"),
             decimals=2, links=[link("LLM providers and cost", UID_LLM)]),
        bargauge("Daily budget: spent and projected", "Share of each daily budget spent since "
                 "00:00 UTC, and the share that will be spent by 00:00 UTC if the last hour's "
                 "spend rate holds.", "percentunit",
                 Target(budget_used, "{{scope}} spent"),
                 Target(budget_projected, "{{scope}} projected"),
                 width=12, height=6, minimum=0, maximum=1, thresholds=rising(0.8, 1.0),
                 links=[link("LLM providers and cost", UID_LLM)]),
        stat("Open interventions", "Human interventions requested and not yet resolved or "
             "expired, by priority.", "short",
             Target(f"sum by (priority) ({sel('ai_intervention_open')})", "{{priority}}"),
             width=6, height=6, links=[link("Agents and tasks", UID_AGENTS)]),
        stat("Unresolved critical security events", "Critical security events reported and "
             "not yet resolved. Any is a page after 15 minutes.", "short",
             Target(f"sum({sel('ai_security_unresolved', CRITICAL)})",
                    "critical"),
             width=6, height=6, no_value="0", thresholds=steps(("green", None), ("red", 1)),
             links=[link("Security and errors", UID_SECURITY)]),
    ]
    alerts = alert_list(
        "Firing and pending alerts",
        "Alerts from the Prometheus rules in prometheus/rules/ that are firing or pending "
        "(critical pages, warning opens a ticket). Watchdog is hidden: it always fires to "
        "prove the alerting pipeline works.",
        width=12, height=8, label_filter='{severity=~"critical|warning"}')
    alerts_and_health = [
        status("Component health", "Each component's health: the HTTP probe result when it "
               "is probed, otherwise its heartbeat (healthy and fresher than the heartbeat "
               "timeout).", Target(component_up(), "{{component}}"), UP_DOWN,
               width=12, height=8, names=True),
    ]
    activity = [
        ts("Tasks finished per second", "Task transitions per second by status over the "
           "last 5 minutes: succeeded, failed, cancelled and retried.", "cps",
           Target("sum by (status) ("
                  + rate("ai_tasks_total", COMP, 'status=~"succeeded|failed|cancelled|retried"')
                  + ")", "{{status}}"),
           width=8),
        ts("LLM requests per second", "LLM requests per second by provider over the last 5 "
           "minutes.", "reqps",
           Target("sum by (gen_ai_provider_name) (" + rate("ai_llm_requests_total") + ")",
                  "{{gen_ai_provider_name}}"), width=8),
        ts("Errors per second", "Platform errors per second by category over the last 5 "
           "minutes.", "cps",
           Target("sum by (category) (" + rate("ai_errors_total", COMP) + ")",
                  "{{category}}"), width=8, stack=True),
    ]
    saturation = [
        bargauge("Host saturation", "Busiest resources per exporter host: CPU busy share "
                 "(5m), memory in use, the fullest filesystem and the 5-minute load average "
                 "per logical CPU. Thresholds are the alert parameters.", "percentunit",
                 Target("max by (instance) (" + sel("instance:system_cpu_utilization:rate5m")
                        + ")", "{{instance}} CPU"),
                 Target("max by (instance) (" + sel("instance:system_memory_utilization:ratio")
                        + ")", "{{instance}} memory"),
                 Target("max by (instance) ("
                        + sel("instance_device_mountpoint:system_filesystem_utilization:ratio")
                        + ")", "{{instance}} fullest filesystem"),
                 Target("max by (instance) ("
                        + sel("instance:system_cpu_load_average_5m_per_cpu:ratio") + ")",
                        "{{instance}} load per CPU"),
                 width=24, height=6, minimum=0, maximum=1,
                 thresholds=rising(alert("system_cpu_utilization", "warning")),
                 overrides=[
                     Override(".* memory", rising(alert("system_memory_utilization", "warning"),
                                                  alert("system_memory_utilization", "critical"))),
                     Override(".* fullest filesystem",
                              rising(alert("system_filesystem_utilization", "warning"),
                                     alert("system_filesystem_utilization", "critical")))],
                 links=[link("Host and GPU", UID_HOST)]),
    ]
    return Board(
        UID_OVERVIEW, "AI platform overview",
        "Is the AI platform healthy right now: components, task SLO, LLM latency and "
        "throughput, spend against budget, open interventions, security and alerts.",
        ["overview"], [component_variable()],
        [Section("Service level", service),
         Section("Alerts and components", [alerts, *alerts_and_health]),
         Section("Activity", activity), Section("Host saturation", saturation)])
