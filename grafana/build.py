"""Generate the provisioned Grafana dashboards (``grafana/dashboards/*.json``).

The dashboards are code so that every selector carries the same ``job``/``instance``
filters, every panel has a unit and a description, thresholds come from the alert
parameters in ``prometheus/rules/parameters.rules.yml`` (one place to tune them), and the
dashboards link to each other. Run ``python grafana/build.py`` after a change and commit
the JSON; ``python grafana/build.py --check`` fails when the committed JSON is stale (the
tests run the same comparison).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD_DIR = ROOT / "grafana" / "dashboards"
PARAMETERS_FILE = ROOT / "prometheus" / "rules" / "parameters.rules.yml"

SCHEMA_VERSION = 39  # Grafana 11.0-11.2, the version pinned in docker-compose.yml
TAG = "ai-metrics-exporter"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RI = "[$__rate_interval]"
GRID_WIDTH = 24

# Dashboard uids, fixed so that links and bookmarks survive re-provisioning.
UID_OVERVIEW = "ai-platform-overview"
UID_LLM = "ai-llm-providers"
UID_AGENTS = "ai-agents-tasks"
UID_SECURITY = "ai-security-errors"
UID_HOST = "ai-host-gpu"
UID_EXPORTER = "ai-exporter"

# Dashboard variable → the Prometheus label it filters.
DOMAIN_LABELS = {
    "component": "component",
    "provider": "gen_ai_provider_name",
    "model": "gen_ai_request_model",
}


# --- thresholds from the alert parameters ------------------------------------------------
def load_parameters(path: Path = PARAMETERS_FILE) -> dict[str, float]:
    """``parameter:<quantity>:<severity>`` → value, from ``vector(<number>)`` records."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    values: dict[str, float] = {}
    for group in data["groups"]:
        for rule in group["rules"]:
            match = re.fullmatch(r"\s*vector\(\s*([0-9.eE+-]+)\s*\)\s*", str(rule.get("expr", "")))
            if "record" in rule and match:
                values[rule["record"]] = float(match.group(1))
    return values


PARAMS = load_parameters()


def param(quantity: str, severity: str) -> float:
    """One alert threshold; a missing parameter is an error, never a silent default."""
    return PARAMS[f"parameter:{quantity}:{severity}"]


def steps(*pairs: tuple[str, float | None]) -> dict[str, Any]:
    """Absolute thresholds: the first color applies below the first value."""
    return {"mode": "absolute",
            "steps": [{"color": color, "value": value} for color, value in pairs]}


GREEN = steps(("green", None))


def rising(warning: float, critical: float | None = None) -> dict[str, Any]:
    """Green, then orange at ``warning``, then red at ``critical`` (when given)."""
    pairs: list[tuple[str, float | None]] = [("green", None), ("orange", warning)]
    if critical is not None:
        pairs.append(("red", critical))
    return steps(*pairs)


def falling(warning: float, critical: float) -> dict[str, Any]:
    """Red below ``critical``, orange below ``warning``, green above."""
    return steps(("red", None), ("orange", critical), ("green", warning))


UP_DOWN_MAPPINGS = [{"type": "value", "options": {
    "0": {"text": "down", "color": "red", "index": 0},
    "1": {"text": "up", "color": "green", "index": 1}}}]
OK_FAIL_MAPPINGS = [{"type": "value", "options": {
    "0": {"text": "failing", "color": "red", "index": 0},
    "1": {"text": "ok", "color": "green", "index": 1}}}]


# --- PromQL helpers ----------------------------------------------------------------------
def sel(metric: str, *matchers: str) -> str:
    """A selector filtered by the dashboard's job and instance, plus ``matchers``."""
    parts = ['job=~"$job"', 'instance=~"$instance"', *matchers]
    return f"{metric}{{{', '.join(parts)}}}"


def rate(metric: str, *matchers: str) -> str:
    """``rate()`` over Grafana's ``$__rate_interval`` (never a fixed window in a panel)."""
    return f"rate({sel(metric, *matchers)}{RI})"


COMP = 'component=~"$component"'
PROV = 'gen_ai_provider_name=~"$provider"'
MODEL = 'gen_ai_request_model=~"$model"'
CRITICAL = 'severity="critical"'
FAILED = 'outcome="error"'
APPROVED = 'decision="approved"'


def quantile(q: float, bucket: str, by: str, *matchers: str) -> str:
    """``histogram_quantile`` of a classic histogram's bucket rates, grouped by ``by``."""
    group = f"{by}, le" if by else "le"
    return f"histogram_quantile({q}, sum by ({group}) ({rate(bucket, *matchers)}))"


# --- panels ------------------------------------------------------------------------------
@dataclass
class Target:
    expr: str
    legend: str = ""
    instant: bool = False
    fmt: str = "time_series"


@dataclass
class Panel:
    """One panel; ``build`` turns it into Grafana JSON at its grid position."""

    kind: str
    title: str
    description: str
    unit: str
    targets: list[Target]
    width: int = 8
    height: int = 8
    thresholds: dict[str, Any] = field(default_factory=lambda: GREEN)
    minimum: float | None = None
    maximum: float | None = None
    mappings: list[dict[str, Any]] = field(default_factory=list)
    overrides: list[dict[str, Any]] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    custom: dict[str, Any] = field(default_factory=dict)
    links: list[dict[str, Any]] = field(default_factory=list)
    no_value: str | None = None
    decimals: int | None = None
    transformations: list[dict[str, Any]] = field(default_factory=list)

    def build(self, panel_id: int, x: int, y: int) -> dict[str, Any]:
        defaults: dict[str, Any] = {"unit": self.unit, "thresholds": self.thresholds,
                                    "mappings": self.mappings,
                                    "color": {"mode": _color_mode(self.kind)}}
        if self.minimum is not None:
            defaults["min"] = self.minimum
        if self.maximum is not None:
            defaults["max"] = self.maximum
        if self.no_value is not None:
            defaults["noValue"] = self.no_value
        if self.decimals is not None:
            defaults["decimals"] = self.decimals
        custom = {**_default_custom(self.kind), **self.custom}
        if custom:
            defaults["custom"] = custom
        panel: dict[str, Any] = {
            "id": panel_id,
            "type": self.kind,
            "title": self.title,
            "description": self.description,
            "datasource": DATASOURCE,
            "gridPos": {"x": x, "y": y, "w": self.width, "h": self.height},
            "fieldConfig": {"defaults": defaults, "overrides": self.overrides},
            "options": {**_default_options(self.kind, self.unit), **self.options},
            "targets": [_target(t, i) for i, t in enumerate(self.targets)],
        }
        if self.links:
            panel["links"] = self.links
        if self.transformations:
            panel["transformations"] = self.transformations
        return panel


def _color_mode(kind: str) -> str:
    return "palette-classic" if kind == "timeseries" else "thresholds"


def _default_custom(kind: str) -> dict[str, Any]:
    if kind == "timeseries":
        return {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never",
                "spanNulls": False, "axisSoftMin": 0}
    if kind == "table":
        return {"align": "auto", "filterable": True}
    return {}


def _default_options(kind: str, unit: str) -> dict[str, Any]:
    reduce = {"calcs": ["lastNotNull"], "fields": "", "values": False}
    if kind == "timeseries":
        return {"legend": {"displayMode": "table", "placement": "bottom", "showLegend": True,
                           "calcs": ["mean", "max", "lastNotNull"]},
                "tooltip": {"mode": "multi", "sort": "desc"}}
    if kind == "stat":
        return {"reduceOptions": reduce, "colorMode": "value", "graphMode": "area",
                "justifyMode": "auto", "textMode": "auto", "orientation": "auto"}
    if kind == "gauge":
        return {"reduceOptions": reduce, "showThresholdLabels": False,
                "showThresholdMarkers": True, "orientation": "auto"}
    if kind == "bargauge":
        return {"reduceOptions": reduce, "orientation": "horizontal",
                "displayMode": "gradient", "showUnfilled": True, "minVizHeight": 10}
    if kind == "table":
        return {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}}
    if kind == "heatmap":
        return {"calculate": False, "cellGap": 1, "yAxis": {"unit": unit, "axisPlacement": "left"},
                "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64,
                          "exponent": 0.5, "fill": "dark-orange", "reverse": False},
                "rowsFrame": {"layout": "auto"}, "tooltip": {"mode": "single",
                                                             "yHistogram": True},
                "legend": {"show": True}, "cellValues": {"unit": "short"},
                "filterValues": {"le": 1e-9}}
    return {}


def _target(target: Target, index: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "refId": chr(ord("A") + index),
        "datasource": DATASOURCE,
        "editorMode": "code",
        "expr": target.expr,
        "legendFormat": target.legend or "__auto",
        "range": not target.instant,
        "instant": target.instant,
        "format": target.fmt,
    }
    return out


def ts(title: str, description: str, unit: str, *targets: Target, width: int = 12,
       stack: bool = False, **kw: Any) -> Panel:
    """A time series; ``stack`` stacks series that add up to a whole."""
    custom = dict(kw.pop("custom", {}))
    if stack:
        custom.update({"stacking": {"mode": "normal", "group": "A"}, "fillOpacity": 40})
    return Panel("timeseries", title, description, unit, list(targets), width=width,
                 custom=custom, **kw)


def stat(title: str, description: str, unit: str, *targets: Target, width: int = 4,
         height: int = 5, **kw: Any) -> Panel:
    return Panel("stat", title, description, unit, list(targets), width=width, height=height,
                 **kw)


def bargauge(title: str, description: str, unit: str, *targets: Target, width: int = 8,
             **kw: Any) -> Panel:
    return Panel("bargauge", title, description, unit, list(targets), width=width, **kw)


def heatmap(title: str, description: str, unit: str, expr: str, width: int = 12) -> Panel:
    target = Target(expr, "{{le}}", fmt="heatmap")
    return Panel("heatmap", title, description, unit, [target], width=width)


def table(title: str, description: str, unit: str, expr: str, *, width: int = 12,
          hide: Sequence[str] = (), rename: dict[str, str] | None = None,
          **kw: Any) -> Panel:
    """An instant-query table; ``hide`` drops columns, ``rename`` relabels them."""
    excluded = {"Time": True, **{name: True for name in hide}}
    organize = {"id": "organize", "options": {"excludeByName": excluded,
                                              "renameByName": rename or {}}}
    return Panel("table", title, description, unit, [Target(expr, instant=True, fmt="table")],
                 width=width, transformations=[organize], **kw)


def link(title: str, uid: str) -> dict[str, Any]:
    """A panel link to another dashboard, keeping the time range and variables."""
    return {"title": title, "url": f"/d/{uid}?${{__url_time_range}}&${{__all_variables}}",
            "targetBlank": False}


# --- variables ---------------------------------------------------------------------------
def _query_variable(name: str, label: str, query: str, description: str) -> dict[str, Any]:
    return {
        "type": "query",
        "name": name,
        "label": label,
        "description": description,
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": f"{name}-variable", "qryType": 1},
        "definition": query,
        "refresh": 2,
        "regex": "",
        "sort": 1,
        "multi": True,
        "includeAll": True,
        "allValue": ".+",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [],
        "hide": 0,
    }


DATASOURCE_VARIABLE = {
    "type": "datasource",
    "name": "datasource",
    "label": "Data source",
    "description": "Prometheus that scrapes ai-metrics-exporter.",
    "query": "prometheus",
    "current": {"selected": True, "text": "Prometheus", "value": "prometheus"},
    "options": [],
    "refresh": 1,
    "regex": "",
    "hide": 0,
}

JOB_VARIABLE = _query_variable(
    "job", "job", "label_values(ai_exporter_build_info, job)",
    "Prometheus job of the exporter.")
INSTANCE_VARIABLE = _query_variable(
    "instance", "instance", 'label_values(ai_exporter_build_info{job=~"$job"}, instance)',
    "Exporter instance (host:port).")
COMPONENT_VARIABLE = _query_variable(
    "component", "component",
    'label_values({__name__=~"ai_tasks_total|ai_errors_total|ai_component_up|'
    'ai_component_heartbeat_up|ai_resolution_active|ai_process_running", '
    'job=~"$job", instance=~"$instance"}, component)',
    "AI platform component (agent, MCP server, gateway, ...).")
PROVIDER_VARIABLE = _query_variable(
    "provider", "provider",
    'label_values(ai_llm_requests_total{job=~"$job", instance=~"$instance"}, '
    "gen_ai_provider_name)",
    "LLM provider (gen_ai.provider.name).")
MODEL_VARIABLE = _query_variable(
    "model", "model",
    'label_values(ai_llm_requests_total{job=~"$job", instance=~"$instance", '
    'gen_ai_provider_name=~"$provider"}, gen_ai_request_model)',
    "Requested model (gen_ai.request.model).")


# --- layout ------------------------------------------------------------------------------
@dataclass
class Dashboard:
    uid: str
    title: str
    description: str
    tags: list[str]
    variables: list[dict[str, Any]]
    sections: list[tuple[str, list[Panel]]]

    def build(self) -> dict[str, Any]:
        panels: list[dict[str, Any]] = []
        ids = iter(range(1, 1000))
        y = 0
        for row_title, row_panels in self.sections:
            panels.append({"id": next(ids), "type": "row", "title": row_title,
                           "collapsed": False, "panels": [],
                           "gridPos": {"x": 0, "y": y, "w": GRID_WIDTH, "h": 1}})
            y += 1
            x, row_height = 0, 0
            for panel in row_panels:
                if x + panel.width > GRID_WIDTH:
                    x, y, row_height = 0, y + row_height, 0
                panels.append(panel.build(next(ids), x, y))
                x += panel.width
                row_height = max(row_height, panel.height)
            y += row_height
        return {
            "uid": self.uid,
            "id": None,
            "title": self.title,
            "description": self.description,
            "tags": [TAG, *self.tags],
            "timezone": "browser",
            "editable": False,
            "graphTooltip": 1,
            "schemaVersion": SCHEMA_VERSION,
            "version": 1,
            "time": {"from": "now-1h", "to": "now"},
            "timepicker": {"refresh_intervals": ["10s", "30s", "1m", "5m", "15m", "1h"]},
            "refresh": "30s",
            "liveNow": False,
            "fiscalYearStartMonth": 0,
            "weekStart": "",
            "annotations": {"list": [{
                "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
                "name": "Annotations & Alerts", "type": "dashboard"}]},
            "links": [{
                "title": "AI metrics dashboards", "type": "dashboards", "tags": [TAG],
                "asDropdown": True, "includeVars": True, "keepTime": True,
                "targetBlank": False, "icon": "external link", "tooltip": "", "url": ""}],
            "templating": {"list": [DATASOURCE_VARIABLE, JOB_VARIABLE, INSTANCE_VARIABLE,
                                    *self.variables]},
            "panels": panels,
        }


def alert_list() -> dict[str, Any]:
    """Grafana's alert list, showing the Prometheus alerts that fire or are pending."""
    return {
        "type": "alertlist",
        "title": "Firing and pending alerts",
        "description": "Alerts from the Prometheus rules in prometheus/rules/ that are firing "
                       "or pending (critical pages, warning opens a ticket). Watchdog is "
                       "hidden: it always fires to prove the alerting pipeline works.",
        "datasource": DATASOURCE,
        "options": {
            "viewMode": "list", "groupMode": "default", "groupBy": [], "maxItems": 20,
            "sortOrder": 3, "dashboardAlerts": False, "alertName": "",
            "alertInstanceLabelFilter": '{severity=~"critical|warning"}',
            "datasource": "Prometheus",
            "stateFilter": {"firing": True, "pending": True, "noData": False,
                            "normal": False, "error": True},
        },
    }


# --- the six dashboards ------------------------------------------------------------------
def component_up(*matchers: str) -> str:
    """1/0 per component: the HTTP probe when there is one, else the heartbeat."""
    return (f"(max by (component, kind) ({sel('ai_component_up', COMP, *matchers)}) "
            f"or max by (component, kind) ({sel('ai_component_heartbeat_up', COMP, *matchers)}))")


def task_ratio(numerator_status: str, denominator_status: str, *matchers: str) -> str:
    numerator = rate("ai_tasks_total", *matchers, f'status=~"{numerator_status}"')
    denominator = rate("ai_tasks_total", *matchers, f'status=~"{denominator_status}"')
    return f"sum({numerator}) / sum({denominator})"


def overview() -> Dashboard:
    budget_used = ("max by (scope) (" + sel("ai_budget_spend_usd") + ") / "
                   "max by (scope) (" + sel("ai_budget_limit_usd") + " > 0)")
    budget_projected = ("max by (scope) ("
                        + sel("instance_scope:ai_budget_spend_usd:predict_end_of_day") + ") / "
                        "max by (scope) (" + sel("ai_budget_limit_usd") + " > 0)")
    service = [
        stat("Components up", "Components whose health probe passes (or, without a probe, "
             "whose last heartbeat is healthy and fresh), and those that are down.",
             "short",
             Target(f"sum({component_up()})", "up"),
             Target(f"count({component_up()}) - sum({component_up()})", "down"),
             overrides=[{"matcher": {"id": "byName", "options": "down"}, "properties": [
                 {"id": "thresholds", "value": steps(("green", None), ("red", 1))}]}],
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
             "objective is missed over that window.", "percentunit",
             Target("1 - " + sel("instance_component:ai_tasks_failed_per_finished:ratio_rate3d",
                                 COMP)
                    + " / on (job, instance) group_left () "
                    + sel("instance:ai_task_error_budget:ratio"), "{{component}}"),
             thresholds=steps(("red", None), ("orange", 0), ("green", 0.25)),
             links=[link("Agents and tasks", UID_AGENTS)]),
        stat("LLM p95 latency", "95th percentile duration of LLM calls over the last 5 "
             "minutes, all providers, next to the configured latency objective.", "s",
             Target("histogram_quantile(0.95, sum by (le) ("
                    + sel("instance_provider_model_le:gen_ai_client_operation_duration_seconds"
                          "_bucket:rate5m") + "))", "p95"),
             Target(f"max({sel('ai_llm_latency_threshold_seconds')})", "objective"),
             links=[link("LLM providers and cost", UID_LLM)]),
        stat("Tokens per second", "LLM tokens consumed per second over the last 5 minutes, "
             "by token type (input, output, cached input).", "short",
             Target("sum by (gen_ai_token_type) ("
                    + sel("instance_provider_model_token_type:ai_llm_tokens:rate5m") + ")",
                    "{{gen_ai_token_type}}"),
             links=[link("LLM providers and cost", UID_LLM)]),
        stat("Spend today", "LLM spend since 00:00 UTC per budget scope (total, or one "
             "provider).", "currencyUSD",
             Target(f"max by (scope) ({sel('ai_budget_spend_usd')})", "{{scope}}"),
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
    alerts_and_health = [
        Panel("stat", "Component health", "Each component's health: the HTTP probe result "
              "when it is probed, otherwise its heartbeat (healthy and fresher than the "
              "heartbeat timeout).", "none",
              [Target(component_up(), "{{component}}")], width=12, height=8,
              mappings=UP_DOWN_MAPPINGS, thresholds=steps(("red", None), ("green", 1)),
              options={"colorMode": "background", "graphMode": "none",
                       "textMode": "value_and_name"}),
    ]
    activity = [
        ts("Tasks finished per second", "Task transitions per second by status over the "
           "last 5 minutes: succeeded, failed, cancelled and retried.", "cps",
           Target("sum by (status) ("
                  + sel("instance_component_queue_status:ai_tasks:rate5m", COMP,
                        'status=~"succeeded|failed|cancelled|retried"') + ")", "{{status}}"),
           width=8),
        ts("LLM requests per second", "LLM requests per second by provider over the last 5 "
           "minutes.", "reqps",
           Target("sum by (gen_ai_provider_name) ("
                  + sel("instance_provider:ai_llm_requests:rate5m") + ")",
                  "{{gen_ai_provider_name}}"), width=8),
        ts("Errors per second", "Platform errors per second by category over the last 5 "
           "minutes.", "cps",
           Target("sum by (category) ("
                  + sel("instance_component_category:ai_errors:rate5m", COMP) + ")",
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
                 thresholds=rising(param("system_cpu_utilization", "warning")),
                 overrides=[
                     {"matcher": {"id": "byRegexp", "options": ".* memory"}, "properties": [
                         {"id": "thresholds", "value": rising(
                             param("system_memory_utilization", "warning"),
                             param("system_memory_utilization", "critical"))}]},
                     {"matcher": {"id": "byRegexp", "options": ".* fullest filesystem"},
                      "properties": [{"id": "thresholds", "value": rising(
                          param("system_filesystem_utilization", "warning"),
                          param("system_filesystem_utilization", "critical"))}]}],
                 links=[link("Host and GPU", UID_HOST)]),
    ]
    return Dashboard(
        UID_OVERVIEW, "AI platform overview",
        "Is the AI platform healthy right now: components, task SLO, LLM latency and "
        "throughput, spend against budget, open interventions, security and alerts.",
        ["overview"], [COMPONENT_VARIABLE],
        [("Service level", service),
         ("Alerts and components", [_AlertListPanel(width=12, height=8), *alerts_and_health]),
         ("Activity", activity), ("Host saturation", saturation)])


class _AlertListPanel(Panel):
    """The alert list has no query targets; it reads alert state from the datasource."""

    def __init__(self, width: int, height: int) -> None:
        spec = alert_list()
        super().__init__("alertlist", spec["title"], spec["description"], "none", [],
                         width=width, height=height, options=spec["options"])

    def build(self, panel_id: int, x: int, y: int) -> dict[str, Any]:
        panel = alert_list()
        panel.update({"id": panel_id, "gridPos": {"x": x, "y": y, "w": self.width,
                                                  "h": self.height}})
        return panel


def llm() -> Dashboard:
    pm = (PROV, MODEL)
    bucket = "gen_ai_client_operation_duration_seconds_bucket"
    ttft = "gen_ai_client_operation_time_to_first_chunk_seconds_bucket"
    requests = "ai_llm_requests_total"
    traffic = [
        ts("Requests per second by model", "LLM requests per second by provider and model.",
           "reqps",
           Target(f"sum by (gen_ai_provider_name, gen_ai_request_model) ({rate(requests, *pm)})",
                  "{{gen_ai_provider_name}} {{gen_ai_request_model}}")),
        ts("Error ratio by error type", "Share of each provider's requests that failed, by "
           "error.type (HTTP status, timeout, ...). The critical alert threshold is red.",
           "percentunit",
           Target("sum by (gen_ai_provider_name, error_type) ("
                  + rate(requests, *pm, 'outcome="error"') + ") / on (gen_ai_provider_name) "
                  "group_left () sum by (gen_ai_provider_name) (" + rate(requests, *pm) + ")",
                  "{{gen_ai_provider_name}} {{error_type}}"),
           thresholds=rising(param("ai_llm_error_ratio", "warning"),
                             param("ai_llm_error_ratio", "critical")),
           custom={"thresholdsStyle": {"mode": "dashed"}}),
        ts("Errors per second by error type", "Failed LLM requests per second by error.type "
           "and provider.", "reqps",
           Target("sum by (error_type, gen_ai_provider_name) ("
                  + rate(requests, *pm, 'outcome="error"') + ")",
                  "{{gen_ai_provider_name}} {{error_type}}"), width=12, stack=True),
        stat("Error ratio by provider (5m)", "Share of each provider's requests that failed "
             "over the last 5 minutes, all error types together.", "percentunit",
             Target("sum by (gen_ai_provider_name) ("
                    + sel("instance_provider_error_type:ai_llm_request_errors:rate5m", PROV)
                    + ") / sum by (gen_ai_provider_name) ("
                    + sel("instance_provider:ai_llm_requests:rate5m", PROV) + ")",
                    "{{gen_ai_provider_name}}"),
             width=12, height=8, decimals=2,
             thresholds=rising(param("ai_llm_error_ratio", "warning"),
                               param("ai_llm_error_ratio", "critical"))),
    ]
    latency = [
        ts("Latency quantiles", "p50, p95 and p99 duration of LLM calls for the selected "
           "providers and models, and the configured latency objective (p95).", "s",
           Target(quantile(0.5, bucket, "", *pm), "p50"),
           Target(quantile(0.95, bucket, "", *pm), "p95"),
           Target(quantile(0.99, bucket, "", *pm), "p99"),
           Target(f"max({sel('ai_llm_latency_threshold_seconds')})", "objective")),
        ts("p95 latency by model (5m)", "95th percentile LLM call duration over the last 5 "
           "minutes, per provider and model.", "s",
           Target("max by (gen_ai_provider_name, gen_ai_request_model) ("
                  + sel("instance_provider_model:gen_ai_client_operation_duration_seconds"
                        ":histogram_quantile", *pm, 'quantile="0.95"') + ")",
                  "{{gen_ai_provider_name}} {{gen_ai_request_model}}")),
        heatmap("Latency distribution", "How LLM call durations are distributed over time "
                "(requests per second in each duration bucket).", "s",
                f"sum by (le) ({rate(bucket, *pm)})"),
        ts("Time to first token", "p50 and p95 time until the first streamed chunk of a "
           "response, streaming calls only.", "s",
           Target(quantile(0.5, ttft, "", *pm), "p50"),
           Target(quantile(0.95, ttft, "", *pm), "p95"),
           Target(quantile(0.95, ttft, "gen_ai_provider_name", *pm),
                  "p95 {{gen_ai_provider_name}}")),
    ]
    tokens = [
        ts("Tokens per second by type", "Input, output and cached input tokens per second.",
           "short",
           Target(f"sum by (gen_ai_token_type) ({rate('ai_llm_tokens_total', *pm)})",
                  "{{gen_ai_token_type}}"), width=8, stack=True),
        ts("Tokens per second by model", "Input and output tokens per second per model.",
           "short",
           Target("sum by (gen_ai_request_model, gen_ai_token_type) ("
                  + rate("ai_llm_tokens_total", *pm, 'gen_ai_token_type=~"input|output"')
                  + ")", "{{gen_ai_request_model}} {{gen_ai_token_type}}"), width=8),
        ts("Mean tokens per call", "Average tokens per LLM call by token type (from the "
           "gen_ai.client.token.usage histogram).", "short",
           Target("sum by (gen_ai_token_type) ("
                  + rate("gen_ai_client_token_usage_sum", *pm) + ") / "
                  "sum by (gen_ai_token_type) (" + rate("gen_ai_client_token_usage_count", *pm)
                  + ")", "{{gen_ai_token_type}}"), width=8),
    ]
    capacity = [
        bargauge("Rate-limit headroom", "Share of each provider's current rate-limit window "
                 "(requests, tokens) still available. The alert fires below the orange "
                 "line.", "percentunit",
                 Target("min by (gen_ai_provider_name, limit_type) ("
                        + sel("instance_provider_limit_type:ai_provider_rate_limit_remaining"
                              "_per_capacity:ratio", PROV) + ")",
                        "{{gen_ai_provider_name}} {{limit_type}}"),
                 minimum=0, maximum=1,
                 thresholds=steps(("red", None),
                                  ("orange", param("ai_provider_rate_limit_remaining_ratio",
                                                   "warning")),
                                  ("green", 0.25))),
        ts("Rate-limit remaining", "Requests and tokens left in each provider's current "
           "rate-limit window, as last reported by the provider.", "short",
           Target("min by (gen_ai_provider_name, limit_type) ("
                  + sel("ai_provider_rate_limit_remaining", PROV) + ")",
                  "{{gen_ai_provider_name}} {{limit_type}}"), width=8),
        stat("Rate-limit window resets in", "Seconds until each provider's rate-limit window "
             "resets.", "s",
             Target("min by (gen_ai_provider_name, limit_type) ("
                    + sel("ai_provider_rate_limit_reset_seconds", PROV) + ") - time()",
                    "{{gen_ai_provider_name}} {{limit_type}}"), width=8, height=8),
    ]
    cost = [
        ts("Spend per hour by model", "LLM spend rate in US dollars per hour, by provider "
           "and model.", "currencyUSD",
           Target("3600 * sum by (gen_ai_provider_name, gen_ai_request_model) ("
                  + rate("ai_llm_cost_usd_total", *pm) + ")",
                  "{{gen_ai_provider_name}} {{gen_ai_request_model}}"), stack=True),
        bargauge("Spend per hour by model (5m)", "Spend rate per model over the last 5 "
                 "minutes, in US dollars per hour.", "currencyUSD",
                 Target("3600 * sum by (gen_ai_request_model) ("
                        + sel("instance_provider_model:ai_llm_cost_usd:rate5m", *pm) + ")",
                        "{{gen_ai_request_model}}"), width=6),
        stat("Cost per finished task (1h)", "LLM spend over the last hour divided by the "
             "tasks that finished in it, per exporter instance.", "currencyUSD",
             Target(sel("instance:ai_llm_cost_usd_per_task:ratio_rate1h"), "{{instance}}"),
             width=6, height=8, decimals=4),
        ts("Spend today against budget", "Spend since 00:00 UTC per budget scope, the "
           "scope's daily budget, and the spend projected for 00:00 UTC at the last hour's "
           "rate.", "currencyUSD",
           Target(f"max by (scope) ({sel('ai_budget_spend_usd')})", "{{scope}} spent"),
           Target(f"max by (scope) ({sel('ai_budget_limit_usd')})", "{{scope}} budget"),
           Target("max by (scope) ("
                  + sel("instance_scope:ai_budget_spend_usd:predict_end_of_day") + ")",
                  "{{scope}} projected")),
        ts("Budget burn rate", "Last hour's spend rate as a share of the daily budget "
           "per day: 1 means the budget is spent exactly by the end of a day at this "
           "rate.", "percentunit",
           Target("86400 * max by (scope) ("
                  + sel("instance_scope:ai_llm_cost_usd:rate1h") + ") / max by (scope) ("
                  + sel("ai_budget_limit_usd") + " > 0)", "{{scope}}"),
           thresholds=rising(1.0), custom={"thresholdsStyle": {"mode": "dashed"}}),
    ]
    return Dashboard(
        UID_LLM, "LLM providers and cost",
        "LLM calls by provider and model (OpenTelemetry GenAI metrics): traffic, errors, "
        "latency, time to first token, tokens, rate limits, spend and budgets.",
        ["llm", "cost"], [PROVIDER_VARIABLE, MODEL_VARIABLE],
        [("Traffic and errors", traffic), ("Latency", latency), ("Tokens", tokens),
         ("Rate limits", capacity), ("Cost and budgets", cost)])


def agents() -> Dashboard:
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
           Target(sel("instance_component:ai_tasks_succeeded_per_finished:ratio_rate5m", COMP),
                  "{{component}} {{instance}}"),
           Target(f"max({sel('ai_task_success_objective_ratio')})", "objective"), width=8),
        ts("Queue depth", "Tasks queued and not yet started, per component and queue.",
           "short",
           Target("sum by (component, queue) ("
                  + sel("instance_component_queue:ai_task_queue_depth:sum", COMP) + ")",
                  "{{component}}/{{queue}}"), width=8),
        ts("Oldest queued task", "Age of the oldest task waiting in each queue. The backlog "
           "alert also needs a growing queue.", "s",
           Target("max by (component, queue) ("
                  + sel("ai_task_queue_oldest_age_seconds", COMP) + ")",
                  "{{component}}/{{queue}}"), width=8,
           thresholds=rising(param("ai_task_queue_oldest_age_seconds", "warning")),
           custom={"thresholdsStyle": {"mode": "dashed"}}),
        ts("Tasks in progress", "Tasks started and not finished, per component.", "short",
           Target(f"sum by (component) ({sel('ai_task_in_progress', COMP)})", "{{component}}"),
           width=8, stack=True),
        ts("Task duration", "p50 and p95 duration of finished tasks by final status.", "s",
           Target(quantile(0.5, "ai_task_duration_seconds_bucket", "status", COMP),
                  "p50 {{status}}"),
           Target(quantile(0.95, "ai_task_duration_seconds_bucket", "status", COMP),
                  "p95 {{status}}")),
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
        ts("Tool-call p95 duration", "95th percentile duration of tool executions by tool.",
           "s",
           Target(quantile(0.95, "gen_ai_execute_tool_duration_seconds_bucket",
                           "gen_ai_tool_name"), "{{gen_ai_tool_name}}"), width=8),
    ]
    gates = "ai_quality_gate_decisions_total"
    gate_panels = [
        ts("Approval ratio by gate", "Share of each quality gate's decisions that approved "
           "the work.", "percentunit",
           Target(f"sum by (gate) ({rate(gates, APPROVED)}) / "
                  f"sum by (gate) ({rate(gates)})", "{{gate}}"), width=8, maximum=1),
        ts("Rejection ratio (15m) by gate", "Share of decisions that rejected the work over "
           "the last 15 minutes; the spike alert compares it with the last day.",
           "percentunit",
           Target(sel("instance_gate:ai_quality_gate_rejections_per_decisions:ratio_rate15m"),
                  "{{gate}} {{instance}}"), width=8,
           thresholds=rising(param("ai_quality_gate_rejection_ratio", "warning")),
           custom={"thresholdsStyle": {"mode": "dashed"}}),
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
             thresholds=rising(param("ai_resolution_oldest_active_age_seconds", "warning"))),
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
             thresholds=rising(param("ai_intervention_oldest_open_age_seconds", "warning"))),
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
                    + sel("ai_component_probe_tls_cert_expiry_seconds", COMP) + ") - time()",
                    "{{component}}"), width=8, height=8,
             thresholds=steps(("red", None), ("orange", 7 * 86400), ("green", 21 * 86400))),
        ts("Seconds since last heartbeat", "Time since each component last sent a "
           "heartbeat.", "s",
           Target("time() - max by (component) ("
                  + sel("ai_component_heartbeat_last_seen_seconds", COMP) + ")",
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
             Target(f"time() - min by (component) ({sel('ai_process_start_time_seconds', COMP)})",
                    "{{component}}"), width=6, height=8),
    ]
    return Dashboard(
        UID_AGENTS, "Agents and tasks",
        "What agents do: tasks and queues, tool calls, quality gates, resolution loops, "
        "guardians, human interventions, and the health of each component.",
        ["agents", "tasks"], [COMPONENT_VARIABLE],
        [("Tasks and queues", task_panels), ("Tool calls", tool_panels),
         ("Quality gates", gate_panels), ("Resolution loops", loop_panels),
         ("Guardians", guardian_panels), ("Human interventions", intervention_panels),
         ("Components: probes, heartbeats and processes", component_panels)])


def security() -> Dashboard:
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
           "alert compares the two.", "cps",
           Target("sum by (category) ("
                  + sel("instance_component_category:ai_errors:rate5m", COMP) + ")",
                  "{{category}} now"),
           Target("sum by (category) ("
                  + sel("instance_component_category:ai_errors:rate5m_avg1d", COMP) + ")",
                  "{{category}} daily baseline")),
        ts("LLM and tool errors", "Failed LLM requests by error.type and failed tool calls, "
           "per second.", "cps",
           Target(f"sum by (error_type) ({rate('ai_llm_requests_total', FAILED)})",
                  "LLM {{error_type}}"),
           Target(f"sum({rate('ai_tool_calls_total', FAILED)})", "tool calls")),
    ]
    return Dashboard(
        UID_SECURITY, "Security and errors",
        "Security events by category and severity, what is still unresolved, and platform "
        "error categories over time.",
        ["security", "errors"], [COMPONENT_VARIABLE],
        [("Security events", security_panels), ("Errors", error_panels)])


def host() -> Dashboard:
    fs_warn = param("system_filesystem_utilization", "warning")
    fs_crit = param("system_filesystem_utilization", "critical")
    mem_warn = param("system_memory_utilization", "warning")
    mem_crit = param("system_memory_utilization", "critical")
    summary = [
        stat("CPU busy (5m)", "Share of all logical CPUs' time not idle, waiting for I/O or "
             "stolen, over the last 5 minutes.", "percentunit",
             Target(sel("instance:system_cpu_utilization:rate5m"), "{{instance}}"),
             width=6, thresholds=rising(param("system_cpu_utilization", "warning"))),
        stat("Memory in use", "Physical memory in use that the kernel cannot reclaim.",
             "percentunit",
             Target(sel("instance:system_memory_utilization:ratio"), "{{instance}}"),
             width=6, thresholds=rising(mem_warn, mem_crit)),
        stat("Load per CPU (5m)", "5-minute load average divided by the logical CPUs.",
             "percentunit",
             Target(sel("instance:system_cpu_load_average_5m_per_cpu:ratio"), "{{instance}}"),
             width=6, thresholds=rising(1.0, 2.0)),
        stat("Uptime", "Time since the host booted.", "s",
             Target(f"max by (instance) ({sel('system_uptime_seconds')})", "{{instance}}"),
             width=6),
    ]
    cpu_memory = [
        ts("CPU by mode", "Share of all logical CPUs' time spent in each mode except idle.",
           "percentunit",
           Target("sum by (instance, cpu_mode) ("
                  + rate("system_cpu_time_seconds_total", 'cpu_mode!="idle"')
                  + ") / on (instance) group_left () max by (instance) ("
                  + sel("system_cpu_logical_cpus") + ")", "{{instance}} {{cpu_mode}}"),
           width=8, stack=True, maximum=1),
        ts("Load average", "1, 5 and 15-minute load averages, and the number of logical "
           "CPUs.", "short",
           Target(f"max by (instance) ({sel('system_cpu_load_average_1m')})",
                  "{{instance}} 1m"),
           Target(f"max by (instance) ({sel('system_cpu_load_average_5m')})",
                  "{{instance}} 5m"),
           Target(f"max by (instance) ({sel('system_cpu_load_average_15m')})",
                  "{{instance}} 15m"),
           Target(f"max by (instance) ({sel('system_cpu_logical_cpus')})",
                  "{{instance}} CPUs"), width=8),
        ts("Memory", "Physical memory by state, and the total.", "bytes",
           Target("sum by (instance, system_memory_state) ("
                  + sel("system_memory_usage_bytes") + ")",
                  "{{instance}} {{system_memory_state}}"),
           Target(f"max by (instance) ({sel('system_memory_limit_bytes')})",
                  "{{instance}} total"), width=8),
        ts("Swap", "Swap space by state.", "bytes",
           Target("sum by (instance, system_paging_state) ("
                  + sel("system_paging_usage_bytes") + ")",
                  "{{instance}} {{system_paging_state}}"), width=12, stack=True),
        ts("Memory available", "Memory available for new work without swapping.", "bytes",
           Target(f"max by (instance) ({sel('system_linux_memory_available_bytes')})",
                  "{{instance}}"), width=12),
    ]
    filesystems = [
        bargauge("Filesystem used", "Share of each filesystem's space in use (of the space "
                 "usable by unprivileged users). Thresholds are the alert parameters.",
                 "percentunit",
                 Target("max by (instance, system_filesystem_mountpoint) ("
                        + sel("instance_device_mountpoint:system_filesystem_utilization:ratio")
                        + ")", "{{instance}} {{system_filesystem_mountpoint}}"),
                 minimum=0, maximum=1, thresholds=rising(fs_warn, fs_crit)),
        ts("Filesystem free space", "Free bytes per filesystem.", "bytes",
           Target("max by (instance, system_filesystem_mountpoint) ("
                  + sel("system_filesystem_usage_bytes", 'system_filesystem_state="free"')
                  + ")", "{{instance}} {{system_filesystem_mountpoint}}"), width=8),
        ts("Inodes used", "Share of each filesystem's inodes in use.", "percentunit",
           Target("sum by (instance, system_filesystem_mountpoint) ("
                  + sel("system_filesystem_inodes_usage", 'system_filesystem_state="used"')
                  + ") / sum by (instance, system_filesystem_mountpoint) ("
                  + sel("system_filesystem_inodes_usage") + ")",
                  "{{instance}} {{system_filesystem_mountpoint}}"), width=8, maximum=1),
    ]
    disks = [
        ts("Disk throughput", "Bytes read and written per second per disk.", "Bps",
           Target("sum by (instance, system_device, disk_io_direction) ("
                  + rate("system_disk_io_bytes_total") + ")",
                  "{{instance}} {{system_device}} {{disk_io_direction}}"), width=6),
        ts("Disk operations", "Reads and writes completed per second per disk.", "iops",
           Target("sum by (instance, system_device, disk_io_direction) ("
                  + rate("system_disk_operations_total") + ")",
                  "{{instance}} {{system_device}} {{disk_io_direction}}"), width=6),
        ts("Disk busy (5m)", "Share of time each disk was busy over the last 5 minutes.",
           "percentunit",
           Target(sel("instance_device:system_disk_io_time:rate5m"),
                  "{{instance}} {{system_device}}"), width=6, maximum=1),
        ts("Disk operation time", "Average time per completed read or write.", "s",
           Target("sum by (instance, system_device, disk_io_direction) ("
                  + rate("system_disk_operation_time_seconds_total") + ") / "
                  "sum by (instance, system_device, disk_io_direction) ("
                  + rate("system_disk_operations_total") + ")",
                  "{{instance}} {{system_device}} {{disk_io_direction}}"), width=6),
    ]
    network = [
        ts("Network throughput (5m)", "Bytes sent and received per second per interface "
           "over the last 5 minutes.", "Bps",
           Target(sel("instance_interface_direction:system_network_io_bytes:rate5m"),
                  "{{instance}} {{network_interface_name}} {{network_io_direction}}"),
           width=8),
        ts("Network packets", "Packets sent and received per second per interface.", "pps",
           Target("sum by (instance, network_interface_name, network_io_direction) ("
                  + rate("system_network_packets_total") + ")",
                  "{{instance}} {{network_interface_name}} {{network_io_direction}}"),
           width=8),
        ts("Network errors and drops", "Errors and dropped packets per second per "
           "interface.", "pps",
           Target("sum by (instance, network_interface_name, network_io_direction) ("
                  + rate("system_network_errors_total") + ")",
                  "{{instance}} {{network_interface_name}} {{network_io_direction}} errors"),
           Target("sum by (instance, network_interface_name, network_io_direction) ("
                  + rate("system_network_dropped_total") + ")",
                  "{{instance}} {{network_interface_name}} {{network_io_direction}} dropped"),
           width=8),
    ]
    gpu_label = "{{instance}} GPU {{hw_id}} {{hw_model}}"
    by_gpu = "max by (instance, hw_id, hw_model)"
    gpu = [
        ts("GPU utilization", "Share of time each GPU was busy.", "percentunit",
           Target(f"{by_gpu} ({sel('hw_gpu_utilization_ratio')})", gpu_label),
           width=8, maximum=1),
        ts("GPU memory", "GPU memory in use and each GPU's memory size.", "bytes",
           Target(f"{by_gpu} ({sel('hw_gpu_memory_usage_bytes')})", f"{gpu_label} used"),
           Target(f"{by_gpu} ({sel('hw_gpu_memory_limit_bytes')})", f"{gpu_label} size"),
           width=8),
        ts("GPU memory used", "Share of each GPU's memory in use; orange at the alert "
           "threshold.", "percentunit",
           Target(f"{by_gpu} ({sel('hw_gpu_memory_utilization_ratio')})", gpu_label),
           width=8, maximum=1,
           thresholds=rising(param("hw_gpu_memory_utilization", "warning")),
           custom={"thresholdsStyle": {"mode": "dashed"}}),
        ts("GPU temperature", "GPU temperature; orange at the alert threshold.", "celsius",
           Target(f"{by_gpu} ({sel('hw_temperature_celsius')})", gpu_label), width=6,
           thresholds=rising(param("hw_temperature_celsius", "warning")),
           custom={"thresholdsStyle": {"mode": "dashed"}}),
        ts("GPU power", "Power drawn by each GPU, as reported and as energy used per "
           "second.", "watt",
           Target(f"{by_gpu} ({sel('hw_power_watts')})", f"{gpu_label} reported"),
           Target(f"sum by (instance, hw_id, hw_model) ({rate('hw_energy_joules_total')})",
                  f"{gpu_label} from energy"), width=6),
        ts("GPU clocks", "GPU clock frequency by clock domain.", "hertz",
           Target(f"max by (instance, hw_id, hw_model, hw_gpu_clock_type) "
                  f"({sel('hw_gpu_clock_hertz')})", f"{gpu_label} {{{{hw_gpu_clock_type}}}}"),
           width=6),
        ts("GPU ECC errors", "ECC errors per second by type.", "cps",
           Target(f"sum by (instance, hw_id, error_type) ({rate('hw_errors_total')})",
                  "{{instance}} GPU {{hw_id}} {{error_type}}"), width=6),
    ]
    return Dashboard(
        UID_HOST, "Host and GPU",
        "Resources of the hosts the exporter runs on: CPU, memory, filesystems, disk I/O, "
        "network and GPUs.",
        ["host", "gpu"], [],
        [("Summary", summary), ("CPU and memory", cpu_memory), ("Filesystems", filesystems),
         ("Disk I/O", disks), ("Network", network), ("GPU", gpu)])


def exporter() -> Dashboard:
    scrape = [
        stat("Exporter up", "Whether Prometheus scraped the exporter successfully.", "none",
             Target(f"min by (instance) ({sel('up')})", "{{instance}}"), width=4, height=6,
             mappings=UP_DOWN_MAPPINGS, thresholds=steps(("red", None), ("green", 1)),
             options={"colorMode": "background", "graphMode": "none"}),
        stat("Configuration reload", "Whether the last configuration reload succeeded "
             "(SIGHUP or POST /-/reload).", "none",
             Target(f"min by (instance) ({sel('ai_exporter_config_last_reload_successful')})",
                    "{{instance}}"), width=4, height=6, mappings=OK_FAIL_MAPPINGS,
             thresholds=steps(("red", None), ("green", 1)),
             options={"colorMode": "background", "graphMode": "none"}),
        table("Build", "Version, git revision and Python version of each exporter.", "none",
              f"max by (instance, version, revision, python_version) "
              f"({sel('ai_exporter_build_info')})", width=16, hide=("Value",)),
        ts("Scrape duration", "How long Prometheus takes to scrape the exporter.", "s",
           Target(sel("scrape_duration_seconds"), "{{instance}}"), width=8),
        ts("Samples per scrape", "Samples in each scrape of the exporter.", "short",
           Target(sel("scrape_samples_scraped"), "{{instance}}"), width=8),
        ts("Exporter process", "CPU (cores) used by the exporter process.", "short",
           Target(f"sum by (instance) ({rate('process_cpu_seconds_total')})",
                  "{{instance}} CPU"), width=4),
        ts("Exporter memory", "Resident memory of the exporter process.", "bytes",
           Target(f"max by (instance) ({sel('process_resident_memory_bytes')})",
                  "{{instance}}"), width=4),
    ]
    collectors = [
        stat("Collector status", "Whether each collector succeeded in the last scrape; one "
             "failing collector never fails the scrape.", "none",
             Target(f"min by (collector) ({sel('ai_exporter_collector_success')})",
                    "{{collector}}"), width=12, height=8, mappings=OK_FAIL_MAPPINGS,
             thresholds=steps(("red", None), ("green", 1)),
             options={"colorMode": "background", "graphMode": "none",
                      "textMode": "value_and_name"}),
        ts("Collector duration", "Time each collector took in the last scrape.", "s",
           Target(f"max by (collector) ({sel('ai_exporter_collector_duration_seconds')})",
                  "{{collector}}")),
    ]
    ingest = [
        ts("Events accepted", "Events accepted per second by source and kind.", "cps",
           Target(f"sum by (source, kind) ({rate('ai_exporter_events_total')})",
                  "{{source}} {{kind}}"), width=8, stack=True),
        ts("Events rejected", "Events rejected per second by source and reason.", "cps",
           Target(f"sum by (source, reason) ({rate('ai_exporter_events_rejected_total')})",
                  "{{source}} {{reason}}"), width=8),
        ts("Rejected share (10m)", "Share of received events rejected over the last 10 "
           "minutes, per source; orange at the alert threshold.", "percentunit",
           Target(sel("instance_source:ai_exporter_events_rejected_per_received:ratio_rate10m"),
                  "{{instance}} {{source}}"), width=8,
           thresholds=rising(param("ai_exporter_events_rejected_ratio", "warning")),
           custom={"thresholdsStyle": {"mode": "dashed"}}),
        stat("Seconds since last event", "Time since each source last delivered an event.",
             "s",
             Target("time() - max by (source) ("
                    + sel("ai_exporter_events_last_timestamp_seconds") + ")", "{{source}}"),
             width=8, height=6),
        ts("Series per AI metric", "Label sets the exporter holds per AI metric (capped by "
           "ai.max_series_per_metric).", "short",
           Target(f"max by (metric) ({sel('ai_exporter_series')})", "{{metric}}"), width=8,
           height=6),
        ts("Series overflow", "Observations per second folded into the 'other' label set "
           "because a metric reached its series cap.", "cps",
           Target(f"sum by (metric) ({rate('ai_exporter_series_overflow_total')})",
                  "{{metric}}"), width=8, height=6),
    ]
    tail = [
        ts("Tail lag", "Bytes written to each tailed file and not yet read; orange at the "
           "alert threshold.", "bytes",
           Target(f"max by (path) ({sel('ai_exporter_tail_lag_bytes')})", "{{path}}"),
           width=8, thresholds=rising(param("ai_exporter_tail_lag_bytes", "warning")),
           custom={"thresholdsStyle": {"mode": "dashed"}}),
        ts("Tail read rate", "Bytes read per second from each tailed file.", "Bps",
           Target(f"sum by (path) ({rate('ai_exporter_tail_read_bytes_total')})", "{{path}}"),
           width=8),
        ts("Tail lines, events and rejections", "Per second per tailed file: lines read, "
           "events accepted and lines rejected.", "cps",
           Target(f"sum by (path) ({rate('ai_exporter_tail_lines_total')})", "{{path}} lines"),
           Target(f"sum by (path) ({rate('ai_exporter_tail_events_total')})",
                  "{{path}} events"),
           Target(f"sum by (path, reason) ({rate('ai_exporter_tail_rejected_total')})",
                  "{{path}} rejected {{reason}}"), width=8),
        ts("Rotations and truncations", "Rotations (new inode) and truncations seen per "
           "tailed file, per second.", "cps",
           Target(f"sum by (path) ({rate('ai_exporter_tail_rotations_total')})",
                  "{{path}} rotations"),
           Target(f"sum by (path) ({rate('ai_exporter_tail_truncations_total')})",
                  "{{path}} truncations"), width=8),
        stat("Seconds since last read", "Time since each tailed file was last read.", "s",
             Target("time() - max by (path) ("
                    + sel("ai_exporter_tail_last_read_timestamp_seconds") + ")", "{{path}}"),
             width=8, height=8),
        ts("Snapshot file reads", "Reads of JSON snapshot files per second, by outcome.",
           "cps",
           Target(f"sum by (path, outcome) ({rate('ai_exporter_snapshot_reads_total')})",
                  "{{path}} {{outcome}}"), width=8),
    ]
    otlp = [
        ts("OTLP exports", "OTLP metric exports per second by outcome (success, failure, "
           "retry).", "cps",
           Target(f"sum by (outcome) ({rate('ai_exporter_otlp_exports_total')})",
                  "{{outcome}}"), width=6),
        ts("OTLP failure ratio (10m)", "Share of OTLP exports that failed over the last 10 "
           "minutes; orange at the alert threshold.", "percentunit",
           Target(sel("instance:ai_exporter_otlp_exports_failed_per_attempted:ratio_rate10m"),
                  "{{instance}}"), width=6,
           thresholds=rising(param("ai_exporter_otlp_export_failure_ratio", "warning")),
           custom={"thresholdsStyle": {"mode": "dashed"}}),
        ts("OTLP export duration", "Duration of the last OTLP export.", "s",
           Target(f"max by (instance) ({sel('ai_exporter_otlp_export_duration_seconds')})",
                  "{{instance}}"), width=6),
        stat("Seconds since last OTLP success", "Time since the last successful OTLP "
             "export.", "s",
             Target("time() - max by (instance) ("
                    + sel("ai_exporter_otlp_last_success_timestamp_seconds") + ")",
                    "{{instance}}"), width=6, height=8),
    ]
    redis = [
        stat("Redis source", "Whether the Redis Streams source is connected.", "none",
             Target(f"min by (instance) ({sel('ai_exporter_redis_up')})", "{{instance}}"),
             width=4, height=8, mappings=UP_DOWN_MAPPINGS,
             thresholds=steps(("red", None), ("green", 1)),
             options={"colorMode": "background", "graphMode": "none"}),
        ts("Redis stream length", "Entries in each Redis stream.", "short",
           Target(f"max by (stream) ({sel('ai_exporter_redis_stream_length')})", "{{stream}}"),
           width=6),
        ts("Consumer group lag and pending", "Entries not yet delivered to the consumer "
           "group, and delivered but not acknowledged.", "short",
           Target("max by (stream, group) ("
                  + sel("ai_exporter_redis_consumer_group_lag") + ")",
                  "{{stream}}/{{group}} lag"),
           Target("max by (stream, group) ("
                  + sel("ai_exporter_redis_consumer_group_pending") + ")",
                  "{{stream}}/{{group}} pending"), width=8),
        ts("Redis reconnects", "Reconnections to Redis per second.", "cps",
           Target(f"sum by (instance) ({rate('ai_exporter_redis_reconnects_total')})",
                  "{{instance}}"), width=6),
    ]
    security_panels = [
        ts("Authentication failures", "Requests refused for failed authentication, per "
           "second, by reason.", "reqps",
           Target(f"sum by (reason) ({rate('ai_exporter_http_auth_failures_total')})",
                  "{{reason}}"), width=24, height=6),
    ]
    return Dashboard(
        UID_EXPORTER, "Exporter",
        "The exporter itself: scrapes, collectors, event ingestion per source, tailed "
        "files, series caps, OTLP export, Redis Streams and authentication.",
        ["exporter"], [],
        [("Scrapes", scrape), ("Collectors", collectors), ("Event ingestion", ingest),
         ("Tailed files and snapshots", tail), ("OTLP export", otlp),
         ("Redis Streams", redis), ("Access", security_panels)])


def dashboards() -> dict[str, dict[str, Any]]:
    """File name → dashboard JSON, for every provisioned dashboard."""
    built = [overview(), llm(), agents(), security(), host(), exporter()]
    return {f"{d.uid}.json": d.build() for d in built}


def render(dashboard: dict[str, Any]) -> str:
    """The committed form: stable key order, two-space indent, trailing newline."""
    return json.dumps(dashboard, indent=2, ensure_ascii=False) + "\n"


def stale_files(directory: Path = DASHBOARD_DIR) -> list[str]:
    """Dashboard files whose committed JSON differs from what this script generates."""
    expected = dashboards()
    problems = [name for name, dash in expected.items()
                if not (directory / name).exists()
                or (directory / name).read_text(encoding="utf-8") != render(dash)]
    extra = sorted(p.name for p in directory.glob("*.json") if p.name not in expected)
    return problems + [f"{name} (not generated)" for name in extra]


def write(directory: Path = DASHBOARD_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, dash in dashboards().items():
        path = directory / name
        path.write_text(render(dash), encoding="utf-8")
        written.append(path)
    return written


def iter_targets(dashboard: dict[str, Any]) -> Iterable[tuple[dict[str, Any], dict[str, Any]]]:
    """(panel, target) for every query target of a dashboard."""
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel, target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if the committed dashboards differ from the generated ones")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        for name in stale:
            print(f"stale: grafana/dashboards/{name} (run python grafana/build.py)",
                  file=sys.stderr)
        return 1 if stale else 0
    for path in write():
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
