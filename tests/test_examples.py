"""The example configurations load, validate and keep showing what they are meant to show."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import msgspec
import pytest
import yaml

from exporter import config
from exporter.collectors import COLLECTORS
from exporter.runtime import Runtime, enabled_collectors
from tests.procs import EXPORTER_BIN, ROOT

EXAMPLE = ROOT / "examples" / "config.yml"
DOC = ROOT / "docs" / "components.md"


@pytest.mark.e2e
def test_check_config_accepts_the_example() -> None:
    result = subprocess.run([EXPORTER_BIN, "check-config", f"--config.file={EXAMPLE}"],
                            check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "configuration OK" in result.stdout


def test_example_shows_probes_redis_processes_and_gpu() -> None:
    cfg = config.load(str(EXAMPLE), environ={})
    Runtime.validate(cfg)
    kinds = {p.kind for p in cfg.components.probes}
    assert {"agent", "mcp_server", "model_server", "vector_db"} <= kinds
    assert any(p.tls.ca_file and p.bearer_token_file for p in cfg.components.probes)
    assert any(p.body_regex for p in cfg.components.probes)
    assert cfg.components.processes
    assert cfg.sources.redis_streams.enabled and cfg.sources.redis_streams.streams
    enabled = enabled_collectors(cfg)
    assert {"probes", "processes", "gpu", "redis_streams"} <= set(enabled)
    # Collector names used in the example exist.
    raw = yaml.safe_load(EXAMPLE.read_text())
    assert set(raw["collectors"]["enabled"]) <= set(COLLECTORS)


def test_every_component_setting_is_documented() -> None:
    doc = DOC.read_text()
    for struct in (config.ProbeConfig, config.ProbeTlsConfig, config.ProcessMatchConfig,
                   config.ComponentsConfig, config.RedisStreamsConfig):
        for f in msgspec.structs.fields(struct):
            assert re.search(rf"`([a-z_]+\.)?{f.name}`", doc), \
                f"{struct.__name__}.{f.name} missing from {DOC.name}"


def test_example_uses_only_loopback_addresses() -> None:
    text = Path(EXAMPLE).read_text()
    for line in text.splitlines():
        if "://" in line and not line.lstrip().startswith("#"):
            url = line.split("://", 1)[1]
            assert url.startswith("127.0.0.1"), line
