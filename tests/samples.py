"""Counting and checking served samples, shared by the aggregator, budget and output tests."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable

from prometheus_client.metrics_core import Metric

from exporter import catalog
from exporter.aggregator import FEEDS, OTHER
from tests.procs import require_binary

# Metrics fed by events, by name (budget spend is one series per configured scope).
EVENT_FED = {spec.name: spec for specs in FEEDS.values() for spec in specs
             if spec is not catalog.AI_BUDGET_SPEND}


def split_ai_samples(families: Iterable[Metric]) -> tuple[int, int]:
    """(samples of event-fed label sets that are not ``other``, samples of ``other`` ones)."""
    own = other = 0
    for family in families:
        spec = EVENT_FED.get(family.name) or EVENT_FED.get(family.name + "_total")
        if spec is None:
            continue
        for sample in family.samples:
            values = [sample.labels[label] for label in spec.labels]
            if values and all(v == OTHER for v in values):
                other += 1
            else:
                own += 1
    return own, other


def promtool_check(text: str) -> None:
    """``promtool check metrics`` passes on ``text`` with nothing to say."""
    promtool = require_binary("promtool")
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (result.stdout + result.stderr).strip(), result.stdout + result.stderr
