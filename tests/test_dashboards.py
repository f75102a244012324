"""The provisioned Grafana dashboards, tested without a Grafana server.

1. the committed JSON is exactly what ``grafana/build.py`` generates;
2. the grafana/dashboard-linter rules of ``conventions/dashboards.md``;
3. every expression parses (``promtool check rules`` on a generated rules file);
4. every metric name exists in the catalog or is a recording rule;
5. against a real Prometheus scraping the real exporter (demo workload plus probes,
   process matching, a tailed file, snapshots, Redis Streams, OTLP push and OTLP intake),
   every panel query returns at least one series.
"""

from __future__ import annotations

import http.server
import importlib.util
import json
import re
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import requests
import yaml

from exporter import catalog
from tests.otlpcases import chat_attrs, genai_metrics, traces
from tests.procs import (
    LOOPBACK,
    Exporter,
    Proc,
    Prometheus,
    free_port,
    require_binary,
    sample_value,
    static_job,
    wait_until,
)

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD_DIR = ROOT / "grafana" / "dashboards"
RULES_DIR = ROOT / "prometheus" / "rules"


def _load_build() -> ModuleType:
    # build.py imports the dashboard modules next to it (grafana/dashboards_src) the way a
    # script does, from its own directory on the import path.
    if str(ROOT / "grafana") not in sys.path:
        sys.path.append(str(ROOT / "grafana"))
    spec = importlib.util.spec_from_file_location("grafana_build", ROOT / "grafana" / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


build = _load_build()

DASHBOARD_FILES = sorted(DASHBOARD_DIR.glob("*.json"))
DASHBOARDS: dict[str, dict[str, Any]] = {
    p.name: json.loads(p.read_text(encoding="utf-8")) for p in DASHBOARD_FILES}

REQUIRED_TITLES = {"AI platform overview", "LLM providers and cost", "Agents and tasks",
                   "Security and errors", "Host and GPU", "Exporter"}
MODERN_PANELS = {"timeseries", "stat", "gauge", "bargauge", "table", "heatmap", "text",
                 "alertlist", "row"}
PANELS_WITH_UNIT = {"timeseries", "stat", "gauge", "bargauge", "table", "heatmap"}
# Grafana unit ids (packages/grafana-data/src/valueFormats/categories.ts) this project may
# use; a typo such as "percentunits" is not among them.
VALID_UNITS = {
    "none", "short", "percent", "percentunit", "s", "ms", "µs", "ns", "m", "h", "d",
    "dtdurations", "bytes", "decbytes", "bits", "Bps", "binBps", "bps", "pps", "iops", "ops",
    "reqps", "rps", "cps", "wps", "currencyUSD", "celsius", "watt", "joule", "hertz",
    "dateTimeAsIso", "dateTimeFromNow", "bool", "bool_on_off", "bool_yes_no",
}
DATASOURCE_REF = {"type": "prometheus", "uid": "${datasource}"}
RATE_FUNCTIONS = {"rate", "irate", "increase"}


# --- a small PromQL scanner: enough to find every vector selector and its context --------
_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<range>\[[^\]]*\])
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=,(){}])
""", re.VERBOSE)
_LIST_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
_WORD_OPERATORS = {"and", "or", "unless", "bool", "offset", "atan2"}
_AGGREGATORS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count",
                "count_values", "bottomk", "topk", "quantile"}


@dataclass
class Selector:
    name: str
    matchers: list[tuple[str, str, str]]
    range: str | None
    parent: str  # the innermost function call around the selector, "" if none


def tokenize(expr: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if match is None:
            raise ValueError(f"cannot scan {expr[pos:pos + 20]!r} in {expr!r}")
        pos = match.end()
        kind = match.lastgroup or ""
        if kind != "ws":
            tokens.append((kind, match.group()))
    return tokens


def _close(tokens: list[tuple[str, str]], start: int) -> int:
    """Index just past the parenthesis that closes the one at ``start``."""
    depth = 0
    for i in range(start, len(tokens)):
        depth += {"(": 1, ")": -1}.get(tokens[i][1], 0)
        if depth == 0:
            return i + 1
    raise ValueError("unbalanced parentheses")


def selectors(expr: str) -> list[Selector]:
    """Every vector selector in ``expr`` with its matchers, range and enclosing call."""
    tokens = tokenize(expr)
    found: list[Selector] = []
    stack: list[str] = []
    pending_call = ""
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        after = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        if kind == "ident" and text in _LIST_KEYWORDS:
            i = _close(tokens, i + 1) if after == "(" else i + 1
            continue
        if kind == "ident" and text in _WORD_OPERATORS:
            i += 1
            continue
        if kind == "ident" and after == "(":
            stack.append(text)
            i += 2
            continue
        if kind == "ident" and text in _AGGREGATORS and after in _LIST_KEYWORDS:
            pending_call = text
            i += 1
            continue
        if kind == "ident" or text == "{":
            name = text if kind == "ident" else ""
            j = i + 1 if kind == "ident" else i
            matchers: list[tuple[str, str, str]] = []
            if j < len(tokens) and tokens[j][1] == "{":
                j += 1
                while tokens[j][1] != "}":
                    label, op, value = tokens[j][1], tokens[j + 1][1], tokens[j + 2][1]
                    matchers.append((label, op, value))
                    j += 3
                    if tokens[j][1] == ",":
                        j += 1
                j += 1
            rng = None
            if j < len(tokens) and tokens[j][0] == "range":
                rng = tokens[j][1]
                j += 1
            found.append(Selector(name, matchers, rng, stack[-1] if stack else ""))
            i = j
            continue
        if text == "(":
            stack.append(pending_call)
            pending_call = ""
        elif text == ")":
            stack.pop()
        i += 1
    return found


def metric_name(selector: Selector) -> str:
    if selector.name:
        return selector.name
    for label, op, value in selector.matchers:
        if label == "__name__" and op == "=":
            return value.strip('"')
    return ""


def test_scanner_finds_selectors_and_context() -> None:
    """The scanner itself, on expressions with aggregations, label lists and ranges."""
    found = selectors('sum by (le) (rate(a_total{job=~"$job", x="y"}[$__rate_interval])) '
                      '/ on (job) group_left () max(b{job="j"} > 0) or vector(1)')
    assert [(s.name, s.parent, s.range) for s in found] == [
        ("a_total", "rate", "[$__rate_interval]"), ("b", "max", None)]
    assert found[0].matchers == [("job", "=~", '"$job"'), ("x", "=", '"y"')]
    nameless = selectors('{__name__=~"a|b", job=~".+"}')
    assert nameless[0].name == "" and nameless[0].matchers[0][0] == "__name__"
    assert selectors("1 - time()") == []


# --- what the dashboards query -----------------------------------------------------------
@dataclass
class Query:
    dashboard: str
    where: str  # panel title or variable name
    expr: str
    is_variable: bool = False


def variable_selector(query: str) -> str:
    """The series selector inside ``label_values(<selector>, <label>)``."""
    match = re.fullmatch(r"label_values\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\)", query.strip(),
                         re.DOTALL)
    assert match, f"variable query {query!r} is not label_values(<selector>, <label>)"
    return match.group(1)


def queries() -> list[Query]:
    out = []
    for name, dash in DASHBOARDS.items():
        for panel, target in build.iter_targets(dash):
            out.append(Query(name, panel["title"], target["expr"]))
        for var in dash["templating"]["list"]:
            if var["type"] == "query":
                out.append(Query(name, f"variable {var['name']}",
                                 variable_selector(var["query"]["query"]), is_variable=True))
    return out


QUERIES = queries()


def substitute(expr: str) -> str:
    """What Grafana would send with every variable on All, at a 15s scrape interval."""
    expr = expr.replace("$__rate_interval", "5m")
    return re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*(?::[a-z]+)?\}?", ".+", expr)


def recording_rules() -> dict[str, str]:
    """Recorded series name → one of its expressions, from prometheus/rules/."""
    recorded: dict[str, str] = {}
    for path in sorted(RULES_DIR.glob("*.yml")):
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            for rule in group["rules"]:
                if "record" in rule:
                    recorded[rule["record"]] = rule["expr"]
    return recorded


RECORDED = recording_rules()


def job_level(name: str) -> bool:
    """A series recorded at the job level: summed over every exporter replica, so it
    carries no ``instance`` (the dashboards select it by job alone)."""
    return name in RECORDED and re.match(r"job[_:]", name) is not None


def labels_of(name: str) -> set[str]:
    """Label names a series carries: from the catalog, or a recording rule's level."""
    for spec in catalog.all_metrics():
        if name in spec.series_names or name == spec.name:
            return {"job", "instance", *spec.labels}
    if name in RECORDED:
        level = name.split(":", maxsplit=1)[0].split("_")
        return {build.DOMAIN_LABELS[word] for word in level if word in build.DOMAIN_LABELS}
    return {"job", "instance"}


# --- 1. generated ------------------------------------------------------------------------
def test_committed_dashboards_are_generated() -> None:
    assert build.stale_files() == [], "run: python grafana/build.py"


def test_every_required_dashboard_exists() -> None:
    assert {d["title"] for d in DASHBOARDS.values()} == REQUIRED_TITLES


def test_thresholds_follow_alert_parameters() -> None:
    """A threshold drawn on a panel is the value the alert uses."""
    params = build.load_parameters()
    host = DASHBOARDS["ai-host-gpu.json"]
    cpu = next(p for p in host["panels"] if p["title"] == "CPU busy (5m)")
    values = [s["value"] for s in cpu["fieldConfig"]["defaults"]["thresholds"]["steps"]]
    assert params["parameter:system_cpu_utilization:warning"] in values


def test_thresholds_come_from_the_parameters_file_given(tmp_path: Path) -> None:
    """The builders read nothing at import: another parameters file gives other thresholds,
    and the committed JSON is then stale."""
    rules = yaml.safe_load((RULES_DIR / "parameters.rules.yml").read_text(encoding="utf-8"))
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("record") == "parameter:system_cpu_utilization:warning":
                rule["expr"] = "vector(0.42)"
    path = tmp_path / "parameters.rules.yml"
    path.write_text(yaml.safe_dump(rules), encoding="utf-8")
    host = build.dashboards(path)["ai-host-gpu.json"]
    cpu = next(p for p in host["panels"] if p["title"] == "CPU busy (5m)")
    assert 0.42 in [s["value"] for s in cpu["fieldConfig"]["defaults"]["thresholds"]["steps"]]
    assert "ai-host-gpu.json" in build.stale_files(parameters_file=path)


def test_check_command_passes() -> None:
    """``python grafana/build.py --check`` (what CI runs) exits 0 on the committed JSON."""
    assert build.main(["--check"]) == 0


# --- 2. the dashboard-linter rules -------------------------------------------------------
@pytest.mark.parametrize("name", list(DASHBOARDS))
def test_dashboard_settings(name: str) -> None:
    dash = DASHBOARDS[name]
    assert dash["uid"] and len(dash["uid"]) <= 40
    assert name == f"{dash['uid']}.json"
    assert dash["id"] is None
    assert dash["title"] and dash["tags"] and build.TAG in dash["tags"]
    assert dash["schemaVersion"] == build.SCHEMA_VERSION
    assert dash["time"]["from"] and dash["time"]["to"] and dash["refresh"]
    assert dash["description"]


@pytest.mark.parametrize("name", list(DASHBOARDS))
def test_dashboard_variables(name: str) -> None:
    variables = {v["name"]: v for v in DASHBOARDS[name]["templating"]["list"]}
    datasources = [v for v in variables.values() if v["type"] == "datasource"]
    assert len(datasources) == 1
    ds = datasources[0]
    assert (ds["name"], ds["label"], ds["query"]) == ("datasource", "Data source", "prometheus")
    assert {"job", "instance"} <= set(variables)
    for var in variables.values():
        if var["type"] != "query":
            continue
        assert var["label"] == var["name"], var["name"]
        assert var["datasource"] == DATASOURCE_REF, var["name"]
        assert var["multi"] is True and var["includeAll"] is True, var["name"]
        assert var["allValue"] == ".+", var["name"]
        assert var["refresh"] == 2, f"{var['name']}: refresh on time range change"
        assert var["name"] in ("job", "instance") or var["name"] in build.DOMAIN_LABELS
        if var["name"] != "job":
            selector = selectors(variable_selector(var["query"]["query"]))[0]
            assert ("job", "=~", '"$job"') in selector.matchers, var["name"]


@pytest.mark.parametrize("name", list(DASHBOARDS))
def test_panels(name: str) -> None:
    dash = DASHBOARDS[name]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in dash["panels"]:
        where = f"{name}: {panel['title']!r}"
        assert panel["type"] in MODERN_PANELS, where
        if panel["type"] == "row":
            continue
        assert panel["title"] and panel.get("description"), where
        assert panel["datasource"] == DATASOURCE_REF, where
        if panel["type"] in PANELS_WITH_UNIT:
            assert panel["targets"], where
            assert panel["fieldConfig"]["defaults"].get("unit") in VALID_UNITS, where
            for target in panel["targets"]:
                assert target["datasource"] == DATASOURCE_REF, where
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, where


@pytest.mark.parametrize("name", list(DASHBOARDS))
def test_panels_do_not_overlap(name: str) -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in DASHBOARDS[name]["panels"]:
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in taken, f"{panel['title']!r} overlaps {taken[(x, y)]!r}"
                taken[(x, y)] = panel["title"]


@pytest.mark.parametrize("query", QUERIES, ids=lambda q: f"{q.dashboard}:{q.where}")
def test_selectors(query: Query) -> None:
    """job/instance (and domain variable) filters, rate windows, counters only in rates."""
    variables = {v["name"] for v in DASHBOARDS[query.dashboard]["templating"]["list"]}
    found = selectors(query.expr)
    assert found, f"{query.expr!r} selects nothing"
    for sel in found:
        name = metric_name(sel) or "{__name__=~...}"
        matchers = set(sel.matchers)
        if not (query.is_variable and query.where == "variable job"):
            assert ("job", "=~", '"$job"') in matchers, f"{name}: no job filter"
            assert ("instance", "=~", '"$instance"') in matchers or query.where in (
                "variable instance",) or job_level(name), f"{name}: no instance filter"
            if job_level(name):
                assert ("instance", "=~", '"$instance"') not in matchers, \
                    f"{name} is summed over the replicas: it has no instance to filter"
        for var, label in build.DOMAIN_LABELS.items():
            if var in variables and label in labels_of(name) and not query.is_variable:
                assert (label, "=~", f'"${var}"') in matchers, f"{name}: no ${var} filter"
        if sel.range is not None:
            assert sel.range == "[$__rate_interval]", f"{name}: range {sel.range}"
            assert sel.parent in RATE_FUNCTIONS, f"{name}: range outside rate()"
        if name.endswith("_total") and not query.is_variable:  # label_values takes series
            assert sel.range and sel.parent in RATE_FUNCTIONS, f"{name}: counter not rated"


def test_dashboards_link_to_each_other() -> None:
    uids = {d["uid"] for d in DASHBOARDS.values()}
    for name, dash in DASHBOARDS.items():
        links = [link for link in dash["links"] if link["type"] == "dashboards"]
        assert links and links[0]["tags"] == [build.TAG], name
        assert links[0]["keepTime"] and links[0]["includeVars"], name
        for panel in dash["panels"]:
            for link in panel.get("links", []):
                target = re.match(r"/d/([^?/]+)", link["url"])
                assert target and target.group(1) in uids, f"{name}: {link['url']}"
    overview = DASHBOARDS["ai-platform-overview.json"]
    # Every link matched the pattern above.
    linked = {target.group(1) for panel in overview["panels"] for link in panel.get("links", [])
              if (target := re.match(r"/d/([^?/]+)", link["url"]))}
    assert uids - {overview["uid"], build.UID_EXPORTER} <= linked


def test_overview_has_an_alert_list() -> None:
    overview = DASHBOARDS["ai-platform-overview.json"]
    alertlists = [p for p in overview["panels"] if p["type"] == "alertlist"]
    assert len(alertlists) == 1
    assert alertlists[0]["options"]["stateFilter"]["firing"] is True


# --- 3. every expression parses ----------------------------------------------------------
@pytest.mark.e2e
def test_every_expression_parses_with_promtool(tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    rules = [{"record": f"dashboard:check_{i}:expr", "expr": substitute(q.expr)}
             for i, q in enumerate(QUERIES)]
    path = tmp_path / "dashboards.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True,
                            text=True, timeout=60, check=False)
    where = {f"dashboard:check_{i}:expr": f"{q.dashboard}: {q.where}"
             for i, q in enumerate(QUERIES)}
    assert result.returncode == 0, (result.stdout + result.stderr, where)
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


# --- 4. every metric exists --------------------------------------------------------------
def test_every_metric_is_in_the_catalog_or_recorded() -> None:
    known = catalog.known_series_names() | set(RECORDED)
    unknown: set[str] = set()
    for query in QUERIES:
        for sel in selectors(query.expr):
            names = [metric_name(sel)]
            for label, op, value in sel.matchers:
                if label == "__name__" and op == "=~":
                    names = value.strip('"').split("|")
            unknown.update(f"{query.dashboard}: {n}" for n in names if n not in known)
    assert not unknown


# --- 5. every panel query returns data from the real exporter ----------------------------
# Metrics that cannot have data on this machine, with the reason. Keep this list minimal.
NO_DATA_HERE = {
    "hw_gpu_utilization_ratio": "no GPU on this machine (NVML collector)",
    "hw_gpu_memory_usage_bytes": "no GPU on this machine (NVML collector)",
    "hw_gpu_memory_limit_bytes": "no GPU on this machine (NVML collector)",
    "hw_gpu_memory_utilization_ratio": "no GPU on this machine (NVML collector)",
    "hw_temperature_celsius": "no GPU on this machine (NVML collector)",
    "hw_power_watts": "no GPU on this machine (NVML collector)",
    "hw_energy_joules_total": "no GPU on this machine (NVML collector)",
    "hw_gpu_clock_hertz": "no GPU on this machine (NVML collector)",
    "hw_errors_total": "no GPU on this machine (NVML collector)",
}


class _Sink(http.server.BaseHTTPRequestHandler):
    """Loopback HTTP server: a health route to probe and an OTLP/HTTP receiver."""

    received: list[int] = []

    def do_GET(self) -> None:
        self._answer(b'{"status":"ok"}', "application/json")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        _Sink.received.append(len(body))
        self._answer(b"", "application/x-protobuf")

    def _answer(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _serve(server: http.server.ThreadingHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    return thread


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    openssl = require_binary("openssl")
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


EVENT_LINES: list[dict[str, Any]] = [
    {"kind": "llm_call", "provider": "openai", "model": "gpt-4o", "input_tokens": 100,
     "output_tokens": 20, "duration_seconds": 0.5, "cost_usd": 0.001},
    {"kind": "task", "component": "planner", "status": "queued", "task_id": "tail-1"},
    # no cost given, so priced from the table with cached input
    # tokens (the savings panels), and a model the table has no price for (unpriced).
    {"kind": "llm_call", "provider": "openai", "model": "gpt-4o", "input_tokens": 1000,
     "cache_read_input_tokens": 600, "output_tokens": 50, "duration_seconds": 0.4},
    {"kind": "llm_call", "provider": "vllm", "model": "local-llama-unpriced",
     "input_tokens": 300, "output_tokens": 40, "duration_seconds": 0.3},
    # both sides, a tool error and an ended session each, for the MCP rows
    {"kind": "mcp_call", "side": "client", "method": "tools/call", "tool": "search",
     "duration_seconds": 0.12, "transport": "pipe"},
    {"kind": "mcp_call", "side": "client", "method": "tools/call", "tool": "search",
     "duration_seconds": 0.3, "error_type": "tool_error", "transport": "pipe",
     "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7"},
    {"kind": "mcp_call", "side": "server", "method": "tools/call", "tool": "search",
     "duration_seconds": 0.1, "transport": "pipe"},
    {"kind": "mcp_call", "side": "server", "method": "tools/call", "tool": "search",
     "duration_seconds": 0.2, "error_type": "tool_error", "transport": "pipe"},
    {"kind": "mcp_session", "side": "client", "duration_seconds": 30.0, "transport": "pipe"},
    {"kind": "mcp_session", "side": "server", "duration_seconds": 29.5, "transport": "pipe"},
]


OTLP_PROTOBUF = {"Content-Type": "application/x-protobuf"}
# What an instrumented application sends the OTLP intake: GenAI chat spans (one failed),
# a tool span and a span that is no GenAI call (ignored).
OTLP_SPANS: list[dict[str, Any]] = [
    {"attrs": chat_attrs(model="gpt-4o-mini", input_tokens=120, output_tokens=30,
                         extra={"gen_ai.response.time_to_first_chunk": 0.2}),
     "seconds": 0.8},
    {"attrs": chat_attrs(model="gpt-4o-mini", extra={"error.type": "rate_limit_exceeded"}),
     "error": True, "seconds": 0.1},
    {"attrs": {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "otlp-search",
               "gen_ai.agent.name": "otlp-agent"}, "name": "execute_tool otlp-search",
     "seconds": 0.05},
    {"attrs": {"http.request.method": "GET"}, "name": "GET /health", "kind": 2},
]


def send_otlp(exporter: Exporter) -> None:
    """OTLP/HTTP protobuf to the intake, as an instrumented application sends it: spans, the
    same request again (an exporter's retry: duplicates), and GenAI metrics (ignored: spans
    are the counted signal)."""
    spans = traces(OTLP_SPANS, service="otlp-agent", trace=0xDA5B0A2D).SerializeToString()
    for body in (spans, spans):
        response = exporter.post("/v1/traces", data=body, headers=OTLP_PROTOBUF)
        assert response.status_code == 200, response.text
    metrics = genai_metrics([0.3, 1.2], [40, 80], service="otlp-agent").SerializeToString()
    response = exporter.post("/v1/metrics", data=metrics, headers=OTLP_PROTOBUF)
    assert response.status_code == 200, response.text
    text = exporter.metrics()
    for outcome in ("mapped", "duplicate", "ignored"):
        assert sample_value(text, "ai_exporter_otlp_intake_items_total",
                            {"signal": "traces", "outcome": outcome}), outcome


@dataclass
class Stack:
    exporter: Exporter
    prometheus: Prometheus


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The exporter running the demo workload with every other source configured, and a
    Prometheus (1s scrape and rule evaluation) loaded with the project's rules."""
    tmp = tmp_path_factory.mktemp("dashboards")
    cleanup: list[Any] = []
    try:
        http_server = http.server.ThreadingHTTPServer((LOOPBACK, 0), _Sink)
        cleanup.append(http_server)
        _serve(http_server)
        cert, key = _self_signed(tmp)
        https_server = http.server.ThreadingHTTPServer((LOOPBACK, 0), _Sink)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        https_server.socket = context.wrap_socket(https_server.socket, server_side=True)
        cleanup.append(https_server)
        _serve(https_server)
        http_port, https_port = http_server.server_address[1], https_server.server_address[1]

        redis_port = free_port()
        redis = Proc([require_binary("redis-server"), "--port", str(redis_port), "--bind",
                      LOOPBACK, "--save", "", "--appendonly", "no"], tmp / "redis.log")
        cleanup.append(redis)
        redis_cli = require_binary("redis-cli")

        def xadd(event: dict[str, Any]) -> None:
            subprocess.run([redis_cli, "-h", LOOPBACK, "-p", str(redis_port), "XADD",
                            "ai-events", "*", "event", json.dumps(event)],
                           check=True, capture_output=True, timeout=10)

        wait_until(lambda: subprocess.run([redis_cli, "-h", LOOPBACK, "-p", str(redis_port),
                                           "PING"], capture_output=True, timeout=5,
                                          check=False).stdout.strip() == b"PONG",
                   20, what="redis PING")
        for event in EVENT_LINES:
            xadd(event)

        events_dir = tmp / "events"
        events_dir.mkdir()
        (events_dir / "agent.jsonl").write_text(
            "".join(json.dumps(e) + "\n" for e in EVENT_LINES) + "{not json\n")
        (tmp / "snapshot.json").write_text(json.dumps({"queue": {"depth": 3}}))

        port = free_port()
        config = {
            # Above what the demo reaches per metric; the pushed tool calls below exceed it.
            "ai": {"max_series_per_metric": 80},
            "components": {
                "probes": [
                    {"name": "tls-gateway", "kind": "gateway",
                     "url": f"https://127.0.0.1:{https_port}/health",
                     "tls": {"ca_file": str(cert)}},
                    {"name": "mcp-local", "kind": "mcp_server",
                     "url": f"http://{LOOPBACK}:{http_port}/health"},
                ],
                # The exporter never matches itself: watch the Redis server started above
                # (its process title is "redis-server 127.0.0.1:<port>").
                "processes": [{"name": "redis", "name_regex": "^redis-server$",
                               "cmdline_regex": f":{redis_port}\\b"}],
            },
            "sources": {
                "tail": {"enabled": True, "base_dir": str(tmp), "paths": ["events/*.jsonl"],
                         "state_dir": str(tmp / "tail-state")},
                "snapshot": {"enabled": True, "base_dir": str(tmp), "interval_seconds": 1,
                             "files": [{"path": "snapshot.json", "metrics": [
                                 {"name": "snapshot_queue_depth", "path": "queue.depth"}]}]},
                "redis_streams": {"enabled": True, "url": f"redis://{LOOPBACK}:{redis_port}/0",
                                  "streams": ["ai-events"], "block_ms": 100},
            },
            "otlp": {"endpoint": f"http://{LOOPBACK}:{http_port}", "protocol": "http/protobuf",
                     "interval_seconds": 1},
        }
        exporter = Exporter(tmp, config=config, command="demo", port=port,
                            args=["--demo.rate=400", "--demo.episode=none"])
        cleanup.append(exporter)
        # A critical security event (the demo makes one every few minutes) and a malformed
        # event, so the unresolved-critical and rejected-events panels have series.
        response = exporter.post("/api/v1/events", json=[
            {"kind": "security_event", "category": "prompt_injection", "severity": "critical",
             "event_id": "dashboards-test-1"},
            {"kind": "no_such_kind"}])
        assert response.status_code in (200, 202, 207, 400), response.text
        send_otlp(exporter)
        # Tool calls with more distinct tool names than the series cap, for the overflow
        # panel; sent once the demo's failed tool calls have their own series, which then
        # keep counting (only new label sets fold into "other").
        wait_until(lambda: sample_value(exporter.metrics(), "ai_tool_calls_total",
                                        {"outcome": "error"}) is not None,
                   30, interval=0.5, what="a failed tool call from the demo")
        response = exporter.post("/api/v1/events", json=[
            {"kind": "tool_call", "tool": f"overflow-tool-{i}", "agent": "planner",
             "duration_seconds": 0.01} for i in range(100)])
        assert response.status_code in (200, 202), response.text
        rules_dir = tmp / "rules"
        rules_dir.mkdir()
        rule_files = []
        for path in sorted(RULES_DIR.glob("*.yml")):
            (rules_dir / path.name).write_text(path.read_text(encoding="utf-8"))
            rule_files.append(str(rules_dir / path.name))
        # The one exporter scraped as two replicas (two targets, told apart by instance
        # and pod), as Prometheus sees N exporters of one job: the panels must sum them.
        target = f"{LOOPBACK}:{exporter.port}"
        job = static_job("ai-metrics-exporter", target)
        job["static_configs"] = [{"targets": [target], "labels": {"instance": instance,
                                                                  "pod": pod}}
                                 for instance, pod in REPLICAS]
        prometheus = Prometheus(tmp, [job], interval="1s", rule_files=rule_files,
                                evaluation_interval="1s")
        cleanup.append(prometheus)
        yield Stack(exporter, prometheus)
    finally:
        for item in reversed(cleanup):
            if isinstance(item, http.server.ThreadingHTTPServer):
                item.shutdown()
                item.server_close()
            else:
                item.stop()


# Dashboards about one exporter or one host at a time, whose panels keep `instance`.
PER_REPLICA_DASHBOARDS = {"ai-exporter.json", "ai-host-gpu.json"}
REPLICAS = (("replica-a:10102", "exporter-0"), ("replica-b:10102", "exporter-1"))


def _excluded(expr: str) -> str:
    reasons = {NO_DATA_HERE[n] for s in selectors(expr) if (n := metric_name(s)) in NO_DATA_HERE}
    return "; ".join(sorted(reasons))


@pytest.mark.e2e
def test_every_panel_query_returns_data(stack: Stack) -> None:
    prom = stack.prometheus
    pending = {i: q for i, q in enumerate(QUERIES) if not _excluded(q.expr)}
    excluded = [q for q in QUERIES if _excluded(q.expr)]
    assert all(q.dashboard == "ai-host-gpu.json" for q in excluded), excluded
    prom.wait_for('up{job="ai-metrics-exporter"} == 1', timeout=30)
    deadline = time.monotonic() + 90
    while pending and time.monotonic() < deadline:
        for i, query in list(pending.items()):
            if prom.query(substitute(query.expr)):
                del pending[i]
        if pending:
            time.sleep(1)
    missing = [f"{q.dashboard}: {q.where}: {substitute(q.expr)}" for q in pending.values()]
    assert not missing, "queries without data:\n" + "\n".join(missing)


@pytest.mark.e2e
def test_otlp_sink_received_exports(stack: Stack) -> None:
    """The OTLP panels' data is real: the local receiver got export requests."""
    wait_until(lambda: _Sink.received, 20, what="an OTLP export at the local receiver")
    result = requests.get(f"{stack.prometheus.url}/api/v1/query", timeout=10, params={
        "query": 'sum(ai_exporter_otlp_exports_total{outcome="success"})'}).json()
    assert float(result["data"]["result"][0]["value"][1]) >= 1


@pytest.mark.e2e
def test_panels_sum_over_replicas(stack: Stack) -> None:
    """Scraped as two replicas, every AI panel gives one series per domain label set, with
    no instance or pod (unless its legend names the instance: host panels), and a summed
    rate is about twice one replica's."""
    prom = stack.prometheus
    prom.wait_for('count(up{job="ai-metrics-exporter"} == 1) == 2', timeout=30)
    per_replica = []
    for name, dash in DASHBOARDS.items():
        if name in PER_REPLICA_DASHBOARDS:
            continue
        for panel, target in build.iter_targets(dash):
            if "{{instance}}" in target.get("legendFormat", ""):
                continue
            for series in prom.query(substitute(target["expr"])):
                if {"instance", "pod"} & set(series["metric"]):
                    per_replica.append(f"{name}: {panel['title']}: {target['expr']}")
    assert per_replica == [], "panels split by replica:\n" + "\n".join(per_replica)

    every = 'ai_llm_requests_total{job="ai-metrics-exporter"}[5m]'
    first = f'ai_llm_requests_total{{job="ai-metrics-exporter", instance="{REPLICAS[0][0]}"}}[5m]'

    def rates() -> tuple[float, float] | None:
        both = prom.query(f"sum(rate({every}))")
        one = prom.query(f"sum(rate({first}))")
        recorded = prom.query('sum(job_provider:ai_llm_requests:rate5m)')
        if not (both and one and recorded):
            return None
        total, single = float(both[0]["value"][1]), float(one[0]["value"][1])
        assert abs(float(recorded[0]["value"][1]) - total) <= 0.25 * total
        return (total, single) if single > 0 else None

    total, single = wait_until(rates, 30, interval=1, what="LLM request rates")
    assert 1.6 * single <= total <= 2.4 * single, (total, single)
