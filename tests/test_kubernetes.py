"""The Kubernetes manifests (deploy/kubernetes): validated against the Kubernetes API's JSON
schemas (kubernetes-validate, offline) and the prometheus-operator resources' structure,
and checked against the exporter itself: replicas, identity, storage, disruption budget,
spreading, autoscaling, one scrape target per pod, probes and configuration."""

from __future__ import annotations

import copy
import functools
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import referencing
import yaml

from exporter import catalog
from exporter import config as exporter_config
from exporter.cli import build_parser, flags_layer
from exporter.runtime import Runtime
from tests.procs import ROOT, Exporter

K8S = ROOT / "deploy" / "kubernetes"
JOB = "ai-metrics-exporter"
# The oldest Kubernetes release the manifests are checked against (every field they use is
# GA there) and the newest whose schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.utils.latest_version())
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule"}
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# --- loading and rendering --------------------------------------------------------------
def _kustomization() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return data


@functools.cache
def _parsed(name: str) -> tuple[dict[str, Any], ...]:
    text = (K8S / name).read_text(encoding="utf-8")
    return tuple(d for d in yaml.load_all(text, Loader=_LOADER) if d is not None)


def _manifests() -> list[tuple[str, dict[str, Any]]]:
    """Every resource the kustomization lists, with its file name, in its order (parsed
    once: callers copy before they change one)."""
    return [(name, doc) for name in _kustomization()["resources"] for doc in _parsed(name)]


def _render() -> list[dict[str, Any]]:
    """What ``kubectl kustomize`` makes of the kustomization: it sets only the namespace
    and adds the label pairs to each object's own labels (not to selectors or templates)."""
    kustomization = _kustomization()
    assert set(kustomization) <= {"apiVersion", "kind", "namespace", "labels", "resources"}, \
        "the kustomization grew a transformer this rendering does not apply"
    rendered = []
    for _, source in _manifests():
        doc = copy.deepcopy(source)
        doc["metadata"]["namespace"] = kustomization["namespace"]
        for entry in kustomization.get("labels", []):
            assert not entry.get("includeSelectors") and not entry.get("includeTemplates")
            doc["metadata"].setdefault("labels", {}).update(entry["pairs"])
        rendered.append(doc)
    return rendered


def _one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for _, d in _manifests()
             if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


def _statefulset() -> dict[str, Any]:
    return _one("StatefulSet")


def _container() -> dict[str, Any]:
    containers: list[dict[str, Any]] = _statefulset()["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def _pod_labels() -> dict[str, str]:
    labels: dict[str, str] = _statefulset()["spec"]["template"]["metadata"]["labels"]
    return labels


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, "only matchLabels selectors are checked here"
    match: dict[str, str] = selector.get("matchLabels", {})
    return bool(match) and match.items() <= labels.items()


def _expand(value: str, env: dict[str, str]) -> str:
    """The kubelet's ``$(VAR)`` expansion: defined variables are replaced, ``$$`` escapes,
    anything else is left as written."""
    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", sub, value)


def _container_env(pod_name: str) -> dict[str, str]:
    """The container's environment as the kubelet builds it for a pod named ``pod_name``:
    downward-API fields resolved, each value expanded against the variables before it."""
    env: dict[str, str] = {}
    for var in _container().get("env", []):
        if "valueFrom" in var:
            field = var["valueFrom"]["fieldRef"]["fieldPath"]
            assert field == "metadata.name", f"{var['name']}: {field} is not resolved here"
            env[var["name"]] = pod_name
        else:
            env[var["name"]] = _expand(var["value"], env)
    return env


def _pod_config(pod_name: str, tmp_path: Path) -> exporter_config.Config:
    """The configuration the exporter of pod ``pod_name`` runs with: the ConfigMap's file at
    its mount path (moved under tmp_path), the container's environment and its flags."""
    container = _container()
    env = _container_env(pod_name)
    args = [_expand(a, env) for a in container["args"]]
    config_flag = next(a for a in args if a.startswith("--config.file="))
    mounted = Path(config_flag.split("=", 1)[1])
    local = tmp_path / mounted.name
    local.write_text(_one("ConfigMap")["data"][mounted.name])
    args = [f"--config.file={local}" if a == config_flag else a for a in args]
    parsed = build_parser().parse_args(args)
    assert parsed.command == "serve"
    return exporter_config.load(str(local), flags_layer(parsed), environ=env)


# --- schemas ----------------------------------------------------------------------------
def test_kustomization_lists_every_manifest() -> None:
    listed = _kustomization()["resources"]
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(listed) == sorted(on_disk)
    kinds = sorted(d["kind"] for _, d in _manifests())
    assert kinds == sorted(["ServiceAccount", "ConfigMap", "StatefulSet", "Service", "Service",
                            "PodDisruptionBudget", "HorizontalPodAutoscaler",
                            "ServiceMonitor", "PrometheusRule"])
    names = [(d["kind"], d["metadata"]["name"]) for _, d in _manifests()]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_validate_against_the_kubernetes_schemas(version: str) -> None:
    """Strict: an unknown or misspelled field fails, as ``kubectl apply --validate=strict``
    refuses it."""
    checked = 0
    for doc in [d for _, d in _manifests()] + _render():
        if doc["kind"] in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = "/".join(str(p) for p in exc.path)
            raise AssertionError(f"{doc['kind']} {doc['metadata']['name']} at {where}: "
                                 f"{exc.message} (Kubernetes {version})") from None
        checked += 1
    assert checked == 2 * (len(_manifests()) - len(CUSTOM_KINDS))


def test_the_schema_validation_catches_a_misspelled_field() -> None:
    statefulset = copy.deepcopy(_statefulset())
    statefulset["spec"]["replica"] = statefulset["spec"].pop("replicas")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(statefulset, KUBERNETES_VERSIONS[-1], strict=True)
    monitor = copy.deepcopy(_one("ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["scrapeInterval"] = "15s"
    with pytest.raises(jsonschema.ValidationError):
        _custom_validator("ServiceMonitor").validate(monitor)


# The prometheus-operator resources (monitoring.coreos.com/v1), written from the operator's
# API reference for the fields these manifests can use: closed objects, so a misspelled
# field fails; metadata and selectors are the Kubernetes types themselves.
_DURATION = {"type": "string",
             "pattern": r"^(0|([0-9]+y)?([0-9]+w)?([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?"
                        r"([0-9]+ms)?)$"}
_STRINGS = {"type": "array", "items": {"type": "string"}}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_K8S_DEFS = "/api/_definitions.json#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1."
# Each in the lower-case and the CamelCase spelling the operator accepts.
_RELABEL_ACTIONS = ["replace", "keep", "drop", "hashmod", "labelmap", "labeldrop",
                    "labelkeep", "lowercase", "uppercase", "keepequal", "dropequal",
                    "Replace", "Keep", "Drop", "HashMod", "LabelMap", "LabelDrop",
                    "LabelKeep", "Lowercase", "Uppercase", "KeepEqual", "DropEqual"]
_RELABEL = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "sourceLabels": {"type": "array",
                         "items": {"type": "string",
                                   "pattern": r"^[a-zA-Z_][a-zA-Z0-9_]*$"}},
        "separator": {"type": "string"}, "targetLabel": {"type": "string"},
        "regex": {"type": "string"}, "replacement": {"type": "string"},
        "modulus": {"type": "integer"},
        "action": {"enum": _RELABEL_ACTIONS},
    },
}
_ENDPOINT = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "port": {"type": "string"}, "targetPort": {"type": ["string", "integer"]},
        "path": {"type": "string", "pattern": "^/"},
        "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
        "params": {"type": "object", "additionalProperties": _STRINGS},
        "interval": _DURATION, "scrapeTimeout": _DURATION,
        "honorLabels": {"type": "boolean"}, "honorTimestamps": {"type": "boolean"},
        "enableHttp2": {"type": "boolean"}, "followRedirects": {"type": "boolean"},
        "filterRunning": {"type": "boolean"},
        "relabelings": {"type": "array", "items": _RELABEL},
        "metricRelabelings": {"type": "array", "items": _RELABEL},
    },
}
_RULE = {
    "type": "object", "additionalProperties": False, "required": ["expr"],
    "oneOf": [{"required": ["record"]}, {"required": ["alert"]}],
    "properties": {
        "record": {"type": "string"}, "alert": {"type": "string"},
        "expr": {"type": ["string", "integer"]},
        "for": _DURATION, "keep_firing_for": _DURATION,
        "labels": _STRING_MAP, "annotations": _STRING_MAP,
    },
}
_RULE_GROUP = {
    "type": "object", "additionalProperties": False, "required": ["name", "rules"],
    "properties": {
        "name": {"type": "string", "minLength": 1}, "interval": _DURATION,
        "query_offset": _DURATION, "limit": {"type": "integer"}, "labels": _STRING_MAP,
        "partial_response_strategy": {"type": "string"},
        "rules": {"type": "array", "items": _RULE},
    },
}
_SPECS: dict[str, dict[str, Any]] = {
    "ServiceMonitor": {
        "type": "object", "additionalProperties": False,
        "required": ["selector", "endpoints"],
        "properties": {
            "jobLabel": {"type": "string"}, "targetLabels": _STRINGS,
            "podTargetLabels": _STRINGS, "sampleLimit": {"type": "integer"},
            "selector": {"$ref": _K8S_DEFS + "LabelSelector"},
            "namespaceSelector": {"type": "object", "additionalProperties": False,
                                  "properties": {"any": {"type": "boolean"},
                                                 "matchNames": _STRINGS}},
            "endpoints": {"type": "array", "minItems": 1, "items": _ENDPOINT},
        },
    },
    "PrometheusRule": {
        "type": "object", "additionalProperties": False, "required": ["groups"],
        "properties": {"groups": {"type": "array", "items": _RULE_GROUP}},
    },
}


def _custom_validator(kind: str) -> Any:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://kubernetes.io/api/{kind.lower()}/monitoring/v1",
        "type": "object", "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": kind},
            "metadata": {"$ref": _K8S_DEFS + "ObjectMeta"},
            "spec": _SPECS[kind],
        },
    }
    version = KUBERNETES_VERSIONS[-1]
    definitions = kubernetes_validate.utils.schema_contents(
        f"kubernetes-json-schema/v{version}-local-strict/_definitions.json", version)
    registry: referencing.Registry[Any] = referencing.Registry().with_resource(
        definitions["$id"], referencing.Resource.from_contents(definitions))
    return jsonschema.Draft202012Validator(schema, registry=registry)


@pytest.mark.parametrize("kind", sorted(CUSTOM_KINDS))
def test_prometheus_operator_resources_have_the_operator_structure(kind: str) -> None:
    validator = _custom_validator(kind)
    docs = [d for d in [d for _, d in _manifests()] + _render() if d["kind"] == kind]
    assert len(docs) == 2
    for doc in docs:
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
        assert not errors, "; ".join(
            f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors[:5])


# --- replicas, identity, storage --------------------------------------------------------
def test_statefulset_runs_replicas_with_their_own_identity_and_storage(
        tmp_path: Path) -> None:
    statefulset = _statefulset()
    spec = statefulset["spec"]
    assert spec["replicas"] >= 2
    assert _selects(spec["selector"], _pod_labels())
    governing = _one("Service", spec["serviceName"])
    assert governing["spec"]["clusterIP"] == "None"
    assert _selects({"matchLabels": governing["spec"]["selector"]}, _pod_labels())
    # Every replica's state store is its own claim, mounted where the configuration says.
    claims = {c["metadata"]["name"]: c for c in spec["volumeClaimTemplates"]}
    assert "ReadWriteOnce" in claims["state"]["spec"]["accessModes"]
    pod_volumes = {v["name"] for v in spec["template"]["spec"].get("volumes", [])}
    assert "state" not in pod_volumes, "a pod volume would hide the claim"
    mounts = {m["name"]: m["mountPath"] for m in _container()["volumeMounts"]}
    cfg = _pod_config(f"{statefulset['metadata']['name']}-1", tmp_path)
    assert mounts["state"] == cfg.storage.path
    assert spec["persistentVolumeClaimRetentionPolicy"]["whenScaled"] == "Retain"


def test_consumer_name_is_the_pod_name_from_the_downward_api(tmp_path: Path) -> None:
    env = {v["name"]: v for v in _container()["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    name = _statefulset()["metadata"]["name"]
    consumers = [_pod_config(f"{name}-{ordinal}", tmp_path).sources.redis_streams.consumer
                 for ordinal in range(3)]
    assert consumers == [f"{name}-0", f"{name}-1", f"{name}-2"]
    # Stable: the same pod name gives the same consumer (and the source's own fallback,
    # the host name, is the pod name as well in a StatefulSet).
    assert _pod_config(f"{name}-1", tmp_path).sources.redis_streams.consumer == f"{name}-1"


def test_disruption_budget_and_anti_affinity_cover_the_pods() -> None:
    pdb = _one("PodDisruptionBudget")["spec"]
    assert _selects(pdb["selector"], _pod_labels())
    assert pdb.get("maxUnavailable") == 1 or pdb.get("minAvailable") == 1
    pod = _statefulset()["spec"]["template"]["spec"]
    terms = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    by_host = [t for t in terms if t["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"]
    assert by_host and all(_selects(t["podAffinityTerm"]["labelSelector"], _pod_labels())
                           for t in by_host)
    for spread in pod.get("topologySpreadConstraints", []):
        assert _selects(spread["labelSelector"], _pod_labels())
        assert spread["whenUnsatisfiable"] == "ScheduleAnyway"


def test_autoscaler_scales_the_statefulset_on_cpu() -> None:
    hpa = _one("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    spec = hpa["spec"]
    statefulset = _statefulset()
    assert spec["scaleTargetRef"] == {"apiVersion": statefulset["apiVersion"],
                                      "kind": "StatefulSet",
                                      "name": statefulset["metadata"]["name"]}
    assert spec["minReplicas"] >= 2
    assert spec["minReplicas"] == statefulset["spec"]["replicas"]
    assert spec["maxReplicas"] > spec["minReplicas"]
    cpu = [m for m in spec["metrics"] if m["type"] == "Resource"
           and m["resource"]["name"] == "cpu"]
    assert cpu and cpu[0]["resource"]["target"]["type"] == "Utilization"
    # Utilization is a share of the request: without one the autoscaler has no signal.
    assert _container()["resources"]["requests"]["cpu"]
    # The documented alternative names a metric the exporter serves.
    text = (K8S / "hpa.yaml").read_text()
    lag = catalog.EXPORTER_REDIS_GROUP_LAG.name.replace(".", "_")
    assert lag == "ai_exporter_redis_consumer_group_lag" and lag in text


# --- services and scraping --------------------------------------------------------------
def test_service_monitor_scrapes_each_pod_once() -> None:
    monitor = _one("ServiceMonitor")
    services = [d for _, d in _manifests() if d["kind"] == "Service"]
    scraped = [s for s in services
               if _selects(monitor["spec"]["selector"], s["metadata"]["labels"])]
    # Two selected Services would scrape every pod twice.
    assert [s["metadata"]["name"] for s in scraped] == [_statefulset()["spec"]["serviceName"]]
    service = scraped[0]
    assert _selects({"matchLabels": service["spec"]["selector"]}, _pod_labels())
    container = _container()
    port = container["ports"][0]
    endpoint = monitor["spec"]["endpoints"][0]
    assert len(monitor["spec"]["endpoints"]) == 1
    service_port = next(p for p in service["spec"]["ports"] if p["name"] == endpoint["port"])
    assert service_port["targetPort"] in (port["name"], port["containerPort"])
    assert port["containerPort"] == exporter_config.DEFAULT_PORT
    assert endpoint["path"] == exporter_config.WebConfig().telemetry_path
    scrape = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    assert endpoint["interval"] == scrape["global"]["scrape_interval"]
    relabel = {r["targetLabel"]: r for r in endpoint["relabelings"]}
    assert relabel["pod"]["sourceLabels"] == ["__meta_kubernetes_pod_name"]
    # The job label of the scrape is the value of jobLabel on the Service; the exporter
    # alerts select job="ai-metrics-exporter".
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == JOB
    rules = (ROOT / "prometheus" / "rules" / "exporter.rules.yml").read_text()
    assert f'job="{JOB}"' in rules
    # Clients reach any replica through the other Service, on the same port.
    intake = next(s for s in services if s is not service)
    assert intake["spec"].get("clusterIP") != "None"
    assert _selects({"matchLabels": intake["spec"]["selector"]}, _pod_labels())
    assert intake["spec"]["ports"][0]["targetPort"] == port["name"]


@pytest.mark.e2e
def test_statefulset_probes_and_ports(exporter: Exporter) -> None:
    pod = _statefulset()["spec"]["template"]
    container = _container()
    port = container["ports"][0]
    assert port["containerPort"] == exporter_config.DEFAULT_PORT
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] == port["name"]
        path = container[probe]["httpGet"]["path"]
        # kubelet sends no credentials: the route must answer without them.
        assert path in exporter_config.SecurityConfig().open_routes
        assert exporter.get(path).status_code == 200, path
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    mounts = {v["mountPath"] for v in container["volumeMounts"]}
    config_flag = next(a for a in container["args"] if a.startswith("--config.file="))
    assert str(Path(config_flag.split("=", 1)[1]).parent) in mounts


@pytest.mark.e2e
def test_configmap_is_a_valid_exporter_configuration(tmp_path: Path) -> None:
    pod_name = f"{_statefulset()['metadata']['name']}-0"
    cfg = _pod_config(pod_name, tmp_path)
    Runtime.validate(cfg)
    assert cfg.listen_host_port()[1] == exporter_config.DEFAULT_PORT
    # The command itself, with the pod's environment and flags.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AI_EXPORTER_")}
    env.update(_container_env(pod_name))
    path = tmp_path / "config.yml"
    result = subprocess.run([str(Path(sys.executable).parent / "ai-metrics-exporter"),
                             "check-config", f"--config.file={path}"], capture_output=True,
                            text=True, timeout=60, check=False, env=env)
    assert result.returncode == 0, result.stderr
