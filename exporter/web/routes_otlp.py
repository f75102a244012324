"""OTLP/HTTP on the exporter's own listener: ``POST /v1/traces``, ``/v1/metrics``,
``/v1/logs`` (docs/otlp-intake.md).

The answers follow the OTLP/HTTP specification: 200 with the Export*ServiceResponse (and
``partial_success`` when some items were rejected), 400 for a body that is not a request,
413 past ``web.max_request_bytes`` (also after gzip), 415 for another content type or
encoding, 503 with ``Retry-After`` while nothing can be made durable; failures carry a
``google.rpc.Status`` in the request's encoding. Authentication, roles, the network rule
and the push rate limit (429) are the web layer's, as for push: these are intake routes.
"""

from __future__ import annotations

import zlib

from flask import Blueprint, Response, request

from exporter.bodies import BodyTooLargeError, gunzip, read_request_body
from exporter.otlp_intake.decode import JSON, PROTOBUF
from exporter.runtime import Runtime
from exporter.security import IDENTITY_KEY, OTLP_PATHS, Refusal
from exporter.sources.otlp import IntakeResult, OtlpSource

_TYPES = {"application/x-protobuf": PROTOBUF, "application/protobuf": PROTOBUF,
          "application/json": JSON}


def _answer(result: IntakeResult) -> Response:
    response = Response(result.body, status=result.status, content_type=result.content_type)
    response.headers.update(result.headers)
    return response


def blueprint(runtime: Runtime) -> Blueprint:
    bp = Blueprint("otlp", __name__)

    def receive(signal: str) -> Response:
        source = runtime.source("otlp")
        if not isinstance(source, OtlpSource) or not source.cfg.enabled:
            return Response(b"OTLP intake is disabled (sources.otlp.enabled)\n", status=404,
                            content_type="text/plain")
        media = (request.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        encoding = _TYPES.get(media)
        if encoding is None:
            source.count_request(signal, "http", "unsupported")
            return _answer(source.error(415, PROTOBUF, f"Content-Type must be "
                                                       f"application/x-protobuf or "
                                                       f"application/json, got {media!r}"))
        verified = request.environ.get(IDENTITY_KEY)
        caller = runtime.security.policy.intake.authorize(
            verified, request.headers.get("Authorization", ""))
        if isinstance(caller, Refusal):
            source.count_request(signal, "http", "unauthorized")
            answer = _answer(source.error(401, encoding, "a valid credential is required"))
            answer.headers["WWW-Authenticate"] = caller.challenge
            return answer
        limit = source.max_body_bytes
        try:
            body = read_request_body(request, limit)
            content_encoding = (request.headers.get("Content-Encoding") or "").strip().lower()
            if content_encoding in ("gzip", "x-gzip"):
                body = gunzip(body, limit)
            elif content_encoding not in ("", "identity"):
                source.count_request(signal, "http", "unsupported")
                return _answer(source.error(415, encoding, f"unsupported Content-Encoding "
                                                           f"{content_encoding!r}"))
        except BodyTooLargeError:
            source.count_request(signal, "http", "too_large")
            return _answer(source.error(413, encoding, f"body over {limit} bytes"))
        except zlib.error:
            source.count_request(signal, "http", "rejected")
            return _answer(source.error(400, encoding, "body is not valid gzip"))
        return _answer(source.handle(signal, body, encoding, caller.scope))

    for signal, path in OTLP_PATHS.items():
        bp.add_url_rule(path, f"otlp_{signal}", lambda s=signal: receive(s), methods=["POST"])
    return bp
