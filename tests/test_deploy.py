"""Deployment files: the compose stack, the Dockerfile, the systemd unit and the Kubernetes
manifests, checked with the real tools available here (docker-compose 1.29 ``config``,
``systemd-analyze``) and for consistency with the exporter's routes, port and
configuration, the Prometheus rules and the scrape configuration."""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from exporter import config as exporter_config
from exporter.cli import build_parser
from tests.procs import ROOT, Exporter, free_port, require_binary, sample_value, wait_until

COMPOSE = ROOT / "docker-compose.yml"
K8S = ROOT / "deploy" / "kubernetes"
UNIT = ROOT / "deploy" / "systemd" / "ai-metrics-exporter.service"
JOB = "ai-metrics-exporter"
APP = "otlp-genai-app"
APP_DIR = ROOT / "examples" / "otlp-genai-app"


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# --- docker-compose ----------------------------------------------------------------------
def compose_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    binary = "/usr/bin/docker-compose"
    assert Path(binary).exists(), "docker-compose (Debian package) is not installed"
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("GRAFANA_", "EXPORTER_", "AI_EXPORTER_", "COMPOSE_"))}
    full_env.update(env)
    return subprocess.run([binary, "--project-directory", str(ROOT), "-f", str(COMPOSE),
                           "config"], capture_output=True, text=True, env=full_env,
                          timeout=60, check=False, cwd=ROOT)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The stack as docker-compose resolves it, with only the required setting given."""
    result = compose_config({"GRAFANA_ADMIN_PASSWORD": "test-password"})
    assert result.returncode == 0, result.stderr
    resolved: dict[str, Any] = yaml.safe_load(result.stdout)
    return resolved


@pytest.mark.e2e
def test_compose_is_valid(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"ai-metrics-exporter", "prometheus", "alertmanager",
                                        "grafana", "otel-collector", APP}


@pytest.mark.e2e
def test_compose_requires_a_grafana_admin_password() -> None:
    result = compose_config({})
    assert result.returncode != 0
    assert "GRAFANA_ADMIN_PASSWORD" in result.stderr


def _binds(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host path, container path) of each bind mount; named volumes are skipped."""
    out = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            if volume.get("type") == "bind":
                out.append((volume["source"], volume["target"]))
            continue
        source, target = volume.split(":")[:2]
        if source.startswith(("/", ".")):
            out.append((source, target))
    return out


@pytest.mark.e2e
def test_every_mounted_path_exists(compose: dict[str, Any]) -> None:
    mounts = [(name, src) for name, svc in compose["services"].items() for src, _ in _binds(svc)]
    assert mounts
    missing = [f"{name}: {src}" for name, src in mounts if not Path(src).exists()]
    assert not missing
    for name, svc in compose["services"].items():
        for volume in svc.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
            if not source.startswith(("/", ".")):
                assert source in compose["volumes"], f"{name}: volume {source} is not declared"


@pytest.mark.e2e
def test_images_are_pinned(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        if "build" in svc:
            assert (ROOT / "Dockerfile").exists()
            continue
        image = svc["image"]
        tag = image.rsplit(":", 1)[1] if ":" in image.split("/")[-1] else ""
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{name}: {image} is not pinned"


@pytest.mark.e2e
def test_healthchecks_named_volumes_and_published_ports(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        check = svc.get("healthcheck", {})
        if name == "otel-collector":  # distroless image: nothing to run a check with
            assert check.get("disable") is True or check.get("test") == ["NONE"]
            continue
        assert check.get("test"), f"{name} has no healthcheck"
    published = {name: svc["ports"] for name, svc in compose["services"].items()
                 if svc.get("ports")}
    assert set(published) == {"grafana"}
    port = published["grafana"][0]
    text = str(port) if not isinstance(port, dict) else f"{port.get('host_ip')}:{port['published']}"
    assert "127.0.0.1" in text and "3000" in text
    for name in ("prometheus", "alertmanager", "grafana"):
        assert any(not str(v).startswith(("/", ".")) for v in compose["services"][name]["volumes"])


@pytest.mark.e2e
def test_grafana_is_provisioned_and_private_by_default(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    env = grafana["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert env["GF_SECURITY_ADMIN_PASSWORD"] == "test-password"
    binds = {target: Path(src) for src, target in _binds(grafana)}
    provisioning = binds["/etc/grafana/provisioning"]
    assert provisioning == ROOT / "grafana" / "provisioning"
    providers = yaml.safe_load((provisioning / "dashboards" / "dashboards.yaml").read_text())
    provider = providers["providers"][0]
    assert provider["disableDeletion"] is True
    assert provider["options"]["foldersFromFilesStructure"] is True
    dashboards_target = next(t for t in binds if t.startswith(provider["options"]["path"] + "/"))
    assert binds[dashboards_target] == ROOT / "grafana" / "dashboards"
    home = env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(dashboards_target + "/")
    assert (ROOT / "grafana" / "dashboards" / home.rsplit("/", 1)[1]).exists()


@pytest.mark.e2e
def test_grafana_datasources_point_into_the_stack(compose: dict[str, Any]) -> None:
    sources = yaml.safe_load((ROOT / "grafana" / "provisioning" / "datasources"
                              / "datasources.yaml").read_text())["datasources"]
    by_type = {s["type"]: s for s in sources}
    prometheus, alertmanager = by_type["prometheus"], by_type["alertmanager"]
    assert prometheus["uid"] == "prometheus" and prometheus["isDefault"] is True
    scrape = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    assert prometheus["jsonData"]["timeInterval"] == scrape["global"]["scrape_interval"]
    for source in (prometheus, alertmanager):
        assert urlparse(source["url"]).hostname in compose["services"]
    assert alertmanager["jsonData"]["implementation"] == "prometheus"
    assert prometheus["jsonData"]["alertmanagerUid"] == alertmanager["uid"]


@pytest.mark.e2e
def test_prometheus_and_otlp_targets_are_compose_services(compose: dict[str, Any]) -> None:
    scrape = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    targets = [t for job in scrape["scrape_configs"] for sc in job.get("static_configs", [])
               for t in sc["targets"]]
    targets += [t for am in scrape["alerting"]["alertmanagers"]
                for sc in am["static_configs"] for t in sc["targets"]]
    for target in targets:
        host = target.rsplit(":", 1)[0]
        assert host == "localhost" or host in compose["services"], target
    exporter_job = next(j for j in scrape["scrape_configs"] if j["job_name"] == JOB)
    assert exporter_job["static_configs"][0]["targets"] == [
        f"ai-metrics-exporter:{exporter_config.DEFAULT_PORT}"]
    exporter = compose["services"]["ai-metrics-exporter"]
    endpoint = urlparse(exporter["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"])
    assert endpoint.hostname == "otel-collector" and endpoint.port == 4318
    collector = yaml.safe_load((ROOT / "otel-collector" / "config.yaml").read_text())
    http = collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    assert http.endswith(":4318")
    prom_binds = {target: Path(src) for src, target in _binds(compose["services"]["prometheus"])}
    assert prom_binds["/etc/prometheus/rules"] == ROOT / "prometheus" / "rules"


@pytest.mark.e2e
def test_compose_runs_the_demo_as_a_non_root_read_only_container(
        compose: dict[str, Any]) -> None:
    exporter = compose["services"]["ai-metrics-exporter"]
    assert exporter["command"] == ["demo"]
    assert exporter["read_only"] is True and exporter["cap_drop"] == ["ALL"]
    assert exporter["build"]["args"]["AI_EXPORTER_REVISION"] == "unknown"


# --- the example instrumented application ------------------------------------------------
# Addresses Docker gives containers on compose networks: its default address pools
# (172.17.0.0/16 … 172.31.0.0/16, 192.168.0.0/16 in /20s) and a user-chosen 10/8 pool.
COMPOSE_ADDRESSES = ("172.17.0.2", "172.18.0.5", "172.31.255.1", "192.168.16.3",
                     "192.168.240.7", "10.11.0.4")


def _app(compose: dict[str, Any]) -> dict[str, Any]:
    service: dict[str, Any] = compose["services"][APP]
    return service


@pytest.mark.e2e
def test_example_app_sends_otlp_to_the_exporter_over_the_compose_network(
        compose: dict[str, Any]) -> None:
    app = _app(compose)
    exporter = compose["services"]["ai-metrics-exporter"]
    env = app["environment"]
    endpoint = urlparse(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
    assert (endpoint.scheme, endpoint.hostname, endpoint.port, endpoint.path) == (
        "http", "ai-metrics-exporter", exporter_config.DEFAULT_PORT, "")
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
    assert env["OTEL_SERVICE_NAME"] == APP
    assert str(exporter_config.DEFAULT_PORT) in [str(p) for p in exporter["expose"]]
    # the exporter's image (it has the OTel SDK), the program mounted from examples/
    assert app["image"] == exporter["image"] and app["build"] == exporter["build"]
    assert app["depends_on"]["ai-metrics-exporter"]["condition"] == "service_healthy"
    binds = {target: Path(src) for src, target in _binds(app)}
    assert app["entrypoint"][0] == "python"
    program = app["entrypoint"][1]
    mount = next(t for t in binds if program.startswith(t + "/"))
    assert binds[mount] / program.removeprefix(mount + "/") == APP_DIR / "app.py"
    assert app["read_only"] is True and app["cap_drop"] == ["ALL"]
    assert "ports" not in app and "ports" not in exporter


@pytest.mark.e2e
def test_compose_exporter_admits_writes_from_the_compose_network_only(
        compose: dict[str, Any]) -> None:
    """Writes are loopback-only by default: the exporter service admits the private ranges
    of compose networks (its port is not published), parsed as the exporter parses them."""
    env = compose["services"]["ai-metrics-exporter"]["environment"]
    name = "AI_EXPORTER_WEB__WRITE_ALLOWED_NETWORKS"
    config = exporter_config.load(None, environ={name: env[name]})
    assert isinstance(config.web.write_allowed_networks, list)
    networks = exporter_config.parse_networks(config.web.write_allowed_networks)
    defaults = exporter_config.parse_networks(
        exporter_config.load(None, environ={}).web.write_allowed_networks)
    assert set(defaults) <= set(networks), "loopback stays allowed"

    def allowed(address: str) -> bool:
        ip = ipaddress.ip_address(address)
        return any(ip in net for net in networks if net.version == ip.version)

    assert all(allowed(a) for a in COMPOSE_ADDRESSES)
    assert all(ipaddress.ip_network(n).is_private for n in config.web.write_allowed_networks)
    assert not allowed("8.8.8.8") and not allowed("100.64.0.1") and not allowed("2001:db8::1")


@pytest.mark.e2e
def test_example_app_runs_against_the_real_exporter(
        tmp_path: Path, compose: dict[str, Any]) -> None:
    """examples/otlp-genai-app/app.py with the compose service's environment, pointed at a
    real exporter started with the compose exporter's write networks: its GenAI spans
    count, and the compose health check passes on the heartbeat it leaves."""
    name = "AI_EXPORTER_WEB__WRITE_ALLOWED_NETWORKS"
    networks = compose["services"]["ai-metrics-exporter"]["environment"][name]
    exporter = Exporter(tmp_path, {}, env={name: networks})
    try:
        heartbeat = tmp_path / "alive"
        steps, error_every = 8, 3
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AI_"))}
        env.update({str(k): str(v) for k, v in _app(compose)["environment"].items()})
        env.update({"OTEL_EXPORTER_OTLP_ENDPOINT": exporter.url, "CALLS": str(steps),
                    "INTERVAL_SECONDS": "0", "LATENCY_SCALE": "0.01",
                    "ERROR_EVERY": str(error_every), "HEARTBEAT_FILE": str(heartbeat)})
        run = subprocess.run([sys.executable, str(APP_DIR / "app.py")], env=env,
                             capture_output=True, text=True, timeout=120, check=False)
        assert run.returncode == 0, run.stderr[-3000:]
        match = re.search(r"(\d+) steps, (\d+) chat calls", run.stdout)
        assert match, run.stdout
        done, chats = int(match.group(1)), int(match.group(2))
        assert done == steps and chats >= steps
        tools = chats - steps  # each step makes one chat call, or a chat, a tool and a chat

        def value(metric: str, labels: dict[str, str] | None = None) -> float:
            """The sum of every sample ``metric`` whose labels include ``labels``."""
            return sum(float(x.value) for family in
                       text_string_to_metric_families(exporter.metrics())
                       for x in family.samples if x.name == metric
                       and all(x.labels.get(k) == v for k, v in (labels or {}).items()))

        wait_until(lambda: value("ai_llm_requests_total") == chats, 15,
                   what=f"{chats} LLM requests")
        assert value("ai_llm_requests_total", {"outcome": "error",
                                               "error_type": "rate_limit_exceeded"}) == \
            chats // error_every
        assert value("ai_llm_tokens_total", {"gen_ai_token_type": "input"}) > 0
        assert value("ai_tool_calls_total", {"outcome": "success"}) == tools
        assert sample_value(exporter.metrics(), "ai_exporter_otlp_intake_items_total",
                            {"signal": "traces", "outcome": "mapped"}) == chats + tools

        check = _healthcheck_argv(_app(compose)["healthcheck"]["test"])
        compose_heartbeat = _app(compose)["environment"]["HEARTBEAT_FILE"]
        assert compose_heartbeat in check[-1]
        check[-1] = check[-1].replace(compose_heartbeat, str(heartbeat))
        ok = subprocess.run(check, capture_output=True, timeout=30, check=False)
        assert ok.returncode == 0, ok.stderr
        heartbeat.unlink()
        missing = subprocess.run(check, capture_output=True, timeout=30, check=False)
        assert missing.returncode != 0
    finally:
        exporter.stop()


# --- Dockerfile --------------------------------------------------------------------------
def _dockerfile() -> list[str]:
    """Dockerfile instructions, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    text = re.sub(r"\\\n\s*", " ", text)
    return [line.strip() for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def test_dockerfile_is_slim_non_root_and_health_checked() -> None:
    lines = _dockerfile()
    image = next(line.split("=", 1)[1] for line in lines if line.startswith("ARG PYTHON_IMAGE="))
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", image)
    user = next(line.split()[1] for line in lines if line.startswith("USER "))
    assert user.split(":")[0] not in ("0", "root")
    assert f"EXPOSE {exporter_config.DEFAULT_PORT}" in lines
    health = next(line for line in lines if line.startswith("HEALTHCHECK"))
    assert "HEALTHCHECK_URL" in health
    url = next(line for line in lines if line.startswith("ENV HEALTHCHECK_URL="))
    assert url.endswith(f":{exporter_config.DEFAULT_PORT}/livez")
    env = " ".join(line for line in lines if line.startswith("ENV "))
    for name in ("AI_EXPORTER_REVISION", "AI_EXPORTER_BUILD_DATE"):
        assert f"ARG {name}=unknown" in lines
        assert f"{name}=${{{name}}}" in env
    for source in ("pyproject.toml", "README.md", "exporter"):
        assert (ROOT / source).exists()


@pytest.mark.e2e
def test_image_build_context_builds_the_package(tmp_path: Path) -> None:
    """What .dockerignore lets into the build context is enough for the image's
    ``pip install .``: the same files, copied alone, build a wheel with the CLI."""
    rules = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert rules[0] == "*", "the context starts empty and lists what it lets in"
    allowed = [line[1:].rstrip("/") for line in rules if line.startswith("!")]
    copied = {path for line in _dockerfile() if line.startswith("COPY ")
              and "--from=" not in line for path in line.split()[1:-1]}
    assert copied and copied <= set(allowed)
    context = tmp_path / "context"
    context.mkdir()
    for name in allowed:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, context / name,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (context / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, context / name)
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                             "--disable-pip-version-check", "-w", str(tmp_path / "dist"),
                             str(context)], capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    wheel = next((tmp_path / "dist").glob("ai_metrics_exporter-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        assert "ai-metrics-exporter = exporter.cli:main" in archive.read(entry_points).decode()
    assert "exporter/cli.py" in names and "exporter/py.typed" in names
    # the native line path, compiled from exporter/_lines.c, with its type stub
    assert any(n.startswith("exporter/_lines.") and n.endswith(".so") for n in names), names
    assert "exporter/_lines.pyi" in names


def _healthcheck_argv(command: list[str]) -> list[str]:
    assert command[0] == "CMD" and command[1] == "python"
    return [sys.executable, *command[2:]]


@pytest.mark.e2e
def test_health_checks_run_against_the_real_exporter(
        exporter: Exporter, compose: dict[str, Any]) -> None:
    """The image's and the compose file's health check commands, run for real."""
    health = next(line for line in _dockerfile() if line.startswith("HEALTHCHECK"))
    argv = _healthcheck_argv(["CMD", *json.loads(health.split(" CMD ", 1)[1])])
    ok = subprocess.run(argv, env={**os.environ, "HEALTHCHECK_URL": f"{exporter.url}/livez"},
                        capture_output=True, timeout=30, check=False)
    assert ok.returncode == 0, ok.stderr
    closed = f"http://127.0.0.1:{free_port()}/livez"
    down = subprocess.run(argv, env={**os.environ, "HEALTHCHECK_URL": closed},
                          capture_output=True, timeout=30, check=False)
    assert down.returncode != 0
    compose_argv = _healthcheck_argv(compose["services"]["ai-metrics-exporter"]
                                     ["healthcheck"]["test"])
    default = f"http://127.0.0.1:{exporter_config.DEFAULT_PORT}/livez"
    assert default in compose_argv[-1]
    compose_argv[-1] = compose_argv[-1].replace(default, f"{exporter.url}/livez")
    result = subprocess.run(compose_argv, capture_output=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr


# --- systemd -----------------------------------------------------------------------------
def _unit() -> dict[str, list[str]]:
    """Directive → values (a directive may repeat)."""
    values: dict[str, list[str]] = {}
    for raw in UNIT.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", "[")):
            continue
        key, _, value = line.partition("=")
        values.setdefault(key, []).append(value)
    return values


def test_systemd_unit_is_hardened() -> None:
    unit = _unit()
    expected = {"User": "ai-metrics-exporter", "NoNewPrivileges": "yes",
                "ProtectSystem": "strict", "PrivateTmp": "yes", "Restart": "on-failure",
                "RestartPreventExitStatus": "2", "CapabilityBoundingSet": ""}
    for key, value in expected.items():
        assert unit[key] == [value], key
    assert unit["StateDirectory"] == ["ai-metrics-exporter"]
    sysusers = (UNIT.parent / "ai-metrics-exporter.sysusers").read_text()
    assert re.search(r"^u ai-metrics-exporter ", sysusers, re.MULTILINE)


def test_systemd_unit_command_line_is_accepted_by_the_exporter() -> None:
    exec_start = shlex.split(_unit()["ExecStart"][0])
    assert exec_start[0] == "/opt/ai-metrics-exporter/bin/ai-metrics-exporter"
    args = [a for a in exec_start[1:] if a != "$AI_METRICS_EXPORTER_ARGS"]
    parsed = build_parser().parse_args(args)
    assert parsed.command == "serve"
    assert parsed.config_file == "/etc/ai-metrics-exporter/config.yml"
    # ConfigurationDirectory=ai-metrics-exporter is /etc/ai-metrics-exporter.
    assert _unit()["ConfigurationDirectory"] == ["ai-metrics-exporter"]


@pytest.mark.e2e
def test_systemd_analyze_verify_and_security(tmp_path: Path) -> None:
    analyze = require_binary("systemd-analyze")
    binary = str(Path(sys.executable).parent / "ai-metrics-exporter")
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(
        "/opt/ai-metrics-exporter/bin/ai-metrics-exporter", binary))
    verify = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert verify.returncode == 0, verify.stderr
    assert UNIT.name not in verify.stderr, verify.stderr
    # Exposure score 0-10 (shown as "1.7 OK"); --threshold is in tenths.
    security = subprocess.run([analyze, "security", "--offline=yes", "--threshold=20",
                               str(unit)], capture_output=True, text=True, timeout=60,
                              check=False)
    assert security.returncode == 0, security.stdout[-2000:]


# --- Kubernetes (the manifests themselves: tests/test_kubernetes.py) ----------------------
def test_prometheus_rule_is_generated_from_the_rule_files() -> None:
    generator = _load(K8S / "generate_prometheusrule.py", "generate_prometheusrule")
    committed = (K8S / "prometheusrule.yaml").read_text(encoding="utf-8")
    assert committed == generator.render(), \
        "run: python deploy/kubernetes/generate_prometheusrule.py"
    groups = yaml.safe_load(committed)["spec"]["groups"]
    expected = []
    for path in sorted((ROOT / "prometheus" / "rules").glob("*.yml")):
        expected.extend(yaml.safe_load(path.read_text())["groups"])
    assert groups == expected
    assert sum(len(g["rules"]) for g in groups) > 0
