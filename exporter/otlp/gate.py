"""Keeps the OTLP push's own collections from colliding with scrapes.

``CollectorRunner`` does not start a collector that is still busy (a hung collector must
not pile up threads), so two collections running at once make the later one report
those collectors as failed. Scrapes may run concurrently with each other, exactly as
before (``shared``); the push collects only when no scrape is in flight
(``exclusive``), and a scrape arriving meanwhile waits for that collection to finish —
bounded, and only in the rare case the push had to collect at all, because the push
normally re-uses the last scrape's families instead of collecting (see ``pusher``).

The gate also knows when a ``/metrics`` request is being served (``begin_serving``), from
the start of the handler until the server has written the last byte of the response. The
push does its CPU work in slices of about half a millisecond and, between slices, waits
while a request is being served (``pacer``): in one process the two compete for the GIL,
and a scrape that had to share it with an export round would take up to twice as long.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# A scrape never waits longer than this for the push's collection, whatever its deadline.
MAX_SCRAPE_WAIT = 2.0
# The push works in slices of about this much time; between two slices it sleeps SLICE_GAP
# even when no scrape is being served, so that a thread that just woke up (cheroot's
# acceptor or worker with a new request) gets the GIL within a slice instead of after the
# interpreter's 5 ms switch interval.
SLICE_SECONDS = 0.0005
SLICE_GAP = 0.0002


class CollectGate:
    """Many scrapes at once, or one push collection: a small shared/exclusive lock."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer: int | None = None  # thread id of the exclusive holder
        self._serving = 0  # /metrics requests being answered

    @contextmanager
    def shared(self, deadline: float | None = None) -> Iterator[None]:
        """For a scrape: wait (bounded) while the push collects, then run concurrently."""
        me = threading.get_ident()
        with self._cond:
            if self._writer == me:  # the push's own collection goes through families()
                entered = False
            else:
                limit = time.monotonic() + MAX_SCRAPE_WAIT
                if deadline is not None:
                    # Keep at least half of what is left for the scrape itself.
                    limit = min(limit, time.monotonic() + max(deadline - time.monotonic(), 0) / 2)
                while self._writer is not None:
                    left = limit - time.monotonic()
                    if left <= 0:
                        break  # degrade to the old behaviour rather than miss the deadline
                    self._cond.wait(left)
                self._readers += 1
                entered = True
        try:
            yield
        finally:
            if entered:
                with self._cond:
                    self._readers -= 1
                    self._cond.notify_all()

    def acquire_exclusive(self, timeout: float) -> bool:
        """For the push: wait up to ``timeout`` for no scrape in flight (neither collecting
        nor being rendered or written); False if no such moment came."""
        limit = time.monotonic() + timeout
        with self._cond:
            while self._readers or self._serving or self._writer is not None:
                left = limit - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            self._writer = threading.get_ident()
            return True

    def release_exclusive(self) -> None:
        with self._cond:
            self._writer = None
            self._cond.notify_all()

    # --- scrapes first ----------------------------------------------------------------
    def begin_serving(self) -> Callable[[], None]:
        """A ``/metrics`` request starts being served: the push pauses its work until the
        returned function is called (once the response is written; later calls do
        nothing)."""
        with self._cond:
            self._serving += 1
        done = threading.Lock()

        def end() -> None:
            if not done.acquire(blocking=False):
                return
            with self._cond:
                self._serving -= 1
                if not self._serving:
                    self._cond.notify_all()

        return end

    @contextmanager
    def serving(self) -> Iterator[None]:
        """``begin_serving`` around a block."""
        end = self.begin_serving()
        try:
            yield
        finally:
            end()

    def wait_while_serving(self, timeout: float) -> None:
        """For intake (OTLP, between slices of a request's mapping): wait, at most
        ``timeout``, while a ``/metrics`` request is being served; at once otherwise."""
        if self._serving:
            self.yield_to_scrapes(timeout)

    @property
    def requests_in_flight(self) -> int:
        return self._serving

    def pacer(self, budget: float) -> Callable[[], None]:
        """For one push round: a function to call often (every few hundred samples); it
        gives way once per ``SLICE_SECONDS`` of work, or at once while a ``/metrics``
        request is being served, waiting for requests at most ``budget`` seconds in all."""
        last = time.perf_counter()
        left = budget

        def give_way() -> None:
            nonlocal last, left
            if not self._serving and time.perf_counter() - last < SLICE_SECONDS:
                return
            left -= self.yield_to_scrapes(max(left, 0.0))
            last = time.perf_counter()

        return give_way

    def yield_to_scrapes(self, timeout: float) -> float:
        """For the push, between two slices of its work: wait (at most ``timeout``) while a
        ``/metrics`` request is being served, else just let other threads run briefly.

        Returns the seconds spent waiting for requests, so the caller can cap the total."""
        if not self._serving:
            time.sleep(SLICE_GAP)
            return 0.0
        start = time.monotonic()
        limit = start + timeout
        with self._cond:
            while self._serving:
                left = limit - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
        return time.monotonic() - start
