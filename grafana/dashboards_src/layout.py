"""A dashboard as sections of panels, laid out and turned into Grafana JSON by the SDK.

`Board` holds what a dashboard module decides (uid, title, variables, rows of `Cell`s); this
module adds what every dashboard shares (the datasource, job and instance variables, the
dashboard links by tag, time settings, the built-in annotation) and places the panels on the
24-column grid row by row, so a module never writes a grid position or a panel id.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from grafana_foundation_sdk.builders import dashboard as dashboard_builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as model

from .panels import DATASOURCE, Cell

SCHEMA_VERSION: int = model.Dashboard().schema_version
"""The schema version the SDK release emits: Grafana 11.2, the version docker-compose.yml pins."""

TAG = "ai-metrics-exporter"
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


# --- variables ---------------------------------------------------------------------------
def query_variable(name: str, query: str, description: str) -> dashboard_builder.QueryVariable:
    """A multi-value variable over ``label_values`` whose All matches every value."""
    return (dashboard_builder.QueryVariable(name).label(name).description(description)
            .datasource(DATASOURCE)
            .query({"query": query, "refId": f"{name}-variable", "qryType": 1})
            .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED).regex("")
            .sort(model.VariableSort.ALPHABETICAL_ASC).multi(True).include_all(True)
            .all_value(".+").hide(model.VariableHide.DONT_HIDE)
            .current(model.VariableOption(selected=True, text=["All"], value=["$__all"]))
            .options([]))


def datasource_variable() -> dashboard_builder.DatasourceVariable:
    return (dashboard_builder.DatasourceVariable("datasource").label("Data source")
            .description("Prometheus that scrapes ai-metrics-exporter.").type("prometheus")
            .current(model.VariableOption(selected=True, text="Prometheus", value="prometheus"))
            .regex("").hide(model.VariableHide.DONT_HIDE))


def job_variable() -> dashboard_builder.QueryVariable:
    return query_variable("job", "label_values(ai_exporter_build_info, job)",
                          "Prometheus job of the exporter.")


def instance_variable() -> dashboard_builder.QueryVariable:
    return query_variable("instance",
                          'label_values(ai_exporter_build_info{job=~"$job"}, instance)',
                          "Exporter instance (host:port).")


def component_variable() -> dashboard_builder.QueryVariable:
    return query_variable(
        "component",
        'label_values({__name__=~"ai_tasks_total|ai_errors_total|ai_component_up|'
        'ai_component_heartbeat_up|ai_resolution_active|ai_process_running", '
        'job=~"$job", instance=~"$instance"}, component)',
        "AI platform component (agent, MCP server, gateway, ...).")


def provider_variable() -> dashboard_builder.QueryVariable:
    return query_variable(
        "provider",
        'label_values(ai_llm_requests_total{job=~"$job", instance=~"$instance"}, '
        "gen_ai_provider_name)",
        "LLM provider (gen_ai.provider.name).")


def model_variable() -> dashboard_builder.QueryVariable:
    return query_variable(
        "model",
        'label_values(ai_llm_requests_total{job=~"$job", instance=~"$instance", '
        'gen_ai_provider_name=~"$provider"}, gen_ai_request_model)',
        "Requested model (gen_ai.request.model).")


# --- the dashboard -----------------------------------------------------------------------
@dataclass(frozen=True)
class Section:
    """A row: its title and its panels, placed left to right and wrapped at the grid width."""

    title: str
    cells: Sequence[Cell]


@dataclass(frozen=True)
class Board:
    uid: str
    title: str
    description: str
    tags: Sequence[str]
    variables: Sequence[dashboard_builder.QueryVariable]
    sections: Sequence[Section]

    def builder(self) -> dashboard_builder.Dashboard:
        """The SDK dashboard builder, panels placed and numbered."""
        board = (
            dashboard_builder.Dashboard(self.title).uid(self.uid).description(self.description)
            .tags([TAG, *self.tags]).timezone("browser").readonly()
            .tooltip(model.DashboardCursorSync.CROSSHAIR).version(1).time("now-1h", "now")
            .timepicker(dashboard_builder.TimePicker()
                        .refresh_intervals(["10s", "30s", "1m", "5m", "15m", "1h"]))
            .refresh("30s").live_now(False).fiscal_year_start_month(0).week_start("")
            .annotation(dashboard_builder.AnnotationQuery().built_in(1)
                        .datasource(model.DataSourceRef(type_val="grafana", uid="-- Grafana --"))
                        .enable(True).hide(True).icon_color("rgba(0, 211, 255, 1)")
                        .name("Annotations & Alerts").type("dashboard"))
            .link(dashboard_builder.DashboardLink("AI metrics dashboards")
                  .type(model.DashboardLinkType.DASHBOARDS).tags([TAG]).as_dropdown(True)
                  .include_vars(True).keep_time(True).target_blank(False)
                  .icon("external link").tooltip("").url(""))
            .with_variable(datasource_variable()).with_variable(job_variable())
            .with_variable(instance_variable()))
        for variable in self.variables:
            board.with_variable(variable)
        panel_id, y = 0, 0
        for section in self.sections:
            panel_id += 1
            board.with_row(dashboard_builder.Row(section.title).id(panel_id).collapsed(False)
                           .grid_pos(model.GridPos(h=1, w=GRID_WIDTH, x=0, y=y)))
            y += 1
            x, row_height = 0, 0
            for cell in section.cells:
                if x + cell.width > GRID_WIDTH:
                    x, y, row_height = 0, y + row_height, 0
                panel_id += 1
                board.with_panel(cell.panel.id(panel_id)
                                 .grid_pos(model.GridPos(h=cell.height, w=cell.width, x=x, y=y)))
                x += cell.width
                row_height = max(row_height, cell.height)
            y += row_height
        return board

    def to_json(self) -> dict[str, Any]:
        """The dashboard as Grafana JSON: the SDK's encoding, plus ``"id": null``, which the
        SDK leaves out when unset and provisioning wants explicit (a fixed uid, no id)."""
        encoded: dict[str, Any] = json.loads(json.dumps(self.builder().build(), cls=JSONEncoder))
        return {"id": None, **encoded}
