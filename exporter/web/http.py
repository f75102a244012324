"""HTTP/1.1 framing the exporter enforces before any route runs, authentication included.

cheroot parses requests; left at its defaults it reads a request line and headers of any
size, folds a repeated ``Content-Length`` into the last value, decodes a chunked body a
whole chunk at a time (one 600 MiB chunk is 600 MiB of memory before anything can
refuse it) and, after a response sent without reading the body, reads the rest of a
declared ``Content-Length`` into memory in one call. The classes here keep cheroot and
change only those steps:

- the request line and headers together are bounded by ``web.max_header_bytes``
  (cheroot's own size check, which stops reading at the bound): 414 for the line, 431
  for the headers;
- a ``Content-Length`` that is repeated, not plain digits, or sent beside
  ``Transfer-Encoding`` is 400 (RFC 9112 §6.3: the framing is ambiguous, a smuggling
  vector);
- a chunked body is decoded incrementally: a chunk-size line is at most
  ``MAX_CHUNK_LINE`` bytes of hex, data is handed over in pieces of at most the size
  asked, and the running size is checked against ``web.max_request_bytes`` when each
  chunk is announced, so 413 comes before the chunk is read;
- an unread body is drained only while it is small; a larger one closes the connection.

Errors found while a route reads the body are werkzeug's HTTP exceptions (413, 400), so
the route (or Flask's error handler) answers them like any other.
"""

from __future__ import annotations

import re
from typing import Any

from cheroot import errors, server, wsgi
from werkzeug.exceptions import BadRequest

from exporter.bodies import READ_PIECE, BodyTooLargeError
from exporter.web.preread import PrereadManager

MAX_CHUNK_LINE = 4096  # chunk size in hex plus extensions; curl sends 3-8 bytes
MAX_TRAILER_BYTES = 8192
MAX_DRAIN_BYTES = 64 * 1024  # an unread body up to this is read off to keep the connection
_HEX = re.compile(rb"[0-9A-Fa-f]{1,15}")  # 15 hex digits: below 2**60
_DIGITS = re.compile(rb"[0-9]{1,19}")
_UNIQUE_HEADERS = frozenset({b"Content-Length", b"Transfer-Encoding", b"Host"})


class BadFramingError(BadRequest):
    """The chunked framing of the body is broken (size line, data terminator, trailer)."""

    description = "malformed chunked request body"


class _UniqueHeaders(dict[bytes, bytes]):
    """Header storage that refuses a second value for a header that frames the message."""

    def __setitem__(self, key: bytes, value: bytes) -> None:
        if key in _UNIQUE_HEADERS and key in self:
            raise ValueError(f"duplicate {key.decode('latin-1')} header")
        super().__setitem__(key, value)


class StrictHeaderReader(server.HeaderReader):
    """cheroot's header reader, refusing repeated framing headers (400)."""

    def __call__(self, rfile: Any, hdict: dict[bytes, bytes] | None = None
                 ) -> dict[bytes, bytes]:
        unique = _UniqueHeaders()
        super().__call__(rfile, unique)
        if hdict is None:
            return dict(unique)
        hdict.update(unique)
        return hdict


class ChunkedBody:
    """A chunked request body as a WSGI input stream, decoded a piece at a time.

    Never holds more than one piece (``READ_PIECE`` or the size asked) of a chunk, and
    refuses a chunk that would take the body past ``limit`` as soon as it is announced.
    ``request`` is told to close the connection when the body ends in an error.
    """

    def __init__(self, rfile: Any, limit: int, request: server.HTTPRequest) -> None:
        self._rfile = rfile
        self._limit = limit
        self._request = request
        self._left = 0  # bytes of the current chunk still to read
        self._total = 0
        self._done = False
        self._line = b""  # what readline() has read past the last line

    @property
    def done(self) -> bool:
        """Whether the whole body (last chunk and trailer) has been read."""
        return self._done

    def _fail(self, exc: Exception) -> Exception:
        self._done = True
        self._request.close_connection = True
        return exc

    def _next_chunk(self) -> None:
        """Read the next chunk-size line (and the trailer after the last chunk)."""
        line = self._rfile.readline(MAX_CHUNK_LINE + 1)
        if not line.endswith(b"\n") or len(line) > MAX_CHUNK_LINE:
            raise self._fail(BadFramingError("chunk-size line is over "
                                             f"{MAX_CHUNK_LINE} bytes or cut short"))
        size_text = line.split(b";", 1)[0].strip()
        if not _HEX.fullmatch(size_text):
            raise self._fail(BadFramingError("chunk size is not hexadecimal"))
        size = int(size_text, 16)
        if size == 0:
            self._read_trailer()
            self._done = True
            return
        if self._total + size > self._limit:
            raise self._fail(BodyTooLargeError())
        self._total += size
        self._left = size

    def _read_trailer(self) -> None:
        read = 0
        while True:
            line = self._rfile.readline(MAX_CHUNK_LINE + 1)
            read += len(line)
            if not line.endswith(b"\n") or read > MAX_TRAILER_BYTES:
                raise self._fail(BadFramingError("chunked trailer is too long or cut short"))
            if line in (b"\r\n", b"\n"):
                return

    def _end_chunk(self) -> None:
        if self._rfile.read(2) != b"\r\n":
            raise self._fail(BadFramingError("chunk data is not followed by CRLF"))

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes (all that is left when ``size`` is None or negative)."""
        if self._line:
            head, self._line = self._line, b""
            if size is not None and 0 <= size < len(head):
                self._line = head[size:]
                return head[:size]
            if size is not None and size >= 0:
                size -= len(head)
            return head + self.read(size)
        if size is None or size < 0:
            pieces = []
            while piece := self.read(READ_PIECE):
                pieces.append(piece)
            return b"".join(pieces)
        while not self._done and self._left == 0 and size > 0:
            self._next_chunk()
        if self._done or size == 0:
            return b""
        data = self._rfile.read(min(size, self._left, READ_PIECE))
        if not data:
            raise self._fail(BadFramingError("body ends inside a chunk"))
        self._left -= len(data)
        if self._left == 0:
            self._end_chunk()
        return bytes(data)

    def readline(self, size: int | None = -1) -> bytes:
        """One line (with its newline), at most ``size`` bytes when given."""
        limit = READ_PIECE if size is None or size < 0 else size
        buffer = self._line
        self._line = b""
        while b"\n" not in buffer and len(buffer) < limit:
            piece = self.read(min(READ_PIECE, limit - len(buffer)))
            if not piece:
                break
            buffer += piece
        end = buffer.find(b"\n") + 1 or min(len(buffer), limit)
        end = min(end, limit)
        self._line = buffer[end:]
        return buffer[:end]

    def readlines(self, sizehint: int = 0) -> list[bytes]:
        lines: list[bytes] = []
        total = 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if 0 < sizehint <= total:
                break
        return lines

    def __iter__(self) -> ChunkedBody:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def close(self) -> None:
        """Nothing to release: the connection owns the socket."""


class BoundedRequest(server.HTTPRequest):
    """cheroot's request with the bounds of this module (see its docstring)."""

    header_reader = StrictHeaderReader()

    def parse_request(self) -> None:
        """cheroot's ``parse_request``, answering 431 (RFC 6585) for headers past the
        bound instead of its 413, which a client reads as a body too large."""
        self.rfile = server.SizeCheckWrapper(self.conn.rfile,
                                             self.server.max_request_header_size)
        try:
            if not self.read_request_line():  # type: ignore[no-untyped-call]
                return
        except errors.MaxSizeExceeded:
            self.simple_response("414 Request-URI Too Long",
                                 "The request line is over web.max_header_bytes.")
            return
        try:
            if not self.read_request_headers():
                return
        except errors.MaxSizeExceeded:
            self.close_connection = True
            self.simple_response("431 Request Header Fields Too Large",
                                 "The request headers are over web.max_header_bytes.")
            return
        self.ready = True

    def read_request_headers(self) -> bool:
        if not super().read_request_headers():  # type: ignore[no-untyped-call]
            return False
        length = self.inheaders.get(b"Content-Length")
        if length is not None:
            if not _DIGITS.fullmatch(length):
                self.simple_response("400 Bad Request", "Malformed Content-Length header.")
                return False
            if b"Transfer-Encoding" in self.inheaders:
                self.close_connection = True
                self.simple_response("400 Bad Request",
                                     "Content-Length and Transfer-Encoding together.")
                return False
        return True

    def respond(self) -> None:
        """cheroot's ``respond`` with a ``ChunkedBody`` for chunked bodies."""
        if not self.chunked_read:
            super().respond()
            return
        self.rfile = ChunkedBody(self.conn.rfile, self.server.max_body_bytes, self)
        self.server.gateway(self).respond()
        if self.ready:
            self.ensure_headers_sent()
        if self.chunked_write:
            self.conn.wfile.write(b"0\r\n\r\n")

    def send_headers(self) -> None:
        """Close instead of draining a large unread body (cheroot reads what is left of a
        ``Content-Length`` body in one call, a buffer of any declared size)."""
        if isinstance(self.rfile, ChunkedBody):
            if not self.rfile.done:
                self.close_connection = True
        elif getattr(self.rfile, "remaining", 0) > MAX_DRAIN_BYTES:
            self.close_connection = True
        super().send_headers()


class BoundedConnection(server.HTTPConnection):
    RequestHandlerClass = BoundedRequest
    # Set by ``PrereadManager`` when it accepts the connection (exporter.web.preread).
    cap_manager: PrereadManager | None = None
    cap_address = ""

    def close(self) -> None:
        """cheroot's ``close``, and the connection no longer counts against its client
        address's cap (once, however often it is closed)."""
        manager, self.cap_manager = self.cap_manager, None
        try:
            super().close()
        finally:
            if manager is not None:
                manager.finished(self)
                manager.release(self.cap_address)


class BoundedServer(wsgi.Server):
    """cheroot's WSGI server with bounded headers and bodies, requests read in the
    selector before a worker gets them (``exporter.web.preread``), read timeouts and a
    cap on connections per client address."""

    ConnectionClass = BoundedConnection

    def __init__(self, *args: Any, max_header_bytes: int, max_body_bytes: int,
                 header_timeout: float = 10.0, body_timeout: float = 60.0,
                 max_per_address: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_request_header_size = max_header_bytes
        self.max_body_bytes = max_body_bytes
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.max_per_address = max_per_address

    def prepare(self) -> None:
        """cheroot's ``prepare`` with a ``PrereadManager`` for its connection manager."""
        super().prepare()
        plain: Any = getattr(self, "_connections")  # noqa: B009 (not in cheroot's stubs)
        self._connections = PrereadManager(self, self.header_timeout, self.body_timeout,
                                           self.max_per_address)
        plain._selector.close()


def gzip_accepted(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` value admits gzip (RFC 9110 §12.5.3): a ``gzip``
    (or ``x-gzip``) token with a non-zero q-value, or ``*`` with one when gzip is not
    named. A substring test would take ``gzip;q=0`` or ``x-gzipped`` as a yes."""
    star: bool | None = None
    for item in accept_encoding.split(","):
        token, _, params = item.partition(";")
        token = token.strip().lower()
        quality = _quality(params)
        if token in ("gzip", "x-gzip"):
            return quality > 0
        if token == "*":  # noqa: S105 (a wildcard, not a password)
            star = quality > 0
    return bool(star)


def _quality(params: str) -> float:
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                quality = float(value.strip())
            except ValueError:
                return 0.0
            return quality if 0.0 <= quality <= 1.0 else 0.0
    return 1.0
