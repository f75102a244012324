"""AI process collector against real processes: matched, measured, exiting, vanishing."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from prometheus_client.exposition import generate_latest

from exporter import config
from exporter.collectors.base import CollectorContext
from exporter.collectors.processes import ProcessesCollector
from exporter.scrape import StaticFamilies
from tests.procs import Exporter, free_port, sample, sample_value, wait_until

SLEEPER = "import time; time.sleep(120)"


def spawn(marker: str) -> subprocess.Popen[bytes]:
    """A real long-sleeping process whose command line carries ``marker``."""
    return subprocess.Popen([sys.executable, "-c", SLEEPER, f"--component={marker}"])


@pytest.fixture
def marker() -> str:
    return f"fake-model-server-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def sleepers(marker: str) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs = [spawn(marker), spawn(marker)]
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(5)


def render(collector: ProcessesCollector) -> str:
    return generate_latest(StaticFamilies(list(collector.collect()))).decode()


def collector_for(**processes: dict[str, str]) -> ProcessesCollector:
    cfg = config.build({"components": {"processes": [
        {"name": name, **match} for name, match in processes.items()]}})
    return ProcessesCollector(CollectorContext(cfg))


def test_match_rules_need_a_regex_and_validate_it() -> None:
    with pytest.raises(config.ConfigError, match=r"components\.processes\.0"):
        config.build({"components": {"processes": [{"name": "x"}]}})
    with pytest.raises(config.ConfigError, match="cmdline_regex"):
        config.build({"components": {"processes": [{"name": "x", "cmdline_regex": "(["}]}})
    with pytest.raises(config.ConfigError, match="listed twice"):
        config.build({"components": {"processes": [{"name": "x", "name_regex": "a"},
                                                   {"name": "x", "name_regex": "b"}]}})


@pytest.mark.e2e
def test_matched_processes_measured_then_exit_reported(
        marker: str, sleepers: list[subprocess.Popen[bytes]]) -> None:
    collector = collector_for(model={"cmdline_regex": marker},
                              python_model={"name_regex": "^python", "cmdline_regex": marker},
                              other={"name_regex": "^no-such-process-name$"})
    labels = {"component": "model"}
    wait_until(lambda: sample_value(render(collector), "ai_process_running", labels) == 2,
               10, what="both sleepers matched")
    text = render(collector)
    assert sample_value(text, "ai_process_running", {"component": "python_model"}) == 2
    assert sample_value(text, "ai_process_running", {"component": "other"}) == 0
    assert sample(text, "ai_process_memory_usage_bytes", labels) > 1_000_000
    assert sample(text, "ai_process_threads", labels) >= 2
    assert sample(text, "ai_process_open_file_descriptors", labels) >= 6
    started = sample_value(text, "ai_process_start_timestamp_seconds", labels)
    assert started is not None and time.time() - 60 < started <= time.time()
    cpu_before = sample_value(text, "ai_process_cpu_time_seconds_total",
                              {**labels, "cpu_mode": "user"})
    assert cpu_before is not None and cpu_before > 0
    assert sample_value(text, "ai_process_start_timestamp_seconds", {"component": "other"}) is None

    sleepers[0].kill()
    sleepers[0].wait(5)
    text = render(collector)
    assert sample_value(text, "ai_process_running", labels) == 1
    assert sample_value(text, "ai_process_exits_total", labels) == 1
    cpu_after = sample_value(text, "ai_process_cpu_time_seconds_total",
                             {**labels, "cpu_mode": "user"})
    assert cpu_after is not None and cpu_after >= cpu_before  # exited CPU is carried over

    sleepers[1].kill()
    sleepers[1].wait(5)
    text = render(collector)
    assert sample_value(text, "ai_process_running", labels) == 0
    assert sample_value(text, "ai_process_exits_total", labels) == 2
    assert sample_value(text, "ai_process_memory_usage_bytes", labels) == 0
    assert sample_value(text, "ai_process_start_timestamp_seconds", labels) is None


@pytest.mark.e2e
def test_processes_exiting_during_collection_never_fail_it(marker: str) -> None:
    """Short-lived matching processes come and go while the collector reads them."""
    collector = collector_for(flaky={"cmdline_regex": marker})
    children: list[subprocess.Popen[bytes]] = []
    deadline = time.monotonic() + 3.0
    scrapes = 0
    try:
        while time.monotonic() < deadline and len(children) < 300:
            children.extend(subprocess.Popen(["/bin/sh", "-c", "sleep 0.02", marker])
                            for _ in range(5))
            families = list(collector.collect())
            scrapes += 1
            assert families
            for child in children:
                child.poll()
    finally:
        for child in children:
            child.wait(5)
    text = render(collector)
    assert sample_value(text, "ai_process_running", {"component": "flaky"}) == 0
    assert sample(text, "ai_process_exits_total", {"component": "flaky"}) > 0
    assert scrapes > 5


@pytest.mark.e2e
def test_exporter_serves_process_series_and_never_matches_itself(
        marker: str, sleepers: list[subprocess.Popen[bytes]], tmp_path: Path) -> None:
    port = free_port()
    cfg = {"components": {"processes": [
        {"name": "model-server", "cmdline_regex": marker},
        # Would match the exporter's own command line (its --config.file path):
        {"name": "self", "cmdline_regex": rf"exporter-{port}\.yml"},
    ]}}
    exp = Exporter(tmp_path, cfg, port=port)
    try:
        text = exp.metrics()
        assert sample_value(text, "ai_process_running", {"component": "model-server"}) == 2
        assert sample_value(text, "ai_process_running", {"component": "self"}) == 0
        assert sample_value(text, "ai_exporter_collector_success",
                            {"collector": "processes"}) == 1
        own_rss = sample_value(text, "process_resident_memory_bytes")
        assert own_rss is not None and own_rss > 0
        for p in sleepers:
            p.kill()
            p.wait(5)
        text = exp.metrics()
        assert sample_value(text, "ai_process_running", {"component": "model-server"}) == 0
        assert sample_value(text, "ai_process_exits_total", {"component": "model-server"}) == 2
    finally:
        exp.stop()


def test_config_rejects_process_without_name() -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"cmdline_regex": "x"}, config.ProcessMatchConfig)
