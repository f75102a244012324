"""JSON snapshot files: the pure mapping on literal documents, and the real exporter
re-reading the older layout's files as they change, keeping the last good values on bad
input, and refusing mappings that would collide."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.config import ConfigError, SnapshotFileConfig, SnapshotMetricConfig
from exporter.sources.snapshot import DEFAULT_FILES, compile_file, to_number, walk
from tests.procs import EXPORTER_BIN, Exporter, sample_value, wait_until

USAGE = {
    "updated_at": 1763769600.0,
    "window_seconds": 60,
    "providers": {
        "openai": {"requests": {"used": 412, "limit": 10000},
                   "tokens": {"used": 830112, "limit": 2000000}, "cost_usd_today": 18.42},
        "anthropic": {"requests": {"used": 37, "limit": 4000},
                      "tokens": {"used": 91000, "limit": 400000}, "cost_usd_today": "2.5"},
    },
}
ANALYTICS = {
    "generated_at": 1763769601.5,
    "tasks": {"queued": 3, "in_progress": 2, "completed": 140, "failed": 4, "retried": 6},
    "quality_gates": {"approval_ratio": 0.93, "average_score": 0.81},
    "resolution": {"active_loops": 1, "average_attempts": 2.4},
    "cost_usd_today": 4.2,
}


def write_json(path: Path, document: Any) -> None:
    """Write as careful writers do: a temporary file renamed over the old one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(document))
    os.replace(tmp, path)


# --- the mapping, pure ---------------------------------------------------------------------
def compiled(name: str, path: str, unit: str = "", **labels: str) -> Any:
    spec = SnapshotFileConfig(path="x.json", metrics=[
        SnapshotMetricConfig(name=name, path=path, unit=unit, labels=labels)])
    return compile_file(0, spec, {})[0]


def test_walk_fans_out_over_objects_and_lists() -> None:
    doc = {"a": {"x": {"n": 1}, "y": {"n": 2}}, "l": [{"n": 5}, {"n": 6}]}
    assert list(walk(doc, ("a", "*", "n"), ())) == [(("x",), 1), (("y",), 2)]
    assert list(walk(doc, ("l", "*", "n"), ())) == [(("0",), 5), (("1",), 6)]
    assert list(walk(doc, ("l", "1", "n"), ())) == [((), 6)]
    assert list(walk(doc, ("missing", "*"), ())) == []


def test_values_become_numbers_or_are_skipped() -> None:
    assert [to_number(v) for v in (3, 2.5, True, False, "7.25", "n/a", None, [1], "nan")] \
        == [3.0, 2.5, 1.0, 0.0, 7.25, None, None, None, None]


def test_mapping_renders_labels_from_wildcards_and_file() -> None:
    mapping = compiled("team.queue.depth", "queues.*.*", "{task}", team="{file}",
                       queue="{1}", state="{2}", fixed="yes")
    assert mapping.metric == "team_queue_depth"
    doc = {"queues": {"fast": {"waiting": 3, "note": "x"}}}
    assert list(mapping.values(doc, "ops")) == [(("ops", "fast", "waiting", "yes"), 3.0)]


def test_default_mapping_of_the_older_layout() -> None:
    usage, analytics = (compile_file(i, spec, {}) for i, spec in enumerate(DEFAULT_FILES))
    got = {(m.metric, labels): v for m in usage for labels, v in m.values(USAGE, "usage_log")}
    assert got[("ai_provider_usage", ("openai", "requests"))] == 412
    assert got[("ai_provider_usage_limit", ("anthropic", "tokens"))] == 400000
    assert got[("ai_provider_spend_today_usd", ("anthropic",))] == 2.5
    assert got[("ai_snapshot_generated_timestamp_seconds", ("usage_log",))] == 1763769600.0
    assert len(got) == 11
    got = {(m.metric, labels): v for m in analytics
           for labels, v in m.values(ANALYTICS, "planner")}
    assert got[("ai_analytics_tasks", ("planner", "completed"))] == 140
    assert got[("ai_analytics_approval_ratio", ("planner",))] == 0.93
    assert got[("ai_analytics_resolution_active", ("planner",))] == 1
    assert len(got) == 10


@pytest.mark.parametrize(("name", "path", "labels", "message"), [
    ("ai.tasks", "a", {}, "metrics.0.name: ai_tasks collides"),
    ("ai.task.queue.depth", "a", {}, "ai_task_queue_depth is a metric the exporter already"),
    ("bad name!", "a", {}, "metrics.0.name: 'bad name!' is not a metric name"),
    ("ok.name", "a..b", {}, "metrics.0.path"),
    ("ok.name", "a.*", {"x": "{2}"}, "metrics.0.labels.x: unknown placeholder {2}"),
    ("ok.name", "a", {"__x": "v"}, "metrics.0.labels.__x"),
    ("ai.analytics.tasks", "a.*", {"component": "{1}"}, "ai_analytics_tasks has labels"),
])
def test_bad_mappings_name_the_field(name: str, path: str, labels: dict[str, str],
                                     message: str) -> None:
    with pytest.raises(ConfigError) as info:
        compiled(name, path, **labels)
    assert message in str(info.value)
    assert str(info.value).startswith("sources.snapshot.files.0.metrics.0")


# --- the real exporter ---------------------------------------------------------------------
@pytest.fixture
def layout(tmp_path: Path) -> Iterator[tuple[Path, Exporter]]:
    write_json(tmp_path / "state/limits/usage_log.json", USAGE)
    write_json(tmp_path / "state/analytics/planner.json", ANALYTICS)
    cfg = {"sources": {"snapshot": {"enabled": True, "base_dir": str(tmp_path),
                                    "interval_seconds": 0.1}}}
    proc = Exporter(tmp_path, config=cfg)
    yield tmp_path, proc
    proc.stop()


@pytest.mark.e2e
def test_older_layout_served_and_followed(layout: tuple[Path, Exporter]) -> None:
    base, exporter = layout
    text = exporter.metrics()
    assert sample_value(text, "ai_provider_usage",
                        {"gen_ai_provider_name": "openai", "limit_type": "tokens"}) == 830112
    assert sample_value(text, "ai_provider_spend_today_usd",
                        {"gen_ai_provider_name": "openai"}) == 18.42
    assert sample_value(text, "ai_analytics_tasks",
                        {"component": "planner", "state": "failed"}) == 4
    assert sample_value(text, "ai_analytics_quality_score", {"component": "planner"}) == 0.81
    assert sample_value(text, "ai_snapshot_generated_timestamp_seconds",
                        {"file": "planner"}) == 1763769601.5
    assert sample_value(text, "ai_exporter_snapshot_reads_total",
                        {"path": "state/analytics/planner.json", "outcome": "ok"}) == 1
    assert sample_value(text, "ai_exporter_snapshot_values",
                        {"path": "state/limits/usage_log.json"}) == 11

    # Changed: re-read once. Unchanged: never re-read.
    write_json(base / "state/analytics/planner.json", {**ANALYTICS, "tasks": {"queued": 9}})
    wait_until(lambda: sample_value(exporter.metrics(), "ai_analytics_tasks",
                                    {"component": "planner", "state": "queued"}) == 9,
               10, what="re-read after change")
    time.sleep(0.5)
    text = exporter.metrics()
    assert sample_value(text, "ai_analytics_tasks",
                        {"component": "planner", "state": "failed"}) is None
    assert sample_value(text, "ai_exporter_snapshot_reads_total",
                        {"path": "state/analytics/planner.json", "outcome": "ok"}) == 2

    # A new file under the glob appears while running.
    write_json(base / "state/analytics/coder.json", ANALYTICS)
    wait_until(lambda: sample_value(exporter.metrics(), "ai_analytics_tasks",
                                    {"component": "coder", "state": "retried"}) == 6,
               10, what="new snapshot file")

    # Bad input keeps the last good values and is reported.
    (base / "state/analytics/planner.json").write_text('{"tasks": {"queued": 1')
    wait_until(lambda: sample_value(exporter.metrics(), "ai_exporter_snapshot_reads_total",
                                    {"path": "state/analytics/planner.json",
                                     "outcome": "malformed_json"}) == 1,
               10, what="malformed read counted")
    text = exporter.metrics()
    assert sample_value(text, "ai_analytics_tasks",
                        {"component": "planner", "state": "queued"}) == 9
    ready = exporter.get("/readyz").json()["checks"]["source:snapshot"]
    assert "state/analytics/planner.json: not valid JSON" in ready["detail"]
    assert "state/analytics/planner.json" in exporter.log()

    # Replaced by a directory: reported, and not ready.
    (base / "state/limits/usage_log.json").unlink()
    (base / "state/limits/usage_log.json").mkdir()
    wait_until(lambda: exporter.get("/readyz").status_code == 503, 10, what="not ready")
    (base / "state/limits/usage_log.json").rmdir()

    # Gone: its values go with it.
    (base / "state/analytics/coder.json").unlink()
    wait_until(lambda: sample_value(exporter.metrics(), "ai_analytics_tasks",
                                    {"component": "coder", "state": "retried"}) is None,
               10, what="vanished file dropped")
    assert exporter.get("/readyz").status_code == 200


@pytest.mark.e2e
def test_custom_mapping_and_check_config(tmp_path: Path) -> None:
    write_json(tmp_path / "queues.json", {"queues": [{"name": "fast", "depth": 4},
                                                     {"name": "slow", "depth": "12"}]})
    cfg: dict[str, Any] = {"sources": {"snapshot": {
        "enabled": True, "base_dir": str(tmp_path), "interval_seconds": 0.1,
        "files": [{"path": "*.json", "metrics": [
            {"name": "team.queue.depth", "path": "queues.*.depth", "unit": "{task}",
             "help": "Queue depth as the team dashboard file reports it.",
             "labels": {"index": "{1}", "source": "{file}"}}]}]}}}
    proc = Exporter(tmp_path, config=cfg)
    try:
        text = proc.metrics()
        assert sample_value(text, "team_queue_depth", {"index": "1", "source": "queues"}) == 12
        assert "# HELP team_queue_depth Queue depth as the team dashboard file" in text
        assert sample_value(text, "ai_provider_usage") is None  # defaults replaced
    finally:
        proc.stop()
    cfg["sources"]["snapshot"]["files"][0]["metrics"][0]["name"] = "ai.llm.requests"
    bad = tmp_path / "bad.yml"
    bad.write_text(yaml.safe_dump(cfg))
    result = subprocess.run([EXPORTER_BIN, "check-config", f"--config.file={bad}"],
                            check=False, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "sources.snapshot.files.0.metrics.0.name" in result.stderr
