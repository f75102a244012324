"""Flask side of security: the concurrency cap, authentication, roles and the push rate limit
run in one ``before_request`` hook; configured response headers in an ``after_request``.

Refusals are small fixed JSON bodies (no echo of input, no secret, no path) with the
right challenge (``WWW-Authenticate``) or ``Retry-After`` header.
"""

from __future__ import annotations

from flask import Flask, Response, g, jsonify, request

from exporter.runtime import Runtime
from exporter.security import IDENTITY_KEY, INTAKE_PATHS, Security

_DETAILS = {
    401: "authentication required",
    403: "this credential's role may not call this route",
    429: "too many requests; retry later",
    503: "the server is busy; retry later",
}
_ERRORS = {401: "Unauthorized", 403: "Forbidden", 429: "Too Many Requests",
           503: "Service Unavailable"}


def refusal(status: int, *, challenge: str = "", retry_after: int = 0, detail: str = "",
            setting: str = "") -> Response:
    """``detail`` and ``setting``: a refusal of the secure defaults, which names the
    setting that opens the route (fixed text, never the request's input)."""
    body: dict[str, object] = {"error": _ERRORS[status], "status": status,
                               "detail": detail or _DETAILS[status]}
    if setting:
        body["setting"] = setting
    response = jsonify(body)
    response.status_code = status
    if challenge:
        response.headers["WWW-Authenticate"] = challenge
    if retry_after:
        response.headers["Retry-After"] = str(max(retry_after, 1))
    return response


def install(app: Flask, runtime: Runtime) -> None:
    """Register the hooks; call before the app's own ``after_request`` so that headers
    from the web config file are applied last (Flask runs those hooks in reverse)."""

    def security() -> Security:
        sec: Security = runtime.security
        return sec

    @app.before_request
    def guard() -> Response | None:
        sec = security()
        policy = sec.policy
        path = request.path
        peer = request.remote_addr or "unknown"
        if policy.max_concurrent and path not in policy.open_routes:
            if not sec.concurrency.try_acquire(policy.max_concurrent):
                return refusal(503, retry_after=1)
            g.security_slot = sec
        decision = sec.authorize(request.method, path,
                                 request.headers.get("Authorization", ""), request.environ,
                                 peer)
        if decision.status:
            return refusal(decision.status, challenge=decision.challenge,
                           retry_after=decision.retry_after, detail=decision.detail,
                           setting=decision.setting)
        g.identity = decision.identity
        if decision.identity is not None and decision.identity.method != "none":
            # Intake (``IntakeAuth``, the push source's token check) trusts this identity.
            request.environ[IDENTITY_KEY] = decision.identity
        if path in INTAKE_PATHS and request.method == "POST":
            wait = sec.push_allowed(decision.identity, peer)
            if wait:
                return refusal(429, retry_after=wait)
        return None

    @app.teardown_request
    def release(_exc: BaseException | None) -> None:
        slot: Security | None = g.pop("security_slot", None)
        if slot is not None:
            slot.concurrency.release()

    @app.after_request
    def configured_headers(response: Response) -> Response:
        watcher = security().policy.watcher
        if watcher is not None:
            response.headers.update(watcher.settings.headers)
        return response
