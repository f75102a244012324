"""JSON views of host data for /api/status/system and /api/metrics/system.

They read the same collectors as /metrics, so the JSON and the series never disagree.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from prometheus_client.metrics_core import Metric

from exporter.collectors import COLLECTORS, CollectorContext
from exporter.runtime import Runtime

HOST_COLLECTORS = ("cpu", "loadavg", "memory", "filesystem", "diskstats", "network",
                   "uptime", "battery")


def host_families(runtime: Runtime) -> list[Metric]:
    ctx = CollectorContext(runtime.config, runtime.services)
    families: list[Metric] = []
    for name in HOST_COLLECTORS:
        if name in COLLECTORS:
            try:
                families.extend(COLLECTORS[name](ctx).collect())
            except Exception:  # noqa: S112 - a failing collector is left out
                continue
    return families


def metrics_view(runtime: Runtime) -> dict[str, Any]:
    """Every host metric as {name: [{labels, value}]}."""
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for family in host_families(runtime):
        for sample in family.samples:
            out[sample.name].append({"labels": sample.labels, "value": sample.value})
    return dict(out)


def _one(view: dict[str, Any], name: str, **labels: str) -> float | None:
    for row in view.get(name, []):
        if all(row["labels"].get(k) == v for k, v in labels.items()):
            return float(row["value"])
    return None


def status_view(runtime: Runtime) -> dict[str, Any]:
    """A summary: CPU, memory, load, uptime and each filesystem's utilization."""
    view = metrics_view(runtime)
    filesystems = [
        {"mountpoint": r["labels"]["system_filesystem_mountpoint"],
         "type": r["labels"]["system_filesystem_type"], "utilization": r["value"]}
        for r in view.get("system_filesystem_utilization_ratio", [])]
    idle = _one(view, "system_cpu_utilization_ratio", cpu_mode="idle")
    return {
        "cpu": {"logical_count": _one(view, "system_cpu_logical_cpus"),
                "utilization": None if idle is None else round(1 - idle, 4),
                "load_average": {"1m": _one(view, "system_cpu_load_average_1m"),
                                 "5m": _one(view, "system_cpu_load_average_5m"),
                                 "15m": _one(view, "system_cpu_load_average_15m")}},
        "memory": {"limit_bytes": _one(view, "system_memory_limit_bytes"),
                   "available_bytes": _one(view, "system_linux_memory_available_bytes"),
                   "used_utilization": _one(view, "system_memory_utilization_ratio",
                                            system_memory_state="used")},
        "uptime_seconds": _one(view, "system_uptime_seconds"),
        "filesystems": filesystems,
    }
