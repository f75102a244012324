"""Workers kept free for health and metrics while slow routes are busy.

cheroot serves requests on ``web.threads`` workers. A push reads its body inside the
route (a slow client trickles it for as long as it likes), a probe waits on its target,
a reload re-reads files: with every worker held by those, ``/livez`` timed out and
Kubernetes restarted a process that was only busy. So those routes share
``threads - RESERVED`` slots; a request past them is answered 503 with ``Retry-After``
at once (a push client retries; nothing was read, so nothing is half-kept), and
``RESERVED`` workers always remain for health, readiness and ``/metrics``.
"""

from __future__ import annotations

import threading

from flask import Flask, Response, g, request

from exporter.security import INTAKE_PATHS, RELOAD_PATH
from exporter.web.auth import refusal
from exporter.web.routes_probe import PROBE_PATH

RESERVED = 2
SLOW_PATHS = INTAKE_PATHS | {PROBE_PATH, RELOAD_PATH}
_HELD = "ai_exporter.slow_slot"


def slots_for(threads: int) -> int:
    """How many slow requests may run at once on ``threads`` workers (at least one)."""
    return max(1, threads - RESERVED)


def install(app: Flask, threads: int) -> None:
    """Register the hooks; first among ``before_request`` hooks, so a refusal costs no
    authentication work."""
    slots = threading.BoundedSemaphore(slots_for(threads))

    def take() -> Response | None:
        if request.path not in SLOW_PATHS:
            return None
        if not slots.acquire(blocking=False):
            return refusal(503, retry_after=1)
        g.setdefault(_HELD, True)
        return None

    def give(_exc: BaseException | None) -> None:
        if g.pop(_HELD, False):
            slots.release()

    app.before_request_funcs.setdefault(None, []).insert(0, take)
    app.teardown_request(give)
