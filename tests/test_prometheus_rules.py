"""Prometheus configuration, recording and alert rules: promtool's checks and unit tests,
and the conventions every alert follows (names, severities, annotations, runbooks, tests,
metric names from the catalog)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter import catalog
from tests.alerting import (
    PROMETHEUS_CONFIG,
    RULE_FILES,
    RULE_TEST_FILES,
    RUNBOOK_URL,
    alert_forms,
    alert_rules,
    compress_expr,
    compressed_rule_files,
    load_groups,
    metric_names,
    recording_rules,
    runbook_queries,
    runbook_sections,
    template_queries,
)
from tests.procs import require_binary

ALERT_NAME = re.compile(r"^(Ai[A-Z]|Host[A-Z])[A-Za-z0-9]+$|^Watchdog$")
RECORD_NAME = re.compile(r"^[a-z][a-z0-9_]*:[a-z][a-z0-9_]*:[a-z0-9_]+$")
SEVERITIES = {"critical", "warning", "info", "none"}
# Burn-rate alerts react through their windows, not a pending period (SRE workbook).
NO_FOR = {"AiTaskErrorBudgetBurn", "Watchdog"}
# The external label that tells the two servers of an HA pair apart.
HA_LABEL = "prometheus_replica"
# Rule files about the AI platform, summed over every exporter replica of a job; the
# others are about one replica (exporter) or one host (host) and keep `instance`.
REPLICA_SUMMED_FILES = {"ai.rules.yml", "slo.rules.yml", "anomaly.rules.yml"}
REPLICA_FILES = {"exporter.rules.yml"}
GROUPING = re.compile(r"\b(by|without|on|ignoring)\s*\(([^)]*)\)")
# Series of Prometheus and Alertmanager themselves, which runbooks may query.
SELF_MONITORING = re.compile(r"^(prometheus|alertmanager)_")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_binary("promtool"), *args], capture_output=True,
                          text=True, timeout=600, check=False)


def known_names() -> set[str]:
    return set(catalog.known_series_names()) | {r["record"] for r in recording_rules()}


# --- promtool ---------------------------------------------------------------------------
@pytest.mark.e2e
def test_promtool_check_config() -> None:
    result = promtool("check", "config", str(PROMETHEUS_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_config_scrapes_exporter_prometheus_and_alertmanager() -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert {"ai-metrics-exporter", "prometheus", "alertmanager"} <= jobs
    assert config["rule_files"] == ["rules/*.yml"]
    targets = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert targets
    exporter_job = next(j for j in config["scrape_configs"]
                        if j["job_name"] == "ai-metrics-exporter")
    assert exporter_job["static_configs"][0]["targets"][0].endswith(":10102")


def test_prometheus_config_labels_each_server_of_an_ha_pair() -> None:
    """Two servers run the shipped file, each with its own prometheus_replica; the label
    is dropped from alerts so both servers' copies are identical for Alertmanager."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    external = config["global"]["external_labels"]
    assert external.get(HA_LABEL), external
    relabel = config["alerting"]["alert_relabel_configs"]
    drops = [r for r in relabel if r.get("action") == "labeldrop"]
    assert any(re.fullmatch(r["regex"], HA_LABEL) for r in drops), relabel
    # Nothing else about an alert is rewritten: the other external labels stay on it.
    assert all(r.get("action") == "labeldrop" for r in relabel), relabel
    assert not any(re.fullmatch(r["regex"], name) for r in drops for name in external
                   if name != HA_LABEL)


@pytest.mark.e2e
def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.e2e
def test_promtool_test_rules() -> None:
    result = promtool("test", "rules", *map(str, RULE_TEST_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.e2e
def test_compressed_rules_stay_valid(tmp_path: Path) -> None:
    """The end-to-end test runs the rules with every window shortened; they must parse."""
    files = compressed_rule_files(tmp_path, 60)
    result = promtool("check", "rules", *files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert compress_expr("rate(x[5m]) + avg_over_time(y[1d:1m])", 60) == \
        "rate(x[5s]) + avg_over_time(y[1440s:1s])"
    assert compress_expr("a and b offset 1d", 60) == "a and b offset 1440s"


# --- rule conventions -------------------------------------------------------------------
@pytest.mark.parametrize("rule", alert_rules(),
                         ids=lambda r: f"{r['alert']}-{r['labels']['severity']}")
def test_alert_follows_conventions(rule: dict[str, Any]) -> None:
    name = rule["alert"]
    assert ALERT_NAME.match(name), f"{name}: CamelCase with an Ai/Host prefix"
    assert rule["labels"]["severity"] in SEVERITIES
    annotations = rule["annotations"]
    assert set(annotations) >= {"summary", "description", "runbook_url"}
    assert annotations["summary"].endswith("."), "summary is one sentence ending in a period"
    assert "{{" not in annotations["summary"], "summary is static; details go in description"
    assert "{{" in annotations["description"] or name == "Watchdog", \
        "description is templated with the labels and value that matter"
    assert annotations["runbook_url"] == f"{RUNBOOK_URL}#{name.lower()}"
    if name in NO_FOR:
        assert "for" not in rule
    else:
        assert "for" in rule, f"{name} needs a for: to ride out scrape blips"


def test_runbook_has_an_entry_for_every_alert_and_nothing_else() -> None:
    sections = runbook_sections()
    alerts = {r["alert"].lower() for r in alert_rules()}
    assert alerts - set(sections) == set(), "alerts without a runbook entry"
    assert set(sections) - alerts == set(), "runbook entries for alerts that do not exist"


@pytest.mark.parametrize("anchor", sorted(runbook_sections()))
def test_runbook_entry_explains_cause_impact_diagnosis_fix(anchor: str) -> None:
    body = runbook_sections()[anchor]
    for part in ("**Cause.**", "**Impact.**", "**Diagnosis.**", "**Fix.**"):
        assert part in body, f"{anchor}: missing {part}"
    assert runbook_queries(body), f"{anchor}: diagnosis has no ```promql block"


@pytest.mark.e2e
def test_runbook_queries_parse_and_use_known_metrics(tmp_path: Path) -> None:
    known = known_names()
    rules: list[dict[str, str]] = []
    unknown: dict[str, set[str]] = {}
    for anchor, body in runbook_sections().items():
        for query in runbook_queries(body):
            rules.append({"record": f"runbook:{anchor}:query{len(rules)}", "expr": query})
            missing = {n for n in metric_names(query)
                       if n not in known and not SELF_MONITORING.match(n)}
            if missing:
                unknown.setdefault(anchor, set()).update(missing)
    assert unknown == {}, "runbook queries use metrics the exporter does not serve"
    path = tmp_path / "runbook-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "runbooks", "rules": rules}]}))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_use_only_catalog_metrics_and_recorded_series() -> None:
    known = known_names()
    unknown: dict[str, set[str]] = {}
    for group in load_groups():
        for rule in group["rules"]:
            name = rule.get("alert") or rule["record"]
            used = metric_names(str(rule["expr"]))
            for text in rule.get("annotations", {}).values():
                for query in template_queries(text):
                    used |= metric_names(query)
            missing = used - known
            if missing:
                unknown[name] = missing
    assert unknown == {}


def test_metric_scanner() -> None:
    expr = ('sum by (job, instance) (rate(ai_tasks_total{status="failed"}[5m])) '
            '/ on (job) group_left () max by (job) (ai_task_success_objective_ratio) '
            '> scalar(parameter:x:warning) and vector(1) unless up offset 5m')
    assert metric_names(expr) == {"ai_tasks_total", "ai_task_success_objective_ratio",
                                  "parameter:x:warning", "up"}
    assert template_queries('{{ with printf "max(a_b{job=%q})" $labels.job | query }}') \
        == ['max(a_b{job=%q})']


def test_recording_rules_are_named_level_metric_operations() -> None:
    for rule in recording_rules():
        assert RECORD_NAME.match(rule["record"]), rule["record"]
        assert "_total:" not in rule["record"], "drop _total after rate()"


def test_every_parameter_used_is_defined_and_every_defined_one_used() -> None:
    defined = {r["record"] for r in recording_rules() if r["record"].startswith("parameter:")}
    used = set()
    for rule in alert_rules():
        used |= {n for n in metric_names(str(rule["expr"])) if n.startswith("parameter:")}
    assert used == defined


def test_ai_rules_aggregate_so_extra_labels_do_not_split_results() -> None:
    """Every AI selector sits inside an aggregation or a recorded series (demo="true")."""
    ai_prefixes = ("ai_", "gen_ai_")
    for group in load_groups():
        if group["file"] != "ai.rules.yml":
            continue
        for rule in group["rules"]:
            expr = str(rule["expr"])
            for name in metric_names(expr):
                if not name.startswith(ai_prefixes) or name.startswith("ai_exporter_"):
                    continue
                pattern = re.compile(
                    r"(sum|max|min|avg) (by|without) \([^)]*\) \((rate|increase)?\(?"
                    + re.escape(name))
                assert pattern.search(expr), f"{rule.get('alert') or rule['record']}: {name}"


def test_ai_rules_sum_the_replicas_away() -> None:
    """With N replicas sharing a stream, an AI rule groups by job and domain labels only:
    never by instance or pod (one result per replica), and its recorded series are named
    at the job level."""
    for group in load_groups():
        if group["file"] not in REPLICA_SUMMED_FILES:
            continue
        for rule in group["rules"]:
            name = rule.get("alert") or rule["record"]
            expr = str(rule["expr"])
            for keyword, labels in GROUPING.findall(expr):
                found = {label.strip() for label in labels.split(",")}
                assert not found & {"instance", "pod"}, f"{name}: {keyword} ({labels})"
            if "record" in rule:
                assert re.match(r"job[_:]", rule["record"]), name
            description = str(rule.get("annotations", {}).get("description", ""))
            assert "$labels.instance" not in description, name


def test_replica_alerts_keep_the_replica() -> None:
    """The exporter's own alerts name the replica at fault: every aggregation keeps
    instance and pod."""
    for group in load_groups():
        if group["file"] not in REPLICA_FILES:
            continue
        for rule in group["rules"]:
            name = rule.get("alert") or rule["record"]
            for keyword, labels in GROUPING.findall(str(rule["expr"])):
                found = {label.strip() for label in labels.split(",")}
                assert keyword in ("by", "on") and {"instance", "pod"} <= found, \
                    f"{name}: {keyword} ({labels})"


def test_replica_cases_cover_two_replicas() -> None:
    """The promtool cases for N replicas feed two instances (and pods) to every rule file
    that sums them away."""
    doc = yaml.safe_load((PROMETHEUS_CONFIG.parent / "tests" / "replicas.test.yml")
                         .read_text(encoding="utf-8"))
    assert {Path(f).name for f in doc["rule_files"]} >= {
        "ai.rules.yml", "slo.rules.yml", "exporter.rules.yml"}
    series = [s["series"] for test in doc["tests"] for s in test["input_series"]]
    for replica, pod in (("a:10102", "exporter-0"), ("b:10102", "exporter-1")):
        assert any(f'instance="{replica}"' in s and f'pod="{pod}"' in s for s in series)
    assert any("stale" in s["values"] for test in doc["tests"]
               for s in test["input_series"]), "a case where a replica disappears"


# --- promtool unit tests cover every alert ------------------------------------------------
def _rule_tests() -> list[dict[str, Any]]:
    tests = []
    for path in RULE_TEST_FILES:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        for test in doc["tests"]:
            tests.append({**test, "file": path.name})
    return tests


def test_every_test_group_has_an_interval() -> None:
    for test in _rule_tests():
        assert "interval" in test, f"{test['file']}: {test['name']} (promtool 2.42 needs it)"


def test_every_rule_file_is_unit_tested() -> None:
    tested = set()
    for path in RULE_TEST_FILES:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        tested |= {Path(f).name for f in doc["rule_files"]}
    assert tested == {p.name for p in RULE_FILES}


@pytest.mark.parametrize(("alertname", "severity"), alert_forms())
def test_every_alert_has_a_firing_and_a_quiet_case(alertname: str, severity: str) -> None:
    fires_with_annotations = False
    quiet = False
    for test in _rule_tests():
        for case in test.get("alert_rule_test", []):
            if case["alertname"] != alertname:
                continue
            expected = case.get("exp_alerts") or []
            if not expected:
                quiet = True
            for alert in expected:
                if alert["exp_labels"].get("severity") == severity and \
                        {"summary", "description", "runbook_url"} <= set(
                            alert.get("exp_annotations", {})):
                    fires_with_annotations = True
    assert fires_with_annotations, "no case where it fires with exact labels and annotations"
    if alertname != "Watchdog":  # always firing by design
        assert quiet, "no case where it must not fire"
