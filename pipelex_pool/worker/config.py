"""What one worker runs, from its flags and its config file; every problem is a WorkerBootError (exit 78)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from pipelex_pool.contract import BUILD_ID_ENV, CONFIG_ENV, GROUP_ENV, REPLICA_ENV, SDK_METRICS_ENV, identity_for
from pipelex_pool.errors import Issue, Severity, TopologyError, WorkerBootError
from pipelex_pool.packs import AppImportError, Catalog, ResolvedScope, load_app, resolve_scope
from pipelex_pool.temporal.connection import Connection, ConnectionConfigError, resolve_connection
from pipelex_pool.topology.env_refs import expand_document
from pipelex_pool.topology.load import app_ref, move_docs_alias, parse_section, temporal_table
from pipelex_pool.topology.schema import PoolSection
from pipelex_pool.topology.suggest import closest
from pipelex_pool.topology.temporal_schema import (
    BUILTIN_DEFAULT_PROFILE,
    RuntimeProfile,
    ServerConfig,
    TemporalSection,
)
from pipelex_pool.topology.toml import read_toml
from pipelex_pool.topology.validate_temporal import check_temporal
from pipelex_pool.units import parse_address


@dataclass(frozen=True)
class WorkerSettings:
    config_file: Path
    pool: str
    task_queue: str
    scope_name: str
    scope: ResolvedScope
    profile_name: str
    profile: RuntimeProfile
    temporal: TemporalSection
    server: ServerConfig
    connection: Connection
    catalog: Catalog
    identity: str
    sandbox: bool
    unit_testing: bool
    sdk_metrics: str | None = None  # "host:port" for the SDK's Prometheus endpoint
    deployment: str | None = None  # Worker Deployment Versioning: register as version <deployment>.<build_id>
    build_id: str | None = None
    versioning_behavior: str = "pinned"  # for workflows that declare none
    heartbeat: timedelta = timedelta(seconds=60)  # the worker's heartbeat to Temporal ([pool] worker_heartbeat)

    @property
    def max_task_queue_activities_per_second(self) -> float | None:
        options = self.temporal.queue_options.get(self.task_queue)
        return options.max_task_queue_activities_per_second if options else None


def _first_error(file: Path, issues: list[Issue]) -> WorkerBootError:
    errors = [issue for issue in issues if issue.severity is Severity.ERROR]
    more = f" ({len(errors) - 1} more; run `pipelex-pool validate {file}`)" if len(errors) > 1 else ""
    return WorkerBootError(errors[0].render(str(file)) + more)


def _unknown(kind: str, flag: str, value: str, known: list[str]) -> WorkerBootError:
    near = closest(value, known)
    hint = f" Did you mean {near!r}?" if near else ""
    return WorkerBootError(f"Unknown {kind} {flag} {value!r} (known: {', '.join(sorted(known))}).{hint}")


def load_worker_settings(
    config: Path | None,
    task_queue: str | None,
    scope: str | None,
    profile: str | None,
    identity: str | None,
    *,
    sandbox: bool = True,
    unit_testing: bool = False,
    sdk_metrics: str | None = None,
) -> WorkerSettings:
    """Read the config (a topology file or a pipelex.toml) and check the flags against it, queue first."""
    if config is None:
        env = os.environ.get(CONFIG_ENV)
        if not env:
            raise WorkerBootError(
                f"no config file: pass --config FILE (a topology or pipelex.toml) or set ${CONFIG_ENV}"
            )
        config = Path(env)
    issues: list[Issue] = []
    try:
        doc = expand_document(read_toml(config), os.environ, issues)
    except TopologyError as exc:
        raise _first_error(config, exc.issues) from exc
    pool = parse_section(PoolSection, doc.get("pool"), ("pool",), issues) or PoolSection()
    raw, temporal_file = temporal_table(doc, config, issues, os.environ)
    move_docs_alias(raw, issues, temporal_file)
    temporal = parse_section(TemporalSection, raw, ("temporal",), issues, temporal_file)
    if temporal is None or any(issue.severity is Severity.ERROR for issue in issues):
        raise _first_error(config, issues)

    # Strict --task-queue check first: a typo fails in well under a second, before any connection.
    queue = task_queue or temporal.default_task_queue
    known_queues = temporal.known_queues()
    if queue not in known_queues:
        near = closest(queue, known_queues)
        raise WorkerBootError(
            f"--task-queue {queue!r} is not referenced by any routing or options entry. "
            f"Known queues: {known_queues}." + (f" Did you mean {near!r}?" if near else "")
        )
    scopes = temporal.worker_scopes.all_scopes()
    scope_name = scope or temporal.worker_scopes.default_scope
    if scope_name not in scopes:
        raise _unknown("worker scope", "--scope", scope_name, list(scopes))
    profiles = temporal.worker_runtime_profiles.all_profiles()
    profile_name = profile or temporal.worker_runtime_profiles.default_profile
    if profile_name not in profiles:
        raise _unknown("worker runtime profile", "--profile", profile_name, list(profiles))
    try:
        catalog = load_app(app_ref(pool, config))
    except AppImportError as exc:
        raise WorkerBootError(f"{config}: pool.app: {exc}") from exc
    check_temporal(temporal, catalog, issues, temporal_file)
    if any(issue.severity is Severity.ERROR for issue in issues):
        raise _first_error(config, issues)
    resolved = resolve_scope(scopes[scope_name], catalog)
    if resolved.empty:
        raise WorkerBootError(f"scope {scope_name!r} resolves to nothing: no workflow and no activity to register")
    server = temporal.selected_server()
    assert server is not None  # check_temporal reported an unknown selected_server
    try:
        connection = resolve_connection(
            pool, server, temporal.temporal_config.selected_server, config.resolve().parent, os.environ
        )
    except ConnectionConfigError as exc:
        raise WorkerBootError(f"{config}: {exc}") from exc
    base = profiles.get(temporal.worker_runtime_profiles.default_profile, BUILTIN_DEFAULT_PROFILE)
    build_id = os.environ.get(BUILD_ID_ENV) or pool.build_id
    if pool.deployment and not build_id:
        raise WorkerBootError(
            f"{config}: pool.deployment is {pool.deployment!r} but no build ID is given: set [pool] build_id "
            f'(e.g. build_id = "${{GIT_SHA}}") or ${BUILD_ID_ENV}'
        )
    return WorkerSettings(
        config_file=config,
        pool=pool.name,
        task_queue=queue,
        scope_name=scope_name,
        scope=resolved,
        profile_name=profile_name,
        profile=profiles[profile_name].filled_from(base).filled_from(BUILTIN_DEFAULT_PROFILE),
        temporal=temporal,
        server=server,
        connection=connection,
        catalog=catalog,
        identity=identity
        or identity_for(
            pool.name,
            os.environ.get(GROUP_ENV, scope_name),
            os.environ.get(REPLICA_ENV, "0"),
            os.getpid(),
        ),
        sandbox=sandbox,
        unit_testing=unit_testing,
        sdk_metrics=_sdk_metrics_address(sdk_metrics),
        deployment=pool.deployment,
        build_id=build_id,
        versioning_behavior=pool.versioning_behavior,
        heartbeat=pool.worker_heartbeat,
    )


def _sdk_metrics_address(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    try:
        return parse_address(value)
    except ValueError as exc:
        raise WorkerBootError(f"--sdk-metrics / ${SDK_METRICS_ENV}: {exc}") from exc
