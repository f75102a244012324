"""How a push body is read and cut into events: the piece size and the over-limit error
of every body reader (the server's chunked decoder and the push source's own readers), the
elements of a JSON array, the lines of NDJSON.

One definition, shared by the push source and the ingestor (whose native path cuts an
array exactly as ``split_array`` does, see ``exporter._lines.run_array``), so a rejection
has the same index and reason on both paths.
"""

from __future__ import annotations

import re
import zlib
from typing import Any, BinaryIO

import msgspec
from werkzeug.exceptions import RequestEntityTooLarge

READ_PIECE = 64 * 1024  # bytes asked of a body stream at a time


class BodyTooLargeError(RequestEntityTooLarge):
    """The body (or its decompressed form) grew past ``web.max_request_bytes``."""

    description = "request body is over web.max_request_bytes"

_raw_list = msgspec.json.Decoder(list[msgspec.Raw])
# Tokens of a JSON text that matter for splitting an array: strings (possibly unterminated)
# and structural characters.
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{},]', re.DOTALL)


def split_array(body: bytes) -> list[bytes]:
    """The elements of a JSON array, tolerating a broken one.

    The strict split is tried first; if the array does not parse (a syntax error inside one
    element, NaN, a truncated tail, trailing data), the elements are cut at the top-level
    commas instead, so the elements around the broken one are still decoded on their own.
    Anything after the closing bracket becomes one more element, so it is reported.
    """
    try:
        return [bytes(r) for r in _raw_list.decode(body)]
    except (msgspec.DecodeError, UnicodeDecodeError):
        pass
    start = body.index(b"[") + 1
    items: list[bytes] = []
    depth = 0
    for match in _TOKEN.finditer(body, start):
        char = match.group()[:1]
        if char == b'"':
            continue
        if char in (b"[", b"{"):
            depth += 1
        elif char in (b"]", b"}"):
            if depth == 0 and char == b"]":
                items.append(body[start:match.start()])
                start = match.end()
                break
            depth -= 1
        elif depth == 0:  # a comma between elements
            items.append(body[start:match.start()])
            start = match.end()
    else:
        items.append(body[start:])
        start = len(body)
    elements = [item.strip() for item in items]
    if elements == [b""]:
        elements = []  # "[]"
    tail = body[start:].strip()
    if tail:
        elements.append(tail)
    return elements


def split_ndjson(body: bytes) -> tuple[list[bytes], list[int]]:
    """Non-blank lines of an NDJSON body, with their 1-based line numbers."""
    lines: list[bytes] = []
    numbers: list[int] = []
    for number, line in enumerate(body.split(b"\n"), 1):
        stripped = line.strip()
        if stripped:
            lines.append(stripped)
            numbers.append(number)
    return lines, numbers


def read_unsized(stream: BinaryIO, limit: int) -> bytes:
    """A body without ``Content-Length`` (chunked), read whole or refused whole.

    Werkzeug's ``get_data`` stops at ``MAX_CONTENT_LENGTH`` and returns what it has, so a
    chunked body over the limit was cut and its head ingested with a 2xx. Reading one byte
    past the limit tells a body of exactly ``limit`` bytes from a longer one."""
    pieces: list[bytes] = []
    size = 0
    while piece := stream.read(min(READ_PIECE, limit + 1 - size)):
        pieces.append(piece)
        size += len(piece)
        if size > limit:
            raise BodyTooLargeError
    return b"".join(pieces)


def gunzip(body: bytes, limit: int) -> bytes:
    """Decompress a gzip body, refusing to inflate past ``limit`` bytes (zip bombs).

    Every member is decoded (RFC 1952 §2.2: a gzip file is a series of members, which
    ``gzip.decompress`` and ``curl --compressed`` concatenate); bytes after a member that
    are not a whole member refuse the body, so no body is ever half-applied."""
    pieces: list[bytes] = []
    size = 0
    rest = body
    while True:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        out = inflater.decompress(rest, limit + 1 - size)
        size += len(out)
        if size > limit or inflater.unconsumed_tail:
            raise BodyTooLargeError
        if not inflater.eof:
            raise zlib.error("gzip stream is truncated")
        pieces.append(out)
        rest = inflater.unused_data
        if not rest:
            return b"".join(pieces)


def read_request_body(request: Any, limit: int) -> bytes:
    """A Werkzeug request's whole body, at most ``limit`` bytes, whether it has a
    ``Content-Length`` or is chunked; ``BodyTooLargeError`` past it (nothing is read past a
    ``Content-Length`` over the limit, and a chunked body is refused whole, never cut)."""
    length = request.content_length
    if length is not None and length > limit:
        raise BodyTooLargeError
    try:
        if length is not None:
            body: bytes = request.get_data(cache=False)
            return body
        return read_unsized(request.environ["wsgi.input"], limit)
    except RequestEntityTooLarge:  # the server's chunked decoder past the limit
        raise BodyTooLargeError from None
