"""OTLP/gRPC on its own listener (``sources.otlp.grpc_listen_address``; the ``grpc`` extra
brings grpcio).

The three Export methods are registered as generic handlers that take the request as raw
bytes, so the body the write-ahead log keeps is exactly what arrived and is decoded once.
Authorization is the web layer's decision for the matching HTTP route (``Security``:
tokens, basic auth and JWTs from the ``authorization`` metadata, roles, the network rule
for callers without a credential); the listener itself is plaintext, so keep it on
loopback or behind a TLS-terminating proxy (docs/otlp-intake.md).
"""

from __future__ import annotations

from concurrent import futures
from typing import TYPE_CHECKING, Any

from exporter.otlp_intake.decode import PROTOBUF

if TYPE_CHECKING:
    from exporter.security import Security
    from exporter.sources.otlp import OtlpSource

_METHODS = {
    "traces": ("opentelemetry.proto.collector.trace.v1.TraceService", "Export"),
    "metrics": ("opentelemetry.proto.collector.metrics.v1.MetricsService", "Export"),
    "logs": ("opentelemetry.proto.collector.logs.v1.LogsService", "Export"),
}
# HTTP status → gRPC status, as the OTLP specification pairs them.
_GRPC_CODES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
               413: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 503: "UNAVAILABLE"}


def _peer(context: Any) -> str:
    """The client address of a gRPC peer string (``ipv4:127.0.0.1:5000``, ``ipv6:[::1]:5``)."""
    peer = str(context.peer())
    kind, _, rest = peer.partition(":")
    if kind == "ipv6":
        return rest.rpartition("]")[0].lstrip("[")
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    return peer


def start_grpc(source: OtlpSource, address: str, security: Security | None) -> Any:
    """Serve the three OTLP services on ``address``; returns the started server."""
    import grpc

    from exporter.config import parse_listen_address
    from exporter.security import OTLP_PATHS

    def handler(signal: str) -> Any:
        def export(body: bytes, context: Any) -> bytes:
            metadata = dict(context.invocation_metadata())
            scope = None
            if security is not None:
                decision = security.authorize("POST", OTLP_PATHS[signal],
                                              str(metadata.get("authorization", "")), {},
                                              _peer(context))
                if decision.status:
                    source.count_request(signal, "grpc", "unauthorized")
                    context.abort(getattr(grpc.StatusCode, _GRPC_CODES.get(
                        decision.status, "PERMISSION_DENIED")),
                        decision.detail or "a valid credential is required")
                identity = decision.identity
                scope = identity.scope if identity is not None else None
            if len(body) > source.max_body_bytes:
                source.count_request(signal, "grpc", "too_large")
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              f"request over {source.max_body_bytes} bytes")
            result = source.handle(signal, body, PROTOBUF, scope, transport="grpc")
            if result.status != 200:
                code = _GRPC_CODES.get(result.status, "INTERNAL")
                context.abort(getattr(grpc.StatusCode, code), result.message)
            return result.body

        return grpc.unary_unary_rpc_method_handler(export)

    generic = [grpc.method_handlers_generic_handler(service, {method: handler(signal)})
               for signal, (service, method) in _METHODS.items()]
    limit = source.max_body_bytes + 1024
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="otlp-grpc"),
                         handlers=generic,
                         options=[("grpc.max_receive_message_length", limit)])
    host, port = parse_listen_address(address, "sources.otlp.grpc_listen_address")
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if server.add_insecure_port(target) == 0:
        raise OSError(f"sources.otlp.grpc_listen_address: cannot listen on {address}")
    server.start()
    return server
