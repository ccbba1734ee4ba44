"""Check the connection a topology makes (temporal/connection.py): the profile exists, the API key can be read,
every certificate parses, matches its key and is not expired (a warning within 14 days)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pipelex_pool.errors import Issue, Severity
from pipelex_pool.temporal.certs import inspect
from pipelex_pool.temporal.connection import Connection, ConnectionConfigError, resolve_connection
from pipelex_pool.topology.schema import PoolSection
from pipelex_pool.topology.temporal_schema import TemporalSection


def issue_path(where: str) -> str:
    """The topology key a connection setting came from ("[pool.tls] client_cert" -> "pool.tls.client_cert",
    "[pool] api_key_file" -> "pool.api_key_file"), or "pool.connection" for Temporal's own config (the message
    names the profile or the variable)."""
    if not where.startswith("["):
        return "pool.connection"
    table, _, key = where[1:].partition("]")
    key = key.split()[0] if key.split() else ""
    return f"{table}.{key}" if key else table


def check_connection(
    pool: PoolSection,
    temporal: TemporalSection,
    file: Path,
    environ: Mapping[str, str],
    issues: list[Issue],
    *,
    read_files: bool = True,
) -> Connection | None:
    """The resolved connection, with what is wrong with it added to `issues`. `read_files` False (the exporters,
    which run where the certificates are not): the files and the key are not read."""
    server = temporal.selected_server()
    if server is None:
        return None  # reported by check_temporal
    try:
        connection = resolve_connection(
            pool, server, temporal.temporal_config.selected_server, file.resolve().parent, environ
        )
    except ConnectionConfigError as exc:
        issues.append(Issue("pool.temporal_profile", str(exc), ""))
        return None
    if not read_files:
        return connection
    if connection.api_key is not None:
        try:
            connection.api_key.read()
        except ConnectionConfigError as exc:
            # a warning: a service gets its secrets where it runs (systemd's EnvironmentFile=, a Secret), which
            # is not always where the file is checked; `up` and `validate --check-connection` refuse it
            issues.append(Issue(issue_path(connection.origins.get("api_key", "")), str(exc), "", Severity.WARNING))
    report = inspect(connection)
    for where, problem in report.errors:
        issues.append(Issue(issue_path(where), problem, ""))
    for where, problem in report.warnings:
        issues.append(Issue(issue_path(where), problem, "", Severity.WARNING))
    if pool.api_key_file and server.api_key_method == "env_var":
        issues.append(
            Issue(
                "pool.api_key_file",
                'the selected server also reads its API key from the environment (api_key_method = "env_var"); '
                "the file wins.",
                'set api_key_method = "none" in the server entry, or remove api_key_file.',
                Severity.WARNING,
            )
        )
    return connection
