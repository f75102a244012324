"""OTLP request bodies: protobuf (``application/x-protobuf``) or OTLP/JSON
(``application/json``), into the collector service request messages of
``opentelemetry-proto``, and the matching responses.

OTLP/JSON differs from protobuf's canonical JSON mapping in one way that matters here:
trace and span ids are hex strings, not base64 (OTLP specification, "JSON Protobuf
Encoding"), so they are rewritten before ``json_format`` reads the document. Unknown
fields are ignored, as the specification asks of receivers.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


@dataclass(frozen=True)
class Signal:
    """One OTLP signal: its path, request and response types, and the partial-success
    field that counts what was rejected."""

    name: str
    path: str
    request: type[Message]
    response: type[Message]
    rejected_field: str


SIGNALS = {s.name: s for s in (
    Signal("traces", "/v1/traces", trace_service_pb2.ExportTraceServiceRequest,
           trace_service_pb2.ExportTraceServiceResponse, "rejected_spans"),
    Signal("metrics", "/v1/metrics", metrics_service_pb2.ExportMetricsServiceRequest,
           metrics_service_pb2.ExportMetricsServiceResponse, "rejected_data_points"),
    Signal("logs", "/v1/logs", logs_service_pb2.ExportLogsServiceRequest,
           logs_service_pb2.ExportLogsServiceResponse, "rejected_log_records"),
)}


class BadRequestError(ValueError):
    """A body that is not an OTLP request of its signal (the answer is 400)."""


_ID_KEYS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")


def _hex_ids(node: Any, depth: int = 0) -> None:
    """Rewrite hex trace/span ids as base64 in place, wherever they sit (spans, links,
    log records, exemplars). Bounded: the document was parsed by ``json`` already."""
    if depth > 64:
        raise BadRequestError("JSON nested too deeply")
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_KEYS and isinstance(value, str):
                try:
                    node[key] = base64.b64encode(bytes.fromhex(value)).decode()
                except ValueError:
                    raise BadRequestError(f"{key} is not hex") from None
            elif isinstance(value, dict | list):
                _hex_ids(value, depth + 1)
    elif isinstance(node, list):
        for item in node:
            if isinstance(item, dict | list):
                _hex_ids(item, depth + 1)


def decode(signal: Signal, body: bytes, encoding: str) -> Message:
    """The request message in ``body`` (``encoding``: PROTOBUF or JSON)."""
    message = signal.request()
    if encoding == PROTOBUF:
        try:
            message.ParseFromString(body)
        except (DecodeError, RecursionError) as exc:
            raise BadRequestError(f"not a protobuf {signal.request.__name__}: {exc}") from None
        return message
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise BadRequestError(f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise BadRequestError("an OTLP/JSON request is an object")
    _hex_ids(document)
    try:
        json_format.ParseDict(document, message, ignore_unknown_fields=True)
    except (json_format.ParseError, RecursionError, ValueError, TypeError) as exc:
        raise BadRequestError(f"not an OTLP/JSON {signal.request.__name__}: "
                              f"{str(exc)[:200]}") from None
    except SystemError:
        # A JSON escape of a lone surrogate (``"\udf04"``) is valid JSON but no Unicode
        # text: protobuf's C parser fails on it as a field name with a SystemError.
        raise BadRequestError(f"not an OTLP/JSON {signal.request.__name__}: a string that "
                              "is not valid Unicode (a lone surrogate)") from None
    return message


def response(signal: Signal, encoding: str, rejected: int = 0, message: str = "") -> bytes:
    """The Export*ServiceResponse, with ``partial_success`` only when something was
    rejected (the specification: leave it unset on full success)."""
    answer = signal.response()
    if rejected or message:
        partial = answer.partial_success
        setattr(partial, signal.rejected_field, rejected)
        partial.error_message = message[:1000]
    if encoding == JSON:
        return bytes(json_format.MessageToJson(answer, indent=None).encode())
    return bytes(answer.SerializeToString())
