"""Typed wiring, in process: collectors get named dependencies, sources report their self
metrics through a protocol, routes close over what they need, the procfs root is fixed for
the process, and push tokens have one loader and one authorization point.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from exporter import catalog, cli, config
from exporter.aggregator import Aggregator
from exporter.collectors.base import CollectorContext, CollectorDeps
from exporter.collectors.cpu import CpuCollector
from exporter.collectors.files import FilesCollector
from exporter.collectors.procfs import CLOCK_TICKS, CpuTimes, parse_stat, read_stat
from exporter.collectors.redis_streams import RedisStreamsCollector
from exporter.collectors.uptime import UptimeCollector
from exporter.config import ConfigError
from exporter.hostpaths import HostPaths
from exporter.ingest import Ingestor
from exporter.runtime import Runtime
from exporter.security import (
    ANONYMOUS,
    BEARER_CHALLENGE,
    IDENTITY_KEY,
    PUSH_IDENTITY,
    Identity,
    IntakeAuth,
    PushTokens,
    Refusal,
    Security,
    load_push_tokens,
)
from exporter.sources.base import ReportsMetrics, ReportsMetricsWithin, SelfMetrics, reporting
from exporter.sources.push import PushSource
from exporter.web import create_app

EVENT = {"kind": "error", "component": "wiring", "category": "client"}


def _build(tmp_path: Path, settings: dict[str, Any] | None = None) -> config.Config:
    return config.build({"storage": {"path": str(tmp_path / "data")}, **(settings or {})})


@pytest.fixture
def make_runtime(tmp_path: Path) -> Iterator[Callable[..., Runtime]]:
    """Runtimes on their own storage directory, stopped at the end of the test."""
    made: list[Runtime] = []

    def make(settings: dict[str, Any] | None = None,
             loader: Callable[[], config.Config] | None = None) -> Runtime:
        runtime = Runtime(_build(tmp_path / str(len(made)), settings), loader)
        made.append(runtime)
        return runtime

    yield make
    for runtime in made:
        runtime.stop()


# --- self metrics through the protocol ----------------------------------------------------

class _Local:
    """A source reporting from memory (as the tail and snapshot sources do)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def families(self) -> list[Metric]:
        family = GaugeMetricFamily(f"fake_{self.name}", "a fake source's self metric")
        family.add_metric([], 1.0)
        return [family]


class _Remote:
    """A source whose self metrics wait on a remote system (as Redis Streams does)."""

    name = "redis_streams"

    def __init__(self) -> None:
        self.timeouts: list[float] = []

    def families(self, timeout: float = 1.0) -> list[Metric]:
        self.timeouts.append(timeout)
        return [GaugeMetricFamily("fake_redis", "a fake remote self metric", value=2.0)]


def _names(families: Iterator[Metric] | list[Metric]) -> list[str]:
    return [f.name for f in families]


def test_collectors_report_the_sources_they_are_given_by_name() -> None:
    remote = _Remote()
    sources: list[SelfMetrics] = [_Local("tail"), _Local("snapshot"), _Local("other"), remote]
    ctx = CollectorContext(config.build(), CollectorDeps(sources=lambda: sources))
    assert _names(list(FilesCollector(ctx).collect())) == ["fake_tail", "fake_snapshot"]
    assert _names(list(RedisStreamsCollector(ctx).collect())) == ["fake_redis"]
    assert remote.timeouts == [pytest.approx(0.8)]  # outside a scrape: 1 s x 0.8
    # Read at scrape time: a source rebuilt on reload is seen by the same collector.
    sources[:] = [_Local("snapshot")]
    assert _names(list(FilesCollector(ctx).collect())) == ["fake_snapshot"]


def test_real_sources_satisfy_the_protocols(make_runtime: Callable[..., Runtime],
                                            tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    log.write_text("")
    runtime = make_runtime({"sources": {"tail": {"enabled": True, "paths": [str(log)]}}})
    by_name = {s.name: s for s in runtime.sources}
    assert isinstance(by_name["tail"], ReportsMetrics)
    assert not isinstance(by_name["push"], ReportsMetrics)  # push has no self metrics
    assert [s.name for s in reporting(runtime.sources)] == ["tail", "otlp"]
    assert [s.name for s in runtime.self_metrics()] == ["tail", "otlp"]
    assert isinstance(_Remote(), ReportsMetricsWithin)


def test_a_collector_built_alone_gets_empty_defaults() -> None:
    deps = CollectorDeps()
    assert (deps.ingestor, deps.security, deps.otlp, deps.probes) == (None, None, None, None)
    assert list(deps.sources()) == []
    assert list(FilesCollector(CollectorContext(config.build())).collect()) == []


def test_runtime_hands_every_collector_the_same_typed_deps(
        make_runtime: Callable[..., Runtime]) -> None:
    runtime = make_runtime()
    contexts = {id(c.ctx): c.ctx for c in runtime.runner.collectors}
    assert len(contexts) == 1
    deps = contexts.popitem()[1].deps
    assert deps.ingestor is runtime.ingestor and deps.security is runtime.security
    assert deps.probes is runtime.probes is not None
    assert deps.otlp is runtime.otlp is None  # no endpoint configured
    with pytest.raises(AttributeError):
        deps.ingestor = None  # type: ignore[misc]  # frozen


# --- routes close over their dependencies ---------------------------------------------------

def test_routes_serve_their_own_runtime_not_the_app_config(
        make_runtime: Callable[..., Runtime]) -> None:
    one, two = make_runtime({"collectors": {"enabled": {"probes": False}}}), make_runtime()
    first, second = create_app(one), create_app(two)
    assert "RUNTIME" not in first.config
    assert first.test_client().post("/api/v1/events", json=[EVENT]).status_code == 200
    assert one.ingestor.stats() != two.ingestor.stats()
    assert first.test_client().get("/probe?target=x").status_code == 404  # probes off
    assert second.test_client().get("/probe?target=x").status_code == 400  # no such target


# --- procfs: fixed for the process -----------------------------------------------------------

def test_reload_refuses_a_changed_procfs_root(make_runtime: Callable[..., Runtime],
                                              tmp_path: Path) -> None:
    before = psutil.PROCFS_PATH
    moved = _build(tmp_path / "moved", {"host": {"procfs_path": str(tmp_path)}})
    runtime = make_runtime(loader=lambda: moved)
    ok, message = runtime.reload()
    assert not ok
    assert message.startswith("host.procfs_path: fixed for the process lifetime")
    assert runtime.config.host.procfs_path == "/proc"
    # Building a runtime never sets psutil's root (the CLI does, once); the configured one
    # still reaches the collectors, typed, for those that read procfs themselves.
    elsewhere = make_runtime({"host": {"procfs_path": str(tmp_path)}})
    assert elsewhere.runner.collectors[0].ctx.host == HostPaths(str(tmp_path))
    assert before == psutil.PROCFS_PATH


# --- one token loader -------------------------------------------------------------------------

def test_an_empty_push_token_is_a_config_error_naming_the_field() -> None:
    for enabled in (True, False):  # the policy loads them even with push off
        cfg = config.build({"sources": {"push": {"enabled": enabled,
                                                 "tokens": ["tok-a", "  "]}}})
        with pytest.raises(ConfigError, match=r"^sources\.push\.tokens\.1: empty token$"):
            Runtime.validate(cfg)


def test_check_config_exits_2_on_an_empty_push_token(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "exporter.yml"
    path.write_text('sources:\n  push:\n    tokens: [""]\n')
    assert cli.main(["check-config", f"--config.file={path}"]) == cli.EXIT_CONFIG == 2
    assert "sources.push.tokens.0: empty token" in capsys.readouterr().err


@pytest.mark.parametrize(("content", "error"), [
    (b"# only a comment\n\n", r"^sources\.push\.tokens_file: .* holds no token$"),
    (b"\n  \n", r"^sources\.push\.tokens_file: .* is empty$"),
    (b"tok-\xff\n", r"^sources\.push\.tokens_file: not UTF-8 text$"),
])
def test_bad_token_files_are_config_errors(tmp_path: Path, content: bytes, error: str) -> None:
    path = tmp_path / "push-tokens"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=error):
        load_push_tokens(config.build(
            {"sources": {"push": {"tokens_file": str(path)}}}).sources.push)


def test_web_policy_and_push_source_load_the_same_tokens(tmp_path: Path) -> None:
    path = tmp_path / "push-tokens"
    path.write_text("# ci\n tok-file \n")
    cfg = config.build({"sources": {"push": {"tokens": [" tok-a"], "tokens_file": str(path)}}})
    tokens = load_push_tokens(cfg.sources.push)
    assert tokens == PushTokens.of([b"tok-a", b"tok-file"])
    assert Security(cfg).policy.push_tokens == tokens
    assert tokens.matches(b"tok-file") and not tokens.matches(b"tok-fil")


# --- one authorization point ------------------------------------------------------------------

def test_intake_auth_returns_the_principal_or_a_refusal() -> None:
    auth = IntakeAuth(PushTokens.of([b"tok-a"]))
    user = Identity("user:ci", "operator", "basic")
    assert auth.authorize(user, "") is user  # the web layer verified it
    assert auth.authorize(None, "Bearer tok-a") == PUSH_IDENTITY
    assert auth.authorize(Identity("anonymous", "operator", "none"),
                          "bearer  tok-a ") == PUSH_IDENTITY
    for header, reason in (("", "missing"), ("Bearer tok-b", "bad_token"),
                           ("Basic tok-a", "bad_token"), ("Bearer", "bad_token")):
        refusal = auth.authorize(None, header)
        assert refusal == Refusal(401, reason, challenge=BEARER_CHALLENGE), header
    assert IntakeAuth().authorize(None, "") == ANONYMOUS  # no push token: open
    assert not IntakeAuth().token_required and auth.token_required


def test_push_source_trusts_the_identity_the_web_layer_left() -> None:
    ingestor = Ingestor(Aggregator())
    source = PushSource(ingestor, 1 << 20, tokens=PushTokens.of([b"tok-a"]))
    assert source.authorize("", Identity("token:ci", "operator", "token")) is None
    refused = source.authorize("", Identity("anonymous", "admin", "none"))
    assert refused is not None and refused.status == 401
    assert refused.headers["WWW-Authenticate"] == BEARER_CHALLENGE
    assert IDENTITY_KEY == "ai_exporter.identity"


def test_open_push_route_still_needs_a_push_token(make_runtime: Callable[..., Runtime]) -> None:
    """With ``/api/v1/events`` an open route the web layer verifies nobody: the push
    source's own check (the same ``IntakeAuth``) still requires a push token."""
    runtime = make_runtime({"sources": {"push": {"tokens": ["tok-a"]}},
                            "web": {"security": {"open_routes": ["/api/v1/events"]}}})
    client = create_app(runtime).test_client()
    refused = client.post("/api/v1/events", json=[EVENT])
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"] == BEARER_CHALLENGE
    assert client.post("/api/v1/events", json=[EVENT],
                       headers={"Authorization": "Bearer tok-a"}).status_code == 200
    assert re.search(r"bearer token required", runtime.readiness()["source:push"]["detail"])


# --- collectors on fixture procfs files ---------------------------------------------------

STAT = (b"cpu  300 10 100 5000 20 0 5 0 0 0\n"
        b"cpu0 200 10 60 2400 10 0 3 0 0 0\n"
        b"cpu1 100 0 40 2600 10 0 2 0 0 0\n"
        b"intr 5623862 0 0\nctxt 7003381\nbtime 1700000000\nprocesses 9\n")


def _on_fixture(tmp_path: Path, stat: bytes | None = STAT) -> CollectorContext:
    proc = tmp_path / "proc"
    proc.mkdir()
    if stat is not None:
        (proc / "stat").write_bytes(stat)
    return CollectorContext(config.build({"host": {"procfs_path": str(proc)}}))


def _samples(families: list[Metric], name: str) -> dict[tuple[str, ...], float]:
    family = next(f for f in families if name in (f.name, f"{f.name}_total"))
    return {tuple(s.labels.values()): s.value for s in family.samples}


def test_cpu_and_uptime_collectors_read_the_procfs_root_they_are_given(
        tmp_path: Path) -> None:
    ctx = _on_fixture(tmp_path)
    assert ctx.host == HostPaths(str(tmp_path / "proc"))
    cpu = list(CpuCollector(ctx).collect())
    ticks = CLOCK_TICKS
    times = _samples(cpu, catalog.SYSTEM_CPU_TIME.name)
    assert times[("0", "user")] == pytest.approx(200 / ticks)
    assert times[("1", "idle")] == pytest.approx(2600 / ticks)
    assert times[("0", "interrupt")] == 0.0
    assert _samples(cpu, catalog.SYSTEM_CPU_LOGICAL_COUNT.name) == {(): 2.0}
    # The baseline is the aggregate line, the scrape the per-CPU sum: equal here, so no
    # time has passed: the utilization served is the fixture's shares since boot.
    shares = _samples(cpu, catalog.SYSTEM_CPU_UTILIZATION.name)
    total = sum(times.values())
    assert shares[("user",)] == pytest.approx(
        sum(v for (_, mode), v in times.items() if mode == "user") / total)
    assert sum(shares.values()) == pytest.approx(1.0)
    uptime = list(UptimeCollector(ctx).collect())
    assert _samples(uptime, catalog.SYSTEM_BOOT_TIME.name) == {(): 1700000000.0}


def test_procfs_collectors_fail_on_an_empty_root(tmp_path: Path) -> None:
    ctx = _on_fixture(tmp_path, stat=None)
    for collector in (CpuCollector(ctx), UptimeCollector(ctx)):
        with pytest.raises(OSError):
            list(collector.collect())


def test_stat_is_parsed_as_psutil_parses_it() -> None:
    stat = parse_stat(STAT)
    assert stat.total == CpuTimes(*(v / CLOCK_TICKS for v in (300, 10, 100, 5000, 20, 0, 5)))
    assert len(stat.per_cpu) == 2 and stat.boot_time == 1700000000.0
    with pytest.raises(RuntimeError, match="btime"):
        parse_stat(b"cpu  1 2 3 4\n")
    real = read_stat(HostPaths())
    assert real.boot_time == psutil.boot_time()
    assert len(real.per_cpu) == len(psutil.cpu_times(percpu=True))


def test_the_policy_in_force_gives_intake_the_same_tokens(
        make_runtime: Callable[..., Runtime]) -> None:
    runtime = make_runtime({"sources": {"push": {"tokens": ["tok-a"]}}})
    intake = runtime.security.policy.intake
    assert intake.authorize(None, "Bearer tok-a") == PUSH_IDENTITY
    push = runtime.source("push")
    assert isinstance(push, PushSource) and push.tokens == intake.tokens
