"""Test PKI: certificate authorities and leaf certificates generated with ``cryptography``.

Every test that needs TLS builds its own keys here (no checked-in key material): a CA,
server and client certificates signed by it, expired ones, and ones from another CA.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = dt.datetime.now(dt.UTC)


@dataclass
class Issued:
    cert: Path
    key: Path
    serial: int


@dataclass
class Authority:
    name: str
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    path: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def make_ca(directory: Path, name: str) -> Authority:
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=1))
            .not_valid_after(NOW + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    path = directory / f"{name}.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Authority(name, key, cert, path)


def issue(ca: Authority, directory: Path, name: str, *, client: bool = False,
          expired: bool = False, sans: tuple[str, ...] = ("127.0.0.1", "localhost")
          ) -> Issued:
    """A leaf certificate for a server (default) or a client, signed by ``ca``."""
    key = _key()
    if expired:
        start, end = NOW - dt.timedelta(days=10), NOW - dt.timedelta(days=1)
    else:
        start, end = NOW - dt.timedelta(hours=1), NOW + dt.timedelta(days=7)
    names: list[x509.GeneralName] = []
    for san in sans:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(san)))
        except ValueError:
            names.append(x509.DNSName(san))
    serial = x509.random_serial_number()
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca.cert.subject).public_key(key.public_key()).serial_number(serial)
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca.key.public_key()), critical=False)
            .sign(ca.key, hashes.SHA256()))
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, key_path)
    return Issued(cert_path, key_path, serial)


@dataclass
class Pki:
    """Everything the TLS tests use, in one directory."""

    ca: Authority
    other_ca: Authority
    server: Issued
    server_expired: Issued
    server_other_ca: Issued
    client: Issued
    client_expired: Issued
    client_other_ca: Issued


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca, other = make_ca(directory, "test-ca"), make_ca(directory, "other-ca")
    return Pki(
        ca=ca, other_ca=other,
        server=issue(ca, directory, "server"),
        server_expired=issue(ca, directory, "server-expired", expired=True),
        server_other_ca=issue(other, directory, "server-other"),
        client=issue(ca, directory, "prometheus", client=True, sans=("prometheus.test",)),
        client_expired=issue(ca, directory, "client-expired", client=True, expired=True,
                             sans=("expired.test",)),
        client_other_ca=issue(other, directory, "client-other", client=True,
                              sans=("other.test",)),
    )
