"""TLS for cheroot from the web config file, re-read per connection like exporter-toolkit.

cheroot's ``BuiltinSSLAdapter`` wraps each accepted socket with its ``context``; this
adapter swaps in the context of the web config in force before each handshake, so a
rotated certificate, CA or TLS setting applies to the next connection without a restart.
The handshake runs on cheroot's accept thread, so it gets its own short timeout: a client
that stalls mid-handshake cannot hold the listener for the full socket timeout.
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any

from cheroot import errors
from cheroot.ssl import Adapter
from cheroot.ssl.builtin import BuiltinSSLAdapter

from exporter.runtime import Runtime
from exporter.webconfig import WebConfigWatcher, peer_sans

log = logging.getLogger(__name__)


class ReloadingSSLAdapter(BuiltinSSLAdapter):
    """A ``BuiltinSSLAdapter`` whose context follows the current web config file."""

    def __init__(self, watcher: Callable[[], WebConfigWatcher | None],
                 initial: ssl.SSLContext, handshake_timeout: Callable[[], float]) -> None:
        Adapter.__init__(self, certificate="", private_key="")
        self._watcher = watcher
        self._handshake_timeout = handshake_timeout
        self.context = initial
        self._server_env: dict[str, Any] = {}

    def wrap(self, sock: socket.socket) -> tuple[Any, dict[str, Any]]:
        watcher = self._watcher()
        if watcher is not None:
            watcher.refresh()
            if watcher.context is not None and watcher.context is not self.context:
                self.context = watcher.context
        sock.settimeout(self._handshake_timeout())
        wrapped, environ = super().wrap(sock)  # type: ignore[no-untyped-call]
        tls = watcher.settings.tls if watcher is not None else None
        if tls is not None and tls.client_allowed_sans:
            cert = wrapped.getpeercert() or {}
            if not peer_sans(cert) & set(tls.client_allowed_sans):
                wrapped.close()
                raise errors.FatalSSLAlert("client certificate SAN not allowed")
        return wrapped, environ


def adapter_for(runtime: Runtime) -> ReloadingSSLAdapter | None:
    """The TLS adapter when the web config file has ``tls_server_config``, else None."""
    policy = runtime.security.policy
    if policy.watcher is None or policy.watcher.context is None:
        return None
    return ReloadingSSLAdapter(
        lambda: runtime.security.policy.watcher, policy.watcher.context,
        lambda: runtime.config.web.security.limits.tls_handshake_timeout_seconds)
