"""Checks of the [temporal] section on its own (pure: no I/O), one function per sub-section."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping

from pipelex_pool.errors import Issue, Severity
from pipelex_pool.packs import ALL_PACKS, Catalog, resolve_scope
from pipelex_pool.topology.suggest import did_you_mean
from pipelex_pool.topology.temporal_schema import TemporalSection

RESOURCE_BASED = "tuning_mode='resource_based' is reserved but not implemented; use 'explicit'."


def check_temporal(temporal: TemporalSection, catalog: Catalog, issues: list[Issue], file: str | None) -> None:
    """The [temporal] section on its own, one check per sub-section."""
    _check_legacy_task_queue(temporal, issues, file)
    _check_profiles(temporal, issues, file)
    _check_scopes(temporal, catalog, issues, file)
    _check_servers(temporal, issues, file)
    _check_routing(temporal, catalog, issues, file)
    _check_codec(temporal, issues, file)


def _check_known(
    path: str, kind: str, name: str, known: Mapping[str, object], issues: list[Issue], file: str | None
) -> None:
    """A name (the default profile, the default scope, the selected server) must be one the section defines."""
    if name not in known:
        issues.append(Issue(path, f"unknown {kind} {name!r}.", did_you_mean(name, known), file=file))


def _check_legacy_task_queue(temporal: TemporalSection, issues: list[Issue], file: str | None) -> None:
    """The legacy key task_queue, read as default_task_queue."""
    worker_config = temporal.worker_config
    if worker_config.task_queue is not None:
        if worker_config.default_task_queue not in (None, worker_config.task_queue):
            issues.append(
                Issue(
                    "temporal.worker_config.task_queue",
                    "both task_queue (legacy) and default_task_queue are set, to different queues.",
                    "remove task_queue.",
                    file=file,
                )
            )
        else:
            issues.append(
                Issue(
                    "temporal.worker_config.task_queue",
                    "task_queue is the legacy name of default_task_queue (read as default_task_queue).",
                    "rename the key to default_task_queue.",
                    Severity.WARNING,
                    file,
                )
            )


def _check_profiles(temporal: TemporalSection, issues: list[Issue], file: str | None) -> None:
    """[temporal.worker_runtime_profiles]: the default exists, tuning modes, fields taken from the default."""
    profiles = temporal.worker_runtime_profiles
    all_profiles = profiles.all_profiles()
    _check_known(
        "temporal.worker_runtime_profiles.default_profile",
        "profile",
        profiles.default_profile,
        all_profiles,
        issues,
        file,
    )
    for name, profile in profiles.profiles.items():
        path = f"temporal.worker_runtime_profiles.profiles.{name}"
        if profile.tuning_mode == "resource_based":
            issues.append(Issue(f"{path}.tuning_mode", RESOURCE_BASED, 'set tuning_mode = "explicit".', file=file))
        elif profile.tuning_mode != "explicit":
            issues.append(
                Issue(
                    f"{path}.tuning_mode",
                    f"unknown tuning_mode {profile.tuning_mode!r}.",
                    'use "explicit".',
                    file=file,
                )
            )
        missing = profile.missing_fields()
        base = profiles.default_profile if profiles.default_profile in all_profiles else "default"
        source = f"the default profile {base!r}" if name != base else "Pipelex's built-in default profile"
        if missing:
            issues.append(
                Issue(
                    path,
                    f"{len(missing)} field(s) not set, taken from {source}: {', '.join(missing)}.",
                    "",
                    Severity.NOTE,
                    file,
                )
            )


def _check_scopes(temporal: TemporalSection, catalog: Catalog, issues: list[Issue], file: str | None) -> None:
    """[temporal.worker_scopes]: the default exists, every name a scope uses is known, none is empty."""
    scopes = temporal.worker_scopes
    all_scopes = scopes.all_scopes()
    _check_known("temporal.worker_scopes.default_scope", "scope", scopes.default_scope, all_scopes, issues, file)
    for name, scope in scopes.scopes.items():
        path = f"temporal.worker_scopes.scopes.{name}"
        checks = (
            ("required_tasks_packs", scope.required_tasks_packs, catalog.packs, "task pack"),
            ("required_workflows", scope.required_workflows, catalog.workflows, "workflow"),
            ("excluded_workflows", scope.excluded_workflows, catalog.workflows, "workflow"),
            ("required_activities", scope.required_activities, catalog.activities, "activity"),
            ("excluded_activities", scope.excluded_activities, catalog.activities, "activity"),
        )
        for key, names, known, kind in checks:
            for item in names:
                if item not in known and not (key == "required_tasks_packs" and item == ALL_PACKS):
                    issues.append(
                        Issue(f"{path}.{key}", f"unknown {kind} {item!r}.", did_you_mean(item, known), file=file)
                    )
        if resolve_scope(scope, catalog).empty:
            issues.append(
                Issue(
                    path,
                    "this scope resolves to nothing: no workflow and no activity would be registered.",
                    "add required_tasks_packs, required_workflows or required_activities, or relax the exclusions.",
                    file=file,
                )
            )


def _check_servers(temporal: TemporalSection, issues: list[Issue], file: str | None) -> None:
    """[temporal.temporal_config]: the selected server exists, addresses, API key settings."""
    servers = temporal.temporal_config.all_servers()
    selected = temporal.temporal_config.selected_server
    _check_known("temporal.temporal_config.selected_server", "server", selected, servers, issues, file)
    for name, server in servers.items():
        path = f"temporal.temporal_config.temporal_server_configs.{name}"
        if name != selected and "${" in server.model_dump_json():
            continue  # an entry for other machines, whose variables are not set here (see topology/env_refs.py)
        host, _, port = server.target_host.rpartition(":")
        if not host or not port.isdigit():
            issues.append(
                Issue(
                    f"{path}.target_host",
                    f"{server.target_host!r} is not host:port.",
                    'e.g. "localhost:7233".',
                    file=file,
                )
            )
        if server.api_key_method == "env_var" and not server.api_key_id:
            issues.append(
                Issue(
                    f"{path}.api_key_id",
                    'api_key_method = "env_var" needs the variable name.',
                    'set api_key_id = "TEMPORAL_API_KEY".',
                    file=file,
                )
            )


def _check_routing(temporal: TemporalSection, catalog: Catalog, issues: list[Issue], file: str | None) -> None:
    """[temporal.worker_config.activity_queues] and [temporal.queue_options]: known activities, queues with options."""
    routes = temporal.worker_config.activity_queues
    default_queue = temporal.default_task_queue
    routed_queues: set[str] = set()
    for activity, route in routes.items():
        path = f"temporal.worker_config.activity_queues.{activity}"
        if activity not in catalog.activities:
            issues.append(
                Issue(
                    path,
                    f"unknown activity {activity!r}.",
                    did_you_mean(activity, catalog.activities),
                    file=file,
                )
            )
        for key, queue in [
            ("default", route.default),
            *((f"by_handle.{h}", q) for h, q in route.by_handle.items()),
        ]:
            routed_queues.add(queue)
            if queue != default_queue and queue not in temporal.queue_options:
                issues.append(
                    Issue(
                        f"{path}.{key}",
                        f"routes to queue {queue!r}, which has no [temporal.queue_options.{queue}] entry.",
                        did_you_mean(
                            queue,
                            temporal.queue_options,
                            f"add [temporal.queue_options.{queue}] (it may be empty).",
                        ),
                        file=file,
                    )
                )
    for queue in temporal.queue_options:
        if queue != default_queue and queue not in routed_queues:
            issues.append(
                Issue(
                    f"temporal.queue_options.{queue}",
                    f"no activity routes to queue {queue!r}.",
                    did_you_mean(
                        queue,
                        routed_queues,
                        "route an activity to it in activity_queues, or remove the entry.",
                    ),
                    file=file,
                )
            )


def _check_codec(temporal: TemporalSection, issues: list[Issue], file: str | None) -> None:
    """[temporal.payload_codec_config]: a provider every process of the pool (and Pipelex's clients) can share."""
    codec = temporal.payload_codec_config
    if not codec.is_enabled:
        return
    path = "temporal.payload_codec_config.storage_provider_config.method"
    method = codec.storage_provider_config.method
    if method == "in_memory":
        issues.append(
            Issue(
                path,
                "in_memory storage lives in one process: the pool's workers, its supervisor and Pipelex's clients "
                "would not find each other's offloaded payloads.",
                'use method = "local" (one host) or "s3" (a fleet), or set is_enabled = false.',
                file=file,
            )
        )
    elif method == "gcp":
        issues.append(
            Issue(
                path,
                "the gcp storage provider is not supported by pipelex-pool.",
                'use method = "s3" (or "local" on one host), or set is_enabled = false.',
                file=file,
            )
        )
    elif method == "s3" and importlib.util.find_spec("boto3") is None:
        issues.append(
            Issue(
                path,
                "the s3 storage provider needs boto3, which is not installed.",
                'pip install "pipelex-pool[s3]".',
                file=file,
            )
        )
