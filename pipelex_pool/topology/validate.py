"""Cross-checks of a parsed topology (pure: no I/O). Every finding becomes an Issue; nothing stops early."""

from __future__ import annotations

import graphlib
import string
from datetime import timedelta

from pipelex_pool.errors import Issue, Severity
from pipelex_pool.packs import Catalog, ResolvedScope, resolve_scope
from pipelex_pool.topology.limits import default_max_replicas
from pipelex_pool.topology.schema import PoolSection, ResolvedGroup, WorkerGroup
from pipelex_pool.topology.suggest import did_you_mean
from pipelex_pool.topology.temporal_schema import BUILTIN_DEFAULT_PROFILE, TemporalSection
from pipelex_pool.topology.validate_safety import check_safety
from pipelex_pool.topology.validate_temporal import check_temporal
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
    "config_dir",  # the topology file's directory: a script beside it needs no absolute path
)
DEFAULT_WATCHDOG = timedelta(seconds=15)


def _error(path: str, problem: str, fix: str = "") -> Issue:
    return Issue(path, problem, fix)


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
        env_file=[],  # (read by load.py, which does the I/O: env_files.py)
        env_table=group.env,
        after=group.after,
        max_memory=group.max_memory,
        hand_back=group.hand_back,
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
                idle = [
                    g.name for g in groups.values() if g.task_queue == queue and activity in scopes[g.scope].activities
                ]
                if idle:  # it is registered, just by a group that runs no replica now
                    issues.append(
                        Issue(
                            f"temporal.worker_config.activity_queues.{activity}",
                            f"routes {activity} to queue {queue!r}, whose group(s) {', '.join(idle)} run 0 replicas: "
                            "runs that call it wait until the group is scaled up.",
                            f"`pipelex-pool scale {idle[0]} N` when it is needed, or set replicas >= 1.",
                            Severity.WARNING,
                        )
                    )
                    continue
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
        if result is not None and result.command is None and scopes[result.scope].empty:
            # (a command group runs its own program, whose scopes the pool does not import)
            offered = f"workflows: {', '.join(catalog.workflows) or 'none'}; "
            offered += f"activities: {', '.join(catalog.activities) or 'none'}"
            issues.append(
                _error(
                    f"workers.{name}.scope",
                    f"scope {result.scope!r} registers nothing from the app {pool.app!r} ({offered}): every replica "
                    "would exit at once.",
                    'use scope = "full" (every workflow and activity of the app), "router", "runner", or define the '
                    "scope under [temporal.worker_scopes.scopes.<name>].",
                )
            )
            result = None
        if result is not None:
            resolved[name] = result
    _check_start_order(groups, issues)
    _check_sticky_polls(temporal, resolved, issues)
    if complete and len(resolved) == len(groups):
        _check_coverage(temporal, resolved, scopes, issues)
        check_safety(temporal, resolved, scopes, issues)
        _check_long_polls(resolved, scopes, issues)
    _check_worker_metrics(pool, groups, issues)
    _check_replica_limit(pool, groups, issues)
    if pool.deployment and not pool.build_id:
        issues.append(
            _error(
                "pool.build_id",
                f"pool.deployment is {pool.deployment!r} (worker versioning) but no build_id names this code.",
                'set [pool] build_id, e.g. build_id = "${GIT_SHA}" (a variable of the environment `up` runs in).',
            )
        )
    return resolved, scopes


def _check_start_order(groups: dict[str, WorkerGroup], issues: list[Issue]) -> None:
    """`after` names groups of this file, not the group itself, and no chain of them comes back to where it began."""
    for name, group in groups.items():
        for index, other in enumerate(group.after):
            if other == name:
                where = f"workers.{name}.after[{index}]"
                issues.append(_error(where, "a group cannot start after itself.", "remove it."))
            elif other not in groups:
                issues.append(
                    _error(
                        f"workers.{name}.after[{index}]",
                        f"no group {other!r} in this file.",
                        did_you_mean(other, list(groups), f"name one of: {', '.join(sorted(groups))}."),
                    )
                )
    cycle = start_order_cycle({name: [o for o in g.after if o in groups and o != name] for name, g in groups.items()})
    if cycle:
        issues.append(
            _error(
                f"workers.{cycle[0]}.after",
                f"the start order has a cycle: {' -> '.join([*cycle, cycle[0]])} (each would wait for the next).",
                "remove one of these `after` entries.",
            )
        )


def start_order_cycle(after: dict[str, list[str]]) -> list[str] | None:
    """A cycle of `after` edges (the groups on it, in order), or None."""
    try:
        graphlib.TopologicalSorter(after).prepare()
    except graphlib.CycleError as exc:
        cycle: list[str] = exc.args[1]
        return cycle[:-1][::-1]  # graphlib lists it from the end of the edges, the first group repeated
    return None


def _check_sticky_polls(temporal: TemporalSection, groups: dict[str, ResolvedGroup], issues: list[Issue]) -> None:
    """A runtime profile temporalio refuses: a worker that caches workflows (max_cached_workflows > 0) polls both
    its sticky queue and the shared one, so it needs at least 2 workflow-task polls; with 1, building the Worker
    fails in every replica of every group with that profile (each would exit as a configuration error). Once per
    profile, naming the groups."""
    by_profile: dict[str, list[ResolvedGroup]] = {}
    for group in groups.values():
        if group.command is None:  # (a command of the user's own builds its worker itself)
            by_profile.setdefault(group.profile, []).append(group)
    profiles = temporal.worker_runtime_profiles
    for profile, members in by_profile.items():
        runtime = members[0].runtime_profile
        cached = runtime.max_cached_workflows or 0
        if cached > 0 and runtime.max_concurrent_workflow_task_polls == 1:
            own = profiles.all_profiles()[profile].max_concurrent_workflow_task_polls
            origin = "" if own is not None else f" (taken from the default profile {profiles.default_profile!r})"
            issues.append(
                _error(
                    f"temporal.worker_runtime_profiles.profiles.{profile}.max_concurrent_workflow_task_polls",
                    f"runtime profile {profile!r} (groups: {', '.join(g.name for g in members)}) has 1 workflow-task "
                    f"poll{origin} with max_cached_workflows = {cached}: temporalio refuses such a worker (one that "
                    "caches workflows polls its sticky queue and the shared one), so every replica would fail to "
                    "start.",
                    "set max_concurrent_workflow_task_polls to 2 or more, or max_cached_workflows = 0 (no "
                    "workflow cache).",
                )
            )


def most_replicas(group: WorkerGroup | ResolvedGroup) -> int:
    """The replicas a group can run at once: its count, or its autoscale max if higher."""
    return max(group.replicas, group.autoscale.max if group.autoscale else 0)


SERVER_POLL_LIMIT = 1200  # a self-hosted Temporal's concurrent long polls per namespace, frontend and poll API


def _long_polls(group: ResolvedGroup, scope: ResolvedScope) -> dict[str, int]:
    """The long polls one replica of `group` holds on Temporal at most, per kind of task: temporalio keeps its
    profile's poll count open (at most one per free slot), for workflow tasks if the scope runs workflows and for
    activity tasks if it runs activities. A group with its own command: unknown (none)."""
    if group.command is not None:
        return {}
    profile = group.runtime_profile
    polls: dict[str, int] = {}
    if scope.workflows:
        polls["workflow"] = min(
            profile.max_concurrent_workflow_task_polls or 0, profile.max_concurrent_workflow_tasks or 0
        )
    if scope.activities:
        polls["activity"] = min(profile.max_concurrent_activity_task_polls or 0, profile.max_concurrent_activities or 0)
    return polls


def _check_long_polls(groups: dict[str, ResolvedGroup], scopes: dict[str, ResolvedScope], issues: list[Issue]) -> None:
    """Every group at its most, with its profile's polls per replica, within what a server accepts by default (a
    limit per poll API: workflow-task polls and activity-task polls are counted apart)."""
    held = {name: (most_replicas(g), _long_polls(g, scopes[g.scope])) for name, g in groups.items()}
    for kind in ("workflow", "activity"):
        each = {name: (replicas, polls[kind]) for name, (replicas, polls) in held.items() if polls.get(kind)}
        total = sum(replicas * polls for replicas, polls in each.values())
        if total <= SERVER_POLL_LIMIT:
            continue
        shown = ", ".join(f"{name}: {replicas} x {polls}" for name, (replicas, polls) in each.items() if replicas)
        issues.append(
            Issue(
                "temporal.worker_runtime_profiles",
                f"the groups hold up to {total:,} {kind}-task long polls on Temporal at once ({shown}), over the "
                f"{SERVER_POLL_LIMIT:,} a self-hosted server accepts per namespace and poll API by default "
                "(frontend.namespaceCount): the polls over it are refused and retried, and the server pays for every "
                "one at each start.",
                f"lower max_concurrent_{kind}_task_polls in the groups' runtime profiles (temporalio's default is 5: "
                "a few polls keep a replica fed), or raise the server's limit.",
                Severity.WARNING,
            )
        )


def _check_replica_limit(pool: PoolSection, groups: dict[str, WorkerGroup], issues: list[Issue]) -> None:
    """Every group at its most (replicas, or its autoscale max) must fit in [pool] max_replicas."""
    limit = pool.max_replicas or default_max_replicas()
    most = {name: most_replicas(g) for name, g in groups.items()}
    if sum(most.values()) > limit:
        where = "pool.max_replicas" if pool.max_replicas else "workers"
        source = (
            "[pool] max_replicas" if pool.max_replicas else "the default max_replicas (this machine's memory / 100 MiB)"
        )
        biggest = max(most, key=lambda name: most[name])
        issues.append(
            _error(
                where,
                f"the groups ask for up to {sum(most.values())} replicas ({biggest}: {most[biggest]}), over {source}, "
                f"{limit}.",
                "ask for fewer replicas, or set [pool] max_replicas higher if this machine can hold them.",
            )
        )


def _check_worker_metrics(pool: PoolSection, groups: dict[str, WorkerGroup], issues: list[Issue]) -> None:
    """The SDK metrics port range must hold every replica that can run at once, apart from the pool's own port."""
    if pool.worker_metrics is None:
        return
    host, ports = split_port_range(pool.worker_metrics)
    # each group at its largest, plus one replacement while a rolling restart runs
    most = sum(most_replicas(g) + 1 for g in groups.values())
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
