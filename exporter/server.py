"""Serving: cheroot (a production, thread-pooled, TLS-capable WSGI server) in one process.

SIGTERM and SIGINT stop accepting connections, let requests in flight finish, then stop
the sources; SIGHUP reloads the configuration.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from cheroot import wsgi

from exporter.runtime import Runtime
from exporter.web import create_app
from exporter.web.tls import adapter_for

log = logging.getLogger(__name__)


def build_server(runtime: Runtime) -> wsgi.Server:
    host, port = runtime.config.listen_host_port()
    server = wsgi.Server((host, port), create_app(runtime),
                         numthreads=runtime.config.web.threads, server_name="ai-metrics-exporter",
                         shutdown_timeout=5)
    server.stats["Enabled"] = False
    server.ssl_adapter = adapter_for(runtime)
    return server


def serve(runtime: Runtime) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit code."""
    server = build_server(runtime)
    try:
        server.prepare()
    except OSError as exc:
        log.error("cannot listen on %s: %s", runtime.config.web.listen_address, exc)
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
    log.info("listening on %s", runtime.config.web.listen_address)
    try:
        server.serve()
    finally:
        runtime.stop()
        log.info("stopped")
    return 0
