"""The running exporter: configuration, collectors, sources, and reload, in one object.

AI state (aggregator and ingest counters) lives as long as the process, so a reload never
resets a counter; collectors and sources are rebuilt from the new configuration and
swapped in only once the new configuration has validated and built.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from prometheus_client import ProcessCollector
from prometheus_client.metrics_core import Metric

from exporter import catalog, config, exposition
from exporter.aggregator import Aggregator
from exporter.collectors import COLLECTORS, Collector, CollectorContext
from exporter.collectors.base import CollectorDeps
from exporter.collectors.probes import ProbeService, build_probe_service
from exporter.config import Config, ConfigError, StorageConfig
from exporter.hostpaths import HostPaths, check_unchanged, warn_if_unpinned
from exporter.ingest import Ingestor
from exporter.otlp import CollectGate, build_pusher
from exporter.otlp import resolve as otlp_settings
from exporter.pricing import PriceTable, check_price_file
from exporter.scrape import CollectorRunner, SharedScrapes
from exporter.security import Security
from exporter.sources import Source, SourceDeps, build_sources
from exporter.sources.base import SelfMetrics, reporting
from exporter.sources.tail import legacy_state
from exporter.storage import Replayable, State, StateStore
from exporter.version import build_info

log = logging.getLogger(__name__)


def enabled_collectors(cfg: Config) -> list[str]:
    """Names of the collectors to run: each collector's default, overridden by config."""
    unknown = set(cfg.collectors.enabled) - set(COLLECTORS)
    if unknown:
        name = sorted(unknown)[0]
        raise ConfigError(f"collectors.enabled.{name}: no such collector "
                          f"(known: {', '.join(sorted(COLLECTORS))})")
    return [name for name, cls in COLLECTORS.items()
            if cfg.collectors.enabled.get(name, cls.default_enabled)]


# The demo spends about this much per generated event (its model prices and token mix);
# its budgets, when the configuration sets none, leave 50 % headroom at the demo's rate so
# that only the cost-spike episode threatens them.
DEMO_USD_PER_EVENT = 0.0019
DEMO_PROVIDER_SHARE = {"openai": 0.35, "anthropic": 0.42}


def demo_budgets(rate_per_second: float) -> dict[str, float]:
    total = round(rate_per_second * DEMO_USD_PER_EVENT * 86400 * 1.5, 2)
    budgets = {"total": total}
    budgets.update({p: round(total * share, 2) for p, share in DEMO_PROVIDER_SHARE.items()})
    return budgets


def _aggregator_settings(cfg: Config) -> dict[str, Any]:
    budgets = {b.scope: b.usd_per_day for b in cfg.ai.budgets}
    if cfg.demo.enabled and not budgets:
        budgets = demo_budgets(cfg.demo.rate_per_second)
    return {
        "heartbeat_timeout": cfg.ai.heartbeat_timeout_seconds,
        "budgets": budgets,
        "latency_threshold": cfg.ai.llm_latency_threshold_seconds,
        "success_objective": cfg.ai.task_success_objective,
    }


DEMO_STORAGE_PATH = "data-demo"


def build_store(cfg: Config) -> StateStore:
    """The state store of ``storage.path`` (nothing on disk is touched until ``open``)."""
    interval = cfg.storage.checkpoint_interval_seconds
    if cfg.sources.tail.enabled:  # the tail's older setting still shortens it
        interval = min(interval, cfg.sources.tail.checkpoint_interval_seconds)
    return StateStore(Path(storage_path(cfg)).absolute(), sync=cfg.storage.fsync,
                      interval=interval)


def storage_path(cfg: Config) -> str:
    """``storage.path``; the demo's default is another directory, so that its invented
    events never land in the store a plain exporter restores."""
    if cfg.demo.enabled and cfg.storage.path == StorageConfig().path:
        return DEMO_STORAGE_PATH
    return cfg.storage.path


def _legacy(cfg: Config) -> Callable[[], tuple[State, Callable[[], None]] | None] | None:
    """Where an older layout may hold state to migrate: the tail's checkpoint."""
    tail = cfg.sources.tail
    return (lambda: legacy_state(tail)) if tail.enabled else None


class Runtime:
    """Holds everything a request handler or a scrape needs."""

    def __init__(self, cfg: Config, loader: Callable[[], Config] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        """``clock``: the wall clock of the AI state (batch times, heartbeats, the UTC
        day of budgets); a test passes a fake one."""
        self._loader = loader
        self._lock = threading.Lock()
        self.started_at = time.time()
        self.ready_event = threading.Event()
        self.pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="collector")
        extra = dict(cfg.ai.extra_labels)
        if cfg.demo.enabled:
            extra.setdefault("demo", "true")
        self.aggregator = Aggregator(
            max_series=cfg.ai.max_series_per_metric, max_tracked=cfg.ai.max_tracked_ids,
            max_samples=cfg.ai.max_total_samples, extra_labels=extra, clock=clock,
            prices=PriceTable.from_settings(cfg.ai.pricing),
            **_aggregator_settings(cfg))
        self.ingestor = Ingestor(self.aggregator, cfg.ai.max_event_bytes,
                                 cfg.ai.log_interval_seconds, native=cfg.ai.native_lines)
        self.security = Security(cfg)
        self.host = HostPaths.from_config(cfg)  # fixed for the process (see hostpaths)
        warn_if_unpinned(self.host)
        # OTLP push (None when no endpoint): reads families() off the scrape path.
        self.collect_gate = CollectGate()
        self.last_collection: tuple[float, list[Metric]] | None = None
        self._scrapes = SharedScrapes(self._render_metrics)
        self.otlp = build_pusher(cfg, self)
        # Shared by the probes collector, /probe and /api/status/ai; replaced on reload.
        self.probes = self._build_probes(cfg, None)
        self.process_collector = ProcessCollector(registry=None)
        self.last_reload_ok = True
        self.last_reload_time = time.time()
        self.config = cfg
        self.config_pricing = cfg.ai.pricing  # the prices in force (start-up)
        self.runner = self._build_runner(cfg, self.probes)
        # One store for every source's cursor and the AI state, restored before any
        # source is built (StorageLockedError when another exporter holds it).
        self.store = build_store(cfg)
        # Logged batches are stamped by the AI state's clock, so both agree on batch times.
        self.store.clock = self.store.wal.clock = clock
        self.store.open(self.ingestor, legacy=_legacy(cfg))
        self.sources: list[Source] = build_sources(self._source_deps(cfg))

    @staticmethod
    def validate(cfg: Config) -> None:
        """Check what only building can check (collector names, source settings)."""
        enabled_collectors(cfg)
        build_sources(SourceDeps(cfg, Ingestor(Aggregator()), build_store(cfg)))
        check_price_file(cfg.ai.pricing)
        otlp_settings(cfg)
        Security.prepare(cfg)

    @staticmethod
    def _build_probes(cfg: Config, previous: ProbeService | None) -> ProbeService | None:
        """The probe service when the probes collector is on (else /probe answers 404)."""
        if "probes" not in enabled_collectors(cfg):
            return None
        return build_probe_service(cfg, previous)

    def self_metrics(self) -> list[SelfMetrics]:
        """The running sources that report self metrics (read at scrape time)."""
        return reporting(self.sources)

    def _build_runner(self, cfg: Config, probes: ProbeService | None) -> CollectorRunner:
        deps = CollectorDeps(ingestor=self.ingestor, security=self.security, otlp=self.otlp,
                             probes=probes, sources=self.self_metrics)
        ctx = CollectorContext(cfg, deps)
        collectors: list[Collector] = [COLLECTORS[name](ctx) for name in enabled_collectors(cfg)]
        return CollectorRunner(collectors, cfg.collectors.timeout_seconds, self.pool)

    def _source_deps(self, cfg: Config) -> SourceDeps:
        return SourceDeps(cfg, self.ingestor, self.store, self.security, self.collect_gate)

    # --- lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        # Logged pushes the stored state does not hold yet count before anything new.
        self.store.replay({s.name: s.replay for s in self.sources
                           if isinstance(s, Replayable)})
        self.store.start()
        for source in self.sources:
            source.start()
        if self.otlp is not None:
            self.otlp.start()
        self.ready_event.set()

    def stop(self) -> None:
        self.ready_event.clear()
        for source in self.sources:
            try:
                source.stop()
            except Exception as exc:  # stop the others regardless
                log.warning("source %s: stop failed: %s", source.name, exc)
        self.store.close()
        if self.otlp is not None:
            self.otlp.stop()
        self.runner.close()
        if self.probes is not None:
            self.probes.close()
        self.pool.shutdown(wait=False, cancel_futures=True)

    def source(self, name: str) -> Source | None:
        return next((s for s in self.sources if s.name == name), None)

    def reload(self) -> tuple[bool, str]:
        """Re-read the configuration; on any error keep the one in force."""
        if self._loader is None:
            return False, "no configuration loader"
        runner: CollectorRunner | None = None
        probes: ProbeService | None = None
        try:
            new = self._loader()
            check_unchanged(self.config, new)
            # The push is not rebuilt on reload, but a file check-config refuses must not
            # pass here either.
            otlp_settings(new)
            check_price_file(new.ai.pricing)  # a bad price file is refused
            policy = self.security.prepare(new)
            probes = self._build_probes(new, self.probes)
            runner = self._build_runner(new, probes)
            sources = build_sources(self._source_deps(new))
        except Exception as exc:  # any failure keeps the configuration in force
            if runner is not None:
                runner.close()
            if probes is not None:
                probes.close()
            self.last_reload_ok = False
            if isinstance(exc, ConfigError):
                log.error("reload rejected, keeping the current configuration: %s", exc)
                return False, str(exc)
            # Not a configuration error: a bug, logged in full; the gauge still says 0.
            log.exception("reload rejected, keeping the current configuration: "
                          "unexpected error")
            return False, f"reload failed: {type(exc).__name__}"
        with self._lock:
            old_runner, old_sources, old_probes = self.runner, self.sources, self.probes
            for source in old_sources:
                source.stop()
            self.config, self.runner, self.sources = new, runner, sources
            self.probes = probes
            self.security.install(policy)
            self.aggregator.reconfigure(**_aggregator_settings(new))
            if new.ai.pricing != self.config_pricing:
                log.warning("ai.pricing changed: the new prices take effect at restart "
                            "(rates are kept per label set)")
            for source in sources:
                source.start()
        old_runner.close()
        if old_probes is not None:
            old_probes.close()
        self.last_reload_ok = True
        self.last_reload_time = time.time()
        log.info("configuration reloaded")
        return True, "reloaded"

    # --- scrape ---------------------------------------------------------------------
    def families(self, deadline: float | None = None,
                 rendered: list[str] | None = None, *,
                 openmetrics: bool = False) -> list[Metric]:
        """Every family /metrics serves, in one list (the OTLP bridge reads it too).
        ``rendered``: receives their text in pieces (``exposition.lines``, or
        ``exposition.openmetrics_lines`` when ``openmetrics``; no ``# EOF``), the
        collectors' rendered by each collector within its deadline
        (``CollectorRunner.collect``)."""
        with self.collect_gate.shared(deadline):
            out = self.runner.collect(deadline, rendered, openmetrics=openmetrics)
        collected = len(out)
        info = build_info()
        build = catalog.EXPORTER_BUILD_INFO.family()
        build.add_metric([info.version, info.revision, info.python_version], 1.0)
        ok = catalog.EXPORTER_CONFIG_LAST_RELOAD_SUCCESS.family()
        ok.add_metric([], 1.0 if self.last_reload_ok else 0.0)
        when = catalog.EXPORTER_CONFIG_LAST_RELOAD_TIME.family()
        when.add_metric([], self.last_reload_time)
        out.extend((build, ok, when))
        out.extend(self.store.families())
        out.extend(self._web_config_families())
        out.extend(self.process_collector.collect())
        if rendered is not None:
            render = exposition.openmetrics_lines if openmetrics else exposition.lines
            rendered.extend(render(out[collected:], None))
        self.last_collection = (time.time(), out)
        return out

    def _web_config_families(self) -> list[Metric]:
        """Whether the web config file's last re-read took, beside the main configuration's
        reload gauge: served whatever collectors are on, since a rejected file means the
        credentials an operator just changed are not the ones in force."""
        watcher = self.security.policy.watcher
        if watcher is None:
            return []
        family = catalog.EXPORTER_WEB_CONFIG_LAST_RELOAD_SUCCESS.family()
        family.add_metric([], 1.0 if watcher.last_reload_ok else 0.0)
        return [family]

    def render_metrics(self, deadline: float | None = None, *,
                       openmetrics: bool = False) -> bytes:
        """The /metrics body; concurrent scrapes share a collection (``SharedScrapes``)."""
        return self._scrapes.body(deadline, openmetrics)

    def _render_metrics(self, deadline: float | None, openmetrics: bool) -> bytes:
        # Same bytes as prometheus_client's generate_latest, ~3x faster on large scrapes
        # (OpenMetrics: its openmetrics generate_latest, exemplars included).
        # Each collector's render counts against its deadline; joined here, in the
        # request's thread (see ``exposition.lines``).
        rendered: list[str] = []
        self.families(deadline, rendered, openmetrics=openmetrics)
        if openmetrics:
            rendered.append(exposition.OPENMETRICS_EOF)
        return exposition.join(rendered)

    def readiness(self) -> dict[str, Any]:
        checks: dict[str, Any] = {"started": {"ok": self.ready_event.is_set()}}
        ok, detail = self.store.ready()
        checks["storage"] = {"ok": ok, "detail": detail}
        for source in self.sources:
            ok, detail = source.ready()
            checks[f"source:{source.name}"] = {"ok": ok, "detail": detail}
        return checks


def make_loader(path: str | None, flags: Mapping[str, Any]) -> Callable[[], Config]:
    """A loader that re-reads the same file, environment and flags on each call."""
    return lambda: config.load(path, flags)
