"""HTTP health probes of AI components: blackbox_exporter's http prober, per component.

Each configured component (agent, MCP server, model server, ...) is probed on every
scrape, all components concurrently. A probe is bounded twice: by its own
``timeout_seconds`` and by the scrape deadline the runner sets (from Prometheus's
``X-Prometheus-Scrape-Timeout-Seconds``), so a hanging target yields ``up 0`` with reason
``timeout`` instead of delaying the scrape. A probe still running when the next caller
arrives is joined, never started twice, so hung targets cannot pile up threads.

The HTTP client is the standard library's ``http.client`` driven step by step, because
that is what lets every socket operation be bounded by the time left, redirects be
followed by hand (with loop detection) and the peer certificate be read for its expiry.
Following redirects by hand also means owning what curl and requests do for us: a hop to
another origin carries no credentials and none of the probe's configured headers.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import re
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from prometheus_client.metrics_core import Metric

from exporter import catalog
from exporter.collectors.base import Collector, CollectorContext, time_left
from exporter.config import Config, ProbeConfig, ProbeTlsConfig
from exporter.version import build_info

log = logging.getLogger(__name__)

# Failure reasons: the bounded values of the ``reason`` label.
REASONS = ("timeout", "connection_refused", "connection_closed", "connection_error", "dns",
           "tls", "tls_verify", "tls_config", "invalid_response", "unexpected_status",
           "body_mismatch", "redirect_loop", "too_many_redirects", "credentials")
REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
MAX_BODY_BYTES = 1024 * 1024
# Headers that authenticate the exporter; never sent to an origin the config did not name.
CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
# Time kept back from the scrape deadline so the collector returns before the runner
# gives up on it (which would drop every probe series, not just the slow one).
DEADLINE_MARGIN = 0.25


@dataclass(frozen=True)
class ProbeResult:
    """Outcome of one probe; ``reason`` is empty when the component is up."""

    component: str
    kind: str
    up: bool
    duration: float
    status: int = 0
    reason: str = ""
    detail: str = ""
    tls_expiry: float | None = None
    checked_at: float = field(default_factory=time.time)

    def as_json(self, url: str) -> dict[str, Any]:
        return {"component": self.component, "kind": self.kind, "url": url, "up": self.up,
                "http_status": self.status, "duration_seconds": round(self.duration, 6),
                "reason": self.reason, "detail": self.detail,
                "tls_cert_expiry": self.tls_expiry, "checked_at": self.checked_at}


class ProbeError(Exception):
    """A probe failed for a reason in ``REASONS``."""

    def __init__(self, reason: str, detail: str, status: int = 0) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.status = status


def public_url(url: str) -> str:
    """The URL without credentials or query string, safe to show on a status page."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an absolute URL, default ports filled in.

    Credentials are scoped to this triple, as curl scopes them: a different port is a
    different server, and https -> http on the same host would put the token on the wire
    in clear, so both count as another origin (http -> https does too, for simplicity).
    """
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or (
        443 if scheme == "https" else 80)


def strip_credentials(headers: Mapping[str, str], configured: Iterable[str]) -> dict[str, str]:
    """``headers`` without credentials or the probe's ``configured`` header names.

    Configured headers go too, not just the well-known credential ones, because an API key
    in ``X-Api-Key`` is as secret as a bearer token and the exporter cannot tell which
    custom headers are. Names compare case-insensitively, as HTTP compares them.
    """
    drop = CREDENTIAL_HEADERS | {name.lower() for name in configured}
    return {name: value for name, value in headers.items() if name.lower() not in drop}


def build_ssl_context(tls: ProbeTlsConfig) -> ssl.SSLContext:
    """The client TLS context a probe's ``tls`` section describes."""
    ctx = ssl.create_default_context(cafile=tls.ca_file or None)
    if tls.insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if tls.cert_file:
        ctx.load_cert_chain(tls.cert_file, tls.key_file or None)
    return ctx


def cert_expiry(sock: ssl.SSLSocket) -> float | None:
    """Expiry (Unix seconds) of the peer certificate, when it can be read."""
    cert = sock.getpeercert()
    if cert and "notAfter" in cert:
        return float(ssl.cert_time_to_seconds(str(cert["notAfter"])))
    der = sock.getpeercert(binary_form=True)
    if not der:
        return None
    try:  # unverified peer (insecure_skip_verify): parse the DER, imported only here
        from cryptography import x509
    except ImportError:  # pragma: no cover - depends on the environment
        return None
    return float(x509.load_der_x509_certificate(der).not_valid_after_utc.timestamp())


class _Connection(http.client.HTTPSConnection):
    """HTTPS connection whose SNI / verified name can differ from the URL's host."""

    def __init__(self, host: str, port: int, timeout: float, context: ssl.SSLContext,
                 server_name: str) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._context = context
        self._server_name = server_name

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self._server_name)


class Attempt:
    """One probe in flight: its deadline and open connection, so it can be aborted."""

    def __init__(self, spec: ProbeConfig, deadline: float) -> None:
        self.spec = spec
        self.deadline = deadline
        self.started = time.monotonic()
        self.conn: http.client.HTTPConnection | None = None
        self.future: Future[ProbeResult] | None = None

    def remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise ProbeError("timeout", "probe deadline reached")
        return left

    def abort(self) -> None:
        """Shut the socket of a probe past its deadline so its thread returns now."""
        conn = self.conn
        sock = getattr(conn, "sock", None) if conn is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _classify(exc: BaseException) -> tuple[str, str]:
    """Map a client exception to (reason, detail)."""
    detail = f"{type(exc).__name__}: {exc}"[:300]
    if isinstance(exc, ConnectionRefusedError):
        return "connection_refused", detail
    if isinstance(exc, http.client.RemoteDisconnected | ConnectionResetError):
        return "connection_closed", detail
    if isinstance(exc, http.client.HTTPException):
        return "invalid_response", detail
    if isinstance(exc, socket.gaierror):
        return "dns", detail
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "tls_verify", detail
    if isinstance(exc, ssl.SSLError):
        return "tls", detail
    if isinstance(exc, TimeoutError):
        return "timeout", detail
    return "connection_error", detail


def _read_body(resp: http.client.HTTPResponse, attempt: Attempt, sock: Any) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < MAX_BODY_BYTES:
        if sock is not None:
            sock.settimeout(attempt.remaining())
        chunk = resp.read1(65536) if hasattr(resp, "read1") else resp.read(65536)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)[:MAX_BODY_BYTES]


class Prober:
    """Runs one probe: request, redirects, status and body checks."""

    def __init__(self) -> None:
        self._ssl: dict[tuple[Any, ...], ssl.SSLContext] = {}
        self._lock = threading.Lock()
        self._defaults = {"User-Agent": f"ai-metrics-exporter/{build_info().version}",
                          "Accept": "*/*", "Connection": "close"}

    def _context(self, tls: ProbeTlsConfig) -> ssl.SSLContext:
        key = msgspec.structs.astuple(tls)
        with self._lock:
            ctx = self._ssl.get(key)
        if ctx is None:
            try:
                ctx = build_ssl_context(tls)
            except (OSError, ssl.SSLError) as exc:
                raise ProbeError("tls_config", f"cannot load TLS files: {exc}") from None
            with self._lock:
                self._ssl[key] = ctx
        return ctx

    def _headers(self, spec: ProbeConfig) -> dict[str, str]:
        headers = {**self._defaults, **spec.headers}
        if spec.bearer_token_file:
            try:
                token = Path(spec.bearer_token_file).read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise ProbeError("credentials", "cannot read bearer_token_file: "
                                   f"{type(exc).__name__}") from None
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def _cross_origin_headers(self, headers: Mapping[str, str],
                              spec: ProbeConfig) -> dict[str, str]:
        """What a hop to another origin may carry: the exporter's own defaults, no secrets.

        Defaults a configured header replaced come back, so the foreign origin still sees
        a well-formed request from the exporter rather than one with no ``User-Agent``.
        """
        return {**self._defaults, **strip_credentials(headers, spec.headers)}

    def run(self, attempt: Attempt) -> ProbeResult:
        spec = attempt.spec
        status, expiry = 0, None
        try:
            status, expiry = self._follow(attempt)
            return ProbeResult(spec.name, spec.kind, True, time.monotonic() - attempt.started,
                               status, tls_expiry=expiry)
        except ProbeError as exc:
            reason, detail, status = exc.reason, exc.detail, exc.status
        except Exception as exc:  # any client error is a failed probe
            reason, detail = _classify(exc)
        finally:
            if attempt.conn is not None:
                attempt.conn.close()
        if time.monotonic() >= attempt.deadline and reason != "unexpected_status":
            reason, detail = "timeout", f"no answer within the deadline ({detail})"
        return ProbeResult(spec.name, spec.kind, False, time.monotonic() - attempt.started,
                           status, reason, detail, expiry)

    def _follow(self, attempt: Attempt) -> tuple[int, float | None]:
        spec = attempt.spec
        url, method = spec.url, spec.method
        body = spec.body.encode() if spec.body else None
        headers = self._headers(spec)
        home = origin(url)
        seen = {url}
        for _hop in range(spec.max_redirects + 1):
            status, location, payload, expiry = self._request(attempt, url, method, body,
                                                              headers)
            if spec.follow_redirects and status in REDIRECT_CODES and location:
                url = urllib.parse.urljoin(url, location)
                if not url.startswith(("http://", "https://")):
                    raise ProbeError("invalid_response", "redirect to a non-HTTP URL",
                                       status)
                if url in seen:
                    raise ProbeError("redirect_loop", f"redirect back to {public_url(url)}",
                                       status)
                seen.add(url)
                if origin(url) != home:
                    # Sticky, as in requests: a chain A -> B -> A does not get the secrets
                    # back, since B chose that request to A and can aim it anywhere on A.
                    headers = self._cross_origin_headers(headers, spec)
                if status == 303 or (status in (301, 302) and method == "POST"):
                    method, body = "GET", None
                continue
            valid = spec.valid_status_codes
            if (status not in valid) if valid else not 200 <= status < 300:
                raise ProbeError("unexpected_status", f"HTTP {status}", status)
            if spec.body_regex and not _body_matches(spec.body_regex, payload):
                raise ProbeError("body_mismatch", "body does not match body_regex", status)
            return status, expiry
        raise ProbeError("too_many_redirects", f"more than {spec.max_redirects} redirects")

    def _request(self, attempt: Attempt, url: str, method: str, body: bytes | None,
                 headers: dict[str, str]) -> tuple[int, str, bytes, float | None]:
        spec = attempt.spec
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        https = parts.scheme == "https"
        port = parts.port or (443 if https else 80)
        conn: http.client.HTTPConnection
        if https:
            conn = _Connection(host, port, attempt.remaining(), self._context(spec.tls),
                               spec.tls.server_name or host)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=attempt.remaining())
        if attempt.conn is not None:
            attempt.conn.close()
        attempt.conn = conn
        path = parts.path or "/"
        if parts.query:
            path = f"{path}?{parts.query}"
        conn.connect()
        expiry = cert_expiry(conn.sock) if isinstance(conn.sock, ssl.SSLSocket) else None
        conn.sock.settimeout(attempt.remaining())
        conn.request(method, path, body=body, headers=headers)
        conn.sock.settimeout(attempt.remaining())
        resp = conn.getresponse()
        payload = b""
        if spec.body_regex and method != "HEAD":
            payload = _read_body(resp, attempt, conn.sock)
        return resp.status, resp.getheader("Location") or "", payload, expiry


def _body_matches(pattern: str, payload: bytes) -> bool:
    return re.search(pattern, payload.decode("utf-8", errors="replace")) is not None


class ProbeService:
    """Probes the configured components on demand; shared by /metrics, /probe and status."""

    def __init__(self, specs: Sequence[ProbeConfig], concurrency: int,
                 previous: ProbeService | None = None) -> None:
        self.specs = {s.name: s for s in specs}
        self._pool = ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(specs))),
                                        thread_name_prefix="probe")
        self._lock = threading.Lock()
        self._inflight: dict[str, Attempt] = {}
        self._last: dict[str, ProbeResult] = {}
        self._failures: dict[tuple[str, str, str], float] = {}
        if previous is not None:  # a reload keeps the failure counters monotonic
            with previous._lock:
                self._failures = {k: v for k, v in previous._failures.items()
                                  if k[0] in self.specs}
                self._last = {k: v for k, v in previous._last.items() if k in self.specs}
        self._prober = Prober()

    def _probe(self, attempt: Attempt) -> ProbeResult:
        result = self._prober.run(attempt)
        with self._lock:
            self._last[result.component] = result
            if not result.up:
                key = (result.component, result.kind, result.reason)
                self._failures[key] = self._failures.get(key, 0.0) + 1
        return result

    def run(self, names: Iterable[str], deadline: float) -> list[ProbeResult]:
        """Probe the named components concurrently; answer by ``deadline`` (monotonic)."""
        now = time.monotonic()
        attempts: list[Attempt] = []
        with self._lock:
            for name in names:
                spec = self.specs[name]
                attempt = self._inflight.get(name)
                if attempt is None or attempt.future is None or attempt.future.done():
                    attempt = Attempt(spec, min(now + spec.timeout_seconds, deadline))
                    attempt.future = self._pool.submit(self._probe, attempt)
                    self._inflight[name] = attempt
                attempts.append(attempt)
        futures = [a.future for a in attempts if a.future is not None]
        wait(futures, timeout=max(deadline - time.monotonic(), 0.0))
        results: list[ProbeResult] = []
        now = time.monotonic()
        for attempt in attempts:
            future = attempt.future
            if future is not None and future.done():
                results.append(future.result())
                continue
            if now >= attempt.deadline:
                attempt.abort()
            spec = attempt.spec
            results.append(ProbeResult(spec.name, spec.kind, False, now - attempt.started,
                                       0, "timeout", "probe still running at the deadline"))
        return results

    def families(self, results: Sequence[ProbeResult],
                 only: str | None = None) -> list[Metric]:
        up = catalog.AI_COMPONENT_UP.family()
        duration = catalog.AI_COMPONENT_PROBE_DURATION.family()
        status = catalog.AI_COMPONENT_PROBE_HTTP_STATUS.family()
        expiry = catalog.AI_COMPONENT_PROBE_TLS_EXPIRY.family()
        failures = catalog.AI_COMPONENT_PROBE_FAILURES.family()
        for r in results:
            labels = [r.component, r.kind]
            up.add_metric(labels, 1.0 if r.up else 0.0)
            duration.add_metric(labels, r.duration)
            status.add_metric(labels, float(r.status))
            if r.tls_expiry is not None:
                expiry.add_metric(labels, r.tls_expiry)
        with self._lock:
            counts = sorted(self._failures.items())
        for (component, kind, reason), n in counts:
            if only is None or component == only:
                failures.add_metric([component, kind, reason], n)
        return [up, duration, status, expiry, failures]

    def status(self) -> list[dict[str, Any]]:
        """Each component's last probe result (probing the ones never probed or stale)."""
        with self._lock:
            stale = [name for name in self.specs
                     if name not in self._last or time.time() - self._last[name].checked_at > 60]
        if stale:
            timeout = max(self.specs[n].timeout_seconds for n in stale)
            self.run(stale, time.monotonic() + min(timeout, 5.0))
        with self._lock:
            last = dict(self._last)
        out: list[dict[str, Any]] = []
        for name, spec in self.specs.items():
            result = last.get(name)
            if result is None:
                out.append({"component": name, "kind": spec.kind, "url": public_url(spec.url),
                            "up": False, "reason": "not_probed_yet"})
            else:
                out.append(result.as_json(public_url(spec.url)))
        return out

    def close(self) -> None:
        with self._lock:
            attempts = list(self._inflight.values())
        for attempt in attempts:
            attempt.abort()
        self._pool.shutdown(wait=False, cancel_futures=True)


def build_probe_service(cfg: Config, previous: ProbeService | None = None) -> ProbeService:
    """The service for this configuration's components; ``previous`` (the one a reload
    replaces) hands over its failure counters and last results."""
    components = cfg.components
    return ProbeService(components.probes, components.probe_concurrency, previous)


class ProbesCollector(Collector):
    """Probes every component on each scrape through the runtime's ``ProbeService``
    (``deps.probes``), which /probe and /api/status/ai share; a collector built without
    one (a test) builds and owns its own."""

    name = "probes"
    description = "HTTP health probes of the AI components listed under components.probes."

    def __init__(self, ctx: CollectorContext) -> None:
        super().__init__(ctx)
        given = ctx.deps.probes
        self._owned = given is None
        self.service = given if given is not None else build_probe_service(ctx.config)

    def collect(self) -> Iterable[Metric]:
        if not self.service.specs:
            return
        longest = max(s.timeout_seconds for s in self.service.specs.values())
        left = time_left(default=longest + DEADLINE_MARGIN)
        deadline = time.monotonic() + max(left - min(DEADLINE_MARGIN, left * 0.1), 0.0)
        results = self.service.run(list(self.service.specs), deadline)
        yield from self.service.families(results)

    def close(self) -> None:
        if self._owned:  # the runtime closes its own service when it replaces it
            self.service.close()
