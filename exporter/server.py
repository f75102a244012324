"""Serving: cheroot (a production, thread-pooled, TLS-capable WSGI server) in one process.

SIGTERM and SIGINT stop accepting connections, let requests in flight finish, then stop
the sources; SIGHUP reloads the configuration.

At start-up the listener is bound and cheroot's worker threads are started on a helper
thread while this one imports Flask and builds the application: starting a thread is
mostly waiting for it to be scheduled, the import is CPU, so the two overlap instead of
adding up. Nothing is accepted before ``serve()`` runs, with the application in place.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
from types import FrameType
from typing import Any

from cheroot import wsgi

from exporter.runtime import Runtime
from exporter.security import exposure
from exporter.web.http import BoundedServer
from exporter.web.tls import adapter_for

log = logging.getLogger(__name__)


def _server(runtime: Runtime, app: Any) -> wsgi.Server:
    host, port = runtime.config.listen_host_port()
    web = runtime.config.web
    server = BoundedServer((host, port), app, numthreads=web.threads,
                           server_name="ai-metrics-exporter", shutdown_timeout=5,
                           # cheroot's default backlog of 5 drops SYNs (a 1 s retry) as
                           # soon as a few hundred clients connect at once.
                           request_queue_size=1024,
                           max_header_bytes=web.max_header_bytes,
                           max_body_bytes=web.max_request_bytes,
                           header_timeout=web.header_read_timeout_seconds,
                           body_timeout=web.body_read_timeout_seconds,
                           max_per_address=web.max_connections_per_address)
    server.stats["Enabled"] = False
    server.ssl_adapter = adapter_for(runtime)
    return server


def build_server(runtime: Runtime) -> wsgi.Server:
    from exporter.web import create_app

    return _server(runtime, create_app(runtime))


def _prepare_while_building(runtime: Runtime) -> tuple[wsgi.Server, OSError | None]:
    """The server with its application, and why it cannot listen (None when it listens).

    ``prepare()`` (bind, listen, start the worker threads) runs on a helper thread while
    this one builds the application; anything but ``OSError`` is raised as ``prepare()``
    would raise it."""
    server = _server(runtime, None)  # the application is set before anything is accepted
    failure: list[BaseException] = []

    def prepare() -> None:
        try:
            server.prepare()
        except BaseException as exc:  # handed to the serving thread
            failure.append(exc)

    # Not a daemon: cheroot's worker threads inherit that, as when started from here.
    preparing = threading.Thread(target=prepare, name="listen")
    preparing.start()
    try:
        from exporter.web import create_app

        server.wsgi_app = create_app(runtime)
    except BaseException:
        preparing.join()
        if not failure:
            server.stop()
        raise
    preparing.join()
    if not failure:
        return server, None
    if isinstance(failure[0], OSError):
        return server, failure[0]
    raise failure[0]


def freeze_startup_heap() -> None:
    """Move everything alive after start-up out of the garbage collector's view.

    Why: a full collection walks every tracked object, and start-up leaves ~83,000 that
    live as long as the process (the price table's models, Flask, the OpenTelemetry and
    protobuf modules): 52 ms a collection, which under steady ingest landed on a scrape
    now and then (idle p99 4.4 times node_exporter's). After ``gc.freeze()`` the same
    collection walks what was made since: 0.4 ms. Nothing is collected first (that would
    cost the start-up a collection); the little start-up garbage in cycles is kept."""
    gc.freeze()


def serve(runtime: Runtime) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit code."""
    server, failure = _prepare_while_building(runtime)
    if failure is not None:
        log.error("cannot listen on %s: %s", runtime.config.web.listen_address, failure)
        return 1

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        threading.Thread(target=server.stop, name="shutdown", daemon=True).start()

    def reload(_signum: int, _frame: FrameType | None) -> None:
        threading.Thread(target=runtime.reload, name="reload", daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, reload)
    runtime.start()
    freeze_startup_heap()
    log.info("listening on %s", runtime.config.web.listen_address)
    for level, line in exposure(runtime.security.policy, runtime.config.web.listen_address):
        log.log(level, "%s", line)
    try:
        server.serve()
    finally:
        runtime.stop()
        log.info("stopped")
    return 0
