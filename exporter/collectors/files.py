"""Self metrics of tailed JSONL files, and the gauges mapped from JSON snapshot files.

Both live in their sources (which run from the configuration); this collector reads them
through the runtime at scrape time, so a source being rebuilt on reload is picked up.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.metrics_core import Metric

from exporter.collectors.base import Collector
from exporter.sources.snapshot import SnapshotSource
from exporter.sources.tail import TailSource


class FilesCollector(Collector):
    name = "files"
    description = "JSONL tail self metrics and gauges mapped from JSON snapshot files."

    def collect(self) -> Iterable[Metric]:
        runtime = self.ctx.services.get("runtime")
        if runtime is None:
            return
        for source in list(runtime.sources):
            if isinstance(source, TailSource | SnapshotSource):
                yield from source.families()
