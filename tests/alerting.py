"""Helpers for the alerting tests: the rules and runbooks as data, PromQL name scanning,
time-compressed copies of the rules and of the Alertmanager configuration, a real
Alertmanager process, and an HTTP receiver that records the notifications it gets.

Process start-up, free ports and bounded waits come from ``tests.procs``.
"""

from __future__ import annotations

import copy
import http.server
import json
import re
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml

from tests.procs import LOOPBACK, Proc, free_port, require_binary, wait_until

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS_DIR = ROOT / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
RULES_DIR = PROMETHEUS_DIR / "rules"
RULE_FILES = sorted(RULES_DIR.glob("*.yml"))
RULE_TEST_FILES = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
ALERTMANAGER_DIR = ROOT / "alertmanager"
ALERTMANAGER_CONFIG = ALERTMANAGER_DIR / "alertmanager.yml"
TEMPLATE_FILES = sorted((ALERTMANAGER_DIR / "templates").glob("*.tmpl"))
RUNBOOKS = ROOT / "docs" / "runbooks.md"
RUNBOOK_URL = ("https://github.com/ai-metrics-exporter/ai-metrics-exporter/blob/main/"
               "docs/runbooks.md")
EXPORTER_JOB = "ai-metrics-exporter"

# Receiver that each severity is routed to (alertmanager.yml); Watchdog has its own.
RECEIVERS_BY_SEVERITY = {"critical": ["pager", "chat"], "warning": ["chat"],
                         "info": ["blackhole"], "none": ["blackhole"]}
HEARTBEAT_ALERT = "Watchdog"


# --- rules ------------------------------------------------------------------------------
def load_groups() -> list[dict[str, Any]]:
    """Every rule group of prometheus/rules/, each with the file it came from."""
    groups = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            groups.append({**group, "file": path.name})
    return groups


def alert_rules() -> list[dict[str, Any]]:
    return [r for g in load_groups() for r in g["rules"] if "alert" in r]


def recording_rules() -> list[dict[str, Any]]:
    return [r for g in load_groups() for r in g["rules"] if "record" in r]


def alert_forms() -> list[tuple[str, str]]:
    """(alert name, severity) for every alert rule, in file order, without repeats."""
    seen: dict[tuple[str, str], None] = {}
    for rule in alert_rules():
        seen[(rule["alert"], rule["labels"]["severity"])] = None
    return list(seen)


def expected_receivers(alertname: str, severity: str) -> list[str]:
    if alertname == HEARTBEAT_ALERT:
        return ["heartbeat"]
    return RECEIVERS_BY_SEVERITY[severity]


# --- PromQL scanning --------------------------------------------------------------------
_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
             "group_right", "bool", "offset", "inf", "nan", "atan2"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w:.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """Metric names that a PromQL expression selects (function names, keywords, label
    names and string contents are left out)."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("", text)
    text = _RANGE.sub("", text)
    text = _GROUPING.sub("", text)
    names = set()
    for match in _IDENT.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


_TEMPLATE_QUERY = re.compile(r'printf\s+"((?:[^"\\]|\\.)*)"[^}]*\|\s*query')


def template_queries(text: str) -> list[str]:
    """PromQL format strings of ``printf "..." ... | query`` calls in an annotation."""
    return [json.loads(f'"{m}"') for m in _TEMPLATE_QUERY.findall(text)]


# --- runbooks ---------------------------------------------------------------------------
def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    anchor = heading.strip().lower()
    anchor = re.sub(r"[^\w\- ]", "", anchor)
    return anchor.replace(" ", "-")


def runbook_sections() -> dict[str, str]:
    """Anchor → body of every level-3 heading (one per alert) of docs/runbooks.md."""
    text = RUNBOOKS.read_text(encoding="utf-8")
    sections: dict[str, str] = {}
    parts = re.split(r"^### (.+)$", text, flags=re.MULTILINE)
    for heading, body in zip(parts[1::2], parts[2::2], strict=True):
        sections[github_anchor(heading)] = re.split(r"^#{1,2} ", body,
                                                    flags=re.MULTILINE)[0]
    return sections


def runbook_queries(body: str) -> list[str]:
    """Every query in the ```promql blocks of one runbook entry."""
    queries: list[str] = []
    for block in re.findall(r"```promql\n(.*?)```", body, flags=re.DOTALL):
        queries.extend(line.strip() for line in block.splitlines() if line.strip())
    return queries


# --- time compression -------------------------------------------------------------------
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")


def duration_seconds(text: str) -> float:
    total = 0.0
    pos = 0
    for match in _DURATION.finditer(text):
        assert match.start() == pos, f"bad duration {text!r}"
        total += int(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    assert pos == len(text) and pos, f"bad duration {text!r}"
    return total


def format_duration(seconds: float) -> str:
    millis = max(1, round(seconds * 1000))
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def compress(duration: str, factor: float) -> str:
    return format_duration(duration_seconds(duration) / factor)


def compress_expr(expr: str, factor: float) -> str:
    """Shorten every range and subquery window of an expression by ``factor``."""
    def repl(match: re.Match[str]) -> str:
        inner = match.group(1)
        parts = inner.split(":")
        parts = [compress(p, factor) if p else p for p in parts]
        return "[" + ":".join(parts) + "]"

    expr = re.sub(r"\[([0-9smhdwy:]+)\]", repl, expr)
    # An offset is a window into the past too (anomaly.rules.yml: "baseline a day ago").
    return re.sub(r"\boffset\s+([0-9smhdwy]+)",
                  lambda m: f"offset {compress(m.group(1), factor)}", expr)


def compressed_rule_files(dest: Path, factor: float) -> list[str]:
    """Copies of prometheus/rules/ where every window, offset, ``for:`` and
    ``keep_firing_for:`` is ``factor`` times shorter (expressions, thresholds and
    annotations unchanged), for tests that must see alerts fire and resolve in seconds
    rather than minutes."""
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for path in RULE_FILES:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        for group in doc["groups"]:
            for rule in group["rules"]:
                rule["expr"] = compress_expr(str(rule["expr"]), factor)
                for key in ("for", "keep_firing_for"):
                    if key in rule:
                        rule[key] = compress(rule[key], factor)
        out = dest / path.name
        out.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        paths.append(str(out))
    return paths


def _compress_route(route: dict[str, Any], factor: float) -> None:
    for key in ("group_wait", "group_interval", "repeat_interval"):
        if key in route:
            route[key] = compress(route[key], factor)
    for child in route.get("routes", []):
        _compress_route(child, factor)


# --- Alertmanager -----------------------------------------------------------------------
def secret_files(config: dict[str, Any]) -> list[str]:
    """Every ``*_file`` path the configuration reads a secret from."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key.endswith("_file") and isinstance(value, str):
                    found.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(config)
    return found


def _replace_strings(node: Any, mapping: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {k: _replace_strings(v, mapping) for k, v in node.items()}
    if isinstance(node, list):
        return [_replace_strings(v, mapping) for v in node]
    return mapping.get(node, node) if isinstance(node, str) else node


PAGER_TOKEN = "pager-test-token"
HEARTBEAT_TOKEN = "heartbeat-test-token"


def alertmanager_overlay(dest: Path, receiver_url: str, factor: float = 1.0) -> Path:
    """alertmanager/alertmanager.yml with its endpoints pointed at a test receiver.

    Routes, grouping, inhibition and templates are the committed ones. The webhook URLs
    become ``<receiver_url>/<receiver name>``; the secret files the configuration names
    are written into ``dest/secrets`` (Slack's holds ``<receiver_url>/chat``, so the Slack
    notifier posts to the test receiver) and the paths point at them; SMTP points at a
    closed loopback port. With ``factor`` > 1, group_wait / group_interval /
    repeat_interval are that much shorter.
    """
    dest.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text(encoding="utf-8"))
    config = copy.deepcopy(config)
    config["global"]["smtp_smarthost"] = f"{LOOPBACK}:{free_port()}"
    config["global"]["smtp_require_tls"] = False
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = f"{receiver_url}/{receiver['name']}"
    contents = {"pager-token": PAGER_TOKEN, "heartbeat-token": HEARTBEAT_TOKEN,
                "slack-webhook-url": f"{receiver_url}/chat", "smtp-password": "unused"}
    secrets = dest / "secrets"
    secrets.mkdir(exist_ok=True)
    for original in secret_files(config):
        path = secrets / Path(original).name
        path.write_text(contents.get(path.name, "test-secret"), encoding="utf-8")
    config = _replace_strings(config, {f: str(secrets / Path(f).name)
                                       for f in secret_files(config)})
    templates = dest / "templates"
    if not templates.exists():
        templates.symlink_to(ALERTMANAGER_DIR / "templates", target_is_directory=True)
    if factor != 1.0:
        _compress_route(config["route"], factor)
    out = dest / "alertmanager.yml"
    out.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return out


class Alertmanager(Proc):
    """A real Alertmanager (no clustering) on a free loopback port."""

    def __init__(self, workdir: Path, config_file: Path) -> None:
        binary = require_binary("prometheus-alertmanager")
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        data = Path(tempfile.mkdtemp(prefix="am-", dir=workdir))
        super().__init__([binary, f"--config.file={config_file}",
                          f"--storage.path={data}",
                          f"--web.listen-address={LOOPBACK}:{self.port}",
                          f"--web.external-url={self.url}",
                          "--cluster.listen-address="], data / "alertmanager.log")

        def ready() -> bool:
            if not self.alive():
                raise AssertionError(f"alertmanager exited early:\n{self.log()}")
            return requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200

        wait_until(ready, 30, what="alertmanager ready")

    def post_alerts(self, alerts: list[dict[str, Any]]) -> None:
        response = requests.post(f"{self.url}/api/v2/alerts", json=alerts, timeout=10)
        response.raise_for_status()

    def alerts(self, *matchers: str) -> list[dict[str, Any]]:
        response = requests.get(f"{self.url}/api/v2/alerts",
                                params=[("filter", m) for m in matchers], timeout=10)
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()
        return result


# --- a receiver for webhook and Slack notifications --------------------------------------
@dataclass
class Notification:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def receiver(self) -> str:
        return self.path.strip("/")


@dataclass
class WebhookReceiver:
    """An HTTP server on loopback that records every JSON POST it gets."""

    notifications: list[Notification] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {"raw": raw.decode(errors="replace")}
                with outer.lock:
                    outer.notifications.append(
                        Notification(self.path, dict(self.headers.items()), body))
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = http.server.ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.url = f"http://{LOOPBACK}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def received(self, receiver: str | None = None) -> list[Notification]:
        with self.lock:
            return [n for n in self.notifications
                    if receiver is None or n.receiver == receiver]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


# --- an Alertmanager cluster ------------------------------------------------------------
def with_repeat_interval(config_file: Path, repeat_interval: str) -> Path:
    """Rewrite an Alertmanager configuration with one ``repeat_interval`` on every route,
    so that a test can tell a repeated notification from a duplicate one."""
    config = yaml.safe_load(config_file.read_text(encoding="utf-8"))

    def walk(route: dict[str, Any]) -> None:
        route["repeat_interval"] = repeat_interval
        for child in route.get("routes", []):
            walk(child)

    walk(config["route"])
    config_file.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return config_file


class ClusteredAlertmanager(Alertmanager):
    """A real Alertmanager that gossips with its peers on loopback (``cluster_port``, TCP
    and UDP) and delivers as one member of an HA cluster."""

    def __init__(self, workdir: Path, config_file: Path, cluster_port: int,
                 peers: list[int], peer_timeout: str = "15s",
                 flags: tuple[str, ...] = ()) -> None:
        binary = require_binary("prometheus-alertmanager")
        self.port = free_port()
        self.cluster_port = cluster_port
        self.url = f"http://{LOOPBACK}:{self.port}"
        data = Path(tempfile.mkdtemp(prefix="am-", dir=workdir))
        Proc.__init__(self, [
            binary, f"--config.file={config_file}", f"--storage.path={data}",
            f"--web.listen-address={LOOPBACK}:{self.port}", f"--web.external-url={self.url}",
            f"--cluster.listen-address={LOOPBACK}:{cluster_port}",
            f"--cluster.advertise-address={LOOPBACK}:{cluster_port}",
            *[f"--cluster.peer={LOOPBACK}:{p}" for p in peers],
            f"--cluster.peer-timeout={peer_timeout}", *flags], data / "alertmanager.log")

        def ready() -> bool:
            if not self.alive():
                raise AssertionError(f"alertmanager exited early:\n{self.log()}")
            return requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200

        try:
            wait_until(ready, 30, what="alertmanager ready")
        except BaseException:
            self.stop()
            raise

    def cluster(self) -> dict[str, Any]:
        """The ``cluster`` part of /api/v2/status: name, status (settling, ready), peers."""
        response = requests.get(f"{self.url}/api/v2/status", timeout=10)
        response.raise_for_status()
        cluster: dict[str, Any] = response.json()["cluster"]
        return cluster

    def position(self) -> int:
        """Where this member stands in the cluster (peers sorted by name): member n waits
        n peer timeouts before it notifies, unless the notification log says that a
        member before it already has."""
        cluster = self.cluster()
        return sorted(p["name"] for p in cluster["peers"]).index(cluster["name"])
