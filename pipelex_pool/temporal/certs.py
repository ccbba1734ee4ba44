"""What can be known of a connection's TLS before and after connecting: each certificate's expiry, a key that does
not match its certificate, and, when a connection fails, which TLS problem it was, named with the file to fix."""

from __future__ import annotations

import datetime as dt
import re
import socket
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipelex_pool.temporal.connection import Connection, ConnectionConfigError, Material

if TYPE_CHECKING:  # (cryptography is loaded where a certificate is read: 4 MiB a pool without TLS never needs)
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

EXPIRY_WARNING = dt.timedelta(days=14)


@dataclass(frozen=True)
class CertInfo:
    role: str
    where: str  # the file, or the layer that gave inline PEM
    subject: str
    not_after: dt.datetime

    def days_left(self, now: dt.datetime | None = None) -> float:
        now = now or dt.datetime.now(dt.UTC)
        return (self.not_after - now).total_seconds() / 86400

    def as_dict(self) -> dict[str, object]:
        return {
            "role": self.role,
            "file": self.where,
            "subject": self.subject,
            "not_after": self.not_after.isoformat(),
            "expires_at": self.not_after.timestamp(),
            "days_left": round(self.days_left(), 1),
        }


@dataclass(frozen=True)
class CertReport:
    certificates: list[CertInfo]
    errors: list[tuple[str, str]]  # (where, what is wrong and how to fix it)
    warnings: list[tuple[str, str]]


def _name(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(no subject)"


def _certs(material: Material) -> list[x509.Certificate]:
    from cryptography import x509

    data = material.read()
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise ConnectionConfigError(
            f"{material.role} {material.describe()} (from {material.where}) is not a PEM certificate: {exc}; "
            "give the certificate file (-----BEGIN CERTIFICATE-----)"
        ) from exc
    return certs


def _key(material: Material) -> PrivateKeyTypes:
    from cryptography.hazmat.primitives import serialization

    try:
        return serialization.load_pem_private_key(material.read(), password=None)
    except (ValueError, TypeError) as exc:
        raise ConnectionConfigError(
            f"client_key {material.describe()} (from {material.where}) is not an unencrypted PEM private key: "
            f"{exc}; give the key file (-----BEGIN PRIVATE KEY-----)"
        ) from exc


def inspect(connection: Connection, now: dt.datetime | None = None) -> CertReport:
    """Read every certificate of the connection: expiry (an error once expired, a warning within 14 days),
    a client certificate without its key (or the reverse), a key that does not match."""
    now = now or dt.datetime.now(dt.UTC)
    infos: list[CertInfo] = []
    errors: list[tuple[str, str]] = []
    warnings: list[tuple[str, str]] = []
    tls = connection.tls
    if tls is None:
        return CertReport(infos, errors, warnings)
    from cryptography.hazmat.primitives import serialization  # (a connection with TLS only)

    if (tls.client_cert is None) != (tls.client_key is None):
        given, missing = ("client_cert", "client_key") if tls.client_cert else ("client_key", "client_cert")
        material = tls.client_cert or tls.client_key
        assert material is not None
        errors.append((material.where, f"{given} is given without {missing}; mutual TLS needs both: set {missing} too"))
    for material in (tls.server_ca_cert, tls.client_cert):
        if material is None:
            continue
        try:
            certs = _certs(material)
        except ConnectionConfigError as exc:
            errors.append((material.where, str(exc)))
            continue
        leaf = certs[0] if material.role == "client_cert" else min(certs, key=lambda c: c.not_valid_after_utc)
        info = CertInfo(material.role, material.describe(), _name(leaf), leaf.not_valid_after_utc)
        infos.append(info)
        if leaf.not_valid_after_utc <= now:
            errors.append(
                (
                    material.where,
                    f"{material.role} {info.where} ({info.subject}) expired on {info.not_after:%Y-%m-%d %H:%M} UTC; "
                    "install a renewed certificate",
                )
            )
        elif leaf.not_valid_after_utc - now <= EXPIRY_WARNING:
            warnings.append(
                (
                    material.where,
                    f"{material.role} {info.where} ({info.subject}) expires in {info.days_left(now):.1f} days "
                    f"({info.not_after:%Y-%m-%d %H:%M} UTC); renew it, then `pipelex-pool reload`",
                )
            )
        if material.role == "client_cert" and tls.client_key is not None:
            try:
                key = _key(tls.client_key)
            except ConnectionConfigError as exc:
                errors.append((tls.client_key.where, str(exc)))
                continue
            encoding, form = serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            public = key.public_key().public_bytes(encoding, form)
            theirs = leaf.public_key().public_bytes(encoding, form)
            if public != theirs:
                errors.append(
                    (
                        tls.client_key.where,
                        f"client_key {tls.client_key.describe()} is not the key of client_cert {info.where}; "
                        "give the key the certificate was issued for",
                    )
                )
    return CertReport(infos, errors, warnings)


# What the Rust TLS stack (rustls, in sdk-core) says, and what it means for the operator.
_RUSTLS = (
    (r"UnknownIssuer", "the server's certificate is not signed by a CA the pool trusts", "server_ca_cert"),
    (r"NotValidForName", "the server's certificate is not valid for the name the pool connects to", "server_name"),
    (r"InvalidCertificate\(Expired", "the server's certificate has expired", "server"),
    (r"InvalidCertificate\(NotValidYet", "the server's certificate is not valid yet (check the clock)", "server"),
)
# What OpenSSL says of the server's alert, when the pool's own handshake asks (see diagnose_handshake).
_ALERTS = (
    ("CERTIFICATE_REQUIRED", "the server requires a client certificate and the pool gave none", "client_cert"),
    ("UNKNOWN_CA", "the server does not trust the CA that signed the pool's client certificate", "client_cert"),
    ("BAD_CERTIFICATE", "the server rejected the pool's client certificate", "client_cert"),
    ("CERTIFICATE_EXPIRED", "the server says the pool's client certificate has expired", "client_cert"),
    ("CERTIFICATE_UNKNOWN", "the server rejected the pool's client certificate", "client_cert"),
    ("DECRYPT_ERROR", "the server could not verify the pool's client certificate", "client_key"),
)


def _fix(connection: Connection, key: str) -> str:
    tls = connection.tls
    origins = connection.origins
    if key == "server_ca_cert":
        current = tls.server_ca_cert.describe() if tls and tls.server_ca_cert else "the system's CA roots"
        return f"trusted now: {current}; set server_ca_cert ([pool.tls] or the profile) to the CA that signed it"
    if key == "server_name":
        name = tls.server_name if tls and tls.server_name else connection.address.rpartition(":")[0]
        return f"the pool checks the name {name!r}; set server_name ([pool.tls] or the profile) to a name it holds"
    if key == "client_cert":
        if tls is None or tls.client_cert is None:
            return "set client_cert and client_key ([pool.tls] or the profile) to the pool's certificate and key"
        return (
            f"check client_cert {tls.client_cert.describe()} (from {tls.client_cert.where}): it must be issued "
            "by a CA the server trusts, and valid"
        )
    if key == "client_key":
        where = tls.client_key.describe() if tls and tls.client_key else "client_key"
        return f"check client_key {where}: it must be the certificate's key"
    return f"the server ({connection.address}, from {origins.get('address', 'built-in')}) must renew its certificate"


def explain(connection: Connection, error: str) -> str | None:
    """A named TLS or credentials problem in a connection error's text, with what to fix; None if it is not
    one (the server is down, a timeout: something a retry can fix)."""
    for pattern, what, key in _RUSTLS:
        if re.search(pattern, error):
            return f"TLS: {what} ({connection.address}); {_fix(connection, key)}"
    upper = error.upper()
    for alert, what, key in _ALERTS:
        if alert in upper:
            return f"TLS: {what} ({connection.address}); {_fix(connection, key)}"
    if "code: Unauthenticated" in error or "UNAUTHENTICATED" in upper or "code: PermissionDenied" in error:
        source = connection.api_key.describe() if connection.api_key else "none given"
        detail = error.split("message: ")[1].split(",")[0].strip('"') if "message: " in error else error[:200]
        return (
            f"Temporal at {connection.address} refused the credentials ({detail}); API key from {source}: "
            "check the key and the namespace it is for"
        )
    return None


def diagnose_handshake(connection: Connection, timeout: float = 3.0) -> str | None:
    """Do a TLS handshake as the pool would (same CA, name and client certificate) with OpenSSL, which names the
    server's alert where the Rust stack only sees a broken pipe (a TLS 1.3 server refuses a client certificate
    after the handshake); also tells a TLS server reached without TLS. None: nothing TLS-related found."""
    host, _, port = connection.address.rpartition(":")
    tls = connection.tls
    try:
        raw = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
    except (OSError, ValueError):
        return None  # not answering at all: an outage, not a TLS problem
    with raw:
        if tls is None:
            context = ssl.create_default_context()
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            try:
                with context.wrap_socket(raw, server_hostname=host) as probe:
                    probe.getpeercert(binary_form=True)
            except (OSError, ssl.SSLError):
                return None
            return (
                f"TLS: {connection.address} speaks TLS but the pool connects without it; turn TLS on "
                "([pool.tls] enabled = true, a server_ca_cert, or the profile's tls)"
            )
        try:
            context = _context(connection)
        except ConnectionConfigError as exc:
            return str(exc)
        try:
            with context.wrap_socket(raw, server_hostname=tls.server_name or host.strip("[]")) as secured:
                secured.settimeout(1.0)
                try:
                    # TLS 1.3: a refused client certificate arrives as an alert on the first read
                    first = secured.recv(1)
                except TimeoutError:
                    return None
                except ssl.SSLError as exc:
                    return explain(connection, exc.reason or str(exc)) or f"TLS: {exc}"
                if not first:  # closed without a word (nginx, some proxies): the certificate check is the rest
                    return _closed_after_handshake(connection)
        except ssl.SSLCertVerificationError as exc:
            message = exc.verify_message or str(exc)
            if "hostname" in message.lower() or "ip address mismatch" in message.lower():
                return (
                    f"TLS: the server's certificate is not valid for the name the pool connects to "
                    f"({connection.address}): {message}; {_fix(connection, 'server_name')}"
                )
            if "expired" in message.lower():
                return f"TLS: the server's certificate has expired ({connection.address}); {_fix(connection, 'server')}"
            return f"TLS: {message} ({connection.address}); {_fix(connection, 'server_ca_cert')}"
        except ssl.SSLError as exc:
            return explain(connection, exc.reason or str(exc)) or f"TLS: {exc.reason or exc}"
        except OSError:
            return None
    return None


def _closed_after_handshake(connection: Connection) -> str:
    tls = connection.tls
    if tls is None or tls.client_cert is None:
        return (
            f"TLS: the server at {connection.address} closed the connection right after the TLS handshake: it "
            "requires a client certificate (mutual TLS), most likely, and the pool gave none; "
            f"{_fix(connection, 'client_cert')}"
        )
    return (
        f"TLS: the server at {connection.address} closed the connection right after the TLS handshake: it "
        f"rejected the pool's client certificate, most likely; {_fix(connection, 'client_cert')}"
    )


def _context(connection: Connection) -> ssl.SSLContext:
    tls = connection.tls
    assert tls is not None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.set_alpn_protocols(["h2"])
    if tls.server_ca_cert is not None:
        context.load_verify_locations(cadata=tls.server_ca_cert.read().decode())
    cert, key = tls.client_cert, tls.client_key
    if cert is not None and key is not None and cert.path is not None and key.path is not None:
        context.load_cert_chain(cert.path, key.path)
    elif cert is not None and key is not None:
        with tempfile.TemporaryDirectory() as directory:  # OpenSSL loads a chain from files only
            cert_file, key_file = Path(directory) / "cert.pem", Path(directory) / "key.pem"
            cert_file.write_bytes(cert.read())
            key_file.touch(mode=0o600)
            key_file.write_bytes(key.read())
            context.load_cert_chain(cert_file, key_file)
    return context


def connection_view(connection: Connection) -> dict[str, object]:
    """The connection as `validate`, `status` and /metrics show it: where, TLS, the key's source (never the key),
    each certificate's expiry, and what is wrong with them now."""
    report = inspect(connection)
    return {
        **connection.describe(),
        "certificates": [info.as_dict() for info in report.certificates],
        "problems": [problem for _, problem in report.errors + report.warnings],
    }
