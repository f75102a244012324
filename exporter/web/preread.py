"""Slow and idle clients stay off cheroot's worker threads.

cheroot 11 hands every accepted connection straight to a worker thread, which then blocks
reading the request line: a connection that sends nothing, or half a head, holds one of
the ``web.threads`` workers for the whole socket timeout (and a client trickling a byte
per read, for ever), so 8 such connections stopped ``/metrics``. Only connections kept
alive *between* requests waited in its selector.

``PrereadManager`` replaces cheroot's ``ConnectionManager``: every connection, new or kept
alive, waits in the selector thread, which reads what arrives without blocking into a
per-connection buffer. A connection goes to a worker only once its request head is
complete and a ``Content-Length`` body is complete too (or ``PREREAD_BODY_BYTES`` of it
are buffered, or the client asked ``Expect: 100-continue``, or the head is over
``web.max_header_bytes`` so that the worker answers 414/431). A chunked body, and any body
for a route that reads it (pushes, OTLP intake, probes, reload: ``SLOW_PATHS`` of
``exporter.web.reserve``), goes to the route with its head: those routes read bodies a
piece at a time and share the slow-request slots, so the reserved workers stay free for
health and ``/metrics``. A request for those routes that finds every slot taken waits
here, holding no worker, for up to ``QUEUE_WAIT_SECONDS`` (at most ``MAX_QUEUED`` of
them, in arrival order), and takes the first slot given back; past either bound it is
answered 503 with ``Retry-After``. Why: 50 pushers on 6 slots got 1.6 % of their
batches refused whenever the machine stalled for a moment, while a push holds its slot
for milliseconds once it runs. A body anywhere else (a route that ignores
it and that cheroot would drain) is read here. The worker then reads the
buffered bytes first (``PrefixedReader``). Besides that:

- ``web.header_read_timeout_seconds``: the whole head must arrive within this, counted
  from the accept (a new connection) or from the first byte of the next request (a
  connection kept alive; between requests cheroot's keep-alive timeout applies);
- ``web.body_read_timeout_seconds``: the whole body within this of the end of the head,
  whether it is buffered here or read by the route (each socket read in a worker gets
  what is left of it as its timeout); past either the connection gets a 408 and is
  closed;
- ``web.max_connections_per_address``: an accepted connection past that many open from
  one client address is answered 429 (plain HTTP; closed without a word under TLS, before
  any handshake) and closed, in the accept loop, costing no worker.

TLS: an accepted connection waits here until its ClientHello record has arrived (so an
idle one costs nothing and is closed at the header timeout); the handshake then runs on
this thread as before (``exporter.web.tls``, with its own short timeout, which bounds a
client that stalls later in the handshake); after it, the TLS socket is read without
blocking like a plain one.
"""

from __future__ import annotations

import _pyio  # type: ignore[import-not-found]  # cheroot's reader, no stub
import contextlib
import errno
import io
import re
import selectors
import socket
import ssl
import threading
import time
from collections import deque
from typing import Any

from cheroot import connections

PREREAD_BODY_BYTES = 256 * 1024  # a body up to this is read here; past it, in the route
QUEUE_WAIT_SECONDS = 5.0  # how long a slow-route request waits here for a slot
MAX_QUEUED = 256  # slow-route requests waiting here at most
_READ_PIECE = 64 * 1024
_DIGITS = re.compile(rb"[0-9]{1,19}")
_TOO_MANY = (b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain\r\n"
             b"Retry-After: 1\r\nConnection: close\r\nContent-Length: 46\r\n\r\n"
             b"Too many connections from this client address\n")
_TIMEOUT = (b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain\r\n"
            b"Connection: close\r\nContent-Length: 40\r\n\r\n"
            b"The request was not received in time.\r\n")
_BUSY_BODY = (b'{"detail":"the server is busy; retry later","error":"Service Unavailable",'
              b'"status":503}\n')
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
         b"Retry-After: 1\r\nConnection: close\r\nContent-Length: "
         + str(len(_BUSY_BODY)).encode() + b"\r\n\r\n" + _BUSY_BODY)
_WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


class _PrefixedRaw(io.RawIOBase):
    """A socket's bytes after ``prefix``; a read past ``deadline`` (monotonic) times out."""

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        super().__init__()
        self._sock = sock
        self._timeout = timeout
        self.prefix = b""
        self.deadline: float | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self.prefix:
            count = min(len(view), len(self.prefix))
            view[:count] = self.prefix[:count]
            self.prefix = self.prefix[count:]
            return count
        if self.deadline is None:
            return self._sock.recv_into(view)
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        self._sock.settimeout(min(left, self._timeout))
        try:
            return self._sock.recv_into(view)
        finally:
            self._sock.settimeout(self._timeout)  # writes keep the usual timeout

    def close(self) -> None:
        self.prefix = b""
        super().close()


class PrefixedReader(_pyio.BufferedReader):  # type: ignore[misc]
    """cheroot's ``StreamReader`` (the same pure-Python buffered reader, with
    ``has_data`` and ``bytes_read``) over ``_PrefixedRaw``."""

    def __init__(self, raw: _PrefixedRaw, bufsize: int = io.DEFAULT_BUFFER_SIZE) -> None:
        super().__init__(raw, bufsize)
        self.prefixed = raw
        self.bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        data: bytes = super().read(size)
        self.bytes_read += len(data)
        return data

    def has_data(self) -> bool:
        """Whether unread bytes are buffered (here or in the prefix)."""
        return len(self._read_buf) > self._read_pos or bool(self.prefixed.prefix)

    def take_buffered(self) -> bytes:
        """What is buffered and not read yet, removed (no socket read)."""
        with self._read_lock:
            buffered = bytes(self._read_buf[self._read_pos:])
            self._reset_read_buf()
        rest, self.prefixed.prefix = self.prefixed.prefix, b""
        return buffered + rest


def _head_end(buffer: bytearray) -> int:
    """Index just past the blank line ending the head, or -1."""
    end = buffer.find(b"\r\n\r\n")
    if end >= 0:
        return end + 4
    end = buffer.find(b"\n\n")  # broken framing: the worker answers 400
    return end + 2 if end >= 0 else -1


_FRAMING = (b"content-length", b"transfer-encoding")


def _headers(head: bytes) -> dict[bytes, bytes] | None:
    """The head's fields by lower-case name; None when the body's framing is ambiguous
    (a framing header repeated, or both): the worker answers that at once (400)."""
    fields: dict[bytes, bytes] = {}
    for line in head.split(b"\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            key = name.strip().lower()
            if key in _FRAMING and (key in fields or any(f in fields for f in _FRAMING)):
                return None
            fields[key] = value.strip()
    return fields


_TLS_PEEK = 5 + 16384  # a TLS record header and the largest record


class _ClientHello:
    """An accepted TLS connection waiting in the selector for its ClientHello; a
    one-shot listener for cheroot's ``_from_server_socket`` once it has arrived."""

    last_used: float | None = None

    def __init__(self, manager: PrereadManager, sock: socket.socket, addr: Any,
                 deadline: float) -> None:
        self.manager = manager
        self.sock = sock
        self.socket = sock  # read by the manager's expiry
        self.addr = addr
        self.preread_deadline = deadline
        self.handed = False

    def accept(self) -> tuple[socket.socket, Any]:
        address = self.addr[0] if isinstance(self.addr, tuple) else ""
        self.manager._accepted = (self.sock, address)
        return self.sock, self.addr

    def close(self) -> None:
        """Closed before the handshake (timed out, or the client went away)."""
        if not self.handed:
            self.handed = True
            with contextlib.suppress(OSError):
                self.sock.close()
            self.manager.release(self.addr[0] if isinstance(self.addr, tuple) else "")


_SLOW_PATHS: frozenset[bytes] | None = None


def _slow_route(buffer: bytearray) -> bool:
    """Whether the request line names a route that reads its body in a slow slot."""
    global _SLOW_PATHS  # noqa: PLW0603 (imported on first use: Flask is loaded by then)
    if _SLOW_PATHS is None:
        from exporter.web.reserve import SLOW_PATHS

        _SLOW_PATHS = frozenset(path.encode() for path in SLOW_PATHS)
    line = bytes(buffer[:buffer.find(b"\n")])
    parts = line.split()
    return len(parts) >= 2 and parts[1].split(b"?", 1)[0] in _SLOW_PATHS


class PrereadManager(connections.ConnectionManager):
    """cheroot's connection manager, reading each request into memory before a worker
    gets it (see the module docstring)."""

    # cheroot's own, not in its stubs.
    _selector: Any
    _stop_requested: bool
    _from_server_socket: Any
    _remove_invalid_sockets: Any

    def __init__(self, server: Any, header_timeout: float, body_timeout: float,
                 per_address: int) -> None:
        super().__init__(server)
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.per_address = per_address
        self._open: dict[str, int] = {}
        self._open_lock = threading.Lock()
        self._accepted: tuple[socket.socket, str] | None = None
        # Requests for slow routes handed to workers and not back yet; past the routes'
        # slots (exporter.web.reserve) one more is refused here, costing no worker.
        self._slow = 0
        self._slow_lock = threading.Lock()
        # Slow-route requests waiting for a slot, oldest first: (connection, deadline).
        self._queued: deque[tuple[Any, float]] = deque()
        # exporter.web.reserve.slots_for(web.threads), not imported here (it loads Flask)
        self.slow_slots = max(1, int(server.requests.min) - 2)

    # -- per-address accounting -------------------------------------------------------

    def open_from(self, address: str) -> int:
        with self._open_lock:
            return self._open.get(address, 0)

    def finished(self, conn: Any) -> None:
        """``conn``'s request is done (the connection is back, or closed): its slot
        passes to the oldest request waiting for one, if any."""
        if getattr(conn, "preread_slow", False):
            conn.preread_slow = False
            with self._slow_lock:
                waiting = self._queued.popleft()[0] if self._queued else None
                if waiting is None:
                    self._slow -= 1
            if waiting is not None:
                waiting.preread_slow = True
                self._hand_over(waiting)

    def release(self, address: str) -> None:
        with self._open_lock:
            left = self._open.get(address, 0) - 1
            if left > 0:
                self._open[address] = left
            else:
                self._open.pop(address, None)

    def accept(self) -> tuple[socket.socket, Any]:
        """The listener's ``accept`` for cheroot's ``_from_server_socket``, refusing a
        connection past the per-address cap (raises ``BlockingIOError``: cheroot takes
        that as nothing accepted)."""
        sock, addr = self.server.socket.accept()
        address = addr[0] if isinstance(addr, tuple) else ""
        with self._open_lock:
            count = self._open.get(address, 0)
            admitted = not self.per_address or count < self.per_address
            if admitted:
                self._open[address] = count + 1
        if not admitted:
            with contextlib.suppress(OSError):
                sock.setblocking(False)
                if self.server.ssl_adapter is None:
                    sock.send(_TOO_MANY)
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
            raise BlockingIOError(errno.EAGAIN, "over the per-address connection cap")
        self._accepted = (sock, address)
        return sock, addr

    def _accept_connection(self, listener: Any = None) -> Any:
        """cheroot's accept (and TLS handshake) through ``listener`` (this manager's
        capped ``accept``, or a ``_ClientHello`` whose hello has arrived)."""
        self._accepted = None
        conn = self._from_server_socket(listener or self)
        accepted, self._accepted = self._accepted, None
        if conn is None:
            if accepted is not None:  # accepted, then the TLS handshake failed
                self.release(accepted[1])
                with contextlib.suppress(OSError):
                    accepted[0].close()
            return None
        conn.cap_address = accepted[1] if accepted is not None else ""
        conn.cap_manager = self
        raw = _PrefixedRaw(conn.socket, self.server.timeout)
        conn.rfile = PrefixedReader(raw, conn.rbufsize)
        return conn

    # -- TLS: the handshake starts once the ClientHello is here ------------------------

    def _await_hello(self) -> None:
        """Accept a TLS connection and wait here for its ClientHello: the handshake
        (``exporter.web.tls``, on this thread) then does not wait on a client that
        connected and sent nothing."""
        try:
            sock, addr = self.accept()
        except OSError:  # over the cap (closed), or nothing to accept after all
            return
        self._accepted = None
        hello = _ClientHello(self, sock, addr, time.monotonic() + self.header_timeout)
        sock.setblocking(False)
        self._selector.register(sock.fileno(), selectors.EVENT_READ, data=hello)

    def _hello_readable(self, fd: int, hello: _ClientHello) -> None:
        try:
            data = hello.sock.recv(_TLS_PEEK, socket.MSG_PEEK)
        except _WOULD_BLOCK:
            return
        except OSError:
            data = b""
        if not data:
            self._selector.unregister(fd)
            hello.close()
            return
        if data[0] == 0x16 and len(data) < min(_TLS_PEEK, 5 + int.from_bytes(data[3:5])):
            return  # the first record (the ClientHello) is not all here yet
        self._selector.unregister(fd)
        hello.sock.settimeout(self.server.timeout)
        hello.handed = True
        new = self._accept_connection(hello)
        if new is not None:
            new.last_used = time.monotonic()
            self._wait(new, b"", hello.preread_deadline)

    # -- waiting in the selector ------------------------------------------------------

    def _wait(self, conn: Any, buffer: bytes, deadline: float | None) -> None:
        conn.preread = bytearray(buffer)
        conn.preread_deadline = deadline
        conn.preread_head = -1
        conn.socket.setblocking(False)
        if buffer and self._ready(conn):
            self._dispatch(conn)
            return
        self._selector.register(conn.socket.fileno(), selectors.EVENT_READ, data=conn)

    def put(self, conn: Any) -> None:
        """A connection back from a worker (kept alive): wait for its next request."""
        conn.last_used = time.monotonic()
        self.finished(conn)
        leftover = conn.rfile.take_buffered() if isinstance(conn.rfile, PrefixedReader) \
            else b""
        conn.rfile.prefixed.deadline = None
        deadline = time.monotonic() + self.header_timeout if leftover else None
        self._wait(conn, leftover, deadline)

    @property
    def can_add_keepalive_connection(self) -> bool:
        # A connection kept alive costs a selector entry, not a thread; the per-address
        # cap and the timeouts bound them.
        return True

    def _dispatch(self, conn: Any) -> None:
        if conn.preread_head >= 0 and _slow_route(conn.preread):
            with self._slow_lock:
                busy = self._slow >= self.slow_slots
                if not busy:
                    self._slow += 1
                elif self.server.ssl_adapter is None and len(self._queued) < MAX_QUEUED:
                    self._queued.append((conn, time.monotonic() + QUEUE_WAIT_SECONDS))
                    return  # handed over by finished() when a slot is given back
            if busy:  # what exporter.web.reserve would answer, without a worker
                if self.server.ssl_adapter is None:  # under TLS a worker answers it
                    with contextlib.suppress(OSError):
                        conn.socket.send(_BUSY)
                    conn.close()
                    return
                with self._slow_lock:
                    self._slow += 1
            conn.preread_slow = True
        self._hand_over(conn)

    def _hand_over(self, conn: Any) -> None:
        """Give ``conn`` to the workers, its buffered bytes read first."""
        conn.socket.settimeout(self.server.timeout)
        raw: _PrefixedRaw = conn.rfile.prefixed
        raw.prefix = bytes(conn.preread)
        raw.deadline = conn.preread_deadline
        conn.preread = bytearray()
        self.server.process_conn(conn)

    def _ready(self, conn: Any) -> bool:
        """Whether ``conn``'s request is ready for a worker. The caller unregisters it
        before dispatching: a worker may be done and ``put()`` it back at once."""
        buffer: bytearray = conn.preread
        if conn.preread_head < 0:
            end = _head_end(buffer)
            if end < 0:
                # Past the bound the worker answers 414/431.
                return len(buffer) > int(self.server.max_request_header_size)
            conn.preread_head = end
            conn.preread_deadline = time.monotonic() + self.body_timeout
        start = conn.preread_head
        fields = _headers(bytes(buffer[:start]))
        ready: bool
        if fields is None or b"100-continue" in fields.get(b"expect", b"").lower():
            ready = True
        elif b"transfer-encoding" in fields or _slow_route(buffer):
            # A chunked body is decoded by the route a piece at a time (exporter.web.http)
            # and the routes that read bodies share the slow-request slots
            # (exporter.web.reserve): a body read there is bounded by the body deadline,
            # trickled ones past the slots are 503 at once, and the reserved workers stay
            # free for health and /metrics.
            ready = True
        elif (length := fields.get(b"content-length")) is not None:
            if not _DIGITS.fullmatch(length):
                ready = True  # the worker answers 400
            else:
                wanted = int(length)
                ready = (wanted > self.server.max_body_bytes
                         or len(buffer) - start >= min(wanted, PREREAD_BODY_BYTES))
        else:
            ready = True
        return ready or len(buffer) - start >= PREREAD_BODY_BYTES

    def _readable(self, fd: int, conn: Any) -> None:
        closed = False
        try:
            while len(conn.preread) < self.server.max_request_header_size \
                    + PREREAD_BODY_BYTES + _READ_PIECE:
                data = conn.socket.recv(_READ_PIECE)
                if not data:
                    closed = True
                    break
                conn.preread += data
        except _WOULD_BLOCK:
            pass
        except OSError:
            closed = True
        if closed:
            self._selector.unregister(fd)
            conn.close()
            return
        if conn.preread_deadline is None and conn.preread:
            conn.preread_deadline = time.monotonic() + self.header_timeout
        if self._ready(conn):
            self._selector.unregister(fd)
            self._dispatch(conn)

    def _expire(self, threshold: float) -> None:
        """Close connections past their read deadline (408) or idle past the keep-alive
        timeout (cheroot's ``threshold``)."""
        now = time.monotonic()
        expired = []
        for fd, conn in self._selector.connections:
            if conn is self.server:
                continue
            deadline = getattr(conn, "preread_deadline", None)
            if deadline is not None:
                if now > deadline:
                    expired.append((fd, conn, True))
            elif conn.last_used is not None and conn.last_used < threshold:
                expired.append((fd, conn, False))
        for fd, conn, late in expired:
            self._selector.unregister(fd)
            if late and self.server.ssl_adapter is None:
                with contextlib.suppress(OSError):
                    conn.socket.send(_TIMEOUT)
            conn.close()
        with self._slow_lock:
            late_queued = []
            while self._queued and self._queued[0][1] < now:
                late_queued.append(self._queued.popleft()[0])
        for conn in late_queued:  # waited QUEUE_WAIT_SECONDS for a slot: refused
            with contextlib.suppress(OSError):
                conn.socket.send(_BUSY)
            conn.close()

    def _run(self, expiration_interval: float) -> None:
        """cheroot's loop, with new connections waiting here too (they went straight to
        a worker) and readable ones read here until their request is ready."""
        # Monotonic, as every time here (cheroot's loop reads the wall clock): a step of
        # the wall clock back does not suspend expiry (read timeouts included), nor does
        # a step forward expire every kept-alive connection at once.
        last_expiration_check = time.monotonic()
        interval = min(expiration_interval, 0.25)
        while not self._stop_requested:
            try:
                active = list(self._selector.select(timeout=interval))
            except OSError:
                self._remove_invalid_sockets()
                continue
            for fd, conn in active:
                if conn is self.server:
                    if self.server.ssl_adapter is not None:
                        self._await_hello()
                        continue
                    new = self._accept_connection()
                    if new is not None:
                        new.last_used = time.monotonic()
                        self._wait(new, b"", time.monotonic() + self.header_timeout)
                elif isinstance(conn, _ClientHello):
                    self._hello_readable(fd, conn)
                else:
                    try:
                        self._readable(fd, conn)
                    except Exception as exc:  # one connection never stops the loop
                        self.server.error_log(f"reading a request: {exc!r}", level=30)
                        with contextlib.suppress(Exception):
                            self._selector.unregister(fd)
                        with contextlib.suppress(Exception):
                            conn.close()
            now = time.monotonic()
            if now - last_expiration_check > interval:
                self._expire(threshold=now - self.server.timeout)
                last_expiration_check = now


__all__ = ["PREREAD_BODY_BYTES", "PrefixedReader", "PrereadManager"]
