"""Self metrics of tailed JSONL files, and the gauges mapped from JSON snapshot files.

Both live in their sources (which run from the configuration); this collector asks the
runtime's running sources at scrape time (``deps.sources``), so a source rebuilt on reload
is picked up. It knows the sources only by name and by the ``ReportsMetrics`` protocol.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.metrics_core import Metric

from exporter.collectors.base import Collector
from exporter.sources.base import ReportsMetrics

# The sources this collector reports (their ``name``, which is also their config section).
REPORTED = frozenset({"tail", "snapshot"})


class FilesCollector(Collector):
    name = "files"
    description = "JSONL tail self metrics and gauges mapped from JSON snapshot files."

    def collect(self) -> Iterable[Metric]:
        for source in self.ctx.deps.sources():
            if source.name in REPORTED and isinstance(source, ReportsMetrics):
                yield from source.families()
