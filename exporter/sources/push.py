"""HTTP push: ``POST /api/v1/events`` with a JSON array, one object, or NDJSON; gzip allowed.

Each event is decoded on its own, so the response can list the index and reason of every
rejected event while the valid ones in the same batch are counted exactly once. When
tokens are configured (``sources.push.tokens`` / ``tokens_file``) a request must carry
``Authorization: Bearer <token>``; anything else is refused with 401 before the body is
read.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import msgspec
from werkzeug.exceptions import RequestEntityTooLarge

from exporter.config import Config, ConfigError, PushConfig
from exporter.events import Rejection
from exporter.ingest import Ingestor
from exporter.sources.base import Source

JSON_TYPES = frozenset({"application/json", "text/json"})
NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl",
                          "application/x-jsonlines", "application/jsonlines"})
GZIP_ENCODINGS = frozenset({"gzip", "x-gzip"})
MAX_ERRORS_LISTED = 1000
REALM = 'Bearer realm="ai-metrics-exporter"'
# Set by the web layer's authentication when it has already verified the caller (a push
# token, or any credential whose role may push); the token check here is then skipped.
IDENTITY_KEY = "ai_exporter.identity"

_raw_list = msgspec.json.Decoder(list[msgspec.Raw])
# Tokens of a JSON text that matter for splitting an array: strings (possibly unterminated)
# and structural characters.
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{},]', re.DOTALL)


class BodyTooLargeError(Exception):
    """The (decompressed) body is over the configured limit."""


READ_PIECE = 64 * 1024


class PushRequest(Protocol):
    """The part of a Werkzeug request the push source reads."""

    @property
    def headers(self) -> Any: ...

    @property
    def content_length(self) -> int | None: ...

    @property
    def environ(self) -> dict[str, Any]: ...

    def get_data(self, cache: bool = ...) -> bytes: ...


@dataclass
class PushResult:
    """What the route answers: status code, JSON body and extra headers."""

    status: int
    body: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


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


def load_tokens(cfg: PushConfig) -> tuple[bytes, ...]:
    """Bearer tokens from the configuration and the tokens file (one per line, # comments)."""
    tokens = [t.strip() for t in cfg.tokens]
    if any(not t for t in tokens):
        raise ConfigError("sources.push.tokens: empty token")
    if cfg.tokens_file:
        path = Path(cfg.tokens_file)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError(f"sources.push.tokens_file: cannot read {path}: {reason}") from None
        from_file = [line.strip() for line in text.splitlines()
                     if line.strip() and not line.lstrip().startswith("#")]
        if not from_file:
            raise ConfigError(f"sources.push.tokens_file: {path} holds no token")
        tokens.extend(from_file)
    return tuple(t.encode() for t in tokens)


class PushSource(Source):
    """The push endpoint's logic; the web route hands it the request."""

    name = "push"

    def __init__(self, ingestor: Ingestor, max_body_bytes: int,
                 tokens: tuple[bytes, ...] = ()) -> None:
        super().__init__(ingestor)
        self.max_body_bytes = max_body_bytes
        self.tokens = tokens
        self._digests = tuple(hashlib.sha256(t).digest() for t in tokens)

    def start(self) -> None:
        """Nothing to start: the web route drives this source."""

    def stop(self) -> None:
        """Nothing to stop."""

    def ready(self) -> tuple[bool, str]:
        return True, "accepting events" + (" (bearer token required)" if self.tokens else "")

    # --- request handling -------------------------------------------------------------
    def handle_request(self, request: PushRequest) -> PushResult:
        """Authorize, size-check, read and ingest one request."""
        if request.environ.get(IDENTITY_KEY) is None:
            refused = self.authorize(request.headers.get("Authorization", ""))
            if refused is not None:
                return refused
        length = request.content_length
        if length is not None and length > self.max_body_bytes:
            return self._too_large()
        try:
            body = (request.get_data(cache=False) if length is not None
                    else read_unsized(request.environ["wsgi.input"], self.max_body_bytes))
        except (BodyTooLargeError, RequestEntityTooLarge):  # a chunked body past the limit
            return self._too_large()
        return self.handle(body, request.headers.get("Content-Type", ""),
                           request.headers.get("Content-Encoding", ""))

    def authorize(self, header: str) -> PushResult | None:
        """None when the request may push; a 401 result otherwise (constant-time compare)."""
        if not self.tokens:
            return None
        scheme, _, credentials = header.partition(" ")
        given = credentials.strip().encode()
        # Digests have one length, so the comparison leaks neither a token's length nor
        # (every token being compared) which one matched.
        digest = hashlib.sha256(given).digest()
        ok = False
        for token in self._digests:
            ok |= hmac.compare_digest(digest, token)
        if scheme.lower() == "bearer" and given and ok:
            return None
        result = self._refuse(401, Rejection(
            "unauthorized", "a valid 'Authorization: Bearer <token>' header is required"))
        result.headers["WWW-Authenticate"] = REALM
        return result

    def handle(self, body: bytes, content_type: str, content_encoding: str) -> PushResult:
        """Ingest a body already read (and authorized)."""
        media_type = content_type.split(";", 1)[0].strip().lower()
        if media_type not in JSON_TYPES and media_type not in NDJSON_TYPES:
            return self._refuse(415, Rejection(
                "wrong_content_type",
                f"Content-Type must be application/json or application/x-ndjson, got "
                f"{media_type or 'none'!r}"))
        encoding = content_encoding.strip().lower()
        if encoding in GZIP_ENCODINGS:
            try:
                body = gunzip(body, self.max_body_bytes)
            except BodyTooLargeError:
                return self._too_large("decompressed body")
            except zlib.error:
                return self._refuse(400, Rejection("malformed_json", "body is not valid gzip"))
        elif encoding not in ("", "identity"):
            return self._refuse(415, Rejection("wrong_content_type",
                                               f"unsupported Content-Encoding {encoding!r}"))
        if len(body) > self.max_body_bytes:
            return self._too_large()
        lines: list[int] | None = None
        stripped = body.lstrip()
        if not stripped:
            return self._refuse(400, Rejection("empty", "body is empty"))
        if media_type in NDJSON_TYPES:
            raws, lines = split_ndjson(body)
            accepted, rejections = self.ingestor.ingest_raw(self.name, raws)
        elif stripped.startswith(b"["):
            events = self.ingestor.decoder.decode_array(body)
            if events is not None:
                self.ingestor.apply(self.name, events)
                accepted, rejections = len(events), []
            else:
                accepted, rejections = self.ingestor.ingest_raw(self.name, split_array(body))
        else:
            accepted, rejections = self.ingestor.ingest_raw(self.name, [body])
        return self._answer(accepted, rejections, lines)

    def _answer(self, accepted: int, rejections: list[tuple[int, Rejection]],
                lines: list[int] | None) -> PushResult:
        errors: list[dict[str, Any]] = []
        for index, rejection in rejections[:MAX_ERRORS_LISTED]:
            error: dict[str, Any] = {"index": index}
            if lines is not None:
                error["line"] = lines[index]
            error["reason"] = rejection.reason
            error["detail"] = rejection.detail[:300]
            errors.append(error)
        body: dict[str, Any] = {"accepted": accepted, "rejected": len(rejections)}
        if errors:
            body["errors"] = errors
            if len(rejections) > MAX_ERRORS_LISTED:
                body["errors_truncated"] = True
        if not rejections:
            return PushResult(200, body)
        return PushResult(207 if accepted else 400, body)

    def _too_large(self, what: str = "request body") -> PushResult:
        return self._refuse(413, Rejection("too_large", f"{what} is over "
                                                        f"{self.max_body_bytes} bytes"))

    def _refuse(self, status: int, rejection: Rejection) -> PushResult:
        """A refusal of the whole request: counted once, with the reason."""
        self.ingestor.reject(self.name, rejection, where="a request")
        return PushResult(status, {"accepted": 0, "rejected": 1,
                                   "errors": [{"index": None, "reason": rejection.reason,
                                               "detail": rejection.detail}]})


def from_config(config: Config, ingestor: Ingestor) -> list[Source]:
    push = config.sources.push
    if not push.enabled:
        return []
    return [PushSource(ingestor, config.web.max_request_bytes, load_tokens(push))]
