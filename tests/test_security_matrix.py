"""The access matrix (``tests/security_matrix.py``) against real exporters, from loopback
and from a real second address.

The second address is a network namespace joined to the host by a veth pair, on a /30
that no interface or route of this machine uses (checked with ``ip -o addr`` and
``ip route`` first). The namespace has no other interface and no default route, so its
traffic can only reach the host end of the pair; both are deleted afterwards. Each client
is its own process (``tests/netclient.py``), run inside the namespace or on the host.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import security_matrix as matrix
from tests.certs import issue, make_ca
from tests.procs import Exporter, free_port, require_binary, sample_value
from tests.websec import bcrypt_hash, sha256_line, write_yaml

pytestmark = pytest.mark.e2e

CLIENT = Path(__file__).with_name("netclient.py")
ADMIN_TOKEN = "matrix-admin-token-3f9c2a"
SCOPED_TOKEN = "matrix-agent-a-token-81d0e7"
ADMIN_PASSWORD = "matrix-admin-password-5b1"


@dataclass(frozen=True)
class Namespace:
    name: str
    host_ip: str  # the host end of the veth pair: what the namespace connects to


def _used_networks() -> list[ipaddress.IPv4Network]:
    used: list[ipaddress.IPv4Network] = []
    addrs = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True,
                           check=True).stdout
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True,
                            check=True).stdout
    for token in (addrs + " " + routes).split():
        try:
            used.append(ipaddress.IPv4Network(token, strict=False))
        except ValueError:
            continue
    return used


def free_subnet() -> ipaddress.IPv4Network:
    """A /30 in 10.254.0.0/16 that overlaps no address or route of this machine."""
    used = _used_networks()
    for third in range(19, 255):
        candidate = ipaddress.IPv4Network(f"10.254.{third}.0/30")
        if not any(candidate.overlaps(net) for net in used):
            return candidate
    raise AssertionError(f"no free /30 in 10.254.0.0/16 (in use: {used})")


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture(scope="module")
def namespace() -> Iterator[Namespace]:
    require_binary("ip")
    subnet = free_subnet()
    host_ip, peer_ip = (str(a) for a in list(subnet.hosts())[:2])
    tag = f"{os.getpid() % 10_000_000}"
    name, host_end, peer_end = f"aiexp{tag}", f"ax{tag}h", f"ax{tag}n"
    try:
        ip("netns", "add", name)
    except subprocess.CalledProcessError as exc:
        raise AssertionError(f"cannot create a network namespace (root and CAP_SYS_ADMIN "
                             f"are needed): {exc.stderr}") from None
    try:
        ip("link", "add", host_end, "type", "veth", "peer", "name", peer_end)
        ip("link", "set", peer_end, "netns", name)
        ip("addr", "add", f"{host_ip}/{subnet.prefixlen}", "dev", host_end)
        ip("link", "set", host_end, "up")
        ip("netns", "exec", name, "ip", "addr", "add", f"{peer_ip}/{subnet.prefixlen}",
           "dev", peer_end)
        ip("netns", "exec", name, "ip", "link", "set", peer_end, "up")
        yield Namespace(name, host_ip)
    finally:
        subprocess.run(["ip", "link", "del", host_end], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
        left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                              check=False).stdout
        assert name not in left, f"namespace {name} was not deleted"


@dataclass
class Setup:
    """One exporter set-up of the matrix, started once with and once without lifecycle."""

    config: dict[str, Any]
    scheme: str = "http"
    ca: Path | None = None
    client_cert: tuple[str, str] | None = None


@pytest.fixture(scope="module")
def setups(tmp_path_factory: pytest.TempPathFactory, namespace: Namespace
           ) -> dict[str, Setup]:
    d = tmp_path_factory.mktemp("matrix")
    tokens = d / "tokens"
    tokens.write_text(sha256_line("admin", ADMIN_TOKEN, "ops")
                      + sha256_line("operator", SCOPED_TOKEN, "agent-a"))
    users = write_yaml(d / "web.yml", {"basic_auth_users": {
        "admin": bcrypt_hash(ADMIN_PASSWORD)}})
    auth = {"web": {"security": {
        "tokens_file": str(tokens), "web_config_file": str(users),
        "basic_auth_roles": {"admin": "admin"},
        "scopes": {"token:agent-a": {"components": ["agent-a"]}}}}}
    ca = make_ca(d, "matrix-ca")
    server = issue(ca, d, "matrix-server", sans=("127.0.0.1", "localhost", namespace.host_ip))
    client = issue(ca, d, "matrix-client", client=True, sans=("client.test",))
    tls_web = write_yaml(d / "tls-web.yml", {"tls_server_config": {
        "cert_file": str(server.cert), "key_file": str(server.key),
        "client_ca_file": str(ca.path), "client_auth_type": "VerifyClientCertIfGiven"}})
    tls = {"web": {"security": {"web_config_file": str(tls_web),
                                "client_cert_role": "admin"}}}
    return {"open": Setup({}), "auth": Setup(auth),
            "tls": Setup(tls, "https", ca.path, (str(client.cert), str(client.key)))}


def credentials(mode: str) -> dict[str, str]:
    import base64

    if mode == "token":
        return {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    if mode == "scoped":
        return {"Authorization": f"Bearer {SCOPED_TOKEN}"}
    if mode == "basic":
        basic = base64.b64encode(f"admin:{ADMIN_PASSWORD}".encode()).decode()
        return {"Authorization": f"Basic {basic}"}
    return {}


def call(namespace: Namespace, peer: str, setup: Setup, port: int, mode: str,
         rows: list[matrix.Row]) -> dict[str, str]:
    host = "127.0.0.1" if peer == "loopback" else namespace.host_ip
    job = {"base": f"{setup.scheme}://{host}:{port}",
           "ca": str(setup.ca) if setup.ca else None,
           "cert": list(setup.client_cert) if setup.client_cert and mode == "mtls" else None,
           "requests": [{"id": row.key, "method": row.method, "path": row.path,
                         "headers": credentials(mode), "json": row.body}
                        for row in rows]}
    argv = [sys.executable, str(CLIENT)]
    if peer == "other":
        argv = ["ip", "netns", "exec", namespace.name, *argv]
    done = subprocess.run(argv, input=json.dumps(job), capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return {r["id"]: matrix.cell(r["status"], r["body"]) for r in json.loads(done.stdout)}


def start(workdir: Path, setup: Setup, lifecycle: bool) -> Exporter:
    port = free_port()
    args = [f"--web.listen-address=0.0.0.0:{port}"]
    if lifecycle:
        args.append("--web.enable-lifecycle")
    return Exporter(workdir, setup.config, args=args, port=port, tls_ca=setup.ca)


def admin_metrics(exp: Exporter, setup: Setup, profile: str) -> str:
    kwargs: dict[str, Any] = {}
    if profile == "auth":
        kwargs["headers"] = credentials("token")
    if profile == "tls":
        kwargs["cert"] = setup.client_cert
    response = exp.get("/metrics", **kwargs)
    assert response.status_code == 200
    return response.text


def test_every_cell_of_the_access_matrix(tmp_path: Path, namespace: Namespace,
                                        setups: dict[str, Setup]) -> None:
    observed: dict[str, dict[str, dict[str, str]]] = {
        m.key: {p: {} for p, _ in matrix.PEERS} for m in matrix.MODES}
    for profile, setup in setups.items():
        modes = [m.key for m in matrix.MODES if m.profile == profile]
        for lifecycle in (False, True):
            rows = [r for r in matrix.ROWS if r.lifecycle == lifecycle]
            exp = start(tmp_path, setup, lifecycle)
            try:
                for mode in modes:
                    for peer, _label in matrix.PEERS:
                        observed[mode][peer].update(call(namespace, peer, setup, exp.port,
                                                         mode, rows))
                text = admin_metrics(exp, setup, profile)
                log = exp.log()
            finally:
                exp.stop()
            if lifecycle:
                continue
            # Exactly the pushes answered 200 counted, no more.
            for component, row in (("agent-a", "push_own"), ("agent-b", "push_other")):
                expected = sum(matrix.EXPECTED[m][p][row] == "200"
                               for m in modes for p, _ in matrix.PEERS)
                got = sample_value(text, "ai_errors_total",
                                   {"component": component, "category": "tool"}) or 0
                assert got == expected, (profile, component)
            if profile == "open":
                assert "every client that reaches port" in log
                assert "web.write_allowed_networks (127.0.0.0/8, ::1/128)" in log
            for secret in (ADMIN_TOKEN, SCOPED_TOKEN, ADMIN_PASSWORD):
                assert secret not in log and secret not in text
    assert observed == matrix.EXPECTED


def test_an_allow_listed_network_may_write_without_a_credential(
        tmp_path: Path, namespace: Namespace) -> None:
    subnet = ipaddress.IPv4Network(f"{namespace.host_ip}/30", strict=False)
    setup = Setup({"web": {"write_allowed_networks": [str(subnet)]}})
    exp = start(tmp_path, setup, lifecycle=True)
    try:
        rows = [r for r in matrix.ROWS if r.key in ("push_own", "reload_on")]
        assert call(namespace, "other", setup, exp.port, "none", rows) == {
            "push_own": "200", "reload_on": "200"}
        # The list replaced the default, so loopback itself is no longer in it.
        assert call(namespace, "loopback", setup, exp.port, "none", rows) == {
            "push_own": matrix.NET, "reload_on": matrix.NET}
    finally:
        exp.stop()
