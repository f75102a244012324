"""HTTP push: ``POST /api/v1/events`` with a JSON array, one object, or NDJSON; gzip allowed.

Each event is decoded on its own, so the response can list the index and reason of every
rejected event while the valid ones in the same batch are counted exactly once.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import msgspec

from exporter.config import Config
from exporter.events import Rejection
from exporter.ingest import Ingestor
from exporter.sources.base import Source

JSON_TYPES = {"application/json", "text/json"}
NDJSON_TYPES = {"application/x-ndjson", "application/ndjson", "application/jsonl",
                "application/x-jsonlines", "application/jsonlines"}
_raw_list = msgspec.json.Decoder(list[msgspec.Raw])


class BodyTooLargeError(Exception):
    """The (decompressed) body is over the configured limit."""


@dataclass
class PushResult:
    """What the route answers: status code and JSON body."""

    status: int
    body: dict[str, Any] = field(default_factory=dict)


def gunzip(body: bytes, limit: int) -> bytes:
    """Decompress a gzip body, refusing to inflate past ``limit`` bytes (zip bombs)."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = inflater.decompress(body, limit + 1)
    if len(out) > limit or inflater.unconsumed_tail:
        raise BodyTooLargeError
    return out


def split_body(body: bytes, media_type: str) -> list[bytes | memoryview] | Rejection:
    """The raw JSON objects of a body, or why the body as a whole is unusable."""
    if media_type in NDJSON_TYPES:
        return [line for line in (raw.strip() for raw in body.split(b"\n")) if line]
    stripped = body.lstrip()
    if stripped.startswith(b"["):
        try:
            return [bytes(r) for r in _raw_list.decode(body)]
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return Rejection("malformed_json", str(exc))
        except UnicodeDecodeError:
            return Rejection("invalid_utf8", "body is not valid UTF-8")
    if stripped.startswith(b"{"):
        return [body]
    if not stripped:
        return Rejection("empty", "body is empty")
    return Rejection("malformed_json", "body must be a JSON array, a JSON object or NDJSON")


class PushSource(Source):
    name = "push"

    def __init__(self, ingestor: Ingestor, max_body_bytes: int) -> None:
        super().__init__(ingestor)
        self.max_body_bytes = max_body_bytes

    def start(self) -> None:
        """Nothing to start: the web route drives this source."""

    def stop(self) -> None:
        """Nothing to stop."""

    def handle(self, body: bytes, content_type: str, content_encoding: str) -> PushResult:
        media_type = content_type.split(";", 1)[0].strip().lower()
        if media_type not in JSON_TYPES | NDJSON_TYPES:
            return self._refuse(415, Rejection(
                "wrong_content_type",
                "Content-Type must be application/json or application/x-ndjson"))
        encoding = content_encoding.strip().lower()
        if encoding == "gzip":
            try:
                body = gunzip(body, self.max_body_bytes)
            except BodyTooLargeError:
                return self._refuse(413, Rejection("too_large", "decompressed body is over "
                                                   f"{self.max_body_bytes} bytes"))
            except zlib.error:
                return self._refuse(400, Rejection("malformed_json", "body is not valid gzip"))
        elif encoding not in ("", "identity"):
            return self._refuse(415, Rejection("wrong_content_type",
                                               f"unsupported Content-Encoding {encoding!r}"))
        raws = split_body(body, media_type)
        if isinstance(raws, Rejection):
            return self._refuse(400, raws)
        accepted, rejections = self.ingestor.ingest_raw(self.name, raws)
        errors = [{"index": i, "reason": r.reason, "detail": r.detail[:300]}
                  for i, r in rejections]
        body_out: dict[str, Any] = {"accepted": accepted, "rejected": len(errors)}
        if errors:
            body_out["errors"] = errors
        if not errors:
            return PushResult(200, body_out)
        return PushResult(207 if accepted else 400, body_out)

    def _refuse(self, status: int, rejection: Rejection) -> PushResult:
        self.ingestor.reject(self.name, rejection, where="a request")
        return PushResult(status, {"accepted": 0, "rejected": 1,
                                   "errors": [{"index": None, "reason": rejection.reason,
                                               "detail": rejection.detail}]})


def from_config(config: Config, ingestor: Ingestor) -> list[Source]:
    if not config.sources.push.enabled:
        return []
    return [PushSource(ingestor, config.web.max_request_bytes)]
