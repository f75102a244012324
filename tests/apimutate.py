"""Ten thousand requests a route: schemathesis's cases as seeds, mutated in plain Python.

Why beside ``tests/apifuzz.py``: schemathesis spends 0.1-0.2 s of Hypothesis generation
on each case here (a profile of ``POST /api/v1/events``: three quarters of a run's time
in ``openapi_cases`` drawing bodies), so a run of its own reached 221-1,104 requests a
route in the time it had. Here each route's seeds are drawn once from schemathesis's
positive and negative cases (``seed_requests``), then every request is a seed changed by
a seeded ``random.Random`` (``mutate``): JSON values replaced by edge values, keys
dropped or added, lists repeated; bytes truncated, flipped, inserted or repeated; bodies
gzipped (or only declared gzipped); random credentials, content types, encodings,
``Accept`` values, scrape timeouts and query parameters on top. A mutation costs tens of
microseconds, so the exporter's answers, not the generator, set the pace.

Every answer is checked against the description (``Checker``): no 5xx other than a
documented 503, a status the route documents, a documented content type, and a JSON
body that validates against the documented schema. Requests go over one kept-alive
``http.client`` connection per worker (a fresh one when the server closes it). Used by
``tests/test_openapi_fuzz.py`` (bounded) and ``benchmarks/fuzz_api.py mutate`` (the long
run).
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import hypothesis
import requests
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from schemathesis.generation import GenerationMode

from tests import apifuzz

Operation = apifuzz.Operation


@dataclass(frozen=True)
class RawRequest:
    """One request as sent: method, path with query, headers, body."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def digest(self) -> bytes:
        h = hashlib.blake2b(digest_size=12)
        h.update(self.method.encode())
        h.update(self.target.encode())
        for k, v in self.headers:
            h.update(f"\0{k}:{v}".encode())
        h.update(b"\0" + self.body)
        return h.digest()


@dataclass
class MutationResult:
    requests: int = 0
    distinct: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    seeds: int = 0


def seed_requests(operation: Operation, base_url: str, count: int,
                  headers: dict[str, str] | None = None, seed: int = 0) -> list[RawRequest]:
    """``count`` cases from schemathesis (positive and negative) for ``operation``, as the
    raw requests ``requests`` would send."""
    apifuzz.register_serializers()
    found: list[RawRequest] = []
    cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                      operation.as_strategy(GenerationMode.NEGATIVE))

    @settings(max_examples=count, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=cases)
    def draw(case: Any) -> None:
        kwargs = case.as_transport_kwargs(base_url=base_url, headers=dict(headers or {}))
        accepted = {k: kwargs[k] for k in ("method", "url", "headers", "params", "data",
                                           "json", "cookies") if k in kwargs}
        try:
            prepared = requests.Request(**accepted).prepare()
        except (requests.RequestException, ValueError, TypeError, UnicodeError):
            return  # a case the client cannot even form
        url = urlsplit(prepared.url or "")
        target = url.path + (f"?{url.query}" if url.query else "")
        body = prepared.body or b""
        if isinstance(body, str):
            body = body.encode("utf-8", "surrogatepass")
        sent = tuple((k, v) for k, v in prepared.headers.items()
                     if k.lower() not in ("content-length", "host", "connection",
                                          "transfer-encoding"))
        found.append(RawRequest(str(prepared.method), target, sent, bytes(body)))

    hypothesis.seed(seed)(draw)()
    return found


# --- mutation --------------------------------------------------------------------------------
_EDGE_VALUES: list[Any] = [
    None, True, False, 0, -1, 1.5, 2**63, -(2**64), 1e308, -1e308, "", "x" * 2048, " ",
    "\u0000", "ünïcödé ✓", "\u202e", "NaN", "-inf", "1e309", [], {}, [None] * 50,
    {"kind": "llm_call"}, "../../etc/passwd", "${jndi:x}", "%s%n", "0x7fffffff",
    "2026-12-02T00:00:00Z", -0.0, 10**30, [[[[[[[[[[]]]]]]]]]],
]
_KEYS = ["kind", "model", "provider", "input_tokens", "output_tokens", "cost_usd",
         "duration_seconds", "component", "status", "trace_id", "span_id", "ts",
         "resourceSpans", "resourceMetrics", "resourceLogs", "target", "__proto__", ""]
_CONTENT_TYPES = ["application/json", "application/x-ndjson", "application/x-protobuf",
                  "text/plain", "", "a/b", "application/json; charset=latin-1",
                  "multipart/form-data; boundary=x", "application/json;;", "*/*"]
_ACCEPTS = ["application/openmetrics-text", "*/*", "text/plain;q=0", "",
            "application/openmetrics-text;version=1.0.0;q=0.5", "application/json",
            "text/plain;version=0.0.4;q=0.5,*/*;q=0.1", "x" * 300]
_ENCODINGS = ["gzip", "identity", "br", "x-gzip", "", "gzip, gzip", "deflate"]
_TIMEOUTS = ["0", "-1", "nan", "inf", "1e309", "0.001", "3599", "10", "ten", "9" * 40]
_AUTH = ["Bearer ", "Basic !!", "Bearer " + "x" * 300, "Basic YWRtaW46", "Bearer a b",
         "Digest x", "bearer", "Basic " + "A" * 1000]
_QUERY_KEYS = ["target", "x", "format", "debug", "module", "", "a[]", "%00"]


def _random_text(rng: random.Random, size: int) -> str:
    return "".join(chr(rng.choice((rng.randrange(0x20, 0x7f), rng.randrange(0xa0, 0x3000))))
                   for _ in range(size))


def _mutate_json(value: Any, rng: random.Random, depth: int = 0) -> Any:
    """``value`` with one change somewhere inside it."""
    if isinstance(value, dict) and value and depth < 6 and rng.random() < 0.7:
        key = rng.choice(list(value))
        out = dict(value)
        choice = rng.random()
        if choice < 0.45:
            out[key] = _mutate_json(value[key], rng, depth + 1)
        elif choice < 0.6:
            del out[key]
        elif choice < 0.8:
            out[rng.choice(_KEYS) or _random_text(rng, 6)] = rng.choice(_EDGE_VALUES)
        else:
            out[key] = rng.choice(_EDGE_VALUES)
        return out
    if isinstance(value, list) and value and depth < 6 and rng.random() < 0.7:
        out_list = list(value)
        choice = rng.random()
        i = rng.randrange(len(out_list))
        if choice < 0.5:
            out_list[i] = _mutate_json(out_list[i], rng, depth + 1)
        elif choice < 0.7:
            del out_list[i]
        elif choice < 0.85:
            out_list.extend(out_list[: rng.randint(1, 40)] * rng.randint(1, 5))
        else:
            out_list.insert(i, rng.choice(_EDGE_VALUES))
        return out_list
    if isinstance(value, bool | type(None)):
        return rng.choice(_EDGE_VALUES)
    if isinstance(value, int | float):
        return rng.choice([-value, value * 10**rng.randint(1, 30), value + 1, 0, 2**53 + 1,
                           rng.choice(_EDGE_VALUES)])
    if isinstance(value, str):
        return rng.choice([value * rng.randint(2, 20), value[: len(value) // 2],
                           _random_text(rng, rng.randint(0, 40)), rng.choice(_EDGE_VALUES)])
    return rng.choice(_EDGE_VALUES)


def _mutate_bytes(body: bytes, rng: random.Random) -> bytes:
    data = bytearray(body or b"{}")
    for _ in range(rng.randint(1, 4)):
        choice = rng.random()
        i = rng.randrange(len(data) + 1)
        if choice < 0.25:
            del data[i:]
        elif choice < 0.5 and data:
            j = rng.randrange(len(data))
            data[j] = rng.randrange(256)
        elif choice < 0.75:
            data[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        else:
            data[i:i] = data[max(0, i - 64):i] * rng.randint(1, 8)
        if not data:
            data = bytearray(b"\0")
    return bytes(data)


def mutate(base: RawRequest, rng: random.Random, headers: dict[str, str] | None) -> RawRequest:
    """One request made from ``base``: its body, headers and query changed at random
    (each part with its own chance, so some requests keep the seed's valid body and
    exercise what a valid request reaches)."""
    sent = dict(base.headers)
    body = base.body
    roll = rng.random()
    if body and roll < 0.45:
        try:
            parsed = json.loads(body)
        except ValueError:
            body = _mutate_bytes(body, rng)
        else:
            changed = _mutate_json(parsed, rng)
            try:
                body = json.dumps(changed, allow_nan=rng.random() < 0.2,
                                  ensure_ascii=rng.random() < 0.5).encode()
            except ValueError:  # an infinity where NaN and Infinity are not allowed
                body = json.dumps(changed).encode()
    elif roll < 0.7:
        body = _mutate_bytes(body, rng)
    if rng.random() < 0.15:
        sent["Content-Encoding"] = "gzip"
        if rng.random() < 0.8:
            body = gzip.compress(body, compresslevel=1)
            if rng.random() < 0.2:
                body = body[: rng.randrange(len(body))]
    if rng.random() < 0.3:
        for _ in range(rng.randint(1, 3)):
            name = rng.choice(["Content-Type", "Accept", "Content-Encoding", "Authorization",
                               "X-Prometheus-Scrape-Timeout-Seconds", "Accept-Encoding",
                               "Expect", "X-Forwarded-For"])
            pool = {"Content-Type": _CONTENT_TYPES, "Accept": _ACCEPTS,
                    "Content-Encoding": _ENCODINGS, "Authorization": _AUTH,
                    "X-Prometheus-Scrape-Timeout-Seconds": _TIMEOUTS,
                    "Accept-Encoding": _ENCODINGS, "Expect": ["", "nothing"],
                    "X-Forwarded-For": ["1.2.3.4", "", "::1, x"]}[name]
            sent[name] = rng.choice(pool)
    elif headers:
        sent.update(headers)
    target = base.target
    if rng.random() < 0.25:
        params = [(rng.choice(_QUERY_KEYS), _random_text(rng, rng.randint(0, 30)))
                  for _ in range(rng.randint(1, 3))]
        sep = "&" if "?" in target else "?"
        target = f"{target}{sep}{urlencode(params)}"
    return RawRequest(base.method, target, tuple(sent.items()), body)


# --- checks ----------------------------------------------------------------------------------
class Checker:
    """The description's answer for a route: documented statuses, content types, JSON
    body schemas ($refs resolved against the whole description)."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self._doc = doc
        self._validators: dict[tuple[str, str, str, str], Draft202012Validator | None] = {}

    def response(self, method: str, path: str, status: int) -> dict[str, Any] | None:
        responses = self._doc["paths"][path][method.lower()]["responses"]
        found = (responses.get(str(status)) or responses.get(f"{status // 100}XX")
                 or responses.get("default"))
        return resolve_ref(self._doc, found) if found is not None else None

    def check(self, method: str, path: str, status: int, content_type: str,
              body: bytes) -> str | None:
        """None when the answer is one the description lists; else what is wrong."""
        documented = self.response(method, path, status)
        if status >= 500 and not (status == 503 and documented is not None):
            return f"server error {status}"
        if documented is None:
            return f"undocumented status {status}"
        content = documented.get("content") or {}
        if not content or not body:
            return None
        media = content_type.split(";", maxsplit=1)[0].strip().lower()
        types = {t.split(";")[0].strip().lower(): t for t in content}
        if media not in types:
            return f"{status}: undocumented content type {content_type!r}"
        if media != "application/json":
            return None
        validator = self._validator(method, path, str(status), types[media], content)
        if validator is None:
            return None
        try:
            value = json.loads(body)
        except ValueError:
            return f"{status}: a JSON content type with a body that is not JSON"
        error = next(iter(validator.iter_errors(value)), None)
        return None if error is None else f"{status}: body off its schema: {error.message[:200]}"

    def _validator(self, method: str, path: str, status: str, media: str,
                   content: dict[str, Any]) -> Draft202012Validator | None:
        key = (method, path, status, media)
        if key not in self._validators:
            schema = resolve_ref(self._doc, (content.get(media) or {}).get("schema"))
            self._validators[key] = (
                Draft202012Validator({**schema, "components": self._doc.get("components", {})})
                if isinstance(schema, dict) else None)
        return self._validators[key]


def resolve_ref(doc: dict[str, Any], node: Any) -> Any:
    """``node``, or what its ``$ref`` (``#/a/b``) points at, followed until no ``$ref``."""
    for _ in range(16):
        if not (isinstance(node, dict) and isinstance(node.get("$ref"), str)):
            return node
        target: Any = doc
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


# --- the run ---------------------------------------------------------------------------------
def _connect(base_url: str) -> http.client.HTTPConnection:
    url = urlsplit(base_url)
    return http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port or 80, timeout=30)


def run_route(operation: Operation, doc: dict[str, Any], base_url: str, count: int, *,
              headers: dict[str, str] | None = None, seeds: int = 40, seed: int = 0,
              time_limit: float = 600.0, minimum: int = 0) -> MutationResult:
    """``count`` requests to ``operation`` (fewer if ``time_limit`` passes first, but at
    least ``minimum``), each checked; every failure after the twentieth is counted only."""
    result = MutationResult()
    started = time.monotonic()
    bases = seed_requests(operation, base_url, seeds, headers, seed)
    result.seeds = len(bases)
    if not bases:
        result.failures.append("no seed request could be formed")
        return result
    rng = random.Random(seed)
    checker = Checker(doc)
    seen: set[bytes] = set()
    method, path = operation.method.upper(), operation.path
    conn = _connect(base_url)
    stop_at = started + time_limit
    try:
        while result.requests < count and (time.monotonic() < stop_at
                                           or result.requests < minimum):
            base = bases[result.requests % len(bases)]
            req = base if result.requests < len(bases) else mutate(base, rng, headers)
            seen.add(req.digest())
            answer = _send(conn, req, base_url)
            if answer is None:
                conn.close()
                conn = _connect(base_url)
                answer = _send(conn, req, base_url)  # a kept-alive connection the server closed
            result.requests += 1
            if answer is None:
                result.failures.append(f"no answer to {req.method} {req.target[:80]}")
                conn.close()
                conn = _connect(base_url)
                continue
            status, content_type, body, closing = answer
            result.statuses[status] += 1
            wrong = checker.check(method, path, status, content_type, body)
            if wrong is not None and len(result.failures) < 20:
                result.failures.append(
                    f"{method} {req.target[:80]} -> {wrong} [{content_type}] {body[:160]!r}")
            elif wrong is not None:
                result.failures.append("...")
            if closing:
                conn.close()
                conn = _connect(base_url)
    finally:
        conn.close()
    result.distinct = len(seen)
    result.seconds = time.monotonic() - started
    return result


def _send(conn: http.client.HTTPConnection, req: RawRequest, base_url: str
          ) -> tuple[int, str, bytes, bool] | None:
    try:
        conn.putrequest(req.method, req.target, skip_accept_encoding=True)
        for k, v in req.headers:
            conn.putheader(k, v)
        if req.body or req.method in ("POST", "PUT"):
            conn.putheader("Content-Length", str(len(req.body)))
        conn.endheaders(req.body or None)
        response = conn.getresponse()
        body = response.read()
        closing = (response.getheader("Connection", "") or "").lower() == "close"
        return response.status, response.getheader("Content-Type", "") or "", body, closing
    except (OSError, http.client.HTTPException, ValueError, UnicodeError):
        return None

