"""Schemathesis over the exporter's OpenAPI description, against a real exporter process.

Each operation of ``exporter.openapi`` gets requests generated from its description
(positive and negative cases: schemathesis's generator), each also given random headers
on top (credentials, content types and encodings, scrape timeouts, ``Accept``) and junk
query parameters, so that a route without parameters still gets distinct requests. Every
answer is counted by status per route and checked: never a 5xx other than a documented
503, and status code, content type and body as the description says.

Used by tests/test_openapi_fuzz.py (a bounded run) and benchmarks/fuzz_api.py (the long
one).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
CHUNK = 250  # examples per Hypothesis run
_REGISTERED = False


def register_serializers() -> None:
    """NDJSON (a list, one JSON value a line) and protobuf (the bytes as they are)."""
    global _REGISTERED  # noqa: PLW0603 - schemathesis's registry is global too
    if _REGISTERED:
        return

    @schemathesis.serializer("application/x-ndjson")
    def ndjson(_ctx: schemathesis.SerializationContext, value: Any) -> bytes:
        items = value if isinstance(value, list) else [value]
        return "\n".join(json.dumps(item) for item in items).encode()

    @schemathesis.serializer("application/x-protobuf")
    def protobuf(_ctx: schemathesis.SerializationContext, value: Any) -> bytes:
        if isinstance(value, bytes):
            return value
        data = getattr(value, "data", None)  # schemathesis's Binary
        if isinstance(data, bytes):
            return data
        return json.dumps(value, default=str).encode()

    _REGISTERED = True


_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e),
                max_size=40).map(str.strip)
EXTRA_HEADERS = st.fixed_dictionaries({}, optional={
    "Authorization": st.one_of(_TEXT, st.sampled_from(["Bearer ", "Basic !!", "Bearer x" * 20,
                                                       "Basic YWRtaW46"])),
    "Content-Type": st.sampled_from(["application/json", "application/x-ndjson",
                                     "application/x-protobuf", "text/plain", "", "a/b",
                                     "application/json; charset=latin-1"]),
    "Content-Encoding": st.sampled_from(["gzip", "identity", "br", "x-gzip", ""]),
    "Accept": st.sampled_from(["application/openmetrics-text", "*/*", "text/plain;q=0",
                               "application/openmetrics-text;version=1.0.0;q=0.5", ""]),
    "Accept-Encoding": st.sampled_from(["gzip", "*", "gzip;q=0", "br", ""]),
    "X-Prometheus-Scrape-Timeout-Seconds": st.one_of(
        _TEXT, st.sampled_from(["0", "-1", "nan", "inf", "1e309", "0.001", "3599", "10"])),
})
JUNK_QUERY = st.dictionaries(st.sampled_from(["target", "x", "format", "debug"]), _TEXT,
                             max_size=2)


class _Enough(BaseException):
    """Raised inside a run once it has sent enough: Hypothesis lets a BaseException
    through at once (no replay, no shrinking)."""


@dataclass
class RouteResult:
    requests: int = 0
    unsendable: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0


def load(base_url: str, headers: dict[str, str] | None = None) -> schemathesis.BaseSchema:
    """The description as the exporter serves it."""
    register_serializers()
    doc = requests.get(f"{base_url}/api/v1/openapi.json", headers=headers, timeout=10).json()
    return schemathesis.openapi.from_dict(doc)


Operation = schemathesis.APIOperation[Any, Any, Any, Any]


def operations(schema: schemathesis.BaseSchema) -> list[Operation]:
    """Every operation of the description; one it cannot load fails here."""
    found: list[Operation] = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise AssertionError(f"the description does not load: {result.err()}")
        found.append(result.ok())
    return found


def fuzz_operation(operation: Operation, base_url: str, examples: int,
                   headers: dict[str, str] | None = None, time_limit: float = 600.0,
                   seed: int | None = None, minimum: int = 0) -> RouteResult:
    """``examples`` generated requests to one operation (fewer if ``time_limit`` seconds
    pass first, but at least ``minimum``); ``headers``: sent with each (a credential),
    unless the case sets its own."""
    result = RouteResult()
    session = requests.Session()
    cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                      operation.as_strategy(GenerationMode.NEGATIVE))
    started = time.monotonic()
    stop_at = started + time_limit

    def done() -> bool:
        sent = result.requests + result.unsendable
        return sent >= examples or (time.monotonic() > stop_at and sent >= minimum)

    @settings(max_examples=CHUNK, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=cases, extra=EXTRA_HEADERS, query=JUNK_QUERY, plain=st.booleans())
    def run(case: schemathesis.Case[Any], extra: dict[str, str], query: dict[str, str],
            plain: bool) -> None:
        if done():
            raise _Enough  # ends the Hypothesis run now, not after its remaining examples
        sent = dict(headers or {})
        if not plain:  # half the cases as generated, half with random headers on top
            sent.update(extra)
            if query:
                case.query = {**query, **(case.query or {})}
        for key in list(case.headers or {}):
            sent.pop(key, None)
        try:
            response = case.call(base_url=base_url, session=session, headers=sent,
                                 timeout=30)
        except requests.exceptions.InvalidHeader:
            result.unsendable += 1  # the client refuses the generated header value
            return
        except requests.RequestException as exc:
            result.failures.append(f"no answer: {type(exc).__name__}: {exc}"[:300])
            return
        result.requests += 1
        result.statuses[response.status_code] += 1
        try:
            case.validate_response(response, checks=CHECKS)
        except (Exception, BaseExceptionGroup) as exc:  # check failures, recorded
            if len(result.failures) < 20:
                found = exc.exceptions if isinstance(exc, BaseExceptionGroup) else [exc]
                titles = "; ".join(getattr(f, "title", type(f).__name__) for f in found)
                result.failures.append(
                    f"{case.method} {case.path} -> {response.status_code}: {titles} "
                    f"[{response.headers.get('Content-Type')}] {response.text[:200]!r}")

    # Chunks with seeds of their own: a run stops at the time limit within one chunk.
    chunk = 0
    while not done():
        before = result.requests + result.unsendable
        try:
            hypothesis.seed((seed or 0) * 1_000_003 + chunk)(run)()
        except _Enough:
            break
        chunk += 1
        if result.requests + result.unsendable == before:
            break  # nothing more to send (every case unsendable, or the time is up)
    result.seconds = time.monotonic() - started
    return result


def label(operation: Operation) -> str:
    return f"{operation.method.upper()} {operation.path}"
