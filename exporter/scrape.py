"""Runs the enabled collectors for one scrape: concurrently, each under a deadline.

node_exporter's ``execute()`` in Python: every collector runs in the pool, its duration
and success are reported, and a collector that raises or overruns the deadline yields
``success 0`` while the rest of the scrape is served. A collector still stuck from an
earlier scrape is not started again until it returns, so a hang never piles up threads.

For /metrics each collector's families are also rendered to text in its own thread, so
rendering counts against that collector's deadline: a collector with more series than it
can render in time (the AI collector at its sample budget on a slow machine, a tiny
scrape timeout) fails alone instead of making the whole response late.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field

from prometheus_client.metrics_core import Metric

from exporter import catalog, exposition
from exporter.collectors.base import SCRAPE_DEADLINE, Collector
from exporter.logutil import RateLimitedLogger

log = RateLimitedLogger(logging.getLogger(__name__), interval=60.0)

# families, their text in pieces (when rendering), seconds taken
_Result = tuple[list[Metric], list[str], float]
# ``exposition.lines`` (Prometheus text) or ``exposition.openmetrics_lines``.
Renderer = Callable[[Iterable[Metric], float | None], list[str]]


def _run(collector: Collector, limit: float, render: Renderer | None) -> _Result:
    token = SCRAPE_DEADLINE.set(limit)
    try:
        start = time.perf_counter()
        families = list(collector.collect())
        text = render(families, limit) if render is not None else []
        return families, text, time.perf_counter() - start
    finally:
        SCRAPE_DEADLINE.reset(token)


class CollectorRunner:
    """Collects the enabled collectors for a scrape and reports on each."""

    def __init__(self, collectors: Sequence[Collector], timeout: float,
                 pool: ThreadPoolExecutor) -> None:
        self.collectors = list(collectors)
        self.timeout = timeout
        self._pool = pool
        self._busy: dict[str, Future[_Result]] = {}
        self._lock = threading.Lock()

    def collect(self, deadline: float | None = None,
                rendered: list[str] | None = None, *,
                openmetrics: bool = False) -> list[Metric]:
        """Families of every collector that finished by the deadline, plus self metrics.

        ``rendered``: when given, the text of the families returned is appended to it, in
        pieces (``exposition.lines``, or ``exposition.openmetrics_lines`` when
        ``openmetrics``) and in order: each collector's rendered by its own thread within
        the deadline, the self metrics here."""
        render: Renderer | None = None
        if rendered is not None:
            render = exposition.openmetrics_lines if openmetrics else exposition.lines
        limit = time.monotonic() + self.timeout
        if deadline is not None:
            limit = min(limit, deadline)
        futures: list[tuple[Collector, Future[_Result] | None, float]] = []
        with self._lock:
            for collector in self.collectors:
                stuck = self._busy.get(collector.name)
                if stuck is not None and not stuck.done():
                    futures.append((collector, None, 0.0))
                    continue
                submitted = self._pool.submit(_run, collector, limit, render)
                self._busy[collector.name] = submitted
                futures.append((collector, submitted, time.perf_counter()))

        out: list[Metric] = []
        success = catalog.EXPORTER_COLLECTOR_SUCCESS.family()
        duration = catalog.EXPORTER_COLLECTOR_DURATION.family()
        for collector, future, started in futures:
            ok, elapsed = 0.0, 0.0
            if future is None:
                log.warning("collector %s: still running from an earlier scrape", collector.name)
            else:
                try:
                    families, text, elapsed = future.result(
                        timeout=max(limit - time.monotonic(), 0))
                    out.extend(families)
                    if rendered is not None:
                        rendered.extend(text)
                    ok = 1.0
                except FutureTimeout:
                    elapsed = time.perf_counter() - started
                    log.warning("collector %s: timed out after %.2fs", collector.name, elapsed)
                except Exception as exc:
                    elapsed = time.perf_counter() - started
                    log.warning("collector %s: failed: %s: %s", collector.name,
                                type(exc).__name__, exc)
            success.add_metric([collector.name], ok)
            duration.add_metric([collector.name], elapsed)
        out.extend((success, duration))
        if rendered is not None and render is not None:
            rendered.extend(render((success, duration), None))
        return out

    def close(self) -> None:
        for collector in self.collectors:
            try:
                collector.close()
            except Exception as exc:  # closing must not stop a reload
                log.warning("collector %s: close failed: %s", collector.name, exc)


@dataclass
class _Round:
    """One shared collection: the scrapes that joined it and, once done, its answer."""

    deadlines: list[float | None] = field(default_factory=list)
    done: bool = False
    body: bytes = b""
    error: BaseException | None = None


class SharedScrapes:
    """Scrapes that arrive together share one collection and its rendered body.

    Why: every scrape collected on its own, so with a hundred scrapers the collections
    queued on the GIL (p99 1.5 s with 40 at once), and a scrape that found a collector
    still busy in another scrape reported it failed and left its series out. Now at most
    one collection runs at a time; a scrape that arrives meanwhile waits for it to end
    and then shares the next one with every scrape that arrived while it waited. It never
    shares a collection that began before it arrived, so a scrape sent after a push
    answered always sees that push (what the exactness tests rely on). The shared
    collection runs to the earliest deadline among its scrapes. One round waits per
    format (Prometheus text, OpenMetrics); rounds of both formats take turns.
    """

    def __init__(self, render: Callable[[float | None, bool], bytes]) -> None:
        self._render = render
        self._cond = threading.Condition()
        self._running = False
        self._waiting: dict[bool, _Round] = {}

    def body(self, deadline: float | None, openmetrics: bool) -> bytes:
        with self._cond:
            joined = self._waiting.get(openmetrics)
            if joined is None:
                joined = self._waiting[openmetrics] = _Round()
            joined.deadlines.append(deadline)
            while not joined.done and (self._running
                                       or self._waiting.get(openmetrics) is not joined):
                self._cond.wait()
            lead = not joined.done
            if lead:  # nothing running, and this round still waits: start it
                del self._waiting[openmetrics]
                self._running = True
        if lead:
            try:
                finite = [d for d in joined.deadlines if d is not None]
                joined.body = self._render(min(finite) if finite else None, openmetrics)
            except BaseException as exc:  # every scrape of the round gets it
                joined.error = exc
            finally:
                with self._cond:
                    joined.done = True
                    self._running = False
                    self._cond.notify_all()
        if joined.error is not None:
            raise joined.error
        return joined.body


class StaticFamilies:
    """Adapter so prometheus_client's ``generate_latest`` can render a list of families."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families
