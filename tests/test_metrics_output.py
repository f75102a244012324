"""/metrics as Prometheus sees it: promtool's linter, a real scrape, and a clean shutdown."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter import catalog
from tests.procs import LOOPBACK, Exporter, Prometheus, static_job, wait_until
from tests.samples import promtool_check

pytestmark = pytest.mark.e2e


def test_promtool_check_metrics_default(exporter: Exporter) -> None:
    promtool_check(exporter.metrics())


def test_promtool_check_metrics_with_ai_series(demo_exporter: Exporter) -> None:
    """The demo workload makes every AI metric move, so the whole catalog is linted."""
    def with_ai() -> str:
        text = demo_exporter.metrics()
        return text if "ai_tasks_total{" in text else ""

    text = wait_until(with_ai, 30, what="demo AI series")
    promtool_check(text)


def test_served_names_are_in_the_catalog(exporter: Exporter) -> None:
    known = catalog.known_series_names()
    for family in text_string_to_metric_families(exporter.metrics()):
        for sample in family.samples:
            assert sample.name in known, f"{sample.name} is served but not in the catalog"


def test_families_have_help_and_type(exporter: Exporter) -> None:
    text = exporter.metrics()
    helps = {line.split()[2] for line in text.splitlines() if line.startswith("# HELP ")}
    types = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    assert helps == types
    assert {"system_cpu_time_seconds_total", "system_memory_usage_bytes",
            "ai_exporter_collector_success", "ai_exporter_build_info",
            "process_resident_memory_bytes"} <= types


def test_real_prometheus_scrapes_the_exporter(exporter: Exporter, workdir: Path) -> None:
    prometheus = Prometheus(workdir, [static_job("exporter", f"{LOOPBACK}:{exporter.port}")])
    try:
        up = prometheus.wait_for('up{job="exporter"} == 1')
        assert up[0]["metric"]["instance"] == f"{LOOPBACK}:{exporter.port}"
        memory = prometheus.wait_for('system_memory_limit_bytes{job="exporter"}')
        assert float(memory[0]["value"][1]) > 0
        cpu = prometheus.wait_for('sum by (cpu_mode) (system_cpu_time_seconds_total)')
        assert {r["metric"]["cpu_mode"] for r in cpu} >= {"user", "system", "idle"}
        failed = prometheus.query('ai_exporter_collector_success{job="exporter"} == 0')
        assert failed == [], failed
        build = prometheus.wait_for("ai_exporter_build_info")
        assert build[0]["metric"]["version"]
        # Prometheus's own view of the scrape: no sample was dropped as invalid.
        samples = prometheus.wait_for('scrape_samples_scraped{job="exporter"} > 100')
        assert float(samples[0]["value"][1]) > 100
    finally:
        prometheus.stop()


def test_sigterm_shuts_down_gracefully(workdir: Path) -> None:
    proc = Exporter(workdir)
    try:
        assert proc.get("/metrics").status_code == 200
        proc.signal(signal.SIGTERM)
        code = proc.popen.wait(15)
        assert code == 0, proc.log()
        log = proc.log()
        assert "received SIGTERM, shutting down" in log
        assert "stopped" in log
        assert "Traceback" not in log
        with socket.socket() as probe:  # the port is released
            probe.settimeout(2)
            assert probe.connect_ex((LOOPBACK, proc.port)) != 0
    finally:
        proc.stop()


def test_sigint_also_exits_0(workdir: Path) -> None:
    proc = Exporter(workdir)
    try:
        proc.signal(signal.SIGINT)
        assert proc.popen.wait(15) == 0, proc.log()
    finally:
        proc.stop()
