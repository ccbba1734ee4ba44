"""The status document (`pipelex-pool status --json`, the control protocol's `status` answer), typed: one
definition that the producer (status.py) builds and mypy checks, and that the renderers, `--wait`, the progress
stream and the test suite read. A field renamed here breaks, at type-check time, every reader that still uses the
old name. JSON-shaped: only str, int, float, bool, None, lists and dicts of them.

Versioning: `protocol` (control/protocol.py) changes when a field is removed or changes meaning; a new field is
added without a change (readers ignore what they do not know)."""

from __future__ import annotations

from typing import Any, TypedDict


class InflightAttempt(TypedDict):
    activity_type: str
    workflow_id: str
    activity_id: str
    attempt: int
    age_s: float


class TemporalWorker(TypedDict):
    """A replica's last worker heartbeat, as Temporal's ListWorkers gave it."""

    status: str
    heartbeat_age_s: float
    activity_slots_used: int
    activity_slots_available: int
    workflow_slots_used: int
    workflow_slots_available: int
    build_id: str | None


class Replica(TypedDict):
    """One process of a group: in its slot (role "replica"), a rolling restart's "replacement", "retiring" (a
    scale-down drains it) or "parked" (a deploy's old build, kept for its pinned runs)."""

    group: str
    replica: int
    role: str
    pid: int | None
    state: str  # ProcState's value: STOPPED, STARTING, READY, BACKOFF, STOPPING, EXITED, FATAL
    scope: str | None
    profile: str | None
    queue: str | None
    identity: str | None
    uptime_s: float | None
    restarts: int
    last_exit: str | None
    reason: str | None
    status_text: str | None
    retiring_because: str | None
    pause: str | None  # "pausing", "paused" or None (polling)
    temporal_worker: TemporalWorker | None
    heartbeat_stale: bool
    waiting_for_temporal: bool
    tasks: dict[str, Any] | None  # worker.accounting.TaskCounts, as a dict
    inflight: list[InflightAttempt]
    workflow_runs_cached: int
    polling: bool | None
    build_id: str | None
    sdk_metrics: str | None
    rss_bytes: int | None
    cpu_percent: float | None
    threads: int | None
    open_fds: int | None


class Progress(TypedDict):
    """pool_state.group_progress: the one judgement of a group against what is wanted of it."""

    wanted: int
    ready: int
    given_up: int
    moving: int
    settled: bool
    all_ready: bool


class RollAborted(TypedDict):
    reason: str
    at: float


class Group(TypedDict):
    tasks: dict[str, Any]
    desired: int
    ready: int
    progress: Progress
    stopped_by_operator: bool
    paused_by_operator: bool
    reviving: bool
    after: list[str]
    waiting_for: list[str]
    rolling: int
    roll_aborted: RollAborted | None
    restarts_total: int
    spawn_failures: int
    handed_back: dict[str, int]
    hand_back_refused: int
    runs_handed_back: int
    hand_back_failed: int
    hand_back: bool | None
    scope: str | None
    queue: str | None
    profile: str | None
    activity_slots: int | None
    autoscale: dict[str, Any] | None


class Queue(TypedDict):
    """One task queue and type as the pool's watch last described it."""

    backlog: int
    backlog_age_s: float
    add_rate: float
    dispatch_rate: float
    pool_pollers: list[str]
    fleet_pollers: list[str]
    foreign_pollers: list[str]
    poller_age_s: dict[str, float]
    seen_at: str | None
    stale: str | None


class TemporalView(TypedDict):
    target_host: str
    namespace: str
    connection: dict[str, Any]
    answering: bool
    not_answering_since: float | None
    outages: int
    last_outage_s: float


class DevServer(TypedDict):
    managed: bool
    state: str | None


class Notify(TypedDict):
    delivered: int
    failed: int


class PoolInfo(TypedDict):
    name: str
    topology: str
    pid: int
    since: float
    uptime_s: float
    temporal: TemporalView
    dev_server: DevServer
    socket: str
    log_dir: str
    shutting_down: bool
    busy: str | None
    max_replicas: int
    counts: dict[str, int]
    tasks: dict[str, Any]
    faults: dict[str, int]
    worker_heartbeats: str
    notify: Notify | None


class Deploy(TypedDict):
    from_build: str | None
    to_build: str
    started: float
    outcome: str | None  # None while it runs
    phase: str | None
    detail: str


class DeletedVersion(TypedDict):
    build_id: str
    because: str
    at: str


class Deployment(TypedDict):
    name: str
    build_id: str | None
    current: str | None
    ramping: str | None
    ramping_percentage: float
    propagating: bool
    versions: dict[str, dict[str, Any]]
    versions_deleted: list[DeletedVersion]
    versions_kept: dict[str, str]
    behavior: str
    deploy: Deploy | None


class FleetWorker(TypedDict):
    pool: str
    identity: str
    status: str
    heartbeat_age_s: float
    activity_slots_used: int
    activity_slots_available: int
    workflow_slots_used: int
    build_id: str | None


class Fleet(TypedDict):
    name: str
    pools: dict[str, list[str]] | None  # None: not described yet
    seen_at: str | None
    workers: list[FleetWorker]


class Status(TypedDict):
    queues: dict[str, dict[str, Queue]]  # queue -> "activity" / "workflow" -> what Temporal showed
    warnings: list[str]
    routing_mismatches: list[str]
    poller_limit: str | None
    temporal_watch_error: str | None
    protocol: int
    pool: PoolInfo
    deployment: Deployment | None
    fleet: Fleet
    groups: dict[str, Group]
    replicas: list[Replica]
