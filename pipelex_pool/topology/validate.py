"""Cross-checks of a parsed topology (pure: no I/O). Every finding becomes an Issue; nothing stops early."""

from __future__ import annotations

import string
from datetime import timedelta

from pipelex_pool.errors import Issue, Severity
from pipelex_pool.packs import Catalog, ResolvedScope, resolve_scope
from pipelex_pool.topology.schema import PoolSection, ResolvedGroup, WorkerGroup
from pipelex_pool.topology.suggest import did_you_mean
from pipelex_pool.topology.temporal_schema import BUILTIN_DEFAULT_PROFILE, TemporalSection
from pipelex_pool.units import split_port_range

COMMAND_PLACEHOLDERS = (
    "task_queue",
    "scope",
    "profile",
    "group",
    "replica",
    "identity",
    "pool",
    "python",
    "config",
)
DEFAULT_WATCHDOG = timedelta(seconds=15)
RESOURCE_BASED = "tuning_mode='resource_based' is reserved but not implemented; use 'explicit'."


def _error(path: str, problem: str, fix: str = "") -> Issue:
    return Issue(path, problem, fix)


def check_temporal(temporal: TemporalSection, catalog: Catalog, issues: list[Issue], file: str | None) -> None:
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

    profiles = temporal.worker_runtime_profiles
    all_profiles = profiles.all_profiles()
    if profiles.default_profile not in all_profiles:
        issues.append(
            Issue(
                "temporal.worker_runtime_profiles.default_profile",
                f"unknown profile {profiles.default_profile!r}.",
                did_you_mean(profiles.default_profile, all_profiles),
                file=file,
            )
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

    scopes = temporal.worker_scopes
    all_scopes = scopes.all_scopes()
    if scopes.default_scope not in all_scopes:
        issues.append(
            Issue(
                "temporal.worker_scopes.default_scope",
                f"unknown scope {scopes.default_scope!r}.",
                did_you_mean(scopes.default_scope, all_scopes),
                file=file,
            )
        )
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
                if item not in known:
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

    servers = temporal.temporal_config.all_servers()
    selected = temporal.temporal_config.selected_server
    if selected not in servers:
        issues.append(
            Issue(
                "temporal.temporal_config.selected_server",
                f"unknown server {selected!r}.",
                did_you_mean(selected, servers),
                file=file,
            )
        )
    for name, server in servers.items():
        path = f"temporal.temporal_config.temporal_server_configs.{name}"
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

    routes = worker_config.activity_queues
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


def _check_group(
    name: str, group: WorkerGroup, pool: PoolSection, temporal: TemporalSection, issues: list[Issue]
) -> ResolvedGroup | None:
    path = f"workers.{name}"
    ok = True
    all_scopes = temporal.worker_scopes.all_scopes()
    scope = group.scope or temporal.worker_scopes.default_scope
    if scope not in all_scopes:
        issues.append(_error(f"{path}.scope", f"unknown scope {scope!r}.", did_you_mean(scope, all_scopes)))
        ok = False
    all_profiles = temporal.worker_runtime_profiles.all_profiles()
    profile = group.profile or temporal.worker_runtime_profiles.default_profile
    if profile not in all_profiles:
        issues.append(
            _error(
                f"{path}.profile",
                f"unknown runtime profile {profile!r}.",
                did_you_mean(profile, all_profiles),
            )
        )
        ok = False
    known_queues = temporal.known_queues()
    queue = group.task_queue or temporal.default_task_queue
    if queue not in known_queues:
        issues.append(
            _error(
                f"{path}.task_queue",
                f"queue {queue!r} is not referenced by any routing or options entry"
                f" (known: {', '.join(known_queues)}).",
                did_you_mean(queue, known_queues),
            )
        )
        ok = False
    if group.autoscale is not None and group.autoscale.min > group.autoscale.max:
        issues.append(
            _error(
                f"{path}.autoscale",
                f"min ({group.autoscale.min}) is greater than max ({group.autoscale.max}).",
                "make min <= max.",
            )
        )
        ok = False
    if group.command is not None:
        for index, part in enumerate(group.command):
            for _, field, _, _ in string.Formatter().parse(part):
                if field is not None and field not in COMMAND_PLACEHOLDERS:
                    issues.append(
                        _error(
                            f"{path}.command[{index}]",
                            f"unknown placeholder {{{field}}}.",
                            did_you_mean(
                                field,
                                COMMAND_PLACEHOLDERS,
                                f"use one of {{{'}, {'.join(COMMAND_PLACEHOLDERS)}}}.",
                            ),
                        )
                    )
                    ok = False
    restart = group.restart.over(pool.restart) if group.restart else pool.restart
    if restart.backoff_initial > restart.backoff_max:
        where = f"{path}.restart" if group.restart else "pool.restart"
        issues.append(
            _error(
                f"{where}.backoff_initial",
                "backoff_initial is greater than backoff_max.",
                "make it <= backoff_max.",
            )
        )
        ok = False
    if not ok:
        return None
    base_profile = all_profiles.get(temporal.worker_runtime_profiles.default_profile, all_profiles["default"])
    runtime_profile = all_profiles[profile].filled_from(base_profile).filled_from(BUILTIN_DEFAULT_PROFILE)
    readiness = group.readiness or ("notify" if group.command is None else "temporal")
    replicas = group.replicas
    if group.autoscale is not None:
        replicas = min(max(replicas, group.autoscale.min), group.autoscale.max)
    return ResolvedGroup(
        name=name,
        scope=scope,
        task_queue=queue,
        profile=profile,
        replicas=replicas,
        env=group.env,
        max_memory=group.max_memory,
        command=group.command,
        readiness=readiness,
        start_timeout=group.start_timeout,
        watchdog=group.watchdog if group.watchdog is not None else DEFAULT_WATCHDOG if group.command is None else None,
        autoscale=group.autoscale,
        restart=restart,
        runtime_profile=runtime_profile,
        scope_def=all_scopes[scope],
    )


def _check_coverage(
    temporal: TemporalSection,
    groups: dict[str, ResolvedGroup],
    scopes: dict[str, ResolvedScope],
    issues: list[Issue],
) -> None:
    def pollers(queue: str, activity: str) -> list[str]:
        return [
            g.name
            for g in groups.values()
            if g.task_queue == queue
            and (g.replicas > 0 or (g.autoscale is not None and g.autoscale.max > 0))
            and activity in scopes[g.scope].activities
        ]

    routes = temporal.worker_config.activity_queues
    for activity, route in routes.items():
        for queue in sorted(route.queues()):
            if not pollers(queue, activity):
                polling = [g.name for g in groups.values() if g.task_queue == queue]
                detail = (
                    f"group(s) {', '.join(polling)} poll it but their scope does not register {activity}"
                    if polling
                    else "no worker group polls it"
                )
                issues.append(
                    _error(
                        f"temporal.worker_config.activity_queues.{activity}",
                        f"routes {activity} to queue {queue!r}, but {detail}.",
                        f"add a [workers.<group>] with task_queue = {queue!r} and a scope that registers {activity}, "
                        "or change the routing.",
                    )
                )
    default_queue = temporal.default_task_queue
    catalog_activities = {a for s in scopes.values() for a in s.activities}
    stranded = sorted(a for a in catalog_activities if a not in routes and not pollers(default_queue, a))
    if stranded and any(scopes[g.scope].workflows for g in groups.values()):
        issues.append(
            Issue(
                "temporal.worker_config.activity_queues",
                f"not routed, so they run on {default_queue!r} where no group registers them: {', '.join(stranded)}; "
                "a run that calls one of them waits for a worker.",
                "route them to a runner queue, or give the group on the default queue a scope that registers them.",
                Severity.WARNING,
            )
        )
    if groups and not any(scopes[g.scope].workflows and g.task_queue == default_queue for g in groups.values()):
        issues.append(
            Issue(
                "workers",
                f"no group registers workflows on the default task queue {default_queue!r}.",
                'add a router group (scope = "router") polling it, unless another machine runs the router.',
                Severity.WARNING,
            )
        )


def check_topology(
    pool: PoolSection,
    temporal: TemporalSection,
    groups: dict[str, WorkerGroup],
    catalog: Catalog,
    issues: list[Issue],
    *,
    complete: bool,
    temporal_file: str | None = None,
) -> tuple[dict[str, ResolvedGroup], dict[str, ResolvedScope]]:
    """Append every cross-check finding to `issues`; return the resolved groups and scopes."""
    check_temporal(temporal, catalog, issues, temporal_file)
    scopes = {name: resolve_scope(scope, catalog) for name, scope in temporal.worker_scopes.all_scopes().items()}
    if not groups and complete:
        issues.append(_error("workers", "no worker group is defined.", "add a [workers.<group>] table."))
    resolved: dict[str, ResolvedGroup] = {}
    for name, group in groups.items():
        result = _check_group(name, group, pool, temporal, issues)
        if result is not None:
            resolved[name] = result
    if complete and len(resolved) == len(groups):
        _check_coverage(temporal, resolved, scopes, issues)
    _check_worker_metrics(pool, groups, issues)
    return resolved, scopes


def _check_worker_metrics(pool: PoolSection, groups: dict[str, WorkerGroup], issues: list[Issue]) -> None:
    """The SDK metrics port range must hold every replica that can run at once, apart from the pool's own port."""
    if pool.worker_metrics is None:
        return
    host, ports = split_port_range(pool.worker_metrics)
    # each group at its largest, plus one replacement while a rolling restart runs
    most = sum(max(g.replicas, g.autoscale.max if g.autoscale else 0) + 1 for g in groups.values())
    if len(ports) < most:
        issues.append(
            _error(
                "pool.worker_metrics",
                f"the range has {len(ports)} port(s) but up to {most} replicas can run at once (each group's replicas "
                "or autoscale max, plus one replacement during a rolling restart).",
                f'widen the range to at least {most} ports, e.g. "{host}:{ports.start}-{ports.start + most - 1}".',
            )
        )
    if pool.metrics is not None and int(pool.metrics.rpartition(":")[2]) in ports:
        issues.append(
            _error(
                "pool.worker_metrics",
                f"the range includes the port of pool.metrics ({pool.metrics}).",
                "move one of them: the pool's endpoint and the replicas' need distinct ports.",
            )
        )
