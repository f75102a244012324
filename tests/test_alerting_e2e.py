"""End-to-end paging: exporter → Prometheus → Alertmanager → receiver, all real processes.

The exporter runs the demo workload with a provider outage (``anthropic`` fails most
calls). Prometheus scrapes it every second and evaluates the committed rules with every
window and ``for:`` 60 times shorter (5m → 5s); Alertmanager runs the committed routes,
inhibition rules and templates with its timers 60 times shorter and its receivers pointed
at an HTTP server in this test. The critical page must arrive with its labels, annotations
and runbook link, its warning form must stay inhibited, and the resolved notification must
arrive when the outage ends.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.alerting import (
    EXPORTER_JOB,
    HEARTBEAT_TOKEN,
    PAGER_TOKEN,
    RUNBOOK_URL,
    Alertmanager,
    Notification,
    WebhookReceiver,
    alertmanager_overlay,
    compressed_rule_files,
)
from tests.procs import LOOPBACK, Exporter, Prometheus, static_job, wait_until

pytestmark = pytest.mark.e2e

FACTOR = 60              # 1 minute of rule and grouping time per second of test
EPISODE_AFTER = 15.0     # seconds of normal traffic first
EPISODE_DURATION = 45.0  # the outage; long enough for the warning form to fire under it
ALERT = "AiLlmProviderErrorRateHigh"
PROVIDER = "anthropic"
GRAFANA_URL = "http://localhost:3000"


@dataclass
class Stack:
    receiver: WebhookReceiver
    alertmanager: Alertmanager
    exporter: Exporter
    prometheus: Prometheus
    episode_start: float  # time.monotonic() when the outage begins (approximately)

    @property
    def instance(self) -> str:
        return f"{LOOPBACK}:{self.exporter.port}"

    @property
    def episode_end(self) -> float:
        return self.episode_start + EPISODE_DURATION


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("alerting-e2e")
    started: list[Any] = []
    try:
        receiver = WebhookReceiver()
        started.append(receiver)
        am = Alertmanager(workdir, alertmanager_overlay(workdir / "am", receiver.url, FACTOR))
        started.append(am)
        spawned = time.monotonic()
        exporter = Exporter(workdir, command="demo", args=[
            "--demo.rate=400", "--demo.episode=provider_outage",
            f"--demo.episode-after={EPISODE_AFTER}",
            f"--demo.episode-duration={EPISODE_DURATION}"])
        started.append(exporter)
        prometheus = Prometheus(
            workdir, [static_job(EXPORTER_JOB, f"{LOOPBACK}:{exporter.port}")],
            interval="1s", rule_files=compressed_rule_files(workdir / "rules", FACTOR),
            alertmanager_url=am.url)
        started.append(prometheus)
        yield Stack(receiver, am, exporter, prometheus, spawned + EPISODE_AFTER)
    finally:
        for item in reversed(started):
            item.stop()


def _alerts(notifications: list[Notification], **labels: str) -> list[tuple[str, dict[str, Any]]]:
    """(notification status, alert) for every alert with these labels in webhook bodies."""
    found = []
    for notification in notifications:
        for alert in notification.body.get("alerts", []):
            if all(alert["labels"].get(k) == v for k, v in labels.items()):
                found.append((notification.body["status"], alert))
    return found


def _chat_messages(stack: Stack, title_part: str) -> list[dict[str, Any]]:
    return [n.body["attachments"][0] for n in stack.receiver.received("chat")
            if title_part in n.body["attachments"][0]["title"]]


def test_every_rule_evaluates_cleanly_on_real_series(stack: Stack) -> None:
    """Vector matching, label_replace and template queries hold on the real label sets."""
    def groups() -> list[dict[str, Any]]:
        response = requests.get(f"{stack.prometheus.url}/api/v1/rules", timeout=10)
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()["data"]["groups"]
        evaluated = all(r.get("lastEvaluation", "").startswith("20") and
                        r["health"] != "unknown" for g in result for r in g["rules"])
        return result if result and evaluated else []

    result = wait_until(groups, 30, interval=0.5, what="every rule evaluated")
    broken = {r["name"]: r.get("lastError") for g in result for r in g["rules"]
              if r["health"] != "ok"}
    assert broken == {}
    recorded = stack.prometheus.wait_for(
        f'job_provider:ai_llm_request_errors_per_requests:ratio_rate5m'
        f'{{gen_ai_provider_name="{PROVIDER}"}}')
    assert "instance" not in recorded[0]["metric"], "summed over the exporter's replicas"
    assert "demo" not in recorded[0]["metric"], "aggregation drops the demo label"


def test_provider_outage_pages_inhibits_and_resolves(stack: Stack) -> None:
    prom, receiver, am = stack.prometheus, stack.receiver, stack.alertmanager
    ident = {"alertname": ALERT, "gen_ai_provider_name": PROVIDER}

    # Before the outage: traffic flows and nothing fires for the provider. (With 5s
    # windows a few baseline errors can briefly make an alert pending, never firing.)
    prom.wait_for(f'up{{job="{EXPORTER_JOB}"}} == 1')
    prom.wait_for(f'job_provider:ai_llm_requests:rate5m{{gen_ai_provider_name="{PROVIDER}"}}')
    if time.monotonic() < stack.episode_start - 1:
        assert prom.query(f'ALERTS{{alertname="{ALERT}",alertstate="firing",'
                          f'gen_ai_provider_name="{PROVIDER}"}}') == []
        assert _alerts(receiver.received(), **ident) == []

    # 1. The page: critical, to the pager webhook, with the token from its secret file.
    def paged() -> list[tuple[str, dict[str, Any]]]:
        return [(s, a) for s, a in _alerts(receiver.received("pager"), **ident,
                                           severity="critical") if s == "firing"]

    status, alert = wait_until(paged, EPISODE_AFTER + 40, interval=0.25,
                               what="the critical page")[0]
    assert time.monotonic() < stack.episode_end, "paged only after the outage ended"
    assert alert["status"] == "firing"
    assert alert["labels"] == {"alertname": ALERT, "severity": "critical",
                               "job": EXPORTER_JOB, "gen_ai_provider_name": PROVIDER}
    annotations = alert["annotations"]
    assert annotations["summary"] == "An LLM provider fails a large share of requests."
    assert annotations["runbook_url"] == f"{RUNBOOK_URL}#aillmprovidererrorratehigh"
    assert re.fullmatch(
        rf"\d+(\.\d+)?% of requests to {PROVIDER} from {EXPORTER_JOB} failed "
        r"over the last 5 minutes\. By error\.type: .+\.", annotations["description"]), \
        annotations["description"]
    for error_type in ("503", "timeout", "overloaded"):
        assert f"{error_type} " in annotations["description"]
    assert f":{prom.port}/graph?g0.expr=" in alert["generatorURL"]
    page = next(n for n in receiver.received("pager")
                if any(a["labels"] == alert["labels"] for a in n.body["alerts"]))
    assert page.headers["Authorization"] == f"Bearer {PAGER_TOKEN}"
    assert page.body["receiver"] == "pager"
    assert {"alertname": ALERT, "gen_ai_provider_name": PROVIDER}.items() <= \
        page.body["groupLabels"].items()

    # 2. Its copy in chat, rendered by the templates: title, runbook and Grafana links.
    title = f"[FIRING:1] {ALERT} (critical) · {PROVIDER}"
    message = wait_until(lambda: [m for m in _chat_messages(stack, ALERT)
                                  if m["title"] == title], 15, what="the chat copy")[0]
    assert f"Runbook: {RUNBOOK_URL}#aillmprovidererrorratehigh" in message["text"]
    grafana = (f"{GRAFANA_URL}/d/ai-llm-providers?orgId=1&var-job={EXPORTER_JOB}"
               f"&var-provider={PROVIDER}")
    assert message["title_link"] == grafana
    assert f"Dashboard: {grafana}" in message["text"]
    assert message["color"] == "danger"

    # 3. The warning form fires in Prometheus too, but Alertmanager inhibits it.
    prom.wait_for(f'ALERTS{{alertname="{ALERT}",severity="warning",alertstate="firing",'
                  f'gen_ai_provider_name="{PROVIDER}"}}', timeout=40)

    def suppressed() -> dict[str, Any] | None:
        found = am.alerts(f'alertname="{ALERT}"', 'severity="warning"',
                          f'gen_ai_provider_name="{PROVIDER}"')
        return found[0]["status"] if found and \
            found[0]["status"]["state"] == "suppressed" else None

    state = wait_until(suppressed, 10, what="the warning suppressed in Alertmanager")
    assert state["inhibitedBy"]
    # Group wait and one group interval pass while both still fire: nothing delivered.
    time.sleep(0.5 + 300 / FACTOR + 1.5)
    assert time.monotonic() < stack.episode_end, "outage too short to check inhibition"
    assert _alerts(receiver.received(), **ident, severity="warning") == []
    for chat in _chat_messages(stack, ALERT):
        assert "severity=warning" not in chat["text"], chat

    # 4. The outage ends: the resolved notification reaches the pager.
    def resolved() -> list[tuple[str, dict[str, Any]]]:
        return [(s, a) for s, a in _alerts(receiver.received("pager"), **ident,
                                           severity="critical") if a["status"] == "resolved"]

    status, alert = wait_until(resolved, EPISODE_DURATION + 45, interval=0.25,
                               what="the resolved notification")[0]
    assert status == "resolved"
    assert time.monotonic() >= stack.episode_end - 1, "resolved before the outage ended"
    assert alert["endsAt"] > alert["startsAt"]


def test_watchdog_reaches_the_heartbeat_receiver(stack: Stack) -> None:
    def beats() -> list[Notification]:
        return [n for n in stack.receiver.received("heartbeat")
                if _alerts([n], alertname="Watchdog")]

    beat = wait_until(beats, 30, what="Watchdog heartbeat")[0]
    assert beat.headers["Authorization"] == f"Bearer {HEARTBEAT_TOKEN}"
    assert _alerts(stack.receiver.received("pager"), alertname="Watchdog") == []


def test_stack_logs_have_no_notification_errors(stack: Stack) -> None:
    """Every notification the stack tried (pager, chat, heartbeat) was delivered."""
    log = stack.alertmanager.log()
    failures = [line for line in log.splitlines() if "Notify for alerts failed" in line
                and "email" not in line]
    assert failures == [], "\n".join(failures)
    assert Path(stack.prometheus.log_path).exists()
