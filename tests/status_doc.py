"""Status documents built by hand for the pure tests, complete and typed (control/status_doc.py): a field renamed
there fails these at type-check time, and an override naming a field the document does not have fails at once."""

from __future__ import annotations

from typing import Any, cast

from pipelex_pool.control.status_doc import Deploy, Deployment, Group, Queue, Replica, Status


def _with(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    unknown = set(changes) - set(base)
    assert not unknown, f"not a field of the status document: {sorted(unknown)}"
    return {**base, **changes}


def replica(group: str, n: int, state: str, pid: int | None, role: str = "replica", **changes: Any) -> Replica:
    base: Replica = {
        "group": group, "replica": n, "role": role, "pid": pid, "state": state, "scope": None, "profile": None,
        "queue": None, "identity": None, "uptime_s": None, "restarts": 0, "last_exit": None, "reason": None,
        "status_text": None, "retiring_because": None, "pause": None, "temporal_worker": None,
        "heartbeat_stale": False, "waiting_for_temporal": False, "tasks": None, "inflight": [],
        "workflow_runs_cached": 0, "polling": None, "build_id": None, "sdk_metrics": None, "rss_bytes": None,
        "cpu_percent": None, "threads": None, "open_fds": None,
    }  # fmt: skip
    return cast(Replica, _with(dict(base), changes))


def group(desired: int = 2, **changes: Any) -> Group:
    base: Group = {
        "tasks": {}, "desired": desired, "ready": 0,
        "progress": {"wanted": desired, "ready": 0, "given_up": 0, "moving": 0, "settled": False, "all_ready": False},
        "stopped_by_operator": False, "paused_by_operator": False, "reviving": False, "after": [], "waiting_for": [],
        "rolling": 0, "roll_aborted": None, "restarts_total": 0, "spawn_failures": 0, "handed_back": {},
        "hand_back_refused": 0, "runs_handed_back": 0, "hand_back_failed": 0, "hand_back": None, "scope": None,
        "queue": None, "profile": None, "activity_slots": None, "autoscale": None,
    }  # fmt: skip
    return cast(Group, _with(dict(base), changes))


def queue(backlog: int = 0, **changes: Any) -> Queue:
    base: Queue = {
        "backlog": backlog, "backlog_age_s": 0.0, "add_rate": 0.0, "dispatch_rate": 0.0, "pool_pollers": [],
        "fleet_pollers": [], "foreign_pollers": [], "poller_age_s": {}, "seen_at": None, "stale": None,
    }  # fmt: skip
    return cast(Queue, _with(dict(base), changes))


def status(
    replicas: list[Replica], groups: dict[str, Group], queues: dict[str, dict[str, Queue]] | None = None
) -> Status:
    """A pool's answer with these replicas, groups and queues (the rest: an idle pool's)."""
    return {
        "queues": queues or {}, "warnings": [], "routing_mismatches": [], "poller_limit": None,
        "temporal_watch_error": None, "protocol": 1,
        "pool": {
            "name": "pool", "topology": "topology.toml", "pid": 1, "since": 0.0, "uptime_s": 0.0,
            "temporal": {"target_host": "127.0.0.1:7233", "namespace": "default", "connection": {}, "answering": True,
                         "not_answering_since": None, "outages": 0, "last_outage_s": 0.0},
            "dev_server": {"managed": False, "state": None}, "socket": "pool.sock", "log_dir": "logs",
            "shutting_down": False, "busy": None, "max_replicas": 64, "counts": {}, "tasks": {}, "faults": {},
            "worker_heartbeats": "read", "notify": None,
        },
        "deployment": None,
        "fleet": {"name": "pool", "pools": None, "seen_at": None, "workers": []},
        "groups": groups,
        "replicas": replicas,
    }  # fmt: skip


# -- reading a pool's answer in the tests: what may be absent, asserted present -----------------------------------


def pid(row: Replica) -> int:
    """The replica's process id (it has one: the test looks at a running replica)."""
    assert row["pid"] is not None, row
    return row["pid"]


def text(value: str | None) -> str:
    assert value is not None
    return value


def deployment(status: Status) -> Deployment:
    assert status["deployment"] is not None, "the pool is not versioned ([pool] deployment)"
    return status["deployment"]


def current(status: Status) -> str | None:
    """The build Temporal routes new runs to, as the pool last read it (None: unversioned, or none yet)."""
    return status["deployment"]["current"] if status["deployment"] else None


def deploy(status: Status) -> Deploy | None:
    """The deploy under way or last done (None: none on this pool since it started)."""
    return status["deployment"]["deploy"] if status["deployment"] else None


def phase(status: Status) -> str | None:
    plan = deploy(status)
    return plan["phase"] if plan else None


def queue_of(status: Status, name: str, kind: str = "activity") -> Queue | None:
    """What the watch last saw of a task queue (None: not described yet)."""
    return status["queues"].get(name, {}).get(kind)
