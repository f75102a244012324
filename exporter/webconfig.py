"""The ``--web.config.file``: the Prometheus exporter-toolkit format, parsed into typed structs.

The same file node_exporter, Prometheus and every exporter-toolkit exporter read
(``tls_server_config``, ``http_server_config``, ``basic_auth_users``, ``rate_limit``) so
operators reuse what they have. Errors name the field (``tls_server_config.min_version``)
and the file, and surface as ``ConfigError`` (exit status 2).

``WebConfigWatcher`` re-reads the file (and the certificate files it names) whenever their
modification time or size changes, the way exporter-toolkit re-reads it per request: a
rotated certificate or a new user is picked up without a restart. A re-read is validated
as start-up validates; one that fails keeps the last good settings in force, so a file
caught empty or half-written never loosens anything. TLS on or off is decided at start-up
only.
"""

from __future__ import annotations

import logging
import os
import re
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import yaml

from exporter.config import ConfigError, validation_problem

log = logging.getLogger(__name__)

FIELD = "web.security.web_config_file"

TlsVersionName = Literal["TLS10", "TLS11", "TLS12", "TLS13"]
ClientAuthType = Literal["NoClientCert", "RequestClientCert", "RequireAnyClientCert",
                         "VerifyClientCertIfGiven", "RequireAndVerifyClientCert"]

TLS_VERSIONS: dict[str, ssl.TLSVersion] = {
    "TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3,
}

# Go crypto/tls cipher suite names (what exporter-toolkit files hold) → OpenSSL names.
# TLS 1.3 suites are not configurable in Go either; they are accepted and always on.
GO_CIPHERS: dict[str, str] = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256": "AES128-SHA256",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256": "ECDHE-ECDSA-AES128-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256": "ECDHE-RSA-AES128-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305": "ECDHE-ECDSA-CHACHA20-POLY1305",
}
TLS13_CIPHERS = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
                 "TLS_CHACHA20_POLY1305_SHA256"}
GO_CURVES = {"CurveP256": "prime256v1", "CurveP384": "secp384r1", "CurveP521": "secp521r1",
             "X25519": "X25519"}

# Response headers the file may set, with the values exporter-toolkit accepts (None: any).
HEADER_VALUES: dict[str, tuple[str, ...] | None] = {
    "Content-Security-Policy": None,
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-Content-Type-Options": ("nosniff",),
    "X-XSS-Protection": None,
    "Strict-Transport-Security": None,
}
_BCRYPT = re.compile(r"^\$2[abxy]?\$\d{2}\$[./A-Za-z0-9]{53}$")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
                   "h": 3600.0}


class _Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class TlsServerConfig(_Strict):
    cert_file: str = ""
    key_file: str = ""
    cert: str = ""
    key: str = ""
    client_ca_file: str = ""
    client_ca: str = ""
    client_auth_type: ClientAuthType | None = None
    client_allowed_sans: list[str] = msgspec.field(default_factory=list)
    min_version: TlsVersionName = "TLS12"
    max_version: TlsVersionName = "TLS13"
    cipher_suites: list[str] = msgspec.field(default_factory=list)
    prefer_server_cipher_suites: bool = True
    curve_preferences: list[str] = msgspec.field(default_factory=list)


class HttpServerConfig(_Strict):
    http2: bool = True  # accepted for compatibility; cheroot speaks HTTP/1.1
    headers: dict[str, str] = msgspec.field(default_factory=dict)


class RateLimitConfig(_Strict):
    interval: str | float | int = 0
    burst: Annotated[int, msgspec.Meta(ge=0)] = 0


class WebConfigFile(_Strict):
    """The whole file; every section optional (an empty file changes nothing)."""

    tls_server_config: TlsServerConfig | None = None
    http_server_config: HttpServerConfig = msgspec.field(default_factory=HttpServerConfig)
    basic_auth_users: dict[str, str] = msgspec.field(default_factory=dict)
    rate_limit: RateLimitConfig = msgspec.field(default_factory=RateLimitConfig)


class WebSettings(msgspec.Struct, frozen=True, kw_only=True):
    """What the rest of the exporter uses from the file, validated."""

    tls: TlsServerConfig | None = None
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    basic_auth_users: dict[str, bytes] = msgspec.field(default_factory=dict)
    rate_interval_seconds: float = 0.0
    rate_burst: int = 0


def _err(path: str, where: str, message: str) -> ConfigError:
    return ConfigError(f"{FIELD}: {path}: {where}: {message}")


def parse_duration(text: str | float | int) -> float:
    """Go-style duration (``1s``, ``250ms``, ``1m30s``) or plain seconds → seconds."""
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError("negative duration")
        return float(text)
    text = text.strip()
    if text in ("", "0"):
        return 0.0
    pos, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            raise ValueError(f"not a duration: {text!r}")
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text):
        raise ValueError(f"not a duration: {text!r}")
    return total


def _check_file(path: str, where: str, value: str) -> None:
    if value and not os.access(value, os.R_OK):
        raise _err(path, where, f"cannot read {value}")


def _validate_tls(path: str, tls: TlsServerConfig) -> None:
    w = "tls_server_config"
    if bool(tls.cert_file) == bool(tls.cert):
        raise _err(path, f"{w}.cert_file", "exactly one of cert_file and cert is required")
    if bool(tls.key_file) == bool(tls.key):
        raise _err(path, f"{w}.key_file", "exactly one of key_file and key is required")
    if tls.client_ca_file and tls.client_ca:
        raise _err(path, f"{w}.client_ca_file", "set client_ca_file or client_ca, not both")
    _check_file(path, f"{w}.cert_file", tls.cert_file)
    _check_file(path, f"{w}.key_file", tls.key_file)
    _check_file(path, f"{w}.client_ca_file", tls.client_ca_file)
    has_ca = bool(tls.client_ca_file or tls.client_ca)
    auth = tls.client_auth_type or ("RequireAndVerifyClientCert" if has_ca else "NoClientCert")
    tls.client_auth_type = auth
    if auth in ("RequestClientCert", "RequireAnyClientCert"):
        raise _err(path, f"{w}.client_auth_type", f"{auth} accepts unverified certificates, "
                   "which this server does not support; use VerifyClientCertIfGiven or "
                   "RequireAndVerifyClientCert")
    if auth != "NoClientCert" and not has_ca:
        raise _err(path, f"{w}.client_ca_file", f"client_auth_type {auth} needs a client CA")
    if auth == "NoClientCert" and has_ca:
        raise _err(path, f"{w}.client_auth_type", "a client CA is set but client_auth_type "
                   "is NoClientCert")
    if tls.client_allowed_sans and auth != "RequireAndVerifyClientCert":
        raise _err(path, f"{w}.client_allowed_sans",
                   "needs client_auth_type RequireAndVerifyClientCert")
    if TLS_VERSIONS[tls.min_version] > TLS_VERSIONS[tls.max_version]:
        raise _err(path, f"{w}.min_version", f"{tls.min_version} is above max_version "
                   f"{tls.max_version}")
    for i, name in enumerate(tls.cipher_suites):
        if name not in GO_CIPHERS and name not in TLS13_CIPHERS:
            raise _err(path, f"{w}.cipher_suites.{i}", f"unknown cipher suite {name!r}")
    for i, name in enumerate(tls.curve_preferences):
        if name not in GO_CURVES:
            raise _err(path, f"{w}.curve_preferences.{i}", f"unknown curve {name!r} "
                       f"(known: {', '.join(GO_CURVES)})")


def parse(path: str, text: str) -> WebSettings:
    """Validate the file's text into settings; ``ConfigError`` names the failing field."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "file"
        raise _err(path, where, "not valid YAML") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise _err(path, "file", "must hold a mapping at the top level")
    try:
        parsed = msgspec.convert(data, WebConfigFile)
    except msgspec.ValidationError as exc:
        raise _err(path, *validation_problem(exc, whole="file")) from None
    if parsed.tls_server_config is not None:
        _validate_tls(path, parsed.tls_server_config)
    headers: dict[str, str] = {}
    canonical = {name.lower(): name for name in HEADER_VALUES}
    for name, value in parsed.http_server_config.headers.items():
        proper = canonical.get(name.lower())
        if proper is None:
            raise _err(path, f"http_server_config.headers.{name}", "header not allowed "
                       f"(allowed: {', '.join(HEADER_VALUES)})")
        allowed = HEADER_VALUES[proper]
        if allowed is not None and value and value.lower() not in allowed:
            raise _err(path, f"http_server_config.headers.{proper}",
                       f"expected one of {', '.join(allowed)}")
        if any(c in value for c in "\r\n\0"):
            raise _err(path, f"http_server_config.headers.{proper}", "control character")
        if value:
            headers[proper] = value
    users: dict[str, bytes] = {}
    for user, hashed in parsed.basic_auth_users.items():
        if not user or ":" in user:
            raise _err(path, f"basic_auth_users.{user}", "user names may not be empty or "
                       "contain ':'")
        if not _BCRYPT.match(hashed):
            raise _err(path, f"basic_auth_users.{user}", "not a bcrypt hash "
                       "(htpasswd -nBC 10 \"\" | tr -d ':\\n')")
        users[user] = hashed.encode()
    try:
        interval = parse_duration(parsed.rate_limit.interval)
    except ValueError:
        raise _err(path, "rate_limit.interval", "expected a duration such as 1s or "
                   "100ms") from None
    if interval > 0 and parsed.rate_limit.burst < 1:
        raise _err(path, "rate_limit.burst", "must be at least 1 when interval is set")
    return WebSettings(tls=parsed.tls_server_config, headers=headers, basic_auth_users=users,
                       rate_interval_seconds=interval, rate_burst=parsed.rate_limit.burst)


def load(path: str) -> WebSettings:
    """Read and parse the file; errors name the file and the field."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8"
        raise ConfigError(f"{FIELD}: cannot read {path}: {reason}") from None
    return parse(path, text)


@contextmanager
def _pem_file(pem: str) -> Iterator[str]:
    """Inline PEM text as a private temporary file (``load_cert_chain`` wants a path)."""
    fd, name = tempfile.mkstemp(prefix="ai-exporter-", suffix=".pem")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(pem)
        yield name
    finally:
        os.unlink(name)


def ssl_context(path: str, tls: TlsServerConfig) -> ssl.SSLContext:
    """A server-side context from the TLS section; errors name the field, not the key."""
    where = "tls_server_config"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = TLS_VERSIONS[tls.min_version]
    context.maximum_version = TLS_VERSIONS[tls.max_version]
    context.options |= ssl.OP_NO_COMPRESSION
    if tls.prefer_server_cipher_suites:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        if tls.cert_file:
            context.load_cert_chain(tls.cert_file, tls.key_file or None)
        if tls.cert:
            with _pem_file(tls.cert) as cert_path:
                if tls.key:
                    with _pem_file(tls.key) as key_path:
                        context.load_cert_chain(cert_path, key_path)
                else:
                    context.load_cert_chain(cert_path, tls.key_file)
        elif tls.key:
            with _pem_file(tls.key) as key_path:
                context.load_cert_chain(tls.cert_file, key_path)
    except (OSError, ssl.SSLError, ValueError):
        raise _err(path, f"{where}.cert_file", "cannot load the certificate and key "
                   "(not PEM, or the key does not match the certificate)") from None
    try:
        if tls.client_ca_file:
            context.load_verify_locations(cafile=tls.client_ca_file)
        elif tls.client_ca:
            context.load_verify_locations(cadata=tls.client_ca)
    except (OSError, ssl.SSLError, ValueError):
        raise _err(path, f"{where}.client_ca_file", "cannot load the client CA") from None
    context.verify_mode = {
        "NoClientCert": ssl.CERT_NONE,
        "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
        "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
    }[tls.client_auth_type or "NoClientCert"]
    suites = [GO_CIPHERS[name] for name in tls.cipher_suites if name in GO_CIPHERS]
    if suites:
        try:
            context.set_ciphers(":".join(suites))
        except ssl.SSLError:
            raise _err(path, f"{where}.cipher_suites", "none of the cipher suites is "
                       "available in this OpenSSL") from None
    if tls.curve_preferences:
        # Python's ssl sets one ECDH group; the first preference is used.
        context.set_ecdh_curve(GO_CURVES[tls.curve_preferences[0]])
    return context


def peer_sans(cert: dict[str, Any]) -> set[str]:
    """Subject alternative names of a verified peer certificate (DNS, IP, email, URI)."""
    return {str(value) for _kind, value in cert.get("subjectAltName", ())}


Stamp = tuple[int, int, int, int]
Validator = Callable[[WebSettings], None]
_MISSING: Stamp = (-1, -1, -1, -1)


def _stat(name: str) -> Stamp:
    """What tells a changed file from an unchanged one (ctime too: a chmod may fix it)."""
    try:
        st = os.stat(name)
    except OSError:
        return _MISSING
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)


def _cert_files(settings: WebSettings) -> list[str]:
    tls = settings.tls
    if tls is None:
        return []
    return [f for f in (tls.cert_file, tls.key_file, tls.client_ca_file) if f]


def _accept(_settings: WebSettings) -> None:
    """The validator of a watcher that nothing outside the file constrains."""


def _check_change(path: str, old: WebSettings, new: WebSettings) -> None:
    """Changes a re-read may not make, though start-up would accept the file.

    An empty or half-written file is valid YAML holding no users (or no TLS section):
    taken as is, a writer truncating the file would switch basic auth or the client
    certificate checks off until it finished. Switching either off (or TLS on) therefore
    needs a restart or ``/-/reload``, which an operator does on purpose.
    """
    if old.basic_auth_users and not new.basic_auth_users:
        raise _err(path, "basic_auth_users", "empty while users are in force (a truncated "
                   "or half-written file?); switching basic auth off needs a restart or "
                   "/-/reload")
    if (old.tls is None) != (new.tls is None):
        raise _err(path, "tls_server_config", "turning TLS on or off needs a restart")


@dataclass(frozen=True)
class _InForce:
    """Settings and the TLS context built from them: swapped as one reference, so no
    request ever sees the settings of one read with the context of another."""

    settings: WebSettings
    context: ssl.SSLContext | None


class WebConfigWatcher:
    """The current settings of one web config file, re-read when it or its certs change.

    Every read, at start-up and later, goes through ``load`` and the same ``validate``
    (the caller's cross-checks against the main configuration). A re-read that fails,
    for a file that is unreadable, invalid or caught mid-write, is logged and leaves the
    last good settings and TLS context in force; ``last_reload_ok`` says so until a later
    re-read succeeds.
    """

    def __init__(self, path: str, validate: Validator = _accept) -> None:
        self.path = path
        self._validate = validate
        self._lock = threading.Lock()
        self._state, self._stamp = self._load()  # ConfigError here: start-up fails
        self.last_reload_ok = True
        self.last_error: str | None = None

    @property
    def settings(self) -> WebSettings:
        return self._state.settings

    @property
    def context(self) -> ssl.SSLContext | None:
        return self._state.context

    def _stamps(self, settings: WebSettings) -> tuple[Stamp, ...]:
        return tuple(_stat(name) for name in [self.path, *_cert_files(settings)])

    def _load(self) -> tuple[_InForce, tuple[Stamp, ...]]:
        """Read, parse and validate once; each stamp is taken before its file is read, so a
        write landing during the read changes the stamp and is read at the next check."""
        main = _stat(self.path)
        settings = load(self.path)
        self._validate(settings)
        certs = tuple(_stat(name) for name in _cert_files(settings))
        context = ssl_context(self.path, settings.tls) if settings.tls else None
        return _InForce(settings, context), (main, *certs)

    def refresh(self) -> WebSettings:
        """Settings in force now; re-reads when a file changed (one ``stat`` per file)."""
        state = self._state
        if self._stamps(state.settings) == self._stamp:
            return state.settings
        with self._lock:
            state = self._state
            observed = self._stamps(state.settings)
            if observed == self._stamp:
                return state.settings
            try:
                new, stamp = self._load()
                _check_change(self.path, state.settings, new.settings)
            except ConfigError as exc:
                # Remember what was seen, so the same bad file is not re-read per request.
                self._stamp, self.last_reload_ok, self.last_error = observed, False, str(exc)
                log.error("web config re-read rejected, keeping the last good one: %s", exc)
                return state.settings
            self._state, self._stamp = new, stamp
            self.last_reload_ok, self.last_error = True, None
            log.info("web config reloaded")
            return new.settings
