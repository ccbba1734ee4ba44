"""A secured Temporal for tests: certificates made with `cryptography`, and Debian's nginx in front of the dev server
terminating TLS (optionally requiring a client certificate, optionally checking an API key), forwarding gRPC."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"  # Debian's libnginx-mod-stream


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


class Authority:
    """A certificate authority in `directory`: `ca.pem`, and certificates it signs on demand."""

    def __init__(self, directory: Path, name: str = "test-ca") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory, self.name = directory, name
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.ca = directory / f"{name}.pem"
        self.ca.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        self,
        name: str,
        *,
        server: bool = False,
        hosts: tuple[str, ...] = ("localhost", "127.0.0.1"),
        valid_for: dt.timedelta = dt.timedelta(days=90),
        expired: bool = False,
    ) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        start, end = (now - dt.timedelta(days=30), now - dt.timedelta(days=1)) if expired else (now, now + valid_for)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start - dt.timedelta(minutes=5))
            .not_valid_after(end)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
        )
        if server:
            names: list[x509.GeneralName] = []
            for host in hosts:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(host)))
                except ValueError:
                    names.append(x509.DNSName(host))
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        issued = Issued(self.directory / f"{name}.crt", self.directory / f"{name}.key")
        issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        issued.key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        os.chmod(issued.key, 0o600)
        return issued


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class GrpcTlsProxy:
    """nginx (Debian's nginx-light) listening with TLS + HTTP/2 on a loopback port and forwarding gRPC to
    `upstream`. `client_ca`: a client certificate signed by it is required. `api_keys`: requests must carry
    `authorization: Bearer <one of them>` (else HTTP 401, which gRPC clients read as UNAUTHENTICATED); each
    accepted request is logged with the key's name. Stopped by pid."""

    def __init__(
        self,
        directory: Path,
        upstream: str,
        server: Issued,
        *,
        client_ca: Path | None = None,
        api_keys: dict[str, str] | None = None,
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory, self.upstream, self.server, self.client_ca = directory, upstream, server, client_ca
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.access_log = directory / "access.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.api_keys = api_keys
        self._write_keys(api_keys or {})
        self._write_conf()

    def _write_keys(self, keys: dict[str, str]) -> None:
        lines = "".join(f'    "Bearer {value}" {name};\n' for name, value in keys.items())
        (self.directory / "keys.conf").write_text(lines)

    def _write_conf(self) -> None:
        d = self.directory
        user = "user root;\n" if os.getuid() == 0 else ""
        head = f"""{user}worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 8192; }}
"""
        tls = f"ssl_certificate {self.server.cert};\n        ssl_certificate_key {self.server.key};\n"
        if self.client_ca:
            tls += f"        ssl_client_certificate {self.client_ca};\n        ssl_verify_client on;\n"
        if self.api_keys is None:
            # TLS ends here and the bytes go on as they are (the stream module): a client certificate is checked
            # during the handshake, as a Temporal server with requireClientAuth does
            (d / "nginx.conf").write_text(
                f"""load_module {STREAM_MODULE};
{head}stream {{
    server {{
        listen 127.0.0.1:{self.port} ssl;
        {tls}        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_alpn h2;
        proxy_pass {self.upstream};
        proxy_timeout 300s;
    }}
}}
"""
            )
            return
        # gRPC over HTTP/2, with the API key checked per request; a refusal is a gRPC UNAUTHENTICATED status, as
        # Temporal Cloud answers an unknown key
        (d / "nginx.conf").write_text(
            f"""{head}http {{
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    map $http_authorization $api_key_name {{
        default "";
        include {d}/keys.conf;
    }}
    http2_max_concurrent_streams 1024;
    log_format keys '$api_key_name $status $request_uri';
    access_log {self.access_log} keys;
    server {{
        listen 127.0.0.1:{self.port} ssl http2;
        {tls}
        location / {{
            error_page 418 = @unauthenticated;
            if ($api_key_name = "") {{ return 418; }}
            grpc_pass grpc://{self.upstream};
            grpc_read_timeout 300s;
            grpc_send_timeout 300s;
        }}
        location @unauthenticated {{
            default_type application/grpc;
            add_header grpc-status 16 always;
            add_header grpc-message "unknown API key" always;
            add_header content-length 0 always;
            return 204;
        }}
    }}
}}
"""
        )

    def start(self) -> GrpcTlsProxy:
        log = (self.directory / "nginx.out").open("wb")
        self.proc = subprocess.Popen(
            [
                NGINX,
                "-e",
                str(self.directory / "error.log"),
                "-p",
                str(self.directory),
                "-c",
                str(self.directory / "nginx.conf"),
                "-g",
                "daemon off;",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {(self.directory / 'error.log').read_text(errors='replace')}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("nginx did not listen within 30 s")

    def set_api_keys(self, keys: dict[str, str]) -> None:
        """Accept exactly `keys` from now on (nginx reloads its configuration on SIGHUP)."""
        assert self.proc is not None
        self._write_keys(keys)
        before = self._generation()
        os.kill(self.proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 30  # hang guard: the reload is logged when done
        while self._generation() == before and time.monotonic() < deadline:
            time.sleep(0.05)

    def _generation(self) -> int:
        text = (self.directory / "error.log").read_text(errors="replace")
        return text.count("reconfiguring")

    def requests(self) -> list[tuple[str, str]]:
        """(key name, method) of every finished request, in the order nginx logged them; "-" is a refused key."""
        if not self.access_log.exists():
            return []
        found = []
        for line in self.access_log.read_text().splitlines():
            name, _, uri = line.split(" ", 2)
            found.append((name, uri.rsplit("/", 1)[-1]))
        return found

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None
