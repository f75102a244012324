"""OTLP intake: ``POST /v1/traces``, ``/v1/metrics``, ``/v1/logs`` (and OTLP/gRPC) from
OpenTelemetry-instrumented applications, mapped onto the event model
(``exporter.otlp_intake``; docs/otlp-intake.md).

A request is decoded (a body that is not one is 400, nothing kept), then logged in the
state store's write-ahead log and made durable, then mapped and counted, then answered:
as for push, a 2xx means kept. Items that cannot count (an event that does not validate,
a metric point on other bucket bounds, outside the credential's scope) are rejected with
a reason in ``partial_success``; items that are not GenAI, MCP or ``ai.*`` events are
ignored and counted.

Exactly once: an OTLP exporter retries a request whose answer it did not get, so the same
spans can come twice. The span identities (trace id and span id) of the last
``dedup_window`` mapped spans, ``ai.*`` log records by content, and the last point of every
cumulative metric stream are part of this source's cursor in the state store, committed
with the counts they produced; a repeat is counted as ``duplicate`` and not again.
"""

from __future__ import annotations

import base64
import contextlib
import struct
import threading
from collections import OrderedDict
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from exporter import catalog
from exporter.events import EVENT_TYPES, KIND_OF, AnyEvent, Rejection, classify
from exporter.ingest import Ingestor
from exporter.otlp_intake import decode as otlp_decode
from exporter.otlp_intake import spantree
from exporter.otlp_intake.mapping import attributes, map_log, map_mcp, map_span
from exporter.otlp_intake.metrics import MetricStreams, map_metrics
from exporter.otlp_intake.metrics import Outcome as _Tally
from exporter.scopes import Scope
from exporter.sources.base import Source
from exporter.storage import StateStore, StorageUnavailableError, WalRecord

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from exporter.config import OtlpIntakeConfig
    from exporter.otlp.gate import CollectGate
    from exporter.security import Security
    from exporter.sources import SourceDeps

SIGNALS = tuple(otlp_decode.SIGNALS)
OUTCOMES = ("mapped", "ignored", "duplicate", "rejected")
REQUEST_OUTCOMES = ("success", "partial", "rejected", "too_large", "unsupported",
                    "unavailable", "unauthorized")
RETRY_AFTER_SECONDS = 1
# Provider SDKs that trace their own calls (instrumentation scope → gen_ai.provider.name).
# anthropic 2.x does whenever a TracerProvider is set; an instrumentation of the same SDK
# (OpenLLMetry's) then traces every call a second time, in another trace: the SDK's span
# counts, the instrumentation's of that provider in that service instance is ignored.
NATIVE_SCOPES = {"com.anthropic.sdk.python": "anthropic"}
MAX_NATIVE = 10_000
# Scrapes first: every SLICE_SPANS spans (about 0.5 ms of work) the mapping waits while a
# /metrics request is being served, at most SCRAPE_WAIT per wait. Holding this source's
# lock meanwhile is safe: its self metrics are read without it.
SLICE_SPANS = 32
SCRAPE_WAIT = 0.5
EVENT_CLASSES: dict[str, Any] = {KIND_OF[cls]: cls for cls in EVENT_TYPES}
_PACK = struct.Struct("<Q")


@dataclass
class IntakeResult:
    """What a transport answers: an HTTP status, the response message (in the request's
    encoding), its content type, and headers."""

    status: int
    body: bytes
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)
    message: str = ""


class SeenIds:
    """The last ``size`` identities (64-bit keys), oldest dropped first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.keys: OrderedDict[int, None] = OrderedDict()

    def add(self, key: int) -> bool:
        """True when ``key`` is new (and now remembered)."""
        if key in self.keys:
            return False
        if self.size:
            self.keys[key] = None
            if len(self.keys) > self.size:
                self.keys.popitem(last=False)
        return True

    def encode(self) -> str:
        return base64.b64encode(b"".join(_PACK.pack(k) for k in self.keys)).decode()

    def restore(self, text: Any) -> None:
        if not isinstance(text, str):
            return
        try:
            raw = base64.b64decode(text)
        except ValueError:
            return
        for (key,) in _PACK.iter_unpack(raw[: len(raw) - len(raw) % 8]):
            self.add(key)


class OtlpSource(Source):
    """The receiver's logic; the HTTP routes and the gRPC servicer hand it bodies."""

    name = "otlp"

    def __init__(self, ingestor: Ingestor, cfg: OtlpIntakeConfig, store: StateStore | None,
                 max_body_bytes: int, *, security: Security | None = None,
                 gate: CollectGate | None = None) -> None:
        super().__init__(ingestor)
        self.security = security
        self.gate = gate
        self.cfg = cfg
        self.store = store
        self.max_body_bytes = max_body_bytes
        self._lock = threading.Lock()  # the mapping state; held by commits
        self.spans = SeenIds(cfg.dedup_window)
        self.logs = SeenIds(cfg.dedup_window)
        self.streams = MetricStreams(cfg.max_streams)
        self.native: OrderedDict[tuple[str, str], None] = OrderedDict()
        self.items = {(s, o): 0.0 for s in SIGNALS for o in OUTCOMES}
        self.requests: dict[tuple[str, str, str], float] = {
            (s, t, o): 0.0 for s in SIGNALS for t in ("http", "grpc") for o in REQUEST_OUTCOMES}
        self._grpc: Any = None

    # --- Source protocol -------------------------------------------------------------
    def start(self) -> None:
        if self.store is not None:
            saved = self.store.cursor(self.name)
            if isinstance(saved, dict):
                self.spans.restore(saved.get("spans"))
                self.logs.restore(saved.get("logs"))
                self.streams.restore(saved.get("streams"))
                native = saved.get("native")
                if isinstance(native, list):
                    self.native = OrderedDict.fromkeys(
                        (str(i), str(p)) for i, p in native
                        if isinstance(i, str) and isinstance(p, str))
            self.store.attach(self.name, self)
        if self.cfg.grpc_listen_address:
            from exporter.otlp_intake.grpc_server import start_grpc

            self._grpc = start_grpc(self, self.cfg.grpc_listen_address, self.security)

    def stop(self) -> None:
        if self._grpc is not None:
            self._grpc.stop(grace=2).wait(5)
            self._grpc = None
        if self.store is not None:
            self.store.detach(self.name)

    def ready(self) -> tuple[bool, str]:
        where = "/v1/traces, /v1/metrics, /v1/logs"
        if self.cfg.grpc_listen_address:
            where += f" and gRPC on {self.cfg.grpc_listen_address}"
        return True, f"accepting OTLP on {where}"

    # --- state store participant -----------------------------------------------------
    def hold(self) -> AbstractContextManager[object]:
        """Nothing to hold: the cursor changes only inside the write-ahead log's apply
        step, which the store's commit holds already (the log is a participant too).
        Holding this source's own lock here would invert the order the apply step takes
        them in (the log's, then this one's) and could deadlock a commit."""
        return contextlib.nullcontext()

    def cursor(self) -> dict[str, Any]:
        return {"spans": self.spans.encode(), "logs": self.logs.encode(),
                "streams": self.streams.snapshot(), "native": [list(k) for k in self.native]}

    def committed(self) -> None:
        """Nothing waits on a commit: answers wait on the write-ahead log."""

    # --- requests ----------------------------------------------------------------------
    def count_request(self, signal: str, transport: str, outcome: str) -> None:
        with self._lock:
            key = (signal, transport, outcome)
            self.requests[key] = self.requests.get(key, 0.0) + 1

    def handle(self, signal_name: str, body: bytes, encoding: str, scope: Scope | None = None,
               transport: str = "http") -> IntakeResult:
        """Decode, log, map and count one request body (already decompressed and within
        the size limit)."""
        signal = otlp_decode.SIGNALS[signal_name]
        if self.gate is not None:
            self.gate.wait_while_serving(SCRAPE_WAIT)
        try:
            message = otlp_decode.decode(signal, body, encoding)
        except otlp_decode.BadRequestError as exc:
            self.count_request(signal_name, transport, "rejected")
            return self.error(400, encoding, str(exc))
        raw = body if encoding == otlp_decode.PROTOBUF else None
        if self.store is None:
            tally = self._apply(signal_name, message, raw, None, scope)
        else:
            kind = f"{signal_name}:{'json' if encoding == otlp_decode.JSON else 'proto'}"
            try:
                tally = self.store.wal.append(
                    self.name, kind, body,
                    lambda now: self._apply(signal_name, message, raw, now, scope),
                    scope.encode() if scope is not None else b"")
            except StorageUnavailableError as exc:
                self.count_request(signal_name, transport, "unavailable")
                result = self.error(503, encoding, f"the data cannot be made durable now "
                                                   f"({exc}); retry later")
                result.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
                return result
        self.count_request(signal_name, transport, "partial" if tally.rejected else "success")
        message_text = (f"{tally.rejected} rejected: {tally.reason}" if tally.rejected else "")
        return IntakeResult(200, otlp_decode.response(signal, encoding, tally.rejected,
                                                      message_text),
                            encoding, message=message_text)

    def error(self, status: int, encoding: str, message: str) -> IntakeResult:
        """A ``google.rpc.Status`` body, as OTLP/HTTP asks for failures."""
        from google.protobuf import json_format
        from google.rpc import status_pb2

        code = {400: 3, 401: 16, 413: 3, 415: 3, 429: 8, 503: 14}.get(status, 2)
        answer = status_pb2.Status(code=code, message=message[:1000])
        if encoding == otlp_decode.JSON:
            return IntakeResult(status, json_format.MessageToJson(answer, indent=None).encode(),
                                otlp_decode.JSON, message=message)
        return IntakeResult(status, answer.SerializeToString(), otlp_decode.PROTOBUF,
                            message=message)

    def replay(self, record: WalRecord, now: float) -> None:
        """Count a logged request again after a restart (the state on disk predates it)."""
        signal_name, _, enc = record.kind.partition(":")
        encoding = otlp_decode.JSON if enc == "json" else otlp_decode.PROTOBUF
        message = otlp_decode.decode(otlp_decode.SIGNALS[signal_name], record.body, encoding)
        scope = Scope.decode(record.scope) if record.scope else None
        raw = record.body if encoding == otlp_decode.PROTOBUF else None
        self._apply(signal_name, message, raw, now, scope)

    # --- mapping -----------------------------------------------------------------------
    def _signal_of(self, resource: dict[str, Any]) -> str:
        service = resource.get("service.name")
        if isinstance(service, str) and service in self.cfg.genai_signal_by_service:
            return self.cfg.genai_signal_by_service[service]
        return self.cfg.genai_signal

    def _apply(self, signal: str, message: Any, body: bytes | None, now: float | None,
               scope: Scope | None
               ) -> _Tally:
        with self._lock:
            raws: list[bytes] = []
            if signal == "traces":
                tally, events, raws = self._spans(message, body, scope)
            elif signal == "logs":
                tally, events = self._logs(message, scope)
            else:
                def signal_of(resource: dict[str, Any]) -> str:
                    # Metric points name no component: a scoped credential's are bound
                    # by its service names only.
                    service = resource.get("service.name")
                    if (scope is not None and scope.service_names
                            and service not in scope.service_names):
                        return "forbidden"
                    return self._signal_of(resource)

                deltas, out = map_metrics(message, self.streams, signal_of)
                tally = out
                events = []
                if deltas:
                    self.ingestor.aggregator.merge_histograms(deltas)
                if out.rows:  # mcp.* histogram points
                    self.ingestor.aggregator.merge_rows(out.rows)
            if events:
                self.ingestor.apply(self.name, events, now)
            if raws:  # fast llm_call events: validated and applied by the native path
                if self.gate is not None:
                    self.gate.wait_while_serving(SCRAPE_WAIT)
                accepted, bad = self.ingestor.apply_raw(self.name, raws, now)
                tally.mapped += accepted
                for _index, rejection in bad:
                    self._reject(tally, rejection)
            for outcome in OUTCOMES:
                self.items[(signal, outcome)] += getattr(tally, outcome)
        return tally

    def _event(self, fields: dict[str, Any], scope: Scope | None, tally: _Tally,
               events: list[AnyEvent], counted: bool = True) -> None:
        """Validate and admit one mapped event. ``counted``: False for a second event of an
        item already counted (a span's mcp_call besides its tool_call), which
        then changes no item count (a refusal is still counted as a rejected event)."""
        cls = EVENT_CLASSES.get(fields.get("kind"))  # type: ignore[arg-type]
        try:
            if cls is None:
                raise msgspec.ValidationError(f"Invalid value {fields.get('kind')!r} - at "
                                              "`$.kind`")
            # The concrete type: a convert into the tagged union costs 20x more.
            event: AnyEvent = msgspec.convert(fields, cls)
        except msgspec.ValidationError as exc:
            message = str(exc)
            rejection = Rejection(classify(message), message)
        else:
            admitted = scope.admit(event) if scope is not None else event
            if not isinstance(admitted, Rejection):
                events.append(admitted)
                if counted:
                    tally.mapped += 1
                return
            rejection = admitted
        if counted:
            self._reject(tally, rejection)
        else:
            self.ingestor.reject(self.name, rejection, where="an OTLP item")

    def _reject(self, tally: _Tally, rejection: Rejection, n: int = 1) -> None:
        """Count ``n`` items refused for one reason: in the ingest counters (and the
        rate-limited log), and in the request's tally for its ``partial_success``."""
        for _ in range(n):
            self.ingestor.reject(self.name, rejection, where="an OTLP item")
        tally.reject(f"{rejection.reason}: {rejection.detail[:200]}", n)

    def _service(self, resource: dict[str, Any], scope: Scope | None, tally: _Tally,
                 n: int) -> str | None:
        """The resource's service.name, or None when the scope forbids it (``n`` items
        rejected)."""
        service = resource.get("service.name")
        name = service if isinstance(service, str) else ""
        if scope is not None and scope.service_names and name not in scope.service_names:
            self._reject(tally, Rejection("forbidden_scope", f"{scope.credential} may not "
                                                             f"send for service.name {name!r}"), n)
            return None
        return name

    def _spans(self, request: Any, body: bytes | None, scope: Scope | None
               ) -> tuple[_Tally, list[AnyEvent], list[bytes]]:
        gate = self.gate
        tally = _Tally()
        events: list[AnyEvent] = []
        raws: list[bytes] = []  # fast llm_call events, for the native event path
        # A scoped credential's events are checked one by one: no fast tuples then.
        tree = spantree.tree(request, body, fast=scope is None)
        agents = spantree.enclosing_agents(tree)  # the agent behind each call
        for resource, scope_spans in tree:
            # A provider SDK's own spans first: they supersede an instrumentation's of the
            # same calls (see NATIVE_SCOPES).
            ordered = sorted(scope_spans, key=lambda ss: ss[0] not in NATIVE_SCOPES)
            spans = [(name, span) for name, group in ordered for span in group]
            service = self._service(resource, scope, tally, len(spans))
            if service is None:
                continue
            from_spans = self._signal_of(resource) == "traces"
            instance = f"{service}\0{resource.get('service.instance.id', '')}"
            seen = self.spans.add
            # Without a provider SDK's spans in this request or before it, nothing is
            # superseded: no look per span.
            natives = bool(self.native) or any(name in NATIVE_SCOPES for name, _ in ordered)
            for n, (scope_name, span) in enumerate(spans):
                if gate is not None and not n % SLICE_SPANS:
                    gate.wait_while_serving(SCRAPE_WAIT)
                if span[0] == spantree.FAST:
                    _, key, response, provider, raw = span
                    if not from_spans or (natives and self._superseded(instance, scope_name,
                                                                       provider)):
                        tally.ignored += 1
                    elif not seen(key) or (response and not seen(response)):
                        tally.duplicate += 1
                    else:
                        raws.append(raw)
                    continue
                key, name, kind, start, end, code, attrs, trace_id, span_id, _parent = span
                fields = map_span(attrs, name, kind, code, start_ns=start, end_ns=end,
                                  service=service, trace_id=trace_id, span_id=span_id,
                                  agent=agents.get((trace_id, span_id), "") if agents else "")
                # the span's mcp_call / mcp_session (where spans count), on its
                # own or besides map_span's event (a client's tools/call is a tool_call too)
                mcp = map_mcp(attrs, name, kind, code, start_ns=start, end_ns=end,
                              scope=scope_name, trace_id=trace_id, span_id=span_id
                              ) if from_spans else None
                if fields is None or fields["kind"] == "_mcp":
                    fields, mcp = mcp, None
                if fields is None:
                    tally.ignored += 1
                    continue
                is_llm = fields["kind"] == "llm_call"
                if is_llm and (not from_spans or self._superseded(
                        instance, scope_name, fields["provider"])):
                    tally.ignored += 1
                    continue
                if not seen(key):
                    tally.duplicate += 1
                    continue
                response_id = attrs.get("gen_ai.response.id") if is_llm else None
                if (isinstance(response_id, str) and response_id and not seen(
                        spantree.fnv64(f"{service}\0{response_id}".encode()))):
                    tally.duplicate += 1  # the same call, traced twice
                    continue
                if fields["kind"] == "_mcp":
                    tally.mapped += 1
                    continue
                self._event(fields, scope, tally, events)
                if mcp is not None:  # a second event of the same span
                    self._event(mcp, scope, tally, events, counted=False)
        return tally, events, raws

    def _logs(self, request: Any, scope: Scope | None) -> tuple[_Tally, list[AnyEvent]]:
        tally = _Tally()
        events: list[AnyEvent] = []
        for rl in request.resource_logs:
            resource = attributes(rl.resource.attributes)
            records = [r for sl in rl.scope_logs for r in sl.log_records]
            if self._service(resource, scope, tally, len(records)) is None:
                continue
            for record in records:
                fields = map_log(attributes(record.attributes), record.event_name)
                if fields is None:
                    tally.ignored += 1
                    continue
                if not self.logs.add(spantree.fnv64(record.SerializeToString(
                        deterministic=True))):
                    tally.duplicate += 1
                    continue
                self._event(fields, scope, tally, events)
        return tally, events

    def _superseded(self, instance: str, scope_name: str, provider: str) -> bool:
        """Whether an instrumentation's span of ``provider`` is a second trace of calls
        the provider's own SDK traces for this service instance (remembered once seen)."""
        native = NATIVE_SCOPES.get(scope_name)
        if native is not None:
            if native == provider and (instance, provider) not in self.native:
                self.native[(instance, provider)] = None
                while len(self.native) > MAX_NATIVE:
                    self.native.popitem(last=False)
            return False
        return (instance, provider) in self.native

    # --- self metrics ------------------------------------------------------------------
    def families(self) -> list[Metric]:
        requests = catalog.EXPORTER_OTLP_INTAKE_REQUESTS.family()
        items = catalog.EXPORTER_OTLP_INTAKE_ITEMS.family()
        ids = catalog.EXPORTER_OTLP_INTAKE_DEDUP_IDS.family()
        # Without the lock, which the mapping may hold while it waits for this scrape: every
        # key exists from the start, so the dicts never change size; a count read a moment
        # early is the next scrape's.
        for (signal, transport, outcome), n in sorted(self.requests.items()):
            requests.add_metric([signal, transport, outcome], n)
        for (signal, outcome), n in sorted(self.items.items()):
            items.add_metric([signal, outcome], n)
        ids.add_metric([], float(len(self.spans.keys) + len(self.logs.keys)))
        return [requests, items, ids]


def from_config(deps: SourceDeps) -> list[Source]:
    cfg = deps.config.sources.otlp
    if not cfg.enabled and not cfg.grpc_listen_address:
        return []
    return [OtlpSource(deps.ingestor, cfg, deps.store, deps.config.web.max_request_bytes,
                       security=deps.security, gate=deps.collect_gate)]
