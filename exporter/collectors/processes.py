"""AI component processes: matched by name and/or command line, summed per component.

process-exporter's idea for the processes of AI components (model servers, agent daemons,
MCP servers): ``ai_process_running`` counts the matching processes (0 means the component
is down), with their CPU time, resident memory, threads, open descriptors and the start
time of the oldest. The exporter's own ``process_*`` series (prometheus_client) are
separate, and the exporter never matches itself.

CPU time stays a monotonic counter although processes come and go: the last CPU time seen
of each process that exits is carried into the component's total (CPU used between the
last scrape and the exit is not seen, as in process-exporter).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import psutil
from prometheus_client.metrics_core import Metric

from exporter import catalog
from exporter.collectors.base import Collector, CollectorContext
from exporter.config import ProcessMatchConfig
from exporter.logutil import RateLimitedLogger

log = RateLimitedLogger(logging.getLogger(__name__), interval=60.0)

CPU_MODES = ("user", "system", "iowait")
_ProcKey = tuple[int, float]  # (pid, create_time): a pid reused later is another process


@dataclass(frozen=True)
class Matcher:
    """One component's match rule; both regexes must match when both are set."""

    component: str
    name: re.Pattern[str] | None
    cmdline: re.Pattern[str] | None

    @classmethod
    def from_config(cls, cfg: ProcessMatchConfig) -> Matcher:
        return cls(cfg.name, re.compile(cfg.name_regex) if cfg.name_regex else None,
                   re.compile(cfg.cmdline_regex) if cfg.cmdline_regex else None)

    def matches(self, name: str, cmdline: Sequence[str]) -> bool:
        if self.name is not None and not self.name.search(name):
            return False
        return self.cmdline is None or self.cmdline.search(" ".join(cmdline)) is not None


@dataclass
class Sample:
    """What one process contributed in one scrape."""

    cpu: dict[str, float]
    rss: float
    threads: float
    fds: float | None
    started: float


@dataclass
class ComponentTotals:
    running: int = 0
    cpu: dict[str, float] = field(default_factory=lambda: dict.fromkeys(CPU_MODES, 0.0))
    rss: float = 0.0
    threads: float = 0.0
    fds: float = 0.0
    oldest: float | None = None

    def add(self, s: Sample) -> None:
        self.running += 1
        for mode, value in s.cpu.items():
            self.cpu[mode] += value
        self.rss += s.rss
        self.threads += s.threads
        self.fds += s.fds or 0.0
        self.oldest = s.started if self.oldest is None else min(self.oldest, s.started)


def read_process(proc: psutil.Process) -> Sample:
    """One process's numbers, read in one pass; raises psutil errors if it vanished."""
    with proc.oneshot():
        times = proc.cpu_times()
        cpu = {"user": times.user, "system": times.system,
               "iowait": float(getattr(times, "iowait", 0.0))}
        try:
            fds: float | None = float(proc.num_fds())
        except psutil.AccessDenied:  # another user's process: counted, fds unknown
            fds = None
        return Sample(cpu, float(proc.memory_info().rss), float(proc.num_threads()), fds,
                      proc.create_time())


class ProcessesCollector(Collector):
    name = "processes"
    description = "Processes of the AI components listed under components.processes."

    def __init__(self, ctx: CollectorContext) -> None:
        super().__init__(ctx)
        self.matchers = [Matcher.from_config(c) for c in ctx.config.components.processes]
        self._self_pid = os.getpid()
        # Last CPU seen per live matched process, and CPU carried over from exited ones.
        self._live: dict[str, dict[_ProcKey, dict[str, float]]] = {
            m.component: {} for m in self.matchers}
        self._carried: dict[str, dict[str, float]] = {
            m.component: dict.fromkeys(CPU_MODES, 0.0) for m in self.matchers}
        self._exits: dict[str, float] = {m.component: 0.0 for m in self.matchers}

    def collect(self) -> Iterable[Metric]:
        if not self.matchers:
            return []
        totals = {m.component: ComponentTotals() for m in self.matchers}
        seen: dict[str, dict[_ProcKey, dict[str, float]]] = {m.component: {}
                                                              for m in self.matchers}
        for proc in psutil.process_iter(["name", "cmdline"]):
            if proc.pid == self._self_pid:
                continue
            info = proc.info
            name, cmdline = info.get("name") or "", info.get("cmdline") or []
            wanted = [m.component for m in self.matchers if m.matches(name, cmdline)]
            if not wanted:
                continue
            try:
                sample = read_process(proc)
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                for component in wanted:  # exited between listing and reading
                    self._exits[component] += 1
                continue
            except psutil.AccessDenied:
                log.warning("processes: access denied reading pid %d", proc.pid,
                            key="denied")
                continue
            key = (proc.pid, sample.started)
            for component in wanted:
                totals[component].add(sample)
                seen[component][key] = sample.cpu
        return self._families(totals, seen)

    def _families(self, totals: dict[str, ComponentTotals],
                  seen: dict[str, dict[_ProcKey, dict[str, float]]]) -> list[Metric]:
        running = catalog.AI_PROCESS_COUNT.family()
        cpu = catalog.AI_PROCESS_CPU_TIME.family()
        memory = catalog.AI_PROCESS_MEMORY_USAGE.family()
        threads = catalog.AI_PROCESS_THREADS.family()
        fds = catalog.AI_PROCESS_OPEN_FDS.family()
        started = catalog.AI_PROCESS_START_TIME.family()
        exits = catalog.AI_PROCESS_EXITS.family()
        for component, total in totals.items():
            carried = self._carried[component]
            for key, last_cpu in self._live[component].items():
                if key not in seen[component]:  # exited since the previous scrape
                    self._exits[component] += 1
                    for mode, value in last_cpu.items():
                        carried[mode] += value
            self._live[component] = seen[component]
            running.add_metric([component], float(total.running))
            for mode in CPU_MODES:
                cpu.add_metric([component, mode], carried[mode] + total.cpu[mode])
            memory.add_metric([component], total.rss)
            threads.add_metric([component], total.threads)
            fds.add_metric([component], total.fds)
            if total.oldest is not None:
                started.add_metric([component], total.oldest)
            exits.add_metric([component], self._exits[component])
        return [running, cpu, memory, threads, fds, started, exits]
