"""End-to-end HA paging: two Prometheus servers, an Alertmanager cluster of two, one receiver.

Two demo exporters run a provider outage each (``anthropic`` fails most calls), under two
jobs so that the page for each is its own alert group: a short one, paged and resolved
while both Alertmanagers are up, and a long one, during which the Alertmanager that
delivers (position 0 in the cluster) is killed with SIGKILL after the page and before the
resolution. Two Prometheus servers (the replica external label of
prometheus/prometheus.yml, prometheus-0 / prometheus-1, dropped from the alerts by its
``alert_relabel_configs``, so that both send the same alert) scrape both
exporters, evaluate the committed rules with every window and ``for:`` 60 times shorter
(``for: 5m`` of the critical AiLlmProviderErrorRateHigh → 5s) and send to both
Alertmanagers. The Alertmanagers gossip on loopback and run the committed routes with
group_wait / group_interval 60 times shorter and repeat_interval one hour, so that any
second notification of the same state is a duplicate rather than a repeat.

Each group must reach the pager exactly once firing and once resolved, and its chat copy
likewise, in both cases; the heartbeat (Watchdog) once. The test copy of the alert keeps
firing 8s past its last breach (see ``_steady_rule_files``), and the members run with
``--cluster.peer-timeout=5s`` (15s by default; on loopback the notification log reaches
the peer in well under a second), ``--cluster.gossip-interval=100ms`` and
``--cluster.pushpull-interval=2s``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.alerting import (
    PROMETHEUS_CONFIG,
    ClusteredAlertmanager,
    Notification,
    WebhookReceiver,
    alertmanager_overlay,
    compressed_rule_files,
    with_repeat_interval,
)
from tests.procs import LOOPBACK, Exporter, Prometheus, free_port, static_job, wait_until

pytestmark = pytest.mark.e2e

FACTOR = 60                  # rule windows, for: and group timers: 1 minute per second
SHIPPED = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
(REPLICA_LABEL,) = SHIPPED["global"]["external_labels"]  # the shipped HA replica label
ALERT_RELABEL = SHIPPED["alerting"]["alert_relabel_configs"]  # the shipped drop of it
ALERT = "AiLlmProviderErrorRateHigh"
PROVIDER = "anthropic"
OUTAGE_AFTER = 8.0           # seconds after the exporters start
SHORT_OUTAGE = 14.0          # resolved with both Alertmanagers up
LONG_OUTAGE = 38.0           # one Alertmanager is killed between its page and resolution
KEEP_FIRING_FOR = 8.0
SHORT_JOB = "ai-metrics-exporter"
LONG_JOB = "ai-metrics-exporter-eu"
PEER_TIMEOUT = 5.0           # --cluster.peer-timeout (15s by default)
GROUP_INTERVAL = 300 / FACTOR


@dataclass
class Stack:
    receiver: WebhookReceiver
    members: list[ClusteredAlertmanager]
    prometheus: list[Prometheus]
    exporters: dict[str, Exporter]
    started: float  # time.monotonic() when the exporters started
    killed: ClusteredAlertmanager | None = None
    killed_at: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)  # seconds after ``started``

    def at(self, seconds: float) -> float:
        return self.started + seconds


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("alertmanager-ha")
    started: list[Any] = []
    try:
        receiver = WebhookReceiver()
        started.append(receiver)
        config = with_repeat_interval(
            alertmanager_overlay(workdir / "am", receiver.url, FACTOR), "1h")
        ports = [free_port(), free_port()]
        members = []
        for port in ports:
            member = ClusteredAlertmanager(
                workdir, config, port, [p for p in ports if p != port],
                peer_timeout=f"{PEER_TIMEOUT:g}s",
                flags=("--cluster.gossip-interval=100ms", "--cluster.pushpull-interval=2s"))
            started.append(member)
            members.append(member)
        wait_until(lambda: all(m.cluster()["status"] == "ready" and
                               len(m.cluster()["peers"]) == 2 for m in members),
                   30, interval=0.25, what="the Alertmanager cluster settled with 2 peers")

        exporter_ports = {SHORT_JOB: free_port(), LONG_JOB: free_port()}
        scrape = [static_job(job, f"{LOOPBACK}:{port}") for job, port in exporter_ports.items()]
        rules = _steady_rule_files(workdir / "rules")
        prometheus = []
        for replica in ("prometheus-0", "prometheus-1"):
            prom = Prometheus(workdir, scrape, rule_files=rules, extra={
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s",
                           "external_labels": {REPLICA_LABEL: replica}},
                "alerting": {
                    "alert_relabel_configs": ALERT_RELABEL,
                    "alertmanagers": [{"static_configs": [{"targets": [
                        m.url.removeprefix("http://") for m in members]}]}]}})
            started.append(prom)
            prometheus.append(prom)

        spawned = time.monotonic()
        exporters = {}
        for job, duration in ((SHORT_JOB, SHORT_OUTAGE), (LONG_JOB, LONG_OUTAGE)):
            exporters[job] = Exporter(workdir, command="demo", port=exporter_ports[job], args=[
                "--demo.rate=150", "--demo.episode=provider_outage",
                f"--demo.episode-after={OUTAGE_AFTER}",
                f"--demo.episode-duration={duration}"])
            started.append(exporters[job])
        yield Stack(receiver, members, prometheus, exporters, spawned)
    finally:
        for item in reversed(started):
            item.stop()


def _steady_rule_files(dest: Path) -> list[str]:
    """The committed rules, 60 times faster, with ``keep_firing_for`` on the provider
    error alert: at a 1s scrape interval on a loaded machine the exporter may drop a
    collector that overran its 0.5s share of the scrape, and the gap (staleness) would
    resolve and re-fire the alert on one server, a genuine second page that has nothing
    to do with Alertmanager's deduplication."""
    paths = compressed_rule_files(dest, FACTOR)
    path = dest / "ai.rules.yml"
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    rules = [r for g in doc["groups"] for r in g["rules"] if r.get("alert") == ALERT]
    assert len(rules) == 2, "a critical and a warning form"
    for rule in rules:
        rule["keep_firing_for"] = f"{KEEP_FIRING_FOR:g}s"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return paths


# --- what reached the receiver ----------------------------------------------------------
def _pages(stack: Stack, job: str) -> list[Notification]:
    """Pager notifications of the critical provider-error group of one job, in order."""
    return [n for n in stack.receiver.received("pager")
            if n.body.get("groupLabels", {}).get("alertname") == ALERT
            and n.body["groupLabels"].get("job") == job
            and n.body["groupLabels"].get("gen_ai_provider_name") == PROVIDER]


def _chat_copies(stack: Stack, job: str) -> list[str]:
    """Statuses of the chat copies of the critical alert of that group ("FIRING",
    "RESOLVED"). The chat group has no severity in group_by, so its warning form, when
    not inhibited, shares the message."""
    found = []
    line = re.compile(rf"^(FIRING|RESOLVED): .*\n  Labels: gen_ai_provider_name={PROVIDER} "
                      rf"job={re.escape(job)} severity=critical$", re.MULTILINE)
    for n in stack.receiver.received("chat"):
        attachment = n.body["attachments"][0]
        if attachment["title"].split("] ", 1)[-1].startswith(ALERT):
            found.extend(line.findall(attachment["text"]))
    return found


def _statuses(notifications: list[Notification]) -> list[str]:
    return [n.body["status"] for n in notifications]


def _wait_status(stack: Stack, job: str, status: str, timeout: float) -> float:
    key = f"{job} {status}"
    if key not in stack.timings:
        wait_until(lambda: status in _statuses(_pages(stack, job)), timeout, interval=0.1,
                   what=f"the {status} page of {job}")
        stack.timings[key] = time.monotonic() - stack.started
    return stack.timings[key]


def _settled(stack: Stack, job: str) -> None:
    """The group's page and resolution arrived, once each, at the pager and in chat."""
    wait_until(lambda: "RESOLVED" in _chat_copies(stack, job), GROUP_INTERVAL + 5,
               what=f"the resolved chat copy of {job}")
    assert _statuses(_pages(stack, job)) == ["firing", "resolved"], \
        [(n.body["status"], n.body["alerts"]) for n in _pages(stack, job)]
    assert _chat_copies(stack, job) == ["FIRING", "RESOLVED"]
    page = _pages(stack, job)[0]
    assert [a["labels"] for a in page.body["alerts"]] == [
        {"alertname": ALERT, "severity": "critical", "job": job,
         "gen_ai_provider_name": PROVIDER}], "the replica label is dropped from alerts"


# --- the cases ----------------------------------------------------------------------------
def test_both_prometheus_servers_send_to_both_members(stack: Stack) -> None:
    for prom in stack.prometheus:
        def active(p: Prometheus = prom) -> bool:
            response = requests.get(f"{p.url}/api/v1/alertmanagers", timeout=10)
            response.raise_for_status()
            urls = {a["url"] for a in response.json()["data"]["activeAlertmanagers"]}
            return urls == {f"{m.url}/api/v2/alerts" for m in stack.members}

        wait_until(active, 20, what="both Alertmanagers active in Prometheus")
    first = _wait_status(stack, SHORT_JOB, "firing", OUTAGE_AFTER + 30)
    for prom in stack.prometheus:  # both servers fire the alert
        prom.wait_for(f'ALERTS{{alertname="{ALERT}",severity="critical",'
                      f'alertstate="firing",job="{SHORT_JOB}"}}', timeout=10)
    for member in stack.members:  # and each member holds the one merged alert
        alerts = member.alerts(f'alertname="{ALERT}"', f'job="{SHORT_JOB}"',
                               'severity="critical"')
        assert len(alerts) == 1 and REPLICA_LABEL not in alerts[0]["labels"]
    assert first > OUTAGE_AFTER


def test_one_page_and_one_resolution_per_group(stack: Stack) -> None:
    """Both members receive every alert from both servers; one notification goes out."""
    fired = _wait_status(stack, SHORT_JOB, "firing", OUTAGE_AFTER + 30)
    resolved = _wait_status(stack, SHORT_JOB, "resolved", SHORT_OUTAGE + KEEP_FIRING_FOR + 30)
    assert fired < OUTAGE_AFTER + SHORT_OUTAGE < resolved + 1, (fired, resolved)
    # A copy from the other member would come one peer timeout later; the last test
    # looks again, after the kill case has waited longer than that.
    time.sleep(1.0)
    _settled(stack, SHORT_JOB)


def test_one_resolution_when_the_delivering_member_is_killed(stack: Stack) -> None:
    _wait_status(stack, LONG_JOB, "firing", OUTAGE_AFTER + 30)
    # The short group's resolution must be settled before a member goes away.
    _wait_status(stack, SHORT_JOB, "resolved", SHORT_OUTAGE + KEEP_FIRING_FOR + 30)
    assert time.monotonic() < stack.at(OUTAGE_AFTER + LONG_OUTAGE - 3), \
        "the long outage ended before the kill"
    assert _statuses(_pages(stack, LONG_JOB)) == ["firing"], "killed mid-episode"
    sender = next(m for m in stack.members if m.position() == 0)
    survivor = next(m for m in stack.members if m is not sender)
    sender.kill9()
    stack.killed, stack.killed_at = sender, time.monotonic() - stack.started

    resolved = _wait_status(stack, LONG_JOB, "resolved",
                            LONG_OUTAGE + KEEP_FIRING_FOR + PEER_TIMEOUT + 30)
    assert resolved > OUTAGE_AFTER + LONG_OUTAGE - 1
    # A duplicate (page or resolution) would come within a peer timeout and a group
    # interval of the one that arrived.
    time.sleep(PEER_TIMEOUT + GROUP_INTERVAL + 1)
    _settled(stack, LONG_JOB)
    assert survivor.alive() and len(survivor.cluster()["peers"]) == 1
    log = survivor.log()
    assert "Notify for alerts failed" not in "\n".join(
        line for line in log.splitlines() if "email" not in line)


def test_no_page_or_heartbeat_repeats_after_the_kill(stack: Stack) -> None:
    """Over the whole run, including the kill: both groups settled once each, and the
    heartbeat (Watchdog, from both servers) reached its receiver once, repeat_interval
    being 1h."""
    assert stack.killed is not None, "runs after the kill"
    for job in (SHORT_JOB, LONG_JOB):
        _settled(stack, job)
    beats = stack.receiver.received("heartbeat")
    assert len(beats) == 1, _statuses(beats)
    print(f"timings (s after the exporters started): killed {stack.killed_at:.1f}",
          {k: round(v, 1) for k, v in stack.timings.items()})
