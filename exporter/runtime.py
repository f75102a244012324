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
from typing import Any

import psutil
from prometheus_client import ProcessCollector
from prometheus_client.metrics_core import Metric

from exporter import catalog, config, exposition
from exporter.aggregator import Aggregator
from exporter.collectors import COLLECTORS, Collector, CollectorContext
from exporter.config import Config, ConfigError
from exporter.ingest import Ingestor
from exporter.otlp import CollectGate, build_pusher
from exporter.otlp import resolve as otlp_settings
from exporter.scrape import CollectorRunner
from exporter.security import Security
from exporter.sources import Source, build_sources
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


class Runtime:
    """Holds everything a request handler or a scrape needs."""

    def __init__(self, cfg: Config, loader: Callable[[], Config] | None = None) -> None:
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
            max_samples=cfg.ai.max_total_samples, extra_labels=extra,
            **_aggregator_settings(cfg))
        self.ingestor = Ingestor(self.aggregator, cfg.ai.max_event_bytes,
                                 cfg.ai.log_interval_seconds, native=cfg.ai.native_lines)
        self.security = Security(cfg)
        self.services: dict[str, Any] = {"ingestor": self.ingestor, "runtime": self,
                                         "security": self.security}
        self.process_collector = ProcessCollector(registry=None)
        self.last_reload_ok = True
        self.last_reload_time = time.time()
        self.config = cfg
        self.runner = self._build_runner(cfg)
        self.sources: list[Source] = build_sources(cfg, self.ingestor)
        # OTLP push (None when no endpoint): reads families() off the scrape path.
        self.collect_gate = CollectGate()
        self.last_collection: tuple[float, list[Metric]] | None = None
        self.services["otlp"] = build_pusher(cfg, self)
        psutil.PROCFS_PATH = cfg.host.procfs_path

    @staticmethod
    def validate(cfg: Config) -> None:
        """Check what only building can check (collector names, source settings)."""
        enabled_collectors(cfg)
        build_sources(cfg, Ingestor(Aggregator()))
        otlp_settings(cfg)
        Security.prepare(cfg)

    def _build_runner(self, cfg: Config) -> CollectorRunner:
        ctx = CollectorContext(cfg, self.services)
        collectors: list[Collector] = [COLLECTORS[name](ctx) for name in enabled_collectors(cfg)]
        return CollectorRunner(collectors, cfg.collectors.timeout_seconds, self.pool)

    # --- lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        for source in self.sources:
            source.start()
        if self.services["otlp"] is not None:
            self.services["otlp"].start()
        self.ready_event.set()

    def stop(self) -> None:
        self.ready_event.clear()
        for source in self.sources:
            try:
                source.stop()
            except Exception as exc:  # stop the others regardless
                log.warning("source %s: stop failed: %s", source.name, exc)
        if self.services["otlp"] is not None:
            self.services["otlp"].stop()
        self.runner.close()
        self.pool.shutdown(wait=False, cancel_futures=True)

    def source(self, name: str) -> Source | None:
        return next((s for s in self.sources if s.name == name), None)

    def reload(self) -> tuple[bool, str]:
        """Re-read the configuration; on any error keep the one in force."""
        if self._loader is None:
            return False, "no configuration loader"
        runner: CollectorRunner | None = None
        try:
            new = self._loader()
            # The push is not rebuilt on reload, but a file check-config refuses must not
            # pass here either.
            otlp_settings(new)
            policy = self.security.prepare(new)
            runner = self._build_runner(new)
            sources = build_sources(new, self.ingestor)
        except Exception as exc:  # any failure keeps the configuration in force
            if runner is not None:
                runner.close()
            self.last_reload_ok = False
            if isinstance(exc, ConfigError):
                log.error("reload rejected, keeping the current configuration: %s", exc)
                return False, str(exc)
            # Not a configuration error: a bug, logged in full; the gauge still says 0.
            log.exception("reload rejected, keeping the current configuration: "
                          "unexpected error")
            return False, f"reload failed: {type(exc).__name__}"
        with self._lock:
            old_runner, old_sources = self.runner, self.sources
            for source in old_sources:
                source.stop()
            self.config, self.runner, self.sources = new, runner, sources
            self.security.install(policy)
            psutil.PROCFS_PATH = new.host.procfs_path
            for key, value in _aggregator_settings(new).items():
                setattr(self.aggregator, key, value)
            for source in sources:
                source.start()
        old_runner.close()
        self.last_reload_ok = True
        self.last_reload_time = time.time()
        log.info("configuration reloaded")
        return True, "reloaded"

    # --- scrape ---------------------------------------------------------------------
    def families(self, deadline: float | None = None,
                 rendered: list[str] | None = None) -> list[Metric]:
        """Every family /metrics serves, in one list (the OTLP bridge reads it too).
        ``rendered``: receives their text in pieces (``exposition.lines``), the collectors'
        rendered by each collector within its deadline (``CollectorRunner.collect``)."""
        with self.collect_gate.shared(deadline):
            out = self.runner.collect(deadline, rendered)
        collected = len(out)
        info = build_info()
        build = catalog.EXPORTER_BUILD_INFO.family()
        build.add_metric([info.version, info.revision, info.python_version], 1.0)
        ok = catalog.EXPORTER_CONFIG_LAST_RELOAD_SUCCESS.family()
        ok.add_metric([], 1.0 if self.last_reload_ok else 0.0)
        when = catalog.EXPORTER_CONFIG_LAST_RELOAD_TIME.family()
        when.add_metric([], self.last_reload_time)
        out.extend((build, ok, when))
        out.extend(self._web_config_families())
        out.extend(self.process_collector.collect())
        if rendered is not None:
            rendered.extend(exposition.lines(out[collected:]))
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

    def render_metrics(self, deadline: float | None = None) -> bytes:
        # Same bytes as prometheus_client's generate_latest, ~3x faster on large scrapes.
        # Each collector's render counts against its deadline; joined here, in the
        # request's thread (see ``exposition.lines``).
        rendered: list[str] = []
        self.families(deadline, rendered)
        return exposition.join(rendered)

    def readiness(self) -> dict[str, Any]:
        checks: dict[str, Any] = {"started": {"ok": self.ready_event.is_set()}}
        for source in self.sources:
            ok, detail = source.ready()
            checks[f"source:{source.name}"] = {"ok": ok, "detail": detail}
        return checks


def make_loader(path: str | None, flags: Mapping[str, Any]) -> Callable[[], Config]:
    """A loader that re-reads the same file, environment and flags on each call."""
    return lambda: config.load(path, flags)
