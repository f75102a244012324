"""How a push body is read and cut into events: the piece size and the over-limit error
of every body reader (the server's chunked decoder and the push source's own readers), the
elements of a JSON array, the lines of NDJSON.

One definition, shared by the push source and the ingestor (whose native path cuts an
array exactly as ``split_array`` does, see ``exporter._lines.run_array``), so a rejection
has the same index and reason on both paths.
"""

from __future__ import annotations

import re

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
