"""The pool as `status` shows it, built from the supervisor's state."""

from __future__ import annotations

import time
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from pipelex_pool.contract import pool_of, sdk_default_identity
from pipelex_pool.control.protocol import PROTOCOL_VERSION
from pipelex_pool.control.status_doc import (
    Deployment,
    FleetWorker,
    Group,
    InflightAttempt,
    Progress,
    Queue,
    Replica,
    Status,
    TemporalWorker,
)
from pipelex_pool.supervisor import start_order
from pipelex_pool.supervisor import view as pool_view
from pipelex_pool.supervisor.desired import requests
from pipelex_pool.supervisor.fault import FAULTS
from pipelex_pool.supervisor.groups import SupervisedGroup
from pipelex_pool.supervisor.pool_state import GroupProgress, group_progress
from pipelex_pool.supervisor.process.handle import ProcessHandle
from pipelex_pool.supervisor.process.state import ProcState
from pipelex_pool.supervisor.view import PoolView, ReplicaInfo
from pipelex_pool.supervisor.watchers.queues import pollers_by_owner, served_types
from pipelex_pool.temporal.certs import connection_view
from pipelex_pool.worker.counts import TaskCounts


def _autoscale(supervisor: PoolView, group: SupervisedGroup) -> dict[str, Any] | None:
    if group.spec is None or group.spec.autoscale is None:
        return None
    state = supervisor.watch.autoscale.get(group.name)
    return {
        **group.spec.autoscale.model_dump(mode="json"),
        "desired": group.desired,
        "backlog": state.backlog if state else None,
        "decision": state.reason if state else "waiting for the first backlog reading",
    }


def group_tasks(supervisor: PoolView, group: SupervisedGroup) -> TaskCounts:
    """Counts of the group's exited processes plus what its live ones last reported."""
    total = group.tasks_history
    for handle in group.all_handles():
        info = supervisor.info.get(handle)
        if info is not None and info.tasks is not None:
            total = total + info.tasks
    return total


def _down_since(supervisor: PoolView) -> float | None:
    """When Temporal stopped answering (wall clock), by the earliest of the health check and the watch."""
    since = [supervisor.health.down_since, supervisor.watch.error_since if supervisor.watch.error else None]
    known = [moment for moment in since if moment is not None]
    return min(known) if known else None


def _polling(supervisor: PoolView, group: SupervisedGroup, handle: ProcessHandle, identity: str) -> bool | None:
    """Whether Temporal lists this replica among its queue's live pollers (None: unknown or not a worker)."""
    if group.spec is None or not identity or handle.pid is None or supervisor.watch.error or supervisor.health.error:
        return None  # not a worker, or Temporal does not answer: its last list is no news
    info = supervisor.info.get(handle)
    if info is not None and info.usage is not None and not info.usage.can_run:
        return False  # stopped or a zombie: Temporal may list its last polls for a minute or more yet
    types = served_types(supervisor, group.spec.scope)
    identities = (identity, sdk_default_identity(handle.pid))
    return supervisor.watch.polling(group.spec.task_queue, types, identities, handle.ready_at)


def _queues(supervisor: PoolView) -> dict[str, dict[str, Queue]]:
    now = datetime.now(UTC)
    queues: dict[str, dict[str, Queue]] = {}
    for (queue, queue_type), view in sorted(supervisor.watch.views.items(), key=lambda kv: (kv[0][0], kv[0][1].name)):
        owners = pollers_by_owner(supervisor, supervisor.watch.fleet, view, now)
        queues.setdefault(queue, {})[queue_type.name.lower()] = {
            "backlog": view.stats.backlog,
            "backlog_age_s": view.stats.backlog_age_s,
            "add_rate": view.stats.add_rate,
            "dispatch_rate": view.stats.dispatch_rate,
            "pool_pollers": owners.own,  # this pool's live replicas that Temporal lists as polling
            "fleet_pollers": owners.fleet,  # replicas of the fleet's other live pools
            "foreign_pollers": owners.foreign,  # anyone else polling within LIVE_WITHIN (strays, other fleets)
            "poller_age_s": {
                i: round((now - p.last_access).total_seconds(), 1) for i, p in sorted(view.pollers.items())
            },
            "seen_at": view.seen_at.isoformat() if view.seen_at else None,
            "stale": view.error,
        }
    return queues


def _inflight(info: ReplicaInfo | None) -> list[InflightAttempt]:
    """The activity attempts the replica runs now, oldest first, as it last reported them."""
    if info is None:
        return []
    now = time.time()
    return [
        {
            "activity_type": a.activity_type,
            "workflow_id": a.workflow_id,
            "activity_id": a.activity_id,
            "attempt": a.attempt,
            "age_s": round(now - a.started_at, 1),
        }
        for a in sorted(info.inflight.values(), key=lambda a: a.started_at)
    ]


def _replica(supervisor: PoolView, group: SupervisedGroup, handle: ProcessHandle, role: str) -> Replica:
    spec = group.spec
    info = supervisor.info.get(handle)
    usage = info.usage if info is not None and handle.pid is not None else None
    temporal_worker, heartbeat_stale = _heartbeat(supervisor, handle, info.identity if info else "")
    return {
        "group": group.name,
        "replica": handle.replica,
        "role": role,
        "pid": handle.pid,
        "state": handle.state.value,
        "scope": spec.scope if spec else None,
        "profile": spec.profile if spec else None,
        "queue": spec.task_queue if spec else None,
        "identity": info.identity if info else None,
        "uptime_s": pool_view.uptime(supervisor, handle),
        "restarts": handle.restarts,
        "last_exit": handle.last_exit.describe() if handle.last_exit else None,
        "reason": handle.reason or None,
        "status_text": info.status_text if info and info.status_text else None,
        "retiring_because": info.retiring_because if info and info.retiring_because else None,
        "pause": info.pause if info and info.pause and handle.state is ProcState.READY else None,
        "temporal_worker": temporal_worker,
        "heartbeat_stale": heartbeat_stale,
        "waiting_for_temporal": handle.waiting_for_temporal,
        "tasks": asdict(info.tasks) if info and info.tasks else None,
        "inflight": _inflight(info),
        "workflow_runs_cached": len(info.cached_runs) if info else 0,
        "polling": _polling(supervisor, group, handle, info.identity if info else ""),
        "build_id": info.build_id if info else None,
        "sdk_metrics": f"http://{info.sdk_metrics}/metrics"
        if info and info.sdk_metrics and handle.state.alive
        else None,
        "rss_bytes": usage.rss_bytes if usage else None,
        "cpu_percent": usage.cpu_percent if usage else None,
        "threads": usage.threads if usage else None,
        "open_fds": usage.open_fds if usage else None,
    }


def _heartbeat(supervisor: PoolView, handle: ProcessHandle, identity: str) -> tuple[TemporalWorker | None, bool]:
    """Temporal's view of the replica (its last worker heartbeat), and whether it stopped while the process runs."""
    watch = supervisor.watch
    beat = watch.heartbeats.get(identity) if identity else None
    view: TemporalWorker | None = None
    if beat is not None:
        view = {
            "status": beat.status,
            "heartbeat_age_s": round((datetime.now(UTC) - beat.heartbeat_at).total_seconds(), 1),
            "activity_slots_used": beat.activity_slots_used,
            "activity_slots_available": beat.activity_slots_available,
            "workflow_slots_used": beat.workflow_slots_used,
            "workflow_slots_available": beat.workflow_slots_available,
            "build_id": beat.build_id,
        }
    stale = False
    read_at = watch.heartbeats_read_at
    uptime = pool_view.uptime(supervisor, handle)
    if read_at is not None and handle.state is ProcState.READY and uptime is not None:
        bound = 3 * supervisor.topology.pool.worker_heartbeat.total_seconds() + 5
        running_before = uptime - (datetime.now(UTC) - read_at).total_seconds()
        silent = (read_at - beat.heartbeat_at).total_seconds() if beat else running_before
        stale = running_before > bound and silent > bound
    return view, stale


def _fleet_workers(supervisor: PoolView) -> list[FleetWorker]:
    """Every worker of the fleet's pools as Temporal's heartbeats last showed them (no channel between machines)."""
    now = datetime.now(UTC)
    return [
        {
            "pool": pool_of(beat.identity),
            "identity": beat.identity,
            "status": beat.status,
            "heartbeat_age_s": round((now - beat.heartbeat_at).total_seconds(), 1),
            "activity_slots_used": beat.activity_slots_used,
            "activity_slots_available": beat.activity_slots_available,
            "workflow_slots_used": beat.workflow_slots_used,
            "build_id": beat.build_id,
        }
        for beat in sorted(supervisor.watch.heartbeats.values(), key=lambda b: b.identity)
        if beat.status != "SHUTDOWN"
    ]


def _progress(progress: GroupProgress) -> Progress:
    """The group against what is wanted of it (pool_state.group_progress: the judgement settled and deploy use)."""
    return {
        "wanted": progress.wanted,
        "ready": len(progress.ready),
        "given_up": progress.given_up,
        "moving": progress.moving,
        "settled": progress.settled,
        "all_ready": progress.all_ready,
    }


def _deployment(supervisor: PoolView) -> Deployment | None:
    """Worker Deployment Versioning: the pool's build, Temporal's routing and versions, the deploy under way."""
    name = supervisor.topology.pool.deployment
    if name is None:
        return None
    routing, plan, deployer = supervisor.deployer.routing, supervisor.deploy, supervisor.deployer
    return {
        "name": name,
        "build_id": supervisor.build_id,
        "current": routing.current,
        "ramping": routing.ramping,
        "ramping_percentage": routing.ramping_percentage,
        "propagating": routing.propagating,  # Temporal applies the routing to the task queues: not everywhere yet
        "versions": routing.versions,
        # version hygiene ([pool.versions]): deleted lately, and those Temporal would not delete yet (and why)
        "versions_deleted": [
            {"build_id": d["build_id"], "because": d["because"], "at": d["at"]} for d in deployer.deleted
        ],
        "versions_kept": {build: why for build, (why, _) in deployer.refused.items()},
        "behavior": supervisor.topology.pool.versioning_behavior,
        "deploy": {
            "from_build": plan.from_build,
            "to_build": plan.to_build,
            "started": plan.started,
            "outcome": plan.outcome_text,
            "phase": deployer.phase.value if deployer.phase else None,
            "detail": deployer.detail,
        }
        if plan
        else None,
    }


def pool_status(supervisor: PoolView) -> Status:
    replicas: list[Replica] = []
    groups: dict[str, Group] = {}
    pool_tasks = TaskCounts()
    for group in supervisor.all_groups():
        for handle in group.handles:
            replicas.append(_replica(supervisor, group, handle, "replica"))
        if group.replacement is not None:
            replicas.append(_replica(supervisor, group, group.replacement, "replacement"))
        replicas += [_replica(supervisor, group, h, "retiring") for h in group.retiring]
        replicas += [_replica(supervisor, group, h, "parked") for h in group.parked]
        spec = group.spec
        tasks = group_tasks(supervisor, group)
        pool_tasks = pool_tasks + tasks
        groups[group.name] = {
            "tasks": asdict(tasks),
            "desired": group.desired,
            "ready": sum(h.state is ProcState.READY for h in group.handles),
            "progress": _progress(group_progress(group)),
            "stopped_by_operator": group.stopped_by_operator,
            "paused_by_operator": group.paused_by_operator,
            "reviving": group.revive,  # restart-failed asked: its FATAL replicas start as the spawn budget allows
            "after": start_order.after(group),
            "waiting_for": start_order.waiting_for(group, supervisor.groups),
            "rolling": len(group.roll_queue),
            "roll_aborted": {"reason": group.roll_aborted[0], "at": group.roll_aborted[1]}
            if group.roll_aborted
            else None,
            "restarts_total": group.restarts_total,
            "spawn_failures": group.spawn_failures,
            "handed_back": dict(group.handed_back),
            "hand_back_refused": group.hand_back_refused,
            "runs_handed_back": group.runs_handed_back,
            "hand_back_failed": group.hand_back_failed,
            "hand_back": spec.hand_back if spec else None,
            "scope": spec.scope if spec else None,
            "queue": spec.task_queue if spec else None,
            "profile": spec.profile if spec else None,
            # a built-in worker's activity slots (its profile's max_concurrent_activities): in flight / slots
            "activity_slots": spec.runtime_profile.max_concurrent_activities if spec and not spec.command else None,
            "autoscale": _autoscale(supervisor, group),
        }
    fleet = supervisor.watch.fleet
    connection = connection_view(supervisor.topology.connection)
    problem = supervisor.health.problem()
    connection_problems = [str(p) for p in _list(connection["problems"])] + ([problem] if problem else [])
    dev_state = supervisor.dev.handles[0].state.value if supervisor.dev and supervisor.dev.handles else None
    return {
        "queues": _queues(supervisor),
        "warnings": supervisor.watch.warnings() + supervisor.deployer.warnings() + connection_problems,
        # new runs routed where no live poller serves them (also among the warnings): status exits 3
        "routing_mismatches": supervisor.watch.routing_mismatches(),
        "poller_limit": supervisor.watch.poller_limit,
        "temporal_watch_error": supervisor.watch.error,
        "protocol": PROTOCOL_VERSION,
        "pool": {
            "name": supervisor.topology.pool.name,
            "topology": str(supervisor.topology.file),
            "pid": supervisor.pid,
            "since": supervisor.started_wall,
            "uptime_s": time.time() - supervisor.started_wall,
            "temporal": {
                "target_host": str(connection["address"]),
                "namespace": str(connection["namespace"]),
                "connection": connection,
                # as the health check (every second) and the watch last found it
                "answering": supervisor.health.error is None and supervisor.watch.error is None,
                "not_answering_since": _down_since(supervisor),
                "outages": supervisor.health.outages,
                "last_outage_s": round(supervisor.health.last_outage_s, 1),
            },
            "dev_server": {"managed": supervisor.dev is not None, "state": dev_state},
            "socket": str(supervisor.paths.socket),
            "log_dir": str(supervisor.paths.log_dir),
            "shutting_down": supervisor.shutting_down,
            "busy": requests.busy(supervisor.groups),
            "max_replicas": supervisor.max_replicas,
            "counts": pool_view.counts(supervisor),
            "tasks": asdict(pool_tasks),
            "faults": dict(FAULTS),
            "worker_heartbeats": {True: "read", False: "not offered by this server", None: "not read yet"}[
                supervisor.watch.heartbeats_offered
            ],
            "notify": {"delivered": supervisor.notifications.delivered, "failed": supervisor.notifications.failed}
            if supervisor.topology.pool.notify
            else None,  # caught in the supervisor's own tasks (logged with their tracebacks)
        },
        "deployment": _deployment(supervisor),
        "fleet": {
            "name": supervisor.topology.pool.fleet_name,
            "pools": {pool: sorted(hosts) for pool, hosts in sorted(fleet.pools.items())} if fleet else None,
            "seen_at": fleet.seen_at.isoformat() if fleet and fleet.seen_at else None,
            "workers": _fleet_workers(supervisor),
        },
        "groups": groups,
        "replicas": replicas,
    }


def _list(value: object) -> list[object]:
    return value if isinstance(value, list) else []
