"""JSON views of host data for /api/status/system and /api/metrics/system.

They show the families of the last collection (a scrape's, when one is recent), taken by
the running collectors, so the JSON and the series never disagree and a view neither
repeats the host I/O of a scrape nor resets the CPU collector's utilization baseline.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

from prometheus_client.metrics_core import Metric

from exporter import catalog
from exporter.runtime import Runtime

# A collection younger than this is shown as it is; an older one is taken again.
MAX_AGE_SECONDS = 10.0
HOST_FAMILIES = frozenset(m.family_name for m in catalog.all_metrics()
                          if m.area is catalog.Area.HOST)


def host_families(runtime: Runtime) -> list[Metric]:
    """Host families of the last collection, collecting first when there is none recent."""
    last = runtime.last_collection
    if last is None or time.time() - last[0] > MAX_AGE_SECONDS:
        families = runtime.families()
    else:
        families = last[1]
    return [f for f in families if f.name in HOST_FAMILIES]


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
