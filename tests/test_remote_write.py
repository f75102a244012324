"""End-to-end long-term storage: remote write from Prometheus to a receiving Prometheus.

The demo exporter runs a provider outage. A Prometheus server scrapes it, evaluates the
committed rules and remote-writes what it scraped (not what its rules recorded) to a
second Prometheus started with ``--web.enable-remote-write-receiver``, which evaluates
the same rule files itself. Both hold the same samples, so every panel query of the
committed dashboards (variables on All) must return the same series from both, with the
very same values where the query reads scraped series only. Recorded series are
evaluated by each server at the same instants (a group's phase comes from its name and
file), but the receiver may not yet hold the newest scrape when it evaluates (Prometheus
2.42 has no rule query offset), so for queries that read them the series must agree
and the values are counted, not compared. Every rule is healthy on both, and both fire
the same alerts and record the same series. A Prometheus in agent mode (no local
queries, no rules) remote-writes to a third receiver, whose rules and dashboards answer
with the same series.
"""

from __future__ import annotations

import json
import math
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.alerting import EXPORTER_JOB, RULE_FILES
from tests.procs import (
    LOOPBACK,
    Exporter,
    Proc,
    Prometheus,
    free_port,
    require_binary,
    static_job,
    wait_until,
)

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
INTERVAL = "2s"   # scrape and evaluation; the exporter's collectors get 1.5s of it
# One shard sends in the order of the write-ahead log: once a scrape's `up` sample has
# arrived, every sample of that scrape has.
QUEUE = {"batch_send_deadline": "100ms", "min_backoff": "50ms", "max_backoff": "1s",
         "min_shards": 1, "max_shards": 1}


def _receiver_url(prom: Prometheus) -> str:
    return f"{prom.url}/api/v1/write"


class Agent(Proc):
    """Prometheus in agent mode: scrapes and remote-writes, answers no queries."""

    def __init__(self, workdir: Path, scrape_configs: list[dict[str, Any]],
                 remote_url: str) -> None:
        binary = require_binary("prometheus")
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        data = Path(tempfile.mkdtemp(prefix="agent-", dir=workdir))
        config = {"global": {"scrape_interval": INTERVAL},
                  "scrape_configs": scrape_configs,
                  "remote_write": [{"url": remote_url, "queue_config": QUEUE}]}
        path = data / "prometheus.yml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        super().__init__([binary, "--enable-feature=agent", f"--config.file={path}",
                          f"--storage.agent.path={data / 'wal'}",
                          f"--web.listen-address={LOOPBACK}:{self.port}"],
                         data / "agent.log")
        try:
            wait_until(lambda: requests.get(f"{self.url}/-/ready", timeout=1).ok, 30,
                       what="agent ready")
        except BaseException:
            self.stop()
            raise


@dataclass
class Stack:
    exporter: Exporter
    direct: Prometheus     # scrapes, evaluates rules, remote-writes its scrapes
    receiver: Prometheus   # receives them, evaluates the same rules
    agent: Agent
    agent_receiver: Prometheus


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("remote-write")
    rules = [str(p) for p in RULE_FILES]  # the same paths: the same evaluation phases
    receiver_flags = ["--web.enable-remote-write-receiver"]
    started: list[Any] = []
    try:
        receiver = Prometheus(workdir, [], interval=INTERVAL, rule_files=rules,
                              flags=receiver_flags)
        started.append(receiver)
        agent_receiver = Prometheus(workdir, [], interval=INTERVAL, rule_files=rules,
                                    flags=receiver_flags)
        started.append(agent_receiver)
        exporter = Exporter(workdir, command="demo", args=[
            "--demo.rate=150", "--demo.episode=provider_outage", "--demo.episode-after=2",
            "--demo.episode-duration=600"])
        started.append(exporter)
        scrape = [static_job(EXPORTER_JOB, f"{LOOPBACK}:{exporter.port}")]
        direct = Prometheus(workdir, scrape, interval=INTERVAL, rule_files=rules, extra={
            "remote_write": [{
                "url": _receiver_url(receiver), "queue_config": QUEUE,
                # what the rules record is recorded again at the receiver
                "write_relabel_configs": [{"source_labels": ["__name__"], "action": "drop",
                                           "regex": ".*:.*|ALERTS|ALERTS_FOR_STATE"}]}]})
        started.append(direct)
        agent = Agent(workdir, scrape, _receiver_url(agent_receiver))
        started.append(agent)
        yield Stack(exporter, direct, receiver, agent, agent_receiver)
    finally:
        for item in reversed(started):
            item.stop()


# --- the dashboards' queries ------------------------------------------------------------
def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def panel_queries() -> list[tuple[str, str]]:
    """(dashboard/panel title, expression) of every panel target, with the variables
    Grafana would send on All (``.+``) and ``$__rate_interval`` at 1m."""
    found: dict[str, str] = {}
    for path in DASHBOARDS:
        dash = json.loads(path.read_text(encoding="utf-8"))
        for panel in _panels(dash.get("panels", [])):
            for target in panel.get("targets", []):
                expr = target.get("expr")
                if not expr:
                    continue
                expr = expr.replace("$__rate_interval", "1m")
                expr = re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*(?::[a-z]+)?\}?", ".+", expr)
                found.setdefault(expr, f"{path.stem}/{panel.get('title', '')}")
    return [(where, expr) for expr, where in found.items()]


QUERIES = panel_queries()


def _instant(prom_url: str, expr: str, at: float) -> dict[str, float]:
    response = requests.get(f"{prom_url}/api/v1/query",
                            params={"query": expr, "time": f"{at:.3f}"}, timeout=10)
    response.raise_for_status()
    data = response.json()["data"]
    if data["resultType"] == "scalar":
        return {"": float(data["result"][1])}
    return {json.dumps(r["metric"], sort_keys=True): float(r["value"][1])
            for r in data["result"]}


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _recorded(expr: str) -> bool:
    """Reads a series that a rule writes (each server writes its own)."""
    return bool(re.search(r"[A-Za-z_]:[A-Za-z_]|\bALERTS", expr))


def _caught_up(stack: Stack, receiver: Prometheus, at: float) -> bool:
    result = receiver.query(f'timestamp(up{{job="{EXPORTER_JOB}"}})')
    return bool(result) and float(result[0]["value"][1]) >= at


@dataclass
class Tally:
    compared: int = 0  # series in both answers
    exact: int = 0     # of those, with the very same value
    mismatches: list[str] = field(default_factory=list)


def _compare(stack: Stack, receiver: Prometheus, at: float, values: bool,
             recorded: bool | None = None) -> Tally:
    """Answers of the panel queries (those that read recorded series, or those that do
    not, or all) from the direct server and a receiver: the same series, and with
    ``values`` the same values."""
    tally = Tally()
    mismatches = tally.mismatches
    for where, expr in QUERIES:
        if recorded is not None and _recorded(expr) != recorded:
            continue
        direct = _instant(stack.direct.url, expr, at)
        remote = _instant(receiver.url, expr, at)
        if set(direct) != set(remote):
            mismatches.append(f"{where}: series {sorted(set(direct) ^ set(remote))[:3]} "
                              f"in one answer only: {expr}")
            continue
        tally.compared += len(direct)
        tally.exact += sum(_same(v, remote[k]) for k, v in direct.items())
        if not values:
            continue
        for key, value in direct.items():
            if not _same(value, remote[key]):
                mismatches.append(f"{where}: {key} {value} here, {remote[key]} there: {expr}")
    return tally


# --- the cases ----------------------------------------------------------------------------
def test_the_receiver_answers_every_panel_like_the_scraping_server(stack: Stack) -> None:
    # Some history (rate windows over a minute) and an outage under way.
    stack.direct.wait_for('job_provider:ai_llm_request_errors_per_requests:ratio_rate5m'
                          '{gen_ai_provider_name="anthropic"} > 0.25', timeout=40)
    time.sleep(6)
    at = time.time() - 4.0
    wait_until(lambda: _caught_up(stack, stack.receiver, at), 20,
               what="the receiver holds the scrapes up to the comparison time")
    # Scraped series: the same samples, so the same answers, at once.
    scraped = _compare(stack, stack.receiver, at, values=True, recorded=False)
    # Recorded series: a series born at the newest scrape may be one evaluation late at
    # the receiver; the answers must agree at one of three evaluations.
    attempts = []
    for _ in range(3):
        tally = _compare(stack, stack.receiver, at, values=False, recorded=True)
        attempts.append(tally)
        if not tally.mismatches:
            break
        at -= 2.0
    figures = [(t.compared, t.exact, len(t.mismatches)) for t in attempts]
    print(f"panel queries: {len(QUERIES)}; scraped: {scraped.compared} series, all "
          f"the same value; recorded, per attempt: series, of which the same value, "
          f"mismatches: {figures}")
    assert scraped.compared > 200 and tally.compared > 100
    assert scraped.mismatches == [], "\n".join(scraped.mismatches[:20])
    assert tally.mismatches == [], "\n".join(tally.mismatches[:20])
    assert tally.compared >= attempts[0].compared * 0.9, "as many series as at first"


def test_rules_and_alerts_agree(stack: Stack) -> None:
    at = time.time() - 4.0
    wait_until(lambda: _caught_up(stack, stack.receiver, at), 20, what="receiver caught up")
    for prom in (stack.direct, stack.receiver):
        response = requests.get(f"{prom.url}/api/v1/rules", timeout=10)
        response.raise_for_status()
        groups = response.json()["data"]["groups"]
        broken = {r["name"]: r.get("lastError") for g in groups for r in g["rules"]
                  if r["health"] != "ok"}
        assert broken == {}, prom.url
    alerts = 'ALERTS{alertname!="Watchdog"}'
    recorded = 'count by (__name__) ({__name__=~".+:.+"})'
    differences: list[str] = []
    for _ in range(3):  # a series born at the newest scrape may be one evaluation late
        differences = []
        direct, remote = (_instant(stack.direct.url, alerts, at),
                          _instant(stack.receiver.url, alerts, at))
        assert any("AiLlmProviderErrorRateHigh" in k for k in direct), sorted(direct)
        differences += [f"alert {k}" for k in set(direct) ^ set(remote)]
        direct, remote = (_instant(stack.direct.url, recorded, at),
                          _instant(stack.receiver.url, recorded, at))
        assert len(direct) > 20
        differences += [f"{k}: {direct.get(k)} here, {remote.get(k)} there"
                        for k in set(direct) | set(remote) if direct.get(k) != remote.get(k)]
        if not differences:
            break
        at -= 2.0
    assert differences == []


def test_an_agent_feeds_a_receiver_that_answers_the_dashboards(stack: Stack) -> None:
    response = requests.get(f"{stack.agent.url}/api/v1/query", params={"query": "up"},
                            timeout=10)
    assert not response.ok, "agent mode answers no queries"
    at = time.time() - 4.0
    wait_until(lambda: _caught_up(stack, stack.agent_receiver, at), 20,
               what="the agent's receiver holds recent scrapes")
    attempts = []
    for _ in range(3):  # the agent scrapes at its own instants: series may straddle one
        tally = _compare(stack, stack.agent_receiver, at, values=False)
        attempts.append(tally)
        if not tally.mismatches:
            break
        at -= 2.0
    print(f"agent, per attempt: series compared, mismatches: "
          f"{[(t.compared, len(t.mismatches)) for t in attempts]}")
    assert tally.compared > 200 and tally.compared >= attempts[0].compared * 0.9
    assert tally.mismatches == [], "\n".join(tally.mismatches[:20])
