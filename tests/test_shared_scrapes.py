"""Concurrent scrapes share one collection, never one that began before they arrived."""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from exporter import config
from exporter.runtime import Runtime
from exporter.scrape import SharedScrapes


class SlowRender:
    """A render that takes ``seconds`` and answers with its own sequence number."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.calls: list[tuple[float | None, bool]] = []
        self.started = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, deadline: float | None, openmetrics: bool) -> bytes:
        with self._lock:
            self.calls.append((deadline, openmetrics))
            number = len(self.calls)
        self.started.set()
        time.sleep(self.seconds)
        return f"{'om' if openmetrics else 'text'} {number}".encode()


def test_scrapes_arriving_during_a_collection_share_the_next_one() -> None:
    render = SlowRender(0.3)
    shared = SharedScrapes(render)
    with ThreadPoolExecutor(12) as pool:
        first = pool.submit(shared.body, None, False)
        assert render.started.wait(5)
        later = [pool.submit(shared.body, None, False) for _ in range(10)]
        bodies = {f.result(timeout=10) for f in later}
        assert first.result(timeout=10) == b"text 1"
    # The ten that came during the first collection got one more, not ten more.
    assert bodies == {b"text 2"}
    assert len(render.calls) == 2


def test_a_scrape_never_gets_a_collection_that_began_before_it() -> None:
    render = SlowRender(0.2)
    shared = SharedScrapes(render)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(shared.body, None, False)
        assert render.started.wait(5)
        arrived_during = pool.submit(shared.body, None, False)
        assert first.result(timeout=10) == b"text 1"
        assert arrived_during.result(timeout=10) == b"text 2"
    # Alone, each scrape collects for itself.
    assert shared.body(None, False) == b"text 3"


def test_the_shared_collection_runs_to_the_earliest_deadline() -> None:
    render = SlowRender(0.2)
    shared = SharedScrapes(render)
    now = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        pool.submit(shared.body, None, False)
        assert render.started.wait(5)
        waiting = [pool.submit(shared.body, d, False) for d in (now + 30, None, now + 10)]
        for f in waiting:
            f.result(timeout=10)
    assert render.calls[1] == (now + 10, False)


def test_formats_are_never_mixed() -> None:
    render = SlowRender(0.2)
    shared = SharedScrapes(render)
    with ThreadPoolExecutor(8) as pool:
        pool.submit(shared.body, None, False)
        assert render.started.wait(5)
        om = [pool.submit(shared.body, None, True) for _ in range(3)]
        text = [pool.submit(shared.body, None, False) for _ in range(3)]
        om_bodies = {f.result(timeout=10) for f in om}
        text_bodies = {f.result(timeout=10) for f in text}
    assert len(om_bodies) == len(text_bodies) == 1
    assert next(iter(om_bodies)).startswith(b"om ")
    assert next(iter(text_bodies)).startswith(b"text ")
    assert len(render.calls) == 3  # one collection at a time: the first, then each format


def test_a_failed_collection_fails_its_scrapes_and_the_next_one_runs() -> None:
    calls: list[int] = []

    def render(deadline: float | None, openmetrics: bool) -> bytes:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("collector blew up")
        return b"ok"

    shared = SharedScrapes(render)
    with pytest.raises(RuntimeError, match="blew up"):
        shared.body(None, False)
    assert shared.body(None, False) == b"ok"


def test_concurrent_scrapes_of_a_real_runtime_all_see_every_collector_succeed() -> None:
    """Before collections were shared, a scrape that found a collector busy in another
    scrape reported it failed (``success 0``) and left its series out."""
    runtime = Runtime(config.build({}))
    try:
        with ThreadPoolExecutor(16) as pool:
            bodies = list(pool.map(lambda _: runtime.render_metrics().decode(), range(48)))
        for body in bodies:
            failed = re.findall(r'ai_exporter_collector_success\{collector="([^"]+)"\} 0\.0',
                                body)
            assert failed == []
            assert 'ai_exporter_collector_success{collector="ai"} 1.0' in body
    finally:
        runtime.stop()
