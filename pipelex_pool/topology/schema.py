"""The topology file: `[pool]`, `[dev_server]`, `[workers.<group>]` and the Pipelex `[temporal]` section."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field, field_validator

from pipelex_pool.contract import NAME_PATTERN
from pipelex_pool.topology.temporal_schema import RuntimeProfile, WorkerScope
from pipelex_pool.topology.types import Address, Duration, PortRange, Size, StrictModel
from pipelex_pool.units import parse_duration

DEPLOYMENT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"  # Temporal joins them as "<deployment>.<build_id>": no dots
RESERVED_GROUP_NAMES = ("temporal-dev-server",)  # the embedded dev server's own slot
RestartMode = Literal["always", "on-failure", "never"]


class RestartConfig(StrictModel):
    """How failed replicas come back; `[pool.restart]` sets the defaults, a group may override any key."""

    policy: RestartMode = "on-failure"
    backoff_initial: Duration = timedelta(seconds=0.5)
    backoff_max: Duration = timedelta(seconds=30)
    backoff_factor: float = Field(default=2.0, ge=1.0)
    min_uptime: Duration = timedelta(seconds=1)
    stable_after: Duration = timedelta(seconds=30)
    max_restarts: int = Field(default=5, ge=0)
    window: Duration = timedelta(seconds=60)


class RestartOverride(StrictModel):
    policy: RestartMode | None = None
    backoff_initial: Duration | None = None
    backoff_max: Duration | None = None
    backoff_factor: float | None = Field(default=None, ge=1.0)
    min_uptime: Duration | None = None
    stable_after: Duration | None = None
    max_restarts: int | None = Field(default=None, ge=0)
    window: Duration | None = None

    def over(self, base: RestartConfig) -> RestartConfig:
        return base.model_copy(update=self.model_dump(exclude_none=True))


class PoolTls(StrictModel):
    """TLS for every connection of the pool, beside what Pipelex's server entry says (paths: relative to the file).
    Temporal's own `temporal.toml` profile and `TEMPORAL_TLS_*` variables can say the same (see connection.py)."""

    enabled: bool | None = None  # None: on when any TLS setting or an API key is given
    server_ca_cert: str | None = None  # the CA that signed the server's certificate (default: the system's roots)
    server_name: str | None = None  # the name the server's certificate holds, when it is not the address's host
    client_cert: str | None = None  # mutual TLS: the pool's client certificate (PEM, chain allowed) ...
    client_key: str | None = None  # ... and its private key


NotifyKind = Literal[
    "fatal", "crash_loop", "memory_roll", "oom_kill", "hand_back_burst", "deploy_done", "deploy_failed",
    "temporal_down", "routing_mismatch",
]  # fmt: skip
NOTIFY_KINDS: tuple[NotifyKind, ...] = (
    "fatal", "crash_loop", "memory_roll", "oom_kill", "hand_back_burst", "deploy_done", "deploy_failed",
    "temporal_down", "routing_mismatch",
)  # fmt: skip


class PoolNotify(StrictModel):
    """`[pool.notify]`: who is told when something breaks; one JSON document per event (see notify/events.py)."""

    exec: list[str] | None = None  # a program (argv), given the document on stdin
    webhook: str | None = Field(default=None, pattern=r"^https?://")  # POSTed the document (application/json)
    events: list[NotifyKind] = Field(default_factory=lambda: list(NOTIFY_KINDS))  # default: every kind
    min_interval: Duration = timedelta(seconds=60)  # per kind: more events within it are counted, sent with the next
    temporal_down_after: Duration = timedelta(seconds=60)  # Temporal not answering this long: temporal_down
    timeout: Duration = timedelta(seconds=10)  # one delivery (the program's run, the POST)
    retries: int = Field(default=3, ge=0)  # after a failed delivery: 1 s, 2 s, 4 s, ... apart

    @field_validator("exec")
    @classmethod
    def _exec(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("exec is empty; give the program and its arguments, or remove the key")
        return value


class VersionRetention(StrictModel):
    """`[pool.versions]`: which of the deployment's versions a pool deletes from Temporal once nothing needs them.

    A version is retired once no new run goes to it and no pinned run is left (Temporal: drained), or when it never
    took a run (a deploy that failed or was rolled back before it became current). A retired version no process of
    the pool runs is deleted once it has been retired for `max_age`, and at once beyond the newest `keep` retired
    ones; Temporal itself refuses while any poller (of any pool) still polls it, and lists a poller for
    matching.PollerHistoryTTL (5 min by default) after its last poll."""

    delete: bool = True  # false: never delete (the pool still warns before Temporal's limit)
    keep: int = Field(default=10, ge=0)
    max_age: Duration = timedelta(days=1)
    limit: int = Field(default=100, ge=1)  # Temporal's matching.maxVersionsInDeployment; warned at 80 %


class PoolSection(StrictModel):
    name: str = Field(default="pipelex", pattern=NAME_PATTERN)
    # pools (on several machines) serving the same queues: they see each other's workers and share autoscaling
    fleet: str | None = Field(default=None, pattern=NAME_PATTERN)
    # Temporal Worker Deployment Versioning: workers register as version <deployment>.<build_id>; `deploy` rolls
    # a new build beside the old one, makes it current, then drains the old one
    deployment: str | None = Field(default=None, pattern=DEPLOYMENT_PATTERN)
    build_id: str | None = Field(default=None, pattern=DEPLOYMENT_PATTERN)  # e.g. "${GIT_SHA}"
    versioning_behavior: Literal["pinned", "auto_upgrade"] = "pinned"  # for workflows that declare none
    app: str = "pipelex_pool.sim:packs"
    app_path: str | None = None  # where `app` is imported from first (relative to the file); default: the file's dir
    temporal_config_file: str | None = None
    # Temporal's environment configuration: the profile to load from temporal.toml (default: $TEMPORAL_PROFILE)
    temporal_profile: str | None = None
    api_key_file: str | None = None  # the API key, read from this file; re-read on change and on `reload`
    tls: PoolTls = Field(default_factory=PoolTls)
    socket: str | None = None
    state_dir: str | None = None
    log_dir: str | None = None
    log_max_bytes: Size = 10 * 2**20
    log_backups: int = Field(default=3, ge=0)
    metrics: Address | None = None  # /health and /metrics of the pool
    worker_metrics: PortRange | None = None  # each replica's Temporal SDK metrics, one port each from this range
    spawner: Literal["fork", "exec"] = "fork"  # fork built-in workers from a warm fork server, or exec each one
    preload: bool = False  # the fork server imports `app` before forking (shared copy-on-write, no import per start)
    max_replicas: int | None = Field(default=None, ge=1)  # None: sized to the machine (memory / 100 MiB)
    spawn_rate: float | None = Field(default=None, gt=0)  # starts a second at most; None: 32 per core forked, 2 exec'd
    spawn_batch: int | None = Field(default=None, ge=1)  # starts in one loop iteration at most; None: one per core
    # an attempt Temporal says runs on a live replica that does not know of it for this long is handed back (0: off)
    stuck_attempt_after: Duration = timedelta(seconds=60)
    restart: RestartConfig = Field(default_factory=RestartConfig)
    notify: PoolNotify | None = None
    versions: VersionRetention = Field(default_factory=VersionRetention)
    # each built-in worker's heartbeat to Temporal (its status, slots, pollers; `temporal worker list`, and the
    # pool's view of its replicas): Temporal's SDK default, 1 s to 60 s
    worker_heartbeat: Duration = Field(default=timedelta(seconds=60), ge=timedelta(seconds=1), le=timedelta(seconds=60))

    @property
    def fleet_name(self) -> str:
        """The pool's fleet: `fleet`, or the pool's own name (a fleet of one)."""
        return self.fleet or self.name


class DevServer(StrictModel):
    """The embedded default: a local `temporal server start-dev`, supervised like a worker."""

    enabled: bool | Literal["auto"] = "auto"
    ui_port: int | None = Field(default=None, ge=0, le=65535)  # None: no web UI (headless)
    db_filename: str | None = None  # default: <state_dir>/temporal.db
    log_level: Literal["debug", "info", "warn", "error"] = "warn"
    start_timeout: Duration = timedelta(seconds=30)


class Autoscale(StrictModel):
    min: int = Field(ge=0)
    max: int = Field(ge=1)
    target_backlog_per_replica: int = Field(gt=0)
    cooldown: Duration = timedelta(seconds=60)
    # a scale-down retires idle replicas (no attempt in flight) only; a busy one it would retire finishes its
    # attempts first, for this long at most (then it is drained as any stop: graceful_shutdown_timeout, hand-back)
    busy_wait: Duration = timedelta(minutes=10)


Readiness = str  # "notify" | "temporal" | "delay:<duration>"


class WorkerGroup(StrictModel):
    scope: str | None = None
    task_queue: str | None = None
    profile: str | None = None
    replicas: int = Field(default=1, ge=0)
    env: dict[str, str] = Field(default_factory=dict)
    # dotenv files (relative to the topology file), read at `up` and at each `reload`; `env` wins over them
    env_file: list[str] = Field(default_factory=list)
    # groups that must be READY (polling) before this one starts; `down` stops this one before them
    after: list[str] = Field(default_factory=list)
    max_memory: Size | None = None
    hand_back: bool = True  # a dead replica's in-flight activity attempts are failed at once, for Temporal to retry
    command: list[str] | None = None
    readiness: Readiness | None = None
    start_timeout: Duration = timedelta(seconds=60)
    # notify readiness: no WATCHDOG=1 for this long -> killed and restarted; "0s" turns it off. Default: 15 s
    # for the built-in worker (which pings), off for a command (which may not).
    watchdog: Duration | None = None
    autoscale: Autoscale | None = None
    restart: RestartOverride | None = None

    @field_validator("readiness")
    @classmethod
    def _readiness(cls, value: str | None) -> str | None:
        if value is None or value in ("notify", "temporal"):
            return value
        if value.startswith("delay:"):
            parse_duration(value.removeprefix("delay:"))
            return value
        raise ValueError(f'{value!r} is not a readiness mode; use "notify", "temporal" or "delay:<duration>"')

    @field_validator("command")
    @classmethod
    def _command(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("command is empty; give the program and its arguments, or remove the key")
        return value


class ResolvedGroup(StrictModel):
    """A worker group with every default applied: what the supervisor runs."""

    name: str
    scope: str
    task_queue: str
    profile: str
    replicas: int
    env: dict[str, str]  # what the replicas get: the env files' variables, then the group's `env` table
    env_file: list[str]  # absolute paths (exports name them instead of copying secrets into a manifest)
    env_table: dict[str, str]  # the group's own `env` table, alone
    after: list[str]
    max_memory: int | None
    hand_back: bool
    command: list[str] | None
    readiness: str
    start_timeout: timedelta
    watchdog: timedelta | None
    autoscale: Autoscale | None
    restart: RestartConfig
    runtime_profile: RuntimeProfile
    scope_def: WorkerScope

    @property
    def graceful_shutdown_timeout(self) -> timedelta:
        return self.runtime_profile.graceful_shutdown_timeout or timedelta(0)
