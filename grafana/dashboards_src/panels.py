"""Panels in the house style, built with Grafana's typed builders (grafana-foundation-sdk).

Each helper returns a `Cell`: an SDK panel builder plus the size it takes on the grid. The
helpers set what every panel of these dashboards has (the ``${datasource}`` datasource, a unit,
a description, thresholds, the legend and tooltip settings of its kind) so a dashboard module
only says what differs: title, description, unit, queries and the odd threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, Self, TypeVar

from grafana_foundation_sdk.builders import bargauge as bargauge_builder
from grafana_foundation_sdk.builders import common as common_builder
from grafana_foundation_sdk.builders import dashboard as dashboard_builder
from grafana_foundation_sdk.builders import heatmap as heatmap_builder
from grafana_foundation_sdk.builders import prometheus as prometheus_builder
from grafana_foundation_sdk.builders import stat as stat_builder
from grafana_foundation_sdk.builders import table as table_builder
from grafana_foundation_sdk.builders import timeseries as timeseries_builder
from grafana_foundation_sdk.cog import builder as cog_builder
from grafana_foundation_sdk.cog import variants as cog_variants
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models import heatmap as heatmap_model
from grafana_foundation_sdk.models import prometheus as prometheus_model

DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")

# --- thresholds and value mappings -------------------------------------------------------
Steps = tuple[tuple[str, float | None], ...]
"""Absolute threshold steps, (color, value); the first color applies below the first value."""

GREEN: Steps = (("green", None),)
UP_DOWN = {0: ("down", "red"), 1: ("up", "green")}
OK_FAIL = {0: ("failing", "red"), 1: ("ok", "green")}


def steps(*pairs: tuple[str, float | None]) -> Steps:
    return tuple(pairs)


def rising(warning: float, critical: float | None = None) -> Steps:
    """Green, then orange at ``warning``, then red at ``critical`` (when given)."""
    pairs: list[tuple[str, float | None]] = [("green", None), ("orange", warning)]
    if critical is not None:
        pairs.append(("red", critical))
    return tuple(pairs)


def falling(warning: float, critical: float) -> Steps:
    """Red below ``critical``, orange below ``warning``, green above."""
    return (("red", None), ("orange", critical), ("green", warning))


def thresholds_model(pairs: Steps) -> model.ThresholdsConfig:
    return model.ThresholdsConfig(mode=model.ThresholdsMode.ABSOLUTE,
                                  steps=[model.Threshold(value=v, color=c) for c, v in pairs])


def _thresholds(pairs: Steps) -> dashboard_builder.ThresholdsConfig:
    return (dashboard_builder.ThresholdsConfig().mode(model.ThresholdsMode.ABSOLUTE)
            .steps(thresholds_model(pairs).steps))


def _mappings(states: dict[int, tuple[str, str]]) -> list[model.ValueMapping]:
    """Value → (text, color) as one value mapping; none when ``states`` is empty."""
    if not states:
        return []
    options = {str(value): model.ValueMappingResult(text=text, color=color, index=index)
               for index, (value, (text, color)) in enumerate(sorted(states.items()))}
    return [model.ValueMap(options=options)]


@dataclass(frozen=True)
class Override:
    """Other thresholds for the fields whose display name matches ``pattern`` (a regexp,
    or with ``regexp=False`` the exact name)."""

    pattern: str
    thresholds: Steps
    regexp: bool = True


# --- queries -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """One Prometheus query of a panel."""

    expr: str
    legend: str = ""
    instant: bool = False
    fmt: prometheus_model.PromQueryFormat = prometheus_model.PromQueryFormat.TIME_SERIES
    # also fetch the exemplars of the ``_bucket`` series the query
    # reads (``exemplar: true``), drawn as points linking to the trace (the datasource's
    # ``exemplarTraceIdDestinations``). One target per panel is enough.
    exemplar: bool = False


def _query(target: Target, index: int) -> prometheus_builder.Dataquery:
    query = (prometheus_builder.Dataquery().ref_id(chr(ord("A") + index)).datasource(DATASOURCE)
             .editor_mode(prometheus_model.QueryEditorMode.CODE).expr(target.expr)
             .legend_format(target.legend or "__auto").format(target.fmt))
    if target.exemplar:
        query.exemplar(True)
    return query.instant() if target.instant else query.range()


def link(title: str, uid: str) -> dashboard_builder.DashboardLink:
    """A panel link to another dashboard, keeping the time range and variables."""
    return (dashboard_builder.DashboardLink(title)
            .url(f"/d/{uid}?${{__url_time_range}}&${{__all_variables}}").target_blank(False))


# --- what every panel has ----------------------------------------------------------------
PanelBuilder = (timeseries_builder.Panel | stat_builder.Panel | bargauge_builder.Panel
                | heatmap_builder.Panel | table_builder.Panel | dashboard_builder.Panel)
"""The SDK panel builders these dashboards use (the layout sets their id and grid position)."""


class _FieldPanel(Protocol):
    """The builder methods shared by the panels that show fields (all but the alert list)."""

    def title(self, title: str) -> Self: ...
    def description(self, description: str) -> Self: ...
    def datasource(self, datasource: model.DataSourceRef) -> Self: ...
    def targets(self, targets: list[cog_builder.Builder[cog_variants.Dataquery]]) -> Self: ...
    def unit(self, unit: str) -> Self: ...
    def thresholds(self, thresholds: cog_builder.Builder[model.ThresholdsConfig]) -> Self: ...
    def mappings(self, mappings: list[model.ValueMapping]) -> Self: ...
    def color_scheme(self, color: cog_builder.Builder[model.FieldColor]) -> Self: ...
    def min(self, min_val: float) -> Self: ...
    def max(self, max_val: float) -> Self: ...
    def decimals(self, decimals: float) -> Self: ...
    def no_value(self, no_value: str) -> Self: ...
    def links(self, links: list[cog_builder.Builder[model.DashboardLink]]) -> Self: ...
    def override_by_name(self, name: str,
                         properties: list[model.DynamicConfigValue]) -> Self: ...
    def override_by_regexp(self, regexp: str,
                           properties: list[model.DynamicConfigValue]) -> Self: ...
    def with_transformation(self, transformation: model.DataTransformerConfig) -> Self: ...


@dataclass(frozen=True)
class Field:
    """The field settings a panel may change from the defaults of its kind."""

    thresholds: Steps = GREEN
    minimum: float | None = None
    maximum: float | None = None
    decimals: int | None = None
    no_value: str | None = None
    mappings: dict[int, tuple[str, str]] = field(default_factory=dict)
    overrides: Sequence[Override] = ()
    links: Sequence[dashboard_builder.DashboardLink] = ()


P = TypeVar("P", bound=_FieldPanel)


def _fields(panel: P, *, title: str, description: str, unit: str, targets: Sequence[Target],
            fields: Field, color: model.FieldColorModeId) -> P:
    """Set what every field panel has on ``panel``: texts, datasource, queries, field config."""
    panel.title(title).description(description).datasource(DATASOURCE).unit(unit)
    panel.targets([_query(t, i) for i, t in enumerate(targets)])
    panel.thresholds(_thresholds(fields.thresholds)).mappings(_mappings(fields.mappings))
    panel.color_scheme(dashboard_builder.FieldColor().mode(color))
    if fields.minimum is not None:
        panel.min(fields.minimum)
    if fields.maximum is not None:
        panel.max(fields.maximum)
    if fields.decimals is not None:
        panel.decimals(fields.decimals)
    if fields.no_value is not None:
        panel.no_value(fields.no_value)
    for override in fields.overrides:
        value = [model.DynamicConfigValue(id_val="thresholds",
                                          value=thresholds_model(override.thresholds))]
        if override.regexp:
            panel.override_by_regexp(override.pattern, value)
        else:
            panel.override_by_name(override.pattern, value)
    if fields.links:
        panel.links(list(fields.links))
    return panel


@dataclass(frozen=True)
class Cell:
    """A panel and the grid cells it takes (the grid is 24 wide)."""

    panel: PanelBuilder
    width: int
    height: int


def _reduce() -> common_builder.ReduceDataOptions:
    return common_builder.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False)


# --- the panel kinds ---------------------------------------------------------------------
def ts(title: str, description: str, unit: str, *targets: Target, width: int = 12,
       height: int = 8, stack: bool = False, dashed: bool = False,
       thresholds: Steps = GREEN, maximum: float | None = None) -> Cell:
    """A time series; ``stack`` stacks series that add up to a whole, ``dashed`` draws the
    thresholds as dashed lines (an alert threshold next to the data it guards)."""
    panel = _fields(timeseries_builder.Panel(), title=title, description=description, unit=unit,
                    targets=targets, fields=Field(thresholds=thresholds, maximum=maximum),
                    color=model.FieldColorModeId.PALETTE_CLASSIC)
    panel.draw_style(common.GraphDrawStyle.LINE).line_width(1)
    panel.fill_opacity(40 if stack else 10).show_points(common.VisibilityMode.NEVER)
    panel.span_nulls(False).axis_soft_min(0)
    if stack:
        panel.stacking(common_builder.StackingConfig().mode(common.StackingMode.NORMAL)
                       .group("A"))
    if dashed:
        panel.thresholds_style(common_builder.GraphThresholdsStyleConfig()
                               .mode(common.GraphThresholdsStyleMode.DASHED))
    panel.legend(common_builder.VizLegendOptions().display_mode(common.LegendDisplayMode.TABLE)
                 .placement(common.LegendPlacement.BOTTOM).show_legend(True)
                 .calcs(["mean", "max", "lastNotNull"]))
    panel.tooltip(common_builder.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI)
                  .sort(common.SortOrder.DESCENDING))
    return Cell(panel, width, height)


def stat(title: str, description: str, unit: str, *targets: Target, width: int = 4,
         height: int = 5, thresholds: Steps = GREEN, decimals: int | None = None,
         no_value: str | None = None, overrides: Sequence[Override] = (),
         links: Sequence[dashboard_builder.DashboardLink] = ()) -> Cell:
    """Big numbers, one per series, with a sparkline."""
    fields = Field(thresholds=thresholds, decimals=decimals, no_value=no_value,
                   overrides=overrides, links=links)
    panel = _fields(stat_builder.Panel(), title=title, description=description, unit=unit,
                    targets=targets, fields=fields,
                    color=model.FieldColorModeId.THRESHOLDS)
    panel.reduce_options(_reduce()).color_mode(common.BigValueColorMode.VALUE)
    panel.graph_mode(common.BigValueGraphMode.AREA).justify_mode(common.BigValueJustifyMode.AUTO)
    panel.text_mode(common.BigValueTextMode.AUTO).orientation(common.VizOrientation.AUTO)
    return Cell(panel, width, height)


def status(title: str, description: str, target: Target, states: dict[int, tuple[str, str]],
           *, width: int, height: int, names: bool = False) -> Cell:
    """A 1/0 state per series as a colored tile (``names`` shows the series name too)."""
    panel = _fields(stat_builder.Panel(), title=title, description=description, unit="none",
                    targets=[target],
                    fields=Field(thresholds=(("red", None), ("green", 1)), mappings=states),
                    color=model.FieldColorModeId.THRESHOLDS)
    panel.reduce_options(_reduce()).color_mode(common.BigValueColorMode.BACKGROUND)
    panel.graph_mode(common.BigValueGraphMode.NONE).justify_mode(common.BigValueJustifyMode.AUTO)
    panel.text_mode(common.BigValueTextMode.VALUE_AND_NAME if names
                    else common.BigValueTextMode.AUTO)
    panel.orientation(common.VizOrientation.AUTO)
    return Cell(panel, width, height)


def bargauge(title: str, description: str, unit: str, *targets: Target, width: int = 8,
             height: int = 8, thresholds: Steps = GREEN, minimum: float | None = None,
             maximum: float | None = None, overrides: Sequence[Override] = (),
             links: Sequence[dashboard_builder.DashboardLink] = ()) -> Cell:
    """Horizontal bars, one per series: a share of a whole or a ranking."""
    fields = Field(thresholds=thresholds, minimum=minimum, maximum=maximum,
                   overrides=overrides, links=links)
    panel = _fields(bargauge_builder.Panel(), title=title, description=description, unit=unit,
                    targets=targets, fields=fields,
                    color=model.FieldColorModeId.THRESHOLDS)
    panel.reduce_options(_reduce()).orientation(common.VizOrientation.HORIZONTAL)
    panel.display_mode(common.BarGaugeDisplayMode.GRADIENT).show_unfilled(True)
    panel.min_viz_height(10)
    return Cell(panel, width, height)


def heatmap(title: str, description: str, unit: str, expr: str, *, width: int = 12,
            height: int = 8) -> Cell:
    """A classic histogram's bucket rates over time (``le`` buckets, not calculated)."""
    target = Target(expr, "{{le}}", fmt=prometheus_model.PromQueryFormat.HEATMAP)
    panel = _fields(heatmap_builder.Panel(), title=title, description=description, unit=unit,
                    targets=[target], fields=Field(),
                    color=model.FieldColorModeId.THRESHOLDS)
    panel.calculate(False).cell_gap(1)
    panel.y_axis(heatmap_builder.YAxisConfig().unit(unit)
                 .axis_placement(common.AxisPlacement.LEFT))
    panel.color(heatmap_builder.HeatmapColorOptions().mode(heatmap_model.HeatmapColorMode.SCHEME)
                .scheme("Oranges").steps(64).exponent(0.5).fill("dark-orange").reverse(False))
    panel.rows_frame(heatmap_builder.RowsHeatmapOptions().layout(common.HeatmapCellLayout.AUTO))
    panel.mode(common.TooltipDisplayMode.SINGLE).show_y_histogram().show_legend()
    panel.cell_values(heatmap_builder.CellValues().unit("short"))
    panel.filter_values(heatmap_builder.FilterValueRange().le(1e-9))
    return Cell(panel, width, height)


def table(title: str, description: str, unit: str, expr: str, *, width: int = 12,
          height: int = 8, hide: Sequence[str] = (),
          rename: dict[str, str] | None = None) -> Cell:
    """An instant-query table; ``hide`` drops columns, ``rename`` relabels them."""
    target = Target(expr, instant=True, fmt=prometheus_model.PromQueryFormat.TABLE)
    panel = _fields(table_builder.Panel(), title=title, description=description, unit=unit,
                    targets=[target], fields=Field(),
                    color=model.FieldColorModeId.THRESHOLDS)
    excluded = {"Time": True, **{name: True for name in hide}}
    panel.with_transformation(model.DataTransformerConfig(
        id_val="organize", options={"excludeByName": excluded, "renameByName": rename or {}}))
    panel.align(common.FieldTextAlignment.AUTO).filterable(True)
    panel.show_header(True).cell_height(common.TableCellHeight.SM)
    panel.footer(common_builder.TableFooterOptions().show(False))
    return Cell(panel, width, height)


def alert_list(title: str, description: str, *, width: int, height: int,
               label_filter: str) -> Cell:
    """Grafana's alert list of the datasource's firing and pending alerts.

    The SDK release for Grafana 11.2 has no builder for this panel type, so its options are
    the plain JSON of Grafana's alertlist panel (public/app/plugins/panel/alertlist).
    """
    panel = (dashboard_builder.Panel().type("alertlist").title(title).description(description)
             .datasource(DATASOURCE).options({
                 "viewMode": "list", "groupMode": "default", "groupBy": [], "maxItems": 20,
                 "sortOrder": 3, "dashboardAlerts": False, "alertName": "",
                 "alertInstanceLabelFilter": label_filter, "datasource": "Prometheus",
                 "stateFilter": {"firing": True, "pending": True, "noData": False,
                                 "normal": False, "error": True}}))
    return Cell(panel, width, height)
