"""HTTP push: ``POST /api/v1/events`` with a JSON array, one object, or NDJSON; gzip allowed.

Each event is decoded on its own, so the response can list the index and reason of every
rejected event while the valid ones in the same batch are counted exactly once. When
tokens are configured (``sources.push.tokens`` / ``tokens_file``) a request must carry
``Authorization: Bearer <token>``; anything else is refused with 401 before the body is
read.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from exporter.bodies import (
    BodyTooLargeError,
    gunzip,
    read_request_body,
    split_array,
    split_ndjson,
)
from exporter.events import Rejection
from exporter.ingest import Ingestor
from exporter.scopes import Scope, build_scopes
from exporter.security import (
    IDENTITY_KEY,
    NO_PUSH_TOKENS,
    PUSH_IDENTITY,
    Identity,
    IntakeAuth,
    PushTokens,
    Refusal,
    load_push_tokens,
)
from exporter.sources.base import Source
from exporter.storage import StorageUnavailableError, WalRecord
from exporter.storage.wal import WriteAheadLog

JSON_TYPES = frozenset({"application/json", "text/json"})
NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl",
                          "application/x-jsonlines", "application/jsonlines"})
GZIP_ENCODINGS = frozenset({"gzip", "x-gzip"})
MAX_ERRORS_LISTED = 1000
RETRY_AFTER_SECONDS = 1


if TYPE_CHECKING:
    from exporter.sources import SourceDeps


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


class PushSource(Source):
    """The push endpoint's logic; the web route hands it the request."""

    name = "push"

    def __init__(self, ingestor: Ingestor, max_body_bytes: int,
                 tokens: PushTokens = NO_PUSH_TOKENS, wal: WriteAheadLog | None = None,
                 push_scope: Scope | None = None) -> None:
        super().__init__(ingestor)
        self.max_body_bytes = max_body_bytes
        # The store's write-ahead log: a batch is durable before it is counted and
        # answered. None only where nothing is kept (a throwaway validation build).
        self.wal = wal
        self.tokens = tokens
        # The one authorization point of event intake (its own token check applies only
        # without the web layer in front).
        self._auth = IntakeAuth(tokens, push_scope)

    def start(self) -> None:
        """Nothing to start: the web route drives this source."""

    def stop(self) -> None:
        """Nothing to stop."""

    def ready(self) -> tuple[bool, str]:
        return True, "accepting events" + (" (bearer token required)" if self.tokens else "")

    # --- request handling -------------------------------------------------------------
    def handle_request(self, request: PushRequest) -> PushResult:
        """Authorize, size-check, read and ingest one request."""
        caller = self.caller(request.headers.get("Authorization", ""),
                             request.environ.get(IDENTITY_KEY))
        if isinstance(caller, PushResult):
            return caller
        try:
            body = read_request_body(request, self.max_body_bytes)
        except BodyTooLargeError:
            return self._too_large()
        return self.handle(body, request.headers.get("Content-Type", ""),
                           request.headers.get("Content-Encoding", ""), caller.scope)

    def authorize(self, header: str, verified: Identity | None = None) -> PushResult | None:
        """None when the request may push; a 401 result otherwise (``IntakeAuth``)."""
        caller = self.caller(header, verified)
        return caller if isinstance(caller, PushResult) else None

    def caller(self, header: str, verified: Identity | None = None) -> Identity | PushResult:
        """Who pushes (with the scope their events are held to), or the 401 result.

        ``verified``: the identity the web layer left under ``IDENTITY_KEY`` (None without
        the web layer in front, whose token check then happens here)."""
        decision = self._auth.authorize(verified, header)
        if not isinstance(decision, Refusal):
            return decision
        result = self._refuse(decision.status, Rejection(
            "unauthorized", "a valid 'Authorization: Bearer <token>' header is required"))
        result.headers["WWW-Authenticate"] = decision.challenge
        return result

    def handle(self, body: bytes, content_type: str, content_encoding: str,
               scope: Scope | None = None) -> PushResult:
        """Ingest a body already read (and authorized); ``scope``: the bounds of the
        credential that sent it (each event outside is rejected, ``forbidden_scope``)."""
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
        stripped = body.lstrip()
        if not stripped:
            return self._refuse(400, Rejection("empty", "body is empty"))
        kind = ("ndjson" if media_type in NDJSON_TYPES
                else "array" if stripped.startswith(b"[") else "object")
        if self.wal is None:
            return self._answer(*self._ingest(kind, body, None, scope))
        try:
            outcome = self.wal.append(self.name, kind, body,
                                      lambda now: self._ingest(kind, body, now, scope),
                                      scope.encode() if scope is not None else b"")
        except StorageUnavailableError as exc:
            result = PushResult(503, {"accepted": 0, "rejected": 0, "errors": [
                {"index": None, "reason": "storage_unavailable",
                 "detail": f"events cannot be made durable now ({exc}); nothing was "
                           "counted: send them again later"}]})
            result.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
            return result
        return self._answer(*outcome)

    def replay(self, record: WalRecord, now: float) -> None:
        """Count a logged batch again after a restart (the state on disk predates it)."""
        scope = Scope.decode(record.scope) if record.scope else None
        self._ingest(record.kind, record.body, now, scope)

    def _ingest(self, kind: str, body: bytes, now: float | None, scope: Scope | None = None
                ) -> tuple[int, list[tuple[int, Rejection]], list[int] | None]:
        """Decode, validate and count one body (already logged); ``now``: its batch time."""
        lines: list[int] | None = None
        if scope is not None:
            if kind == "ndjson":
                raws, lines = split_ndjson(body)
            else:
                raws = split_array(body) if kind == "array" else [body]
            accepted, rejections = self.ingestor.ingest_admitted(self.name, raws,
                                                                 scope.admit, now=now)
            return accepted, rejections, lines
        if kind == "ndjson":
            raws, lines = split_ndjson(body)
            accepted, rejections = self.ingestor.ingest_raw(self.name, raws, now=now)
        elif kind == "array":
            accepted, rejections = self.ingestor.ingest_array(self.name, body, now=now)
        else:
            accepted, rejections = self.ingestor.ingest_raw(self.name, [body], now=now)
        return accepted, rejections, lines

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


def from_config(deps: SourceDeps) -> list[Source]:
    config, ingestor = deps.config, deps.ingestor
    push = config.sources.push
    if not push.enabled:
        return []
    scopes = build_scopes(config.web.security.scopes)
    return [PushSource(ingestor, config.web.max_request_bytes, load_push_tokens(push),
                       wal=deps.store.wal, push_scope=scopes.get(PUSH_IDENTITY.name))]
