"""Alertmanager configuration: amtool's checks, the receiver each alert is routed to,
secrets read from files, every template rendered, and inhibition proven on a real
Alertmanager that delivers to a test receiver."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.alerting import (
    ALERTMANAGER_CONFIG,
    ALERTMANAGER_DIR,
    PAGER_TOKEN,
    ROOT,
    RUNBOOK_URL,
    TEMPLATE_FILES,
    Alertmanager,
    WebhookReceiver,
    alert_forms,
    alert_rules,
    alertmanager_overlay,
    expected_receivers,
    secret_files,
)
from tests.procs import require_binary, wait_until

TEMPLATE_GLOB = str(ALERTMANAGER_DIR / "templates" / "*.tmpl")
GRAFANA_URL = "http://localhost:3000"
PER_ALERT_TEMPLATES = {"ai.labels"}
CONFIG = yaml.safe_load(ALERTMANAGER_CONFIG.read_text(encoding="utf-8"))


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_binary("amtool"), *args], capture_output=True, text=True,
                          timeout=60, check=False)


# --- configuration ------------------------------------------------------------------------
@pytest.mark.e2e
def test_amtool_check_config() -> None:
    result = amtool("check-config", str(ALERTMANAGER_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.e2e
def test_test_overlay_passes_check_config(tmp_path: Path) -> None:
    overlay = alertmanager_overlay(tmp_path, "http://127.0.0.1:9", factor=60)
    result = amtool("check-config", str(overlay))
    assert result.returncode == 0, result.stdout + result.stderr


def test_route_tree_groups_by_incident_and_uses_matchers() -> None:
    route = CONFIG["route"]
    assert {"alertname", "job", "component"} <= set(route["group_by"])
    assert (route["group_wait"], route["group_interval"], route["repeat_interval"]) == \
        ("30s", "5m", "4h")
    pager = next(r for r in route["routes"] if r["receiver"] == "pager")
    assert pager["repeat_interval"] == "1h"
    text = ALERTMANAGER_CONFIG.read_text(encoding="utf-8")
    assert not re.search(r"^\s*(match|match_re|source_match|target_match):", text, re.M), \
        "use matchers / source_matchers / target_matchers"


@pytest.mark.parametrize(("alertname", "severity"), alert_forms())
@pytest.mark.e2e
def test_every_alert_reaches_its_receiver(alertname: str, severity: str) -> None:
    expected = ",".join(expected_receivers(alertname, severity))
    result = amtool("config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}",
                    f"--verify.receivers={expected}", f"severity={severity}",
                    f"alertname={alertname}", "job=ai-metrics-exporter",
                    "instance=exporter:10102")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.e2e
def test_unrouted_alerts_fall_back_to_email() -> None:
    result = amtool("config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}",
                    "--verify.receivers=email", "alertname=SomethingElse")
    assert result.returncode == 0, result.stdout + result.stderr


def test_receivers_for_paging_chat_and_email() -> None:
    receivers = {r["name"]: r for r in CONFIG["receivers"]}
    assert receivers["pager"]["webhook_configs"][0]["send_resolved"] is True
    assert "slack_configs" in receivers["chat"]
    assert "email_configs" in receivers["email"]
    assert "webhook_configs" in receivers["heartbeat"]


def test_every_secret_comes_from_a_documented_file() -> None:
    text = ALERTMANAGER_CONFIG.read_text(encoding="utf-8")
    for inline in ("api_url:", "smtp_auth_password:", "credentials:", "routing_key:",
                   "service_key:", "auth_password:", "password:"):
        assert not re.search(rf"^\s*{inline}", text, re.M), f"inline secret {inline}"
    files = secret_files(CONFIG)
    assert len(files) >= 4
    readme = (ALERTMANAGER_DIR / "secrets" / "README.md").read_text(encoding="utf-8")
    for rel in files:
        assert rel.startswith("/etc/alertmanager/secrets/"), rel
        assert f"`{Path(rel).name}`" in readme, f"{rel} is not documented"
    ignore = (ALERTMANAGER_DIR / "secrets" / ".gitignore").read_text(encoding="utf-8")
    assert "*" in ignore.split()


# --- templates ----------------------------------------------------------------------------
def _defined_templates() -> list[str]:
    names = []
    for path in TEMPLATE_FILES:
        names += re.findall(r'{{-?\s*define\s+"([^"]+)"', path.read_text(encoding="utf-8"))
    return names


def _alert(alertname: str, severity: str, status: str = "firing",
           **labels: str) -> dict[str, Any]:
    rule = next(r for r in alert_rules()
                if r["alert"] == alertname and r["labels"]["severity"] == severity)
    return {
        "status": status,
        "labels": {"alertname": alertname, "severity": severity,
                   "job": "ai-metrics-exporter", "instance": "exporter:10102", **labels},
        "annotations": {"summary": rule["annotations"]["summary"],
                        "description": f"{alertname} description.",
                        "runbook_url": rule["annotations"]["runbook_url"]},
        "startsAt": "2026-01-01T00:00:00Z",
        "endsAt": "2026-01-01T01:00:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=up",
        "fingerprint": "0123456789abcdef",
    }


def _data(alerts: list[dict[str, Any]], receiver: str = "chat") -> dict[str, Any]:
    def common(key: str) -> dict[str, str]:
        first = alerts[0][key]
        return {k: v for k, v in first.items() if all(a[key].get(k) == v for a in alerts)}

    labels = common("labels")
    status = "firing" if any(a["status"] == "firing" for a in alerts) else "resolved"
    return {"receiver": receiver, "status": status, "alerts": alerts,
            "groupLabels": {k: v for k, v in labels.items()
                            if k in ("alertname", "job", "instance", "component",
                                     "gen_ai_provider_name")},
            "commonLabels": labels, "commonAnnotations": common("annotations"),
            "externalURL": "http://alertmanager:9093"}


def render(name: str, data: dict[str, Any], tmp_path: Path, html: bool = False) -> str:
    path = tmp_path / f"data-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    # Templates of one alert get the first alert, the others the whole notification.
    dot = "(index .Alerts 0)" if name in PER_ALERT_TEMPLATES else "."
    args = ["template", "render", f"--template.glob={TEMPLATE_GLOB}",
            f'--template.text={{{{ template "{name}" {dot} }}}}', f"--template.data={path}"]
    if html:
        args.append("--template.type=html")
    result = amtool(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_templates_used_by_receivers_are_defined() -> None:
    used = set(re.findall(r'template "([^"]+)"', ALERTMANAGER_CONFIG.read_text()))
    assert used and used <= set(_defined_templates())


@pytest.mark.parametrize("name", _defined_templates())
@pytest.mark.parametrize("status", ["firing", "resolved"])
@pytest.mark.e2e
def test_every_template_renders(name: str, status: str, tmp_path: Path) -> None:
    data = _data([_alert("AiComponentDown", "critical", status, component="mcp-github",
                         kind="mcp_server", check="probe")])
    out = render(name, data, tmp_path, html=name.endswith(".html"))
    assert out.strip(), f"{name} rendered nothing"
    assert "<no value>" not in out


@pytest.mark.e2e
def test_title_names_status_count_alert_and_incident(tmp_path: Path) -> None:
    firing = _data([_alert("AiLlmProviderErrorRateHigh", "critical",
                           gen_ai_provider_name="anthropic")])
    assert render("ai.title", firing, tmp_path) == \
        "[FIRING:1] AiLlmProviderErrorRateHigh (critical) · anthropic on exporter:10102"
    resolved = _data([_alert("AiComponentDown", "critical", "resolved",
                             component="mcp-github")])
    assert render("ai.title", resolved, tmp_path) == \
        "[RESOLVED] AiComponentDown (critical) · mcp-github on exporter:10102"


@pytest.mark.e2e
def test_body_has_summary_description_runbook_and_grafana_links(tmp_path: Path) -> None:
    alerts = [_alert("AiLlmProviderErrorRateHigh", "critical", gen_ai_provider_name="anthropic")]
    text = render("ai.text", _data(alerts), tmp_path)
    assert text.startswith("An LLM provider fails a large share of requests.\n")
    assert "FIRING: AiLlmProviderErrorRateHigh description." in text
    assert f"Runbook: {RUNBOOK_URL}#aillmprovidererrorratehigh" in text
    assert "Source: http://prometheus:9090/graph?g0.expr=up" in text
    assert (f"Dashboard: {GRAFANA_URL}/d/ai-llm-providers?orgId=1&var-job=ai-metrics-exporter"
            "&var-instance=exporter%3A10102&var-provider=anthropic") in text
    assert "Labels: gen_ai_provider_name=anthropic instance=exporter:10102 " \
        "job=ai-metrics-exporter severity=critical\n" in text
    html = render("ai.email.html", _data(alerts), tmp_path, html=True)
    assert f'<a href="{RUNBOOK_URL}#aillmprovidererrorratehigh">Runbook</a>' in html
    assert f'<a href="{GRAFANA_URL}/d/ai-llm-providers?orgId=1' in html


@pytest.mark.e2e
def test_body_lists_every_alert_of_a_group(tmp_path: Path) -> None:
    alerts = [_alert("HostFilesystemAlmostFull", "warning", system_device=d,
                     system_filesystem_mountpoint=m)
              for d, m in (("/dev/sda1", "/"), ("/dev/sdb1", "/data"))]
    text = render("ai.text", _data(alerts), tmp_path)
    assert text.count("FIRING: HostFilesystemAlmostFull description.") == 2
    assert render("ai.title", _data(alerts), tmp_path) == \
        "[FIRING:2] HostFilesystemAlmostFull (warning) on exporter:10102"


@pytest.mark.parametrize("alertname", sorted({name for name, _ in alert_forms()}))
@pytest.mark.e2e
def test_every_alert_links_to_an_existing_dashboard(alertname: str, tmp_path: Path) -> None:
    severity = next(s for n, s in alert_forms() if n == alertname)
    uid = render("ai.dashboard_uid", _data([_alert(alertname, severity)]), tmp_path)
    dashboards = {json.loads(p.read_text())["uid"]
                  for p in (ROOT / "grafana" / "dashboards").glob("*.json")}
    assert uid in dashboards


# --- a real Alertmanager: routing, inhibition, delivery ------------------------------------
@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory,
                 receiver: WebhookReceiver) -> Iterator[Alertmanager]:
    workdir = tmp_path_factory.mktemp("alertmanager")
    # Grouping timers 60 times shorter: group_wait 0.5s, group_interval 5s.
    config = alertmanager_overlay(workdir / "config", receiver.url, factor=60)
    proc = Alertmanager(workdir, config)
    yield proc
    proc.stop()


def _post(am: Alertmanager, alertname: str, severity: str, **labels: str) -> None:
    am.post_alerts([{
        "labels": {"alertname": alertname, "severity": severity,
                   "job": "ai-metrics-exporter", **labels},
        "annotations": {"summary": "s.", "description": "d.",
                        "runbook_url": f"{RUNBOOK_URL}#{alertname.lower()}"},
        "generatorURL": "http://prometheus:9090/graph",
    }])


def _delivered(receiver: WebhookReceiver, name: str) -> list[dict[str, str]]:
    """Label sets of the alerts delivered to a webhook receiver."""
    return [a["labels"] for n in receiver.received(name) for a in n.body["alerts"]]


@pytest.mark.e2e
def test_inhibition_on_a_real_alertmanager(alertmanager: Alertmanager,
                                           receiver: WebhookReceiver) -> None:
    am = alertmanager
    # Sources first, so the inhibitor knows them before any target is flushed.
    _post(am, "AiLlmProviderErrorRateHigh", "critical", instance="a:10102",
          gen_ai_provider_name="anthropic")
    _post(am, "AiComponentDown", "critical", instance="a:10102", component="mcp-github",
          kind="mcp_server", check="probe")
    _post(am, "AiExporterDown", "critical", instance="b:10102")
    wait_until(lambda: len({a["alertname"] for a in _delivered(receiver, "pager")}) == 3,
               30, what="the three source alerts paged")

    inhibited = [
        ("AiLlmProviderErrorRateHigh", "warning",
         {"instance": "a:10102", "gen_ai_provider_name": "anthropic"}),  # critical over warning
        ("AiErrorCategorySpike", "warning",
         {"instance": "a:10102", "component": "mcp-github", "category": "tool"}),  # component
        ("AiTaskRetryRateHigh", "warning",
         {"instance": "a:10102", "component": "mcp-github", "queue": "default"}),  # component
        ("HostCpuSaturated", "warning", {"instance": "b:10102"}),  # exporter down
        ("AiSecurityCriticalEventUnresolved", "critical",
         {"instance": "b:10102", "category": "prompt_injection"}),  # exporter down
    ]
    delivered = [
        ("AiLlmProviderErrorRateHigh", "warning",
         {"instance": "a:10102", "gen_ai_provider_name": "openai"}),  # other provider
        ("AiErrorCategorySpike", "warning",
         {"instance": "a:10102", "component": "planner", "category": "tool"}),  # other component
        ("HostMemoryPressure", "warning", {"instance": "a:10102"}),  # other exporter
    ]
    for name, severity, labels in inhibited + delivered:
        _post(am, name, severity, **labels)

    def status(name: str, severity: str, labels: dict[str, str]) -> dict[str, Any]:
        matchers = [f'alertname="{name}"', f'severity="{severity}"',
                    *(f'{k}="{v}"' for k, v in labels.items())]
        found = am.alerts(*matchers)
        assert len(found) == 1, found
        return dict(found[0]["status"])

    for name, severity, labels in inhibited:
        def suppressed(n: str = name, sv: str = severity,
                       lb: dict[str, str] = labels) -> dict[str, Any] | None:
            st = status(n, sv, lb)
            return st if st["state"] == "suppressed" else None

        st = wait_until(suppressed, 10, what=f"{name} suppressed")
        assert st["inhibitedBy"], st
    for name, severity, labels in delivered:
        assert status(name, severity, labels)["state"] == "active"

    # Delivered ones arrive in chat; after two more group intervals, inhibited ones did not.
    def chat_has_all() -> bool:
        got = _delivered_chat_labels(receiver)
        return all(any(_matches(g, name, {**labels, "severity": severity}) for g in got)
                   for name, severity, labels in delivered)

    wait_until(chat_has_all, 30, what="uninhibited warnings in chat")
    time.sleep(11)
    got_chat = _delivered_chat_labels(receiver)
    got_pager = _delivered(receiver, "pager")
    for name, severity, labels in inhibited:
        assert not any(_matches(g, name, {**labels, "severity": severity})
                       for g in got_chat + got_pager), name
    # The pager webhook carries the bearer token read from its credentials file.
    assert all(n.headers.get("Authorization") == f"Bearer {PAGER_TOKEN}"
               for n in receiver.received("pager"))


def _matches(got: dict[str, str], name: str, labels: dict[str, str]) -> bool:
    return got.get("alertname") == name and all(got.get(k) == v for k, v in labels.items())


def _delivered_chat_labels(receiver: WebhookReceiver) -> list[dict[str, str]]:
    """Slack messages carry rendered text; read the labels back from its Labels: lines."""
    found = []
    for notification in receiver.received("chat"):
        attachment = notification.body["attachments"][0]
        title = attachment["title"]
        alertname = re.sub(r"^\[[A-Z]+(:\d+)?\] (\S+).*$", r"\2", title)
        for line in attachment["text"].splitlines():
            if line.strip().startswith("Labels: "):
                pairs = dict(p.split("=", 1) for p in line.strip()[len("Labels: "):].split())
                found.append({"alertname": alertname, **pairs})
    return found


@pytest.mark.e2e
def test_watchdog_reaches_the_heartbeat_receiver(alertmanager: Alertmanager,
                                                 receiver: WebhookReceiver) -> None:
    alertmanager.post_alerts([{"labels": {"alertname": "Watchdog", "severity": "none"},
                               "annotations": {"summary": "s."}}])
    wait_until(lambda: any(a["alertname"] == "Watchdog"
                           for a in _delivered(receiver, "heartbeat")),
               30, what="Watchdog at the heartbeat receiver")
    assert not any(a.get("alertname") == "Watchdog"
                   for a in _delivered(receiver, "pager") + _delivered_chat_labels(receiver))
