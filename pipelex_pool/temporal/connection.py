"""Where and how every Temporal connection of the pool goes: Temporal's environment configuration
(`temporalio.envconfig`: `temporal.toml` profiles and `TEMPORAL_*` variables) layered with the topology.

Precedence, highest first (the README's "Connecting to a secured cluster" says the same):
  1. `TEMPORAL_*` environment variables (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TEMPORAL_TLS_*);
  2. the profile the pool names (`[pool] temporal_profile`, else `$TEMPORAL_PROFILE`) in Temporal's config file
     (`$TEMPORAL_CONFIG_FILE`, else `~/.config/temporalio/temporal.toml`);
  3. the topology: the selected Pipelex server entry (the keys it sets), `[pool] api_key_file`, `[pool.tls]`;
  4. the config file's `default` profile, when no profile is named;
  5. built-in: localhost:7233, namespace "default", no TLS.
TLS is on when any layer turns it on, gives TLS material or gives an API key, unless the highest layer that says
so turns it off. Nothing here holds a secret: the API key and certificates are read from their source on use,
so a rotated file is picked up by the next read."""

from __future__ import annotations

import hashlib
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import structlog
from temporalio.envconfig import ClientConfigProfile, ClientConfigTLS
from temporalio.service import TLSConfig

from pipelex_pool.errors import PoolError
from pipelex_pool.topology.schema import PoolSection, PoolTls
from pipelex_pool.topology.temporal_schema import ServerConfig

log = structlog.get_logger("pipelex_pool.supervisor")
DEFAULT_ADDRESS, DEFAULT_NAMESPACE = "localhost:7233", "default"
CONFIG_FILE_ENV, PROFILE_ENV, API_KEY_ENV = "TEMPORAL_CONFIG_FILE", "TEMPORAL_PROFILE", "TEMPORAL_API_KEY"
DEFAULT_CONFIG_FILE = "~/.config/temporalio/temporal.toml"


class ConnectionConfigError(PoolError):
    """The connection cannot be built as configured (a key or file missing): no retry can fix it."""


class KeyKind(Enum):
    FILE = "file"  # re-read on every use: rotated in place
    ENV = "env"  # fixed for the life of the process
    PROFILE = "profile"  # api_key of a temporal.toml profile: re-read with the profile


@dataclass(frozen=True)
class KeySource:
    kind: KeyKind
    where: str  # the file, the variable, or the profile's name
    config_file: str | None = None  # for PROFILE
    environ: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def describe(self) -> str:
        if self.kind is KeyKind.FILE:
            return f"file {self.where}"
        if self.kind is KeyKind.ENV:
            return f"${self.where}"
        return f"profile {self.where!r} of {self.config_file or DEFAULT_CONFIG_FILE}"

    def watched_file(self) -> Path | None:
        """The file the key comes from, if it can change while the pool runs (an environment variable cannot)."""
        if self.kind is KeyKind.ENV:
            return None
        return Path(self.where if self.kind is KeyKind.FILE else self.config_file or DEFAULT_CONFIG_FILE).expanduser()

    def read(self) -> str:
        """The key as its source holds it now; ConnectionConfigError naming the source when it has none."""
        if self.kind is KeyKind.FILE:
            try:
                key = Path(self.where).read_text().strip()
            except OSError as exc:
                raise ConnectionConfigError(
                    f"the API key file {self.where} cannot be read ({exc.strerror}); fix [pool] api_key_file"
                ) from exc
            if not key:
                raise ConnectionConfigError(f"the API key file {self.where} is empty; write the key into it")
            return key
        if self.kind is KeyKind.ENV:
            key = self.environ.get(self.where, "").strip()
            if not key:
                raise ConnectionConfigError(f"the API key is read from ${self.where}, which is not set; export it")
            return key
        loaded = _load_profile(self.where, self.config_file)
        if not loaded.api_key:
            raise ConnectionConfigError(f"{self.describe()} has no api_key any more")
        return loaded.api_key


@dataclass(frozen=True)
class Material:
    """A certificate or key: a file (re-read on use) or inline PEM data; `where` names it for an error."""

    role: str  # server_ca_cert | client_cert | client_key
    where: str  # e.g. "[pool.tls] client_cert", "$TEMPORAL_TLS_CLIENT_CERT_PATH", "profile 'prod' tls"
    path: Path | None = None
    data: bytes | None = None

    def read(self) -> bytes:
        if self.path is None:
            return self.data or b""
        try:
            return self.path.read_bytes()
        except OSError as exc:
            raise ConnectionConfigError(
                f"{self.role} {self.path} (from {self.where}) cannot be read: {exc.strerror}; fix the path"
            ) from exc

    def describe(self) -> str:
        return str(self.path) if self.path is not None else f"inline PEM ({self.where})"


@dataclass(frozen=True)
class Tls:
    server_name: str | None = None
    server_ca_cert: Material | None = None
    client_cert: Material | None = None
    client_key: Material | None = None

    @property
    def mutual(self) -> bool:
        return self.client_cert is not None

    def materials(self) -> list[Material]:
        return [m for m in (self.server_ca_cert, self.client_cert, self.client_key) if m is not None]

    def config(self) -> TLSConfig:
        return TLSConfig(
            domain=self.server_name,
            server_root_ca_cert=self.server_ca_cert.read() if self.server_ca_cert else None,
            client_cert=self.client_cert.read() if self.client_cert else None,
            client_private_key=self.client_key.read() if self.client_key else None,
        )


@dataclass(frozen=True)
class Connection:
    """How to reach Temporal, and where each part of it came from (for `validate`, `status` and errors)."""

    address: str = DEFAULT_ADDRESS
    namespace: str = DEFAULT_NAMESPACE
    api_key: KeySource | None = None
    tls: Tls | None = None
    rpc_metadata: Mapping[str, str] = field(default_factory=dict)
    origins: Mapping[str, str] = field(default_factory=dict)  # address / namespace / api_key / tls -> layer
    profile: str | None = None
    config_file: str | None = None
    tls_fingerprint: str = ""  # the TLS settings and files' content when resolved: a change rolls the workers
    key_fingerprint: str = ""  # the API key when resolved (a digest): a change is applied in place

    def connect_kwargs(self) -> dict[str, Any]:
        """Client.connect's keyword arguments, secrets read now."""
        return {
            "target_host": self.address,
            "namespace": self.namespace,
            "api_key": self.api_key.read() if self.api_key else None,
            "tls": self.tls.config() if self.tls else False,
            "rpc_metadata": dict(self.rpc_metadata),
        }

    def changed_from(self, old: Connection) -> str | None:
        """What changed that needs new connections (so new processes), or None."""
        if (old.address, old.namespace) != (self.address, self.namespace):
            return f"{old.address}/{old.namespace} -> {self.address}/{self.namespace}"
        if old.tls_fingerprint != self.tls_fingerprint:
            return "TLS settings or certificate files"
        if old.api_key != self.api_key or old.rpc_metadata != self.rpc_metadata:
            return "where the API key (or gRPC metadata) comes from"
        return None

    def describe(self) -> dict[str, Any]:
        """What `validate` and `status` show: never a secret."""
        tls = self.tls
        return {
            "address": self.address,
            "namespace": self.namespace,
            "tls": tls is not None,
            "mtls": bool(tls and tls.mutual),
            "server_name": tls.server_name if tls else None,
            "server_ca_cert": tls.server_ca_cert.describe() if tls and tls.server_ca_cert else None,
            "client_cert": tls.client_cert.describe() if tls and tls.client_cert else None,
            "api_key": self.api_key.describe() if self.api_key else None,
            "profile": self.profile,
            "from": dict(self.origins),
        }

    def summary(self) -> str:
        tls = "mTLS" if self.tls and self.tls.mutual else "TLS" if self.tls else "no TLS"
        key = f", API key from {self.api_key.describe()}" if self.api_key else ""
        return f"{self.address} namespace {self.namespace}, {tls}{key}"

    def cli_flags(self) -> list[str]:
        """The `temporal` CLI's connection options for the same connection, ready to paste into a shell: paths
        as they are, secrets as references ($VAR, $(cat FILE), or the profile that holds them)."""
        flags = ["--address", shlex.quote(self.address), "--namespace", shlex.quote(self.namespace)]
        profile_needed = False
        if self.tls is not None:
            flags.append("--tls")
            if self.tls.server_name:
                flags += ["--tls-server-name", shlex.quote(self.tls.server_name)]
            for material, option, variable in (
                (self.tls.server_ca_cert, "--tls-ca", "TEMPORAL_TLS_SERVER_CA_CERT_DATA"),
                (self.tls.client_cert, "--tls-cert", "TEMPORAL_TLS_CLIENT_CERT_DATA"),
                (self.tls.client_key, "--tls-key", "TEMPORAL_TLS_CLIENT_KEY_DATA"),
            ):
                if material is None:
                    continue
                if material.path is not None:
                    flags += [f"{option}-path", shlex.quote(str(material.path))]
                elif material.where.startswith("$"):
                    flags += [f"{option}-data", f'"${variable}"']
                else:
                    profile_needed = True
        if self.api_key is not None:
            if self.api_key.kind is KeyKind.FILE:
                flags += ["--api-key", f'"$(cat {shlex.quote(self.api_key.where)})"']
            elif self.api_key.kind is KeyKind.ENV:
                flags += ["--api-key", f'"${self.api_key.where}"']
            else:
                profile_needed = True
        if profile_needed and self.profile:
            flags += ["--profile", shlex.quote(self.profile)]
            if self.config_file:
                flags += ["--config-file", shlex.quote(self.config_file)]
        return flags

    def command_env(self) -> dict[str, str]:
        """The same settings as `TEMPORAL_*` variables, for a command worker that uses envconfig (or reads
        TEMPORAL_ADDRESS): they override whatever profile it would load."""
        env = {"TEMPORAL_ADDRESS": self.address, "TEMPORAL_NAMESPACE": self.namespace}
        env["TEMPORAL_TLS"] = "true" if self.tls else "false"
        if self.tls:
            if self.tls.server_name:
                env["TEMPORAL_TLS_SERVER_NAME"] = self.tls.server_name
            for material, name in (
                (self.tls.server_ca_cert, "SERVER_CA_CERT"),
                (self.tls.client_cert, "CLIENT_CERT"),
                (self.tls.client_key, "CLIENT_KEY"),
            ):
                if material is not None and material.path is not None:
                    env[f"TEMPORAL_TLS_{name}_PATH"] = str(material.path)
                elif material is not None:
                    env[f"TEMPORAL_TLS_{name}_DATA"] = (material.data or b"").decode()
        if self.api_key:
            try:
                env[API_KEY_ENV] = self.api_key.read()
            except ConnectionConfigError as exc:  # the worker starts without it, and says what Temporal answers
                log.warning("connection.api_key_unreadable", source=self.api_key.describe(), error=str(exc))
        return env


def _digest(parts: list[bytes]) -> str:
    sha = hashlib.sha256()
    for part in parts:
        sha.update(len(part).to_bytes(8, "big") + part)
    return sha.hexdigest()[:16]


def _tls_fingerprint(tls: Tls | None) -> str:
    if tls is None:
        return ""
    parts = [(tls.server_name or "").encode()]
    for material in tls.materials():
        try:
            parts.append(material.read())
        except ConnectionConfigError:
            parts.append(b"(unreadable)")
    return _digest(parts)


def _key_fingerprint(source: KeySource | None) -> str:
    try:
        return _digest([source.read().encode()]) if source else ""
    except ConnectionConfigError:
        return ""


def _load_profile(profile: str | None, config_file: str | None, *, strict: bool = True) -> ClientConfigProfile:
    source = Path(config_file).expanduser() if config_file else None
    try:
        return ClientConfigProfile.load(profile, config_source=source, disable_env=True)
    except Exception as exc:  # the bridge's ConfigError: a missing profile, a broken file
        if not strict and profile is None:
            return ClientConfigProfile()
        where = config_file or DEFAULT_CONFIG_FILE
        raise ConnectionConfigError(
            f"Temporal config file {where}: {exc}; fix the file, or name another profile ([pool] temporal_profile "
            f"or ${PROFILE_ENV})"
        ) from exc


@dataclass
class _Layers:
    """The connection being built, lowest layer first; each `put` records where the value came from."""

    values: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)
    tls_switch: tuple[bool, str] | None = None  # (enabled, layer) as the highest layer that says so

    def put(self, key: str, value: Any, origin: str) -> None:
        if value is not None and value != "":
            self.values[key], self.origins[key] = value, origin

    def put_profile(self, loaded: ClientConfigProfile, label: str, key_source: KeySource | None) -> None:
        self.put("address", loaded.address, label)
        self.put("namespace", loaded.namespace, label)
        if loaded.api_key:
            self.put("api_key", key_source, label)
        if loaded.grpc_meta:
            self.put("rpc_metadata", dict(loaded.grpc_meta), label)
        if loaded.tls is not None:
            self.put_tls(loaded.tls, label)

    def put_tls(self, tls: ClientConfigTLS, label: str) -> None:
        if tls.disabled is not None:
            self.tls_switch = (not tls.disabled, label)
        self.put("server_name", tls.server_name, label)
        for role, source in (
            ("server_ca_cert", tls.server_root_ca_cert),
            ("client_cert", tls.client_cert),
            ("client_key", tls.client_private_key),
        ):
            if source is None:
                continue
            if isinstance(source, Path):
                self.put(role, Material(role, label, path=source.expanduser()), label)
            else:
                data = source.encode() if isinstance(source, str) else source
                self.put(role, Material(role, label, data=data), label)


_ENV_LABELS = {
    "address": "$TEMPORAL_ADDRESS",
    "namespace": "$TEMPORAL_NAMESPACE",
    "api_key": "$TEMPORAL_API_KEY",
    "server_name": "$TEMPORAL_TLS_SERVER_NAME",
    "server_ca_cert": "$TEMPORAL_TLS_SERVER_CA_CERT_*",
    "client_cert": "$TEMPORAL_TLS_CLIENT_CERT_*",
    "client_key": "$TEMPORAL_TLS_CLIENT_KEY_*",
    "rpc_metadata": "$TEMPORAL_GRPC_META_*",
}


def _put_topology(
    layers: _Layers, pool: PoolSection, server: ServerConfig, server_name: str, base: Path, environ: Mapping[str, str]
) -> None:
    label = f"[temporal.temporal_config.temporal_server_configs.{server_name}]"
    if "target_host" in server.model_fields_set:
        layers.put("address", server.target_host, label)
    if "namespace" in server.model_fields_set:
        layers.put("namespace", server.namespace, label)
    if server.api_key_method == "env_var":
        variable = server.api_key_id or API_KEY_ENV
        layers.put("api_key", KeySource(KeyKind.ENV, variable, environ=environ), f"{label} api_key_id")
    elif server.api_key_method == "secret_provider":
        raise ConnectionConfigError(
            f'{label} api_key_method = "secret_provider" needs Pipelex\'s secret provider, which pipelex-pool does '
            'not have; use [pool] api_key_file, or api_key_method = "env_var"'
        )
    if pool.api_key_file:
        path = (base / pool.api_key_file).expanduser()
        layers.put("api_key", KeySource(KeyKind.FILE, str(path)), "[pool] api_key_file")
    tls: PoolTls = pool.tls
    if tls.enabled is not None:
        layers.tls_switch = (tls.enabled, "[pool.tls] enabled")
    layers.put("server_name", tls.server_name, "[pool.tls] server_name")
    for role in ("server_ca_cert", "client_cert", "client_key"):
        value = getattr(tls, role)
        if value:
            layers.put(role, Material(role, f"[pool.tls] {role}", path=(base / value).expanduser()), "[pool.tls]")


def resolve_connection(
    pool: PoolSection,
    server: ServerConfig,
    server_name: str,
    base: Path,
    environ: Mapping[str, str] | None = None,
) -> Connection:
    """The connection the pool makes (precedence: the module's docstring); ConnectionConfigError when a named
    profile or the config file cannot be read. `base`: the directory relative paths of the topology start from."""
    environ = os.environ if environ is None else environ
    profile = pool.temporal_profile or environ.get(PROFILE_ENV) or None
    config_file = environ.get(CONFIG_FILE_ENV) or None
    layers = _Layers()
    file_label = config_file or DEFAULT_CONFIG_FILE
    if profile is None:
        default = _load_profile(None, config_file, strict=False)
        label = f"profile 'default' of {file_label}"
        layers.put_profile(default, label, KeySource(KeyKind.PROFILE, "default", config_file))
    _put_topology(layers, pool, server, server_name, base, environ)
    if profile is not None:
        named = _load_profile(profile, config_file)
        label = f"profile {profile!r} of {file_label}"
        layers.put_profile(named, label, KeySource(KeyKind.PROFILE, profile, config_file))
    from_env = ClientConfigProfile.load(disable_file=True, override_env_vars=dict(environ))
    before = dict(layers.origins)
    layers.put_profile(from_env, "environment", KeySource(KeyKind.ENV, API_KEY_ENV, environ=environ))
    for key, origin in layers.origins.items():  # name the variable, not just "environment"
        if origin == "environment" and before.get(key) != "environment":
            layers.origins[key] = _ENV_LABELS.get(key, origin)
    if layers.tls_switch and layers.tls_switch[1] == "environment":
        layers.tls_switch = (layers.tls_switch[0], "$TEMPORAL_TLS")
    values = layers.values
    materials = {role: values.get(role) for role in ("server_ca_cert", "client_cert", "client_key")}
    wants_tls = bool(values.get("api_key") or values.get("server_name") or any(materials.values()))
    enabled = layers.tls_switch[0] if layers.tls_switch else wants_tls
    if layers.tls_switch and layers.tls_switch[0] and not wants_tls:
        enabled = True
    tls = Tls(values.get("server_name"), **materials) if enabled else None
    origins = {k: v for k, v in layers.origins.items() if k in ("address", "namespace", "api_key")}
    if tls is not None:
        origins["tls"] = layers.tls_switch[1] if layers.tls_switch else _tls_origin(layers)
    return Connection(
        address=values.get("address", DEFAULT_ADDRESS),
        namespace=values.get("namespace", DEFAULT_NAMESPACE),
        api_key=values.get("api_key"),
        tls=tls,
        rpc_metadata=values.get("rpc_metadata", {}),
        origins=origins,
        profile=profile,
        config_file=config_file,
        tls_fingerprint=_tls_fingerprint(tls),
        key_fingerprint=_key_fingerprint(values.get("api_key")),
    )


def _tls_origin(layers: _Layers) -> str:
    for key in ("client_cert", "server_ca_cert", "server_name", "api_key"):
        if key in layers.origins:
            return layers.origins[key] + (" (an API key implies TLS)" if key == "api_key" else "")
    return "built-in"
