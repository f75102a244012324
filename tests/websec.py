"""Helpers for the security tests: the real cheroot server in a thread, credential files.

The in-thread server is the same ``build_server`` the CLI runs (real sockets, real TLS
handshakes, real thread pool) so a test can start several differently configured servers
in well under a second each.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import bcrypt
import yaml

from exporter import config
from exporter.runtime import Runtime
from exporter.server import build_server
from tests.procs import LOOPBACK, free_port, wait_until


def bcrypt_hash(password: str, rounds: int = 4) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=rounds)).decode()


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def sha256_line(role: str, token: str, name: str) -> str:
    return f"{role} sha256:{hashlib.sha256(token.encode()).hexdigest()} {name}\n"


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


class ServedRuntime(Runtime):
    """A runtime served by ``running_server``, with the loopback port it listens on."""

    port: int


@contextmanager
def running_server(settings: dict[str, Any], config_path: Path | None = None
                   ) -> Iterator[ServedRuntime]:
    """Serve ``settings`` (a config dict) on a free loopback port until the block ends.

    With ``config_path``, the settings are written there and reloads re-read that file.
    """
    port = free_port()
    layer = {**settings, "web": {**settings.get("web", {}),
                                 "listen_address": f"{LOOPBACK}:{port}"}}
    if config_path is not None:
        write_yaml(config_path, layer)
        cfg = config.load(str(config_path), environ={})
        runtime = ServedRuntime(cfg, lambda: config.load(str(config_path), environ={}))
    else:
        runtime = ServedRuntime(config.build(layer))
    server = build_server(runtime)
    # The serve loop checks for a stop this often (cheroot's default 0.5 s made every
    # teardown wait that long).
    server.expiration_interval = 0.02
    server.prepare()
    runtime.start()
    thread = threading.Thread(target=server.serve, name=f"test-server-{port}", daemon=True)
    thread.start()
    runtime.port = port
    try:
        wait_until(lambda: server.ready, 10, what="server ready")
        yield runtime
    finally:
        server.stop()
        thread.join(10)
        runtime.stop()
