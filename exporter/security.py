"""Who may call what: credentials (basic auth, static tokens, JWT, client certificates),
roles (viewer < operator < admin), request limits and the failed-auth counter.

Nothing here knows Flask: ``Security.authorize`` takes the request's method, path,
headers and peer, and returns a ``Decision``; ``exporter.web.auth`` turns that into
responses. A ``Policy`` is built from one configuration and swapped whole on reload
(``Security.prepare`` validates, ``Security.install`` swaps), so a request sees either the
old rules or the new ones, never a mix. Failure counters and the bcrypt cache outlive
reloads.

Secrets never reach a log line, a metric label or a response body: failures are counted
by a fixed ``reason`` and logged with the reason and the peer address only.

Event intake (HTTP push, and the OTLP intake) has one loader for its bearer tokens
(``load_push_tokens``) and one authorization point (``IntakeAuth.authorize``), which the
push source calls and an intake route reuses: the caller the web layer already verified
(``IDENTITY_KEY`` in the WSGI environ), else a push token, else, with no push token
configured, anyone.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import ipaddress
import logging
import math
import re
import threading
import time
import typing
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter import catalog
from exporter.config import (
    Config,
    ConfigError,
    Network,
    PushConfig,
    Role,
    parse_listen_address,
    parse_networks,
)
from exporter.scopes import Scope, build_scopes, scope_from_claim
from exporter.webconfig import WebConfigWatcher, WebSettings

log = logging.getLogger(__name__)

# Lowest to highest, as ``config.Role`` (the one definition) lists them.
ROLES: tuple[str, ...] = typing.get_args(Role)
RANK = {role: i + 1 for i, role in enumerate(ROLES)}
ADMIN = "admin"
OPERATOR = "operator"

# The route events are pushed to; every event-intake route (``INTAKE_PATHS``: the OTLP
# intake adds its own) needs the operator role to POST and shares the push rate limit.
PUSH_PATH = "/api/v1/events"
OTLP_PATHS = {"traces": "/v1/traces", "metrics": "/v1/metrics", "logs": "/v1/logs"}
INTAKE_PATHS = frozenset({PUSH_PATH, *OTLP_PATHS.values()})
# Lifecycle routes (Prometheus' name): served only with --web.enable-lifecycle.
RELOAD_PATH = "/-/reload"
LIFECYCLE_PATHS = frozenset({RELOAD_PATH})
LIFECYCLE_METHODS = frozenset({"POST", "PUT"})
# The WSGI environ key under which the web layer leaves the caller it verified (a real
# credential, not anonymous access), so that intake need not check a token again.
IDENTITY_KEY = "ai_exporter.identity"
BEARER_CHALLENGE = 'Bearer realm="ai-metrics-exporter"'
BASIC_CHALLENGE = 'Basic realm="ai-metrics-exporter", charset="UTF-8"'

# The fixed ``reason`` values of ai_exporter_http_auth_failures_total.
REASONS = ("missing", "malformed", "bad_password", "unknown_user", "bad_token", "expired",
           "not_yet_valid", "wrong_audience", "no_role", "forbidden", "config_invalid",
           "bad_scope", "network_not_allowed", "lifecycle_disabled")

# What a 403 of the secure defaults says, naming the settings that open the route.
NETWORK_DETAIL = ("writes without a credential are allowed only from "
                  "web.write_allowed_networks ({networks}); configure authentication "
                  "(web.security, docs/security.md) or add this client's network to "
                  "web.write_allowed_networks")
LIFECYCLE_DETAIL = ("the lifecycle API is off: start with --web.enable-lifecycle "
                    "(web.enable_lifecycle: true) to serve POST /-/reload; SIGHUP always "
                    "reloads")

# bcrypt keys on at most this many password bytes; bcrypt 5 raises on longer input.
BCRYPT_MAX_BYTES = 72
# The cost of the stand-in hash for unknown users: the users' own, within these bounds
# (a cost above 16 takes seconds per check; no real file uses one).
_DUMMY_COST_MIN, _DUMMY_COST_MAX = 4, 16


@functools.cache
def _dummy_hash(cost: int) -> bytes:
    """A real bcrypt hash of a random string at the users' cost: an unknown user pays the
    same bcrypt work as a known one, so response time does not reveal which names exist
    (as exporter-toolkit does)."""
    import bcrypt  # only where basic auth is configured

    return bcrypt.hashpw(b"\x00unknown-user", bcrypt.gensalt(rounds=cost))


def _dummy_cost(users: Mapping[str, bytes]) -> int:
    """The highest cost among the users' hashes (``$2b$<cost>$...``; usually all share one)."""
    costs = [int(hashed.split(b"$")[2]) for hashed in users.values()]
    return min(max([*costs, _DUMMY_COST_MIN]), _DUMMY_COST_MAX)


def bcrypt_matches(secret: bytes, hashed: bytes) -> bool:
    """Whether ``secret`` matches a bcrypt hash; never raises, for any input length.

    Over 72 bytes the secret is cut to its first 72, which is what every tool that makes
    these hashes keyed on (htpasswd, Go's x/crypto/bcrypt behind exporter-toolkit,
    bcrypt < 5), and what Go still compares: a long password that works with
    node_exporter works here. Rejecting instead would lock such users out, and raising
    (bcrypt 5) answered 500 for unknown users but 401 for known ones. The cut is the same
    for every caller, known user, unknown user or token, so cost and answer stay alike.
    """
    import bcrypt  # only where basic auth or bcrypt tokens are configured

    try:
        return bool(bcrypt.checkpw(secret[:BCRYPT_MAX_BYTES], hashed))
    except ValueError:  # a hash the regex let through but bcrypt cannot use
        return False


def check_web_settings(roles: Mapping[str, str], settings: WebSettings) -> None:
    """The main configuration's demands on the web config file, checked at start-up and
    again on every re-read of the file (the watcher calls it), so that a re-read can
    never install a file start-up would have refused."""
    for user in roles:
        if user not in settings.basic_auth_users:
            raise ConfigError(f"web.security.basic_auth_roles.{user}: no such user in "
                              "basic_auth_users of the web config file")


_BCRYPT_PREFIXES = (b"$2a$", b"$2b$", b"$2y$", b"$2x$", b"$2$")
_SHA256_HEX = re.compile(r"^(?:sha256:)?([0-9a-fA-F]{64})$")
_CACHE_SIZE = 1024
_MAX_HEADER = 8192


@dataclass(frozen=True)
class Identity:
    """An authenticated caller: a name safe to log (never a secret) and a role."""

    name: str
    role: str
    method: str
    scope: Scope | None = None  # what it may report for; None: anything


@dataclass(frozen=True)
class Decision:
    """The answer for one request: allowed with an identity, or refused with a status."""

    status: int  # 0: allowed
    identity: Identity | None = None
    reason: str = ""
    challenge: str = ""
    retry_after: int = 0
    detail: str = ""  # a 403 of the secure defaults: what was refused and why
    setting: str = ""  # ... and the setting that opens it


ALLOW_ANON = Decision(0)
# Who pushed with a ``sources.push`` token, and who calls when nothing is required.
PUSH_IDENTITY = Identity("token:push", OPERATOR, "push_token")
ANONYMOUS = Identity("anonymous", "", "none")


@dataclass(frozen=True)
class Refusal:
    """Why a request may not proceed: the HTTP status, a fixed ``reason`` and the header
    values the answer carries (``WWW-Authenticate``, ``Retry-After``)."""

    status: int
    reason: str
    challenge: str = ""
    retry_after: int = 0


@dataclass(frozen=True)
class PushTokens:
    """The ``sources.push`` bearer tokens, kept as SHA-256 digests only."""

    digests: tuple[bytes, ...] = ()

    @classmethod
    def of(cls, tokens: Iterable[bytes]) -> PushTokens:
        return cls(tuple(hashlib.sha256(t).digest() for t in tokens))

    def __bool__(self) -> bool:
        return bool(self.digests)

    def matches(self, token: bytes) -> bool:
        """Whether ``token`` is one of them. Digests have one length and every one is
        compared, so the time taken leaks neither a token's length nor which matched."""
        digest = hashlib.sha256(token).digest()
        ok = False
        for known in self.digests:
            ok |= hmac.compare_digest(known, digest)
        return ok


NO_PUSH_TOKENS = PushTokens()


def load_push_tokens(cfg: PushConfig) -> PushTokens:
    """``sources.push.tokens`` and ``sources.push.tokens_file`` (one token a line, ``#``
    comments): the one loader, used by the web policy and by the push source alike.

    An empty token, an unreadable or non-UTF-8 file and a file that holds no token are
    configuration errors naming the field (``ConfigError``: exit status 2)."""
    plain: list[str] = []
    for i, token in enumerate(cfg.tokens):
        if not token.strip():
            raise ConfigError(f"sources.push.tokens.{i}: empty token")
        plain.append(token.strip())
    if cfg.tokens_file:
        where = "sources.push.tokens_file"
        try:
            text = read_secret_file(cfg.tokens_file, where).decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"{where}: not UTF-8 text") from None
        from_file = [line.strip() for line in text.splitlines()
                     if line.strip() and not line.strip().startswith("#")]
        if not from_file:
            raise ConfigError(f"{where}: {cfg.tokens_file} holds no token")
        plain.extend(from_file)
    return PushTokens.of(t.encode() for t in plain)


@dataclass(frozen=True)
class IntakeAuth:
    """The one authorization point of event intake (``POST /api/v1/events``, and the OTLP
    intake to come): who may hand events in, given what the web layer already checked."""

    tokens: PushTokens = NO_PUSH_TOKENS
    push_scope: Scope | None = None  # web.security.scopes["token:push"]

    @property
    def token_required(self) -> bool:
        return bool(self.tokens)

    def authorize(self, verified: Identity | None, authorization: str) -> Identity | Refusal:
        """The caller, or why not.

        ``verified``: the identity the web layer authenticated (``IDENTITY_KEY``; its role
        was checked against the route there), or None without the web layer in front (an
        embedding application) or for anonymous access. Then a push token is required
        when any is configured (``Authorization: Bearer <token>``, compared in constant
        time); with none configured intake is open."""
        if verified is not None and verified.method != "none":
            return verified
        if not self.tokens:
            return verified if verified is not None else ANONYMOUS
        scheme, _, credentials = authorization.partition(" ")
        given = credentials.strip().encode()
        matched = self.tokens.matches(given)
        if scheme.lower() == "bearer" and given and matched:
            return push_identity(self.push_scope)
        return Refusal(401, "bad_token" if authorization else "missing",
                       challenge=BEARER_CHALLENGE)


@dataclass(frozen=True)
class StaticToken:
    """One line of the token file: the token's hash, its role and a display name."""

    role: str
    name: str
    sha256: bytes = b""
    bcrypt_hash: bytes = b""


def read_secret_file(path: str, field_name: str) -> bytes:
    """A secret or key file's bytes; errors name the field and the file, never the content."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{field_name}: cannot read {path}: "
                          f"{exc.strerror or 'error'}") from None
    data = data.strip()
    if not data:
        raise ConfigError(f"{field_name}: {path} is empty")
    return data


def parse_token_file(text: str, field_name: str = "web.security.tokens_file"
                     ) -> list[StaticToken]:
    """``<role> <hash> [name]`` per line; hash is ``sha256:<hex>``, bare hex, or bcrypt."""
    tokens: list[StaticToken] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        where = f"{field_name}: line {lineno}"
        if len(parts) not in (2, 3):
            raise ConfigError(f"{where}: expected '<role> <hash> [name]'")
        role, hashed = parts[0], parts[1]
        name = parts[2] if len(parts) == 3 else f"token-line-{lineno}"
        if role not in RANK:
            raise ConfigError(f"{where}: role must be one of {', '.join(ROLES)}")
        match = _SHA256_HEX.match(hashed)
        if match:
            tokens.append(StaticToken(role, name, sha256=bytes.fromhex(match.group(1))))
        elif hashed.encode().startswith(_BCRYPT_PREFIXES) and len(hashed) == 60:
            tokens.append(StaticToken(role, name, bcrypt_hash=hashed.encode()))
        else:
            raise ConfigError(f"{where}: hash must be sha256:<64 hex digits> or a bcrypt "
                              "hash ($2b$...)")
    return tokens


class TokenBucket:
    """A token bucket per key (client identity or address), bounded in the keys it keeps."""

    def __init__(self, rate: float, burst: int, max_keys: int = 10_000) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.max_keys = max_keys
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, now: float | None = None) -> float:
        """0 when allowed, else the seconds until one request would be allowed."""
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.pop(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                wait = 0.0
            else:
                self._buckets[key] = (tokens, now)
                wait = (1.0 - tokens) / self.rate
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
            return wait


def push_identity(scope: Scope | None) -> Identity:
    """Who pushed with a ``sources.push`` token, with the scope ``token:push`` has."""
    return PUSH_IDENTITY if scope is None else Identity(
        PUSH_IDENTITY.name, PUSH_IDENTITY.role, PUSH_IDENTITY.method, scope)


def in_networks(peer: str, networks: Sequence[Network]) -> bool:
    """Whether the peer address is in one of ``networks`` (IPv4-mapped IPv6 addresses
    count as their IPv4 address; anything unparseable, such as a Unix socket, is not)."""
    try:
        address = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


def route_role(method: str, path: str) -> str:
    """The least role that may call a route (``""``: no role needed for OPTIONS preflight)."""
    if method == "OPTIONS":
        return ""
    if path.startswith("/-/"):
        return ADMIN
    if path in INTAKE_PATHS:
        return OPERATOR if method not in ("GET", "HEAD") else "viewer"
    if method in ("GET", "HEAD"):
        return "viewer"
    return ADMIN


@dataclass
class Policy:
    """The rules of one configuration: credentials, roles, open routes, limits."""

    open_routes: frozenset[str] = frozenset()
    watcher: WebConfigWatcher | None = None
    static_tokens: list[StaticToken] = field(default_factory=list)
    push_tokens: PushTokens = NO_PUSH_TOKENS
    jwt_key: Any = None
    jwt_algorithm: str = ""
    jwt_audience: str = ""
    jwt_issuer: str = ""
    jwt_role_claim: str = "role"
    jwt_leeway: float = 0.0
    basic_roles: Mapping[str, str] = field(default_factory=dict)
    basic_default_role: str = "viewer"
    client_cert_role: str = ""
    anonymous_role: str = ""
    push_bucket: TokenBucket | None = None
    max_concurrent: int = 0
    global_bucket: TokenBucket | None = None
    write_networks: tuple[Network, ...] = ()
    write_networks_text: str = ""
    lifecycle: bool = False
    scopes: Mapping[str, Scope] = field(default_factory=dict)
    jwt_scope_claim: str = ""

    def enabled(self, settings: WebSettings | None) -> bool:
        """True when any credential is configured; otherwise every route is open.

        Takes the web settings the request is checked against, read once per request, so
        one request never mixes two reads of the file."""
        users = settings is not None and bool(settings.basic_auth_users)
        return bool(users or self.static_tokens or self.push_tokens or self.jwt_key
                    or self.client_cert_role)

    @property
    def tls(self) -> bool:
        return self.watcher is not None and self.watcher.context is not None

    @property
    def intake(self) -> IntakeAuth:
        """Event intake's authorization under this policy (an intake route's check, with
        the push tokens of the configuration in force)."""
        return IntakeAuth(self.push_tokens, self.scopes.get(PUSH_IDENTITY.name))


def build_policy(cfg: Config) -> Policy:
    """Validate the security settings into a Policy; ``ConfigError`` names the field."""
    sec = cfg.web.security
    policy = Policy(open_routes=frozenset(sec.open_routes),
                    basic_roles=dict(sec.basic_auth_roles),
                    basic_default_role=sec.basic_auth_default_role,
                    client_cert_role=sec.client_cert_role,
                    max_concurrent=sec.limits.max_concurrent_requests,
                    write_networks=parse_networks(cfg.web.write_allowed_networks),
                    write_networks_text=", ".join(cfg.web.write_allowed_networks) or "none",
                    lifecycle=cfg.web.enable_lifecycle,
                    scopes=build_scopes(sec.scopes),
                    jwt_scope_claim=sec.jwt.scope_claim)
    for i, route in enumerate(sec.open_routes):
        if not route.startswith("/"):
            raise ConfigError(f"web.security.open_routes.{i}: must start with '/'")
    if sec.web_config_file:
        policy.watcher = WebConfigWatcher(
            sec.web_config_file, functools.partial(check_web_settings, policy.basic_roles))
        settings = policy.watcher.settings
        if settings.rate_interval_seconds > 0:
            policy.global_bucket = TokenBucket(1.0 / settings.rate_interval_seconds,
                                               settings.rate_burst)
    if sec.tokens_file:
        text = read_secret_file(sec.tokens_file, "web.security.tokens_file")
        try:
            policy.static_tokens = parse_token_file(text.decode("utf-8"))
        except UnicodeDecodeError:
            raise ConfigError("web.security.tokens_file: not UTF-8 text") from None
    # Push tokens keep working as operator tokens on every route (the older setting).
    policy.push_tokens = load_push_tokens(cfg.sources.push)
    _jwt_settings(cfg, policy)
    if sec.anonymous_role is None:
        # Only push tokens configured (the older setting): reads stay open as before.
        only_push = policy.push_tokens and not (
            policy.static_tokens or policy.jwt_key or policy.client_cert_role
            or (policy.watcher is not None and policy.watcher.settings.basic_auth_users))
        policy.anonymous_role = "viewer" if only_push else ""
    else:
        policy.anonymous_role = sec.anonymous_role
    if sec.limits.push_rate_per_second > 0:
        policy.push_bucket = TokenBucket(sec.limits.push_rate_per_second,
                                         sec.limits.push_burst)
    return policy


def _jwt_settings(cfg: Config, policy: Policy) -> None:
    conf = cfg.web.security.jwt
    where = "web.security.jwt"
    if conf.hs256_secret_file and conf.rs256_public_key_file:
        raise ConfigError(f"{where}.hs256_secret_file: set hs256_secret_file or "
                          "rs256_public_key_file, not both")
    if not (conf.hs256_secret_file or conf.rs256_public_key_file):
        return
    if not conf.audience:
        raise ConfigError(f"{where}.audience: required when JWTs are accepted (a token "
                          "minted for another service must not work here)")
    if not conf.role_claim:
        raise ConfigError(f"{where}.role_claim: must not be empty")
    if conf.hs256_secret_file:
        secret = read_secret_file(conf.hs256_secret_file, f"{where}.hs256_secret_file")
        if len(secret) < 32:
            raise ConfigError(f"{where}.hs256_secret_file: the secret must be at least 32 "
                              "bytes")
        policy.jwt_key, policy.jwt_algorithm = secret, "HS256"
    else:
        pem = read_secret_file(conf.rs256_public_key_file, f"{where}.rs256_public_key_file")
        # Imported only when RS256 is configured: cryptography costs ~6 MB of RSS.
        from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        try:
            key = load_pem_public_key(pem)
        except (ValueError, TypeError):
            raise ConfigError(f"{where}.rs256_public_key_file: not a PEM public "
                              "key") from None
        if not isinstance(key, RSAPublicKey):
            raise ConfigError(f"{where}.rs256_public_key_file: not an RSA public key")
        policy.jwt_key, policy.jwt_algorithm = key, "RS256"
    policy.jwt_audience, policy.jwt_issuer = conf.audience, conf.issuer
    policy.jwt_role_claim, policy.jwt_leeway = conf.role_claim, conf.leeway_seconds


class _Semaphore:
    """A non-blocking in-flight counter: over the cap, the request is refused at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.in_flight = 0

    def try_acquire(self, cap: int) -> bool:
        with self._lock:
            if cap and self.in_flight >= cap:
                return False
            self.in_flight += 1
            return True

    def release(self) -> None:
        with self._lock:
            self.in_flight = max(self.in_flight - 1, 0)


class Security:
    """Process-lifetime security state: the policy in force plus counters and caches."""

    def __init__(self, cfg: Config) -> None:
        self.policy = build_policy(cfg)
        self._lock = threading.Lock()
        self.failures: dict[str, float] = dict.fromkeys(REASONS, 0.0)
        self.concurrency = _Semaphore()
        self._verified: OrderedDict[bytes, tuple[str, str]] = OrderedDict()

    @staticmethod
    def prepare(cfg: Config) -> Policy:
        return build_policy(cfg)

    def install(self, policy: Policy) -> None:
        with self._lock:
            self.policy = policy
            self._verified.clear()

    # --- counters -----------------------------------------------------------------------
    def count_failure(self, reason: str, peer: str) -> None:
        with self._lock:
            self.failures[reason] = self.failures.get(reason, 0.0) + 1
        log.debug("refused request from %s: %s", peer, reason)

    def families(self) -> list[Any]:
        family = catalog.EXPORTER_HTTP_AUTH_FAILURES.family()
        with self._lock:
            for reason, value in self.failures.items():
                family.add_metric([reason], value)
        return [family]

    # --- credentials --------------------------------------------------------------------
    def _cached(self, key: bytes) -> tuple[str, str] | None:
        with self._lock:
            hit = self._verified.get(key)
            if hit is not None:
                self._verified.move_to_end(key)
            return hit

    def _remember(self, key: bytes, value: tuple[str, str]) -> None:
        with self._lock:
            self._verified[key] = value
            while len(self._verified) > _CACHE_SIZE:
                self._verified.popitem(last=False)

    def _basic(self, policy: Policy, settings: WebSettings | None, encoded: str
               ) -> Identity | str:
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            return "malformed"
        user, sep, password = decoded.partition(":")
        if not sep:
            return "malformed"
        users = settings.basic_auth_users if settings is not None else {}
        hashed = users.get(user)
        if hashed is None:
            bcrypt_matches(password.encode(), _dummy_hash(_dummy_cost(users)))
            return "unknown_user"
        # A successful bcrypt check is cached under a hash of user, stored hash and
        # password, so a Prometheus scraping every second pays bcrypt once, not each time.
        key = hashlib.sha256(b"basic\0" + user.encode() + b"\0" + hashed + b"\0"
                             + password.encode()).digest()
        if self._cached(key) is None:
            if not bcrypt_matches(password.encode(), hashed):
                return "bad_password"
            self._remember(key, (user, ""))
        role = policy.basic_roles.get(user, policy.basic_default_role)
        return Identity(f"user:{user}", role, "basic")

    def _bearer(self, policy: Policy, token: str) -> Identity | str:
        if not token or len(token) > _MAX_HEADER:
            return "malformed"
        raw = token.encode()
        digest = hashlib.sha256(raw).digest()
        if policy.jwt_key is not None and token.count(".") == 2:
            return self._jwt(policy, token)
        found: StaticToken | None = None
        for entry in policy.static_tokens:  # compare against every entry: constant time
            if entry.sha256 and hmac.compare_digest(entry.sha256, digest):
                found = entry
        if found is not None:
            return Identity(f"token:{found.name}", found.role, "token")
        if policy.push_tokens.matches(raw):
            return PUSH_IDENTITY
        key = hashlib.sha256(b"bearer\0" + raw).digest()
        cached = self._cached(key)
        if cached is not None:
            return Identity(f"token:{cached[0]}", cached[1], "token")
        for entry in policy.static_tokens:
            if entry.bcrypt_hash and bcrypt_matches(raw, entry.bcrypt_hash):
                self._remember(key, (entry.name, entry.role))
                return Identity(f"token:{entry.name}", entry.role, "token")
        return "bad_token"

    def _jwt(self, policy: Policy, token: str) -> Identity | str:
        import jwt  # only when JWTs are configured: PyJWT pulls in cryptography

        try:
            claims = jwt.decode(
                token, policy.jwt_key, algorithms=[policy.jwt_algorithm],
                audience=policy.jwt_audience, issuer=policy.jwt_issuer or None,
                leeway=policy.jwt_leeway,
                options={"require": ["exp", "aud"], "verify_signature": True})
        except jwt.ExpiredSignatureError:
            return "expired"
        except jwt.ImmatureSignatureError:
            return "not_yet_valid"
        except (jwt.InvalidAudienceError, jwt.MissingRequiredClaimError) as exc:
            if isinstance(exc, jwt.MissingRequiredClaimError) and exc.claim != "aud":
                return "bad_token"
            return "wrong_audience"
        except (jwt.PyJWTError, ValueError, TypeError):
            return "bad_token"
        role = _claim_role(claims, policy.jwt_role_claim)
        if not role:
            return "no_role"
        subject = claims.get("sub")
        name = f"jwt:{_printable(subject[:64] if isinstance(subject, str) and subject else 'jwt')}"
        if policy.jwt_scope_claim:
            claim = _claim(claims, policy.jwt_scope_claim)
            if claim is not None:
                scope = scope_from_claim(name, claim)
                if isinstance(scope, str):
                    return scope
                return Identity(name, role, "jwt", scope)
        return Identity(name, role, "jwt")

    def authenticate(self, policy: Policy, settings: WebSettings | None, header: str,
                     environ: Mapping[str, Any]) -> Identity | str | None:
        """The caller's identity (with its configured scope), a failure reason, or None
        when no credential was sent."""
        found = self._credential(policy, settings, header, environ)
        if isinstance(found, Identity) and found.scope is None:
            scope = policy.scopes.get(found.name)
            if scope is not None:
                return Identity(found.name, found.role, found.method, scope)
        return found

    def _credential(self, policy: Policy, settings: WebSettings | None, header: str,
                    environ: Mapping[str, Any]) -> Identity | str | None:
        if header:
            if len(header) > _MAX_HEADER:
                return "malformed"
            scheme, _, value = header.strip().partition(" ")
            scheme = scheme.lower()
            if scheme == "basic" and settings is not None and settings.basic_auth_users:
                return self._basic(policy, settings, value)
            if scheme == "bearer":
                return self._bearer(policy, value.strip())
            return "malformed"
        if policy.client_cert_role and environ.get("SSL_CLIENT_VERIFY") == "SUCCESS":
            subject = str(environ.get("SSL_CLIENT_S_DN_CN", "client-cert"))[:64]
            return Identity(f"cert:{_printable(subject)}", policy.client_cert_role, "cert")
        return None

    def authorize(self, method: str, path: str, authorization: str,
                  environ: Mapping[str, Any], peer: str) -> Decision:
        """Whether this request may proceed, and as whom."""
        policy = self.policy
        if path in policy.open_routes:
            return ALLOW_ANON
        if path in LIFECYCLE_PATHS and method in LIFECYCLE_METHODS and not policy.lifecycle:
            self.count_failure("lifecycle_disabled", peer)
            return Decision(403, reason="lifecycle_disabled", detail=LIFECYCLE_DETAIL,
                            setting="web.enable_lifecycle")
        if policy.global_bucket is not None:
            wait = policy.global_bucket.take("*")
            if wait:
                return Decision(429, reason="rate_limited", retry_after=math.ceil(wait))
        # One read of the web settings per request: a re-read that lands meanwhile applies
        # to the next request, never to half of this one. A failed re-read leaves the
        # last good settings in force (the watcher logs it).
        settings = policy.watcher.refresh() if policy.watcher is not None else None
        needed = route_role(method, path)
        if not policy.enabled(settings):
            return self._anonymous(policy, needed, peer, ADMIN)
        result = self.authenticate(policy, settings, authorization, environ)
        if isinstance(result, str):
            self.count_failure(result, peer)
            return Decision(401, reason=result, challenge=self._challenge(policy, settings))
        if result is None:
            if not needed:
                return ALLOW_ANON
            anonymous = policy.anonymous_role
            if anonymous and RANK[anonymous] >= RANK[needed]:
                return self._anonymous(policy, needed, peer, anonymous)
            self.count_failure("missing", peer)
            return Decision(401, reason="missing",
                            challenge=self._challenge(policy, settings))
        if needed and RANK.get(result.role, 0) < RANK[needed]:
            self.count_failure("forbidden", peer)
            return Decision(403, identity=result, reason="forbidden")
        return Decision(0, result)

    def _anonymous(self, policy: Policy, needed: str, peer: str, role: str) -> Decision:
        """Anonymous access with ``role``: reads from anywhere, writes (any route that
        needs more than a viewer) only from ``web.write_allowed_networks``."""
        if needed in (OPERATOR, ADMIN) and not in_networks(peer, policy.write_networks):
            self.count_failure("network_not_allowed", peer)
            return Decision(403, reason="network_not_allowed",
                            detail=NETWORK_DETAIL.format(networks=policy.write_networks_text),
                            setting="web.write_allowed_networks")
        return Decision(0, Identity("anonymous", role, "none"))

    def push_allowed(self, identity: Identity | None, peer: str) -> int:
        """0 when this client may push now, else seconds to wait (for ``Retry-After``)."""
        bucket = self.policy.push_bucket
        if bucket is None:
            return 0
        key = identity.name if identity is not None and identity.method != "none" else peer
        wait = bucket.take(key)
        return math.ceil(wait) if wait else 0

    @staticmethod
    def _challenge(policy: Policy, settings: WebSettings | None) -> str:
        parts = []
        if settings is not None and settings.basic_auth_users:
            parts.append(BASIC_CHALLENGE)
        if policy.static_tokens or policy.push_tokens or policy.jwt_key:
            parts.append(BEARER_CHALLENGE)
        return ", ".join(parts)


def _claim(claims: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted claim path, or None."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _claim_role(claims: Mapping[str, Any], claim: str) -> str:
    """The highest known role in a claim (dotted path; a string or a list of strings)."""
    value = _claim(claims, claim)
    candidates = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    roles = [c for c in candidates if isinstance(c, str) and c in RANK]
    return max(roles, key=RANK.__getitem__) if roles else ""


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)


def exposure(policy: Policy, listen_address: str) -> list[tuple[int, str]]:
    """What is open to whom under this policy, as (log level, line) for start-up: a
    warning where anyone who reaches the port may read or write without a credential."""
    host, port = parse_listen_address(listen_address)
    loopback_only = in_networks(host, (ipaddress.ip_network("127.0.0.0/8"),
                                       ipaddress.ip_network("::1/128")))
    who = f"clients on {host}:{port}" if loopback_only else f"every client that reaches port {port}"
    settings = policy.watcher.settings if policy.watcher is not None else None
    lines: list[tuple[int, str]] = []
    if not policy.enabled(settings):
        lines.append((logging.INFO if loopback_only else logging.WARNING,
                      f"web: no authentication configured: reads (/metrics, /api/status/*, "
                      f"health) are open to {who}; writes (POST {', '.join(sorted(INTAKE_PATHS))}"
                      f") only from web.write_allowed_networks "
                      f"({policy.write_networks_text}); see docs/security.md"))
    else:
        anonymous = policy.anonymous_role or "none"
        lines.append((logging.INFO, f"web: authentication on; anonymous role: {anonymous}; "
                                    f"open without a credential: "
                                    f"{', '.join(sorted(policy.open_routes)) or 'nothing'}"))
        if anonymous in (OPERATOR, ADMIN):
            lines.append((logging.WARNING,
                          f"web: anonymous callers may write (anonymous_role {anonymous}) "
                          f"from web.write_allowed_networks ({policy.write_networks_text})"))
    if policy.lifecycle:
        lines.append((logging.INFO if policy.enabled(settings) else logging.WARNING,
                      "web: lifecycle API on (--web.enable-lifecycle): POST /-/reload "
                      "re-reads the configuration"))
    return lines
