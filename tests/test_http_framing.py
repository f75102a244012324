"""HTTP framing against the real process: bounded request line and headers, chunked bodies
held to ``web.max_request_bytes`` (413 before the chunk is read, refused whole),
unambiguous ``Content-Length``, gzip negotiated per token and q-value, multi-member gzip
bodies decoded whole or refused. Requests are written on raw sockets, as a hostile client
would send them."""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
import requests

from tests.procs import LOOPBACK, Exporter, sample_value

pytestmark = pytest.mark.e2e

LIMIT = 1024 * 1024  # web.max_request_bytes of the exporter under test
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def bounded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exporter]:
    workdir = tmp_path_factory.mktemp("framing")
    proc = Exporter(workdir, {"web": {"max_request_bytes": LIMIT}})
    yield proc
    proc.stop()


def status_of(response: bytes) -> int:
    assert response.startswith(b"HTTP/1."), response[:200]
    return int(response.split(b" ", 2)[1])


def exchange(proc: Exporter, head: bytes, body_parts: Iterable[bytes] = (),
             timeout: float = 20.0) -> bytes:
    """Send ``head`` then each body part (stopping quietly when the server has closed),
    and return what the server answered before closing or within ``timeout``."""
    with socket.create_connection((LOOPBACK, proc.port), timeout=timeout) as sock:
        try:
            sock.sendall(head)
            for part in body_parts:
                sock.sendall(part)
        except (BrokenPipeError, ConnectionResetError):
            pass
        chunks = []
        try:
            while data := sock.recv(65536):
                chunks.append(data)
                if b"\r\n\r\n" in b"".join(chunks) and _complete(b"".join(chunks)):
                    break
        except (ConnectionResetError, TimeoutError):
            pass
    return b"".join(chunks)


def _complete(response: bytes) -> bool:
    head, _, body = response.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":", 1)[1])
    return False


def vm_hwm(pid: int) -> int:
    """Peak resident set size of ``pid`` in bytes (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def pushed(proc: Exporter, component: str) -> float:
    value = sample_value(proc.metrics(), "ai_errors_total",
                         {"component": component, "category": "tool"})
    return value or 0.0


def ndjson(component: str, count: int) -> bytes:
    line = json.dumps({"kind": "error", "component": component, "category": "tool"})
    return ("\n".join([line] * count)).encode()


def chunked(body: bytes, size: int) -> list[bytes]:
    parts = [b"%x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size])
             for i in range(0, len(body), size)]
    return [*parts, b"0\r\n\r\n"]


def push_head(extra: bytes = b"", content_type: bytes = b"application/x-ndjson") -> bytes:
    return (b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: " + content_type
            + b"\r\n" + extra + b"\r\n")


# --- request line and headers --------------------------------------------------------


def test_oversized_headers_are_431_without_buffering_them(bounded: Exporter) -> None:
    """Four parallel requests, each with a 64 MiB header: each is answered 431 once the
    bound is passed, and the process's peak memory barely moves (it was +1.3 GB)."""
    before = vm_hwm(bounded.pid)
    answers: list[bytes] = []
    piece = b"a" * MiB

    def send() -> None:
        head = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: "
        answers.append(exchange(bounded, head, iter([piece] * 64)))

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [status_of(a) for a in answers] == [431] * 4
    assert vm_hwm(bounded.pid) - before < 32 * MiB
    assert bounded.get("/livez").status_code == 200


def test_many_headers_past_the_bound_are_431(bounded: Exporter) -> None:
    head = b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + b"".join(
        b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(1000)) + b"\r\n"
    assert status_of(exchange(bounded, head)) == 431


def test_headers_within_the_bound_are_served(bounded: Exporter) -> None:
    response = requests.get(f"{bounded.url}/livez", headers={"X-Ok": "v" * 20000}, timeout=10)
    assert response.status_code == 200


def test_an_overlong_request_line_is_414(bounded: Exporter) -> None:
    head = b"GET /metrics?" + b"a" * (64 * 1024) + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    assert status_of(exchange(bounded, head)) == 414


def test_the_default_config_bounds_headers_too(exporter: Exporter) -> None:
    """A 200 MiB header on the default configuration was answered 200."""
    head = b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: "
    assert status_of(exchange(exporter, head, iter([b"b" * MiB] * 200))) == 431


# --- Content-Length ------------------------------------------------------------------


@pytest.mark.parametrize("headers", [
    pytest.param(b"Content-Length: 5\r\nContent-Length: 7\r\n", id="conflicting"),
    pytest.param(b"Content-Length: 5\r\nContent-Length: 5\r\n", id="duplicate"),
    pytest.param(b"Content-Length: +5\r\n", id="signed"),
    pytest.param(b"Content-Length: 0x5\r\n", id="hex"),
    pytest.param(b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", id="with-chunked"),
    pytest.param(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                 id="duplicate-transfer-encoding"),
])
def test_ambiguous_framing_is_400(bounded: Exporter, headers: bytes) -> None:
    before = pushed(bounded, "framing-ambiguous")
    body = ndjson("framing-ambiguous", 1)[:5]
    assert status_of(exchange(bounded, push_head(headers), [body])) == 400
    assert pushed(bounded, "framing-ambiguous") == before


def test_a_large_unread_body_closes_the_connection_instead_of_being_read(
        bounded: Exporter) -> None:
    """A declared 10 GiB body on a route that does not read it: the answer comes at once
    and the connection closes (cheroot would wait for the rest and read it into one
    buffer before answering)."""
    before = vm_hwm(bounded.pid)
    head = b"GET /livez HTTP/1.1\r\nHost: x\r\nContent-Length: 10737418240\r\n\r\n"
    response = exchange(bounded, head, iter([b"x" * MiB] * 8), timeout=10)
    assert status_of(response) == 200
    assert b"connection: close" in response.lower()
    assert vm_hwm(bounded.pid) - before < 32 * MiB


# --- chunked bodies ------------------------------------------------------------------


def test_a_huge_chunk_is_413_before_it_is_read(bounded: Exporter) -> None:
    """One 600 MiB chunk announced: 413 at once (it took 1.35 GB and ~115 s of a core)."""
    before = vm_hwm(bounded.pid)
    head = push_head(b"Transfer-Encoding: chunked\r\n")
    started = time.monotonic()
    response = exchange(bounded, head, iter([b"25800000\r\n", *([b"{" * MiB] * 4)]))
    assert status_of(response) == 413
    assert time.monotonic() - started < 10
    assert vm_hwm(bounded.pid) - before < 32 * MiB


def test_a_chunked_body_over_the_limit_is_refused_whole(bounded: Exporter) -> None:
    """Small chunks adding up past the limit: 413 and none of the events counted (the
    head of such a body was ingested with a 200)."""
    body = ndjson("framing-over", 30000)
    assert len(body) > LIMIT
    head = push_head(b"Transfer-Encoding: chunked\r\n")
    response = exchange(bounded, head, chunked(body, 8192))
    assert status_of(response) == 413
    assert pushed(bounded, "framing-over") == 0
    rejected = sample_value(bounded.metrics(), "ai_exporter_events_rejected_total",
                            {"source": "push", "reason": "too_large"})
    assert rejected and rejected >= 1


def test_a_chunked_body_within_the_limit_counts_every_event(bounded: Exporter) -> None:
    body = ndjson("framing-under", 10000)
    assert len(body) < LIMIT
    head = push_head(b"Transfer-Encoding: chunked\r\n")
    response = exchange(bounded, head, chunked(body, 7777))
    assert status_of(response) == 200, response
    assert json.loads(response.partition(b"\r\n\r\n")[2]) == {"accepted": 10000,
                                                             "rejected": 0}
    assert pushed(bounded, "framing-under") == 10000


def test_a_chunked_body_of_exactly_the_limit_is_accepted(bounded: Exporter) -> None:
    line = json.dumps({"kind": "error", "component": "framing-exact", "category": "tool"})
    count = LIMIT // (len(line) + 1)
    body = ("\n".join([line] * count)).encode()
    body += b" " * (LIMIT - len(body))
    head = push_head(b"Transfer-Encoding: chunked\r\n")
    response = exchange(bounded, head, chunked(body, 65536))
    assert status_of(response) == 200, response
    assert pushed(bounded, "framing-exact") == count


@pytest.mark.parametrize("size_line", [
    pytest.param(b"f" * 10000 + b"\r\n", id="absurd-length"),
    pytest.param(b"zz\r\n", id="not-hex"),
    pytest.param(b"-5\r\n", id="negative"),
    pytest.param(b"\r\n", id="empty"),
])
def test_a_broken_chunk_size_line_is_400(bounded: Exporter, size_line: bytes) -> None:
    head = push_head(b"Transfer-Encoding: chunked\r\n")
    response = exchange(bounded, head, [size_line, b"{}\r\n0\r\n\r\n"])
    assert status_of(response) == 400


def test_chunk_data_without_its_crlf_is_400(bounded: Exporter) -> None:
    before = pushed(bounded, "framing-crlf")
    line = ndjson("framing-crlf", 1)
    head = push_head(b"Transfer-Encoding: chunked\r\n")
    response = exchange(bounded, head, [b"%x\r\n%sXY0\r\n\r\n" % (len(line), line)])
    assert status_of(response) == 400
    assert pushed(bounded, "framing-crlf") == before


# --- gzip ----------------------------------------------------------------------------


@pytest.mark.parametrize(("accept", "gzipped"), [
    ("gzip", True),
    ("GZIP", True),
    ("deflate, gzip;q=0.5", True),
    ("x-gzip", True),
    ("*", True),
    ("gzip;q=0", False),
    ("gzip; q=0.000", False),
    ("identity", False),
    ("x-gzipped", False),
    ("notgzip", False),
    ("*;q=0", False),
    ("*, gzip;q=0", False),
    ("", False),
])
def test_metrics_are_gzipped_per_accept_encoding_tokens(bounded: Exporter, accept: str,
                                                        gzipped: bool) -> None:
    response = requests.get(f"{bounded.url}/metrics", headers={"Accept-Encoding": accept},
                            timeout=10, stream=True)
    raw = response.raw.read(decode_content=False)
    assert (response.headers.get("Content-Encoding") == "gzip") is gzipped
    text = gzip.decompress(raw) if gzipped else raw
    assert b"ai_exporter_build_info" in text


def test_a_multi_member_gzip_body_counts_every_member(bounded: Exporter) -> None:
    body = gzip.compress(ndjson("gzip-members", 3)) + gzip.compress(
        b"\n" + ndjson("gzip-members", 4))
    response = bounded.post("/api/v1/events", data=body, headers={
        "Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"})
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 7
    assert pushed(bounded, "gzip-members") == 7


def test_gzip_members_followed_by_junk_are_refused_whole(bounded: Exporter) -> None:
    body = gzip.compress(ndjson("gzip-junk", 3)) + b"not a gzip member"
    response = bounded.post("/api/v1/events", data=body, headers={
        "Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"})
    assert response.status_code == 400
    assert pushed(bounded, "gzip-junk") == 0


def test_gzip_members_inflating_past_the_limit_are_413(bounded: Exporter) -> None:
    member = gzip.compress(b" " * (LIMIT // 2 + 10))
    response = bounded.post("/api/v1/events", data=member * 3, headers={
        "Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"})
    assert response.status_code == 413


# --- workers kept for health ---------------------------------------------------------


def test_health_and_metrics_answer_while_slow_pushes_hold_the_workers(
        tmp_path: Path) -> None:
    """Four workers, six pushes trickling their bodies: two run, the other four wait for a
    slot holding no worker (no answer yet), /livez, /readyz and /metrics still answer
    promptly (they timed out when every worker was held), and once the bodies arrive all
    six are kept, the waiting ones in the slots the first two give back."""
    proc = Exporter(tmp_path, {"web": {"threads": 4}})
    line = ndjson("slow-push", 1)
    socks: list[socket.socket] = []
    try:
        for _ in range(6):
            sock = socket.create_connection((LOOPBACK, proc.port), timeout=10)
            sock.sendall(push_head(b"Transfer-Encoding: chunked\r\n") + b"1\r\n{\r\n")
            socks.append(sock)
        time.sleep(1.0)
        busy = []
        for sock in socks:
            sock.settimeout(0.5)
            try:
                busy.append(sock.recv(65536))
            except TimeoutError:
                busy.append(b"")
        assert busy == [b""] * 6, busy  # two running, four waiting: none answered
        for path in ("/livez", "/readyz", "/metrics"):
            started = time.monotonic()
            assert proc.get(path, timeout=3).status_code == 200
            assert time.monotonic() - started < 2
        rest = line[1:]
        for sock in socks:
            sock.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(rest), rest))
        for sock in socks:
            sock.settimeout(10)
            assert status_of(sock.recv(65536)) == 200
        assert pushed(proc, "slow-push") == 6
    finally:
        for sock in socks:
            sock.close()
        proc.stop()
