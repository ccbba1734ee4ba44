"""What the supervisor and its workers agree on, written once: environment variables, the notify keys a pool
worker adds to sd_notify's, and the identity format with its pid token.

The worker side reads these names; the supervisor side sets them. Nothing else may spell them."""

from __future__ import annotations

import socket

# -- environment a replica is started with -------------------------------------------------------------------------
CONFIG_ENV = "PIPELEX_POOL_CONFIG"  # the topology file (or pipelex.toml) the worker reads
GROUP_ENV = "PIPELEX_POOL_GROUP"
REPLICA_ENV = "PIPELEX_POOL_REPLICA"
IDENTITY_ENV = "PIPELEX_POOL_IDENTITY"  # the Temporal identity, possibly holding PID_TOKEN
SUPERVISOR_PID_ENV = "PIPELEX_POOL_SUPERVISOR_PID"  # the parent-death check compares with this pid, not getppid()
SDK_METRICS_ENV = "PIPELEX_POOL_SDK_METRICS"  # "host:port" for the Temporal SDK's Prometheus metrics
NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"  # sd_notify: the replica's own datagram socket
WATCHDOG_USEC_ENV = "WATCHDOG_USEC"  # sd_notify: the allowed gap between WATCHDOG=1, in microseconds
# a file the worker keeps for probes where no supervisor listens (Kubernetes): "ready" once polling, "draining"
# after SIGTERM, touched every HEALTH_TOUCH_S while the worker runs (`pipelex-pool probe` reads it)
HEALTH_FILE_ENV = "PIPELEX_POOL_HEALTH_FILE"
BUILD_ID_ENV = "PIPELEX_POOL_BUILD_ID"  # the build (Worker Deployment Version) a versioned worker registers as
HEALTH_TOUCH_S = 5.0
# "1": the supervisor looks for the worker among its queue's pollers (one watcher for every starting replica), so the
# worker says POLLING_KEY=1 once its Worker polls instead of describing the queue itself until it sees itself
LISTED_BY_POOL_ENV = "PIPELEX_POOL_LISTS_POLLERS"

# -- notify keys a pool worker adds to the standard ones (READY, STATUS, WATCHDOG, STOPPING) ------------------------
TASKS_KEY = "X_PIPELEX_TASKS"  # JSON task counts (worker/counts.py)
SDK_METRICS_KEY = "X_PIPELEX_SDK_METRICS"  # "host:port" where the worker serves the SDK's metrics
INFLIGHT_KEY = "X_PIPELEX_INFLIGHT"  # JSON: activity attempts started / finished (worker/inflight.py)
# why it cannot reach Temporal yet (it keeps trying: an outage is not a failure); empty once it has reached it
WAITING_KEY = "X_PIPELEX_WAITING_FOR_TEMPORAL"
RUNS_KEY = "X_PIPELEX_RUNS"  # JSON: workflow runs cached / evicted (worker/cached_runs.py)
# pause: "pausing" (no new task; in-flight ones finishing), "paused" (idle, warm), "" (polling again)
PAUSE_KEY = "X_PIPELEX_PAUSE"
POLLING_KEY = "X_PIPELEX_POLLING"  # "1": its Worker polls; READY once Temporal lists it (LISTED_BY_POOL_ENV)

# -- pause and resume of a built-in worker: the process stays, its temporalio Worker stops polling ----------------
PAUSE_SIGNAL = "SIGUSR1"  # stop taking tasks: the Worker shuts down (in-flight ones finish), the process stays
RESUME_SIGNAL = "SIGUSR2"  # poll again: a new Worker on the same client, runtime and imported code
START_PAUSED_ENV = "PIPELEX_POOL_START_PAUSED"  # "1": a replica started while its group is paused waits, warm

# -- what the pool tells Temporal ----------------------------------------------------------------------------------
HAND_BACK_FAILURE_TYPE = "WorkerProcessDied"  # the failure type of an attempt the pool handed back

# -- names: a pool's name is part of identities, socket and state paths; a group's of file names too ---------------
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
GROUP_NAME_PATTERN = r"^[A-Za-z0-9_-]+$"

# -- identity --------------------------------------------------------------------------------------------------------
PID_TOKEN = "__PID__"  # replaced by the process's pid once known (pdeathsig wrapper, fork server, worker)


def identity_for(pool: str, group: str, replica: int | str, pid: int | str = PID_TOKEN) -> str:
    """`<pool>/<group>/<replica>@<host>:<pid>`: what Temporal's tools show for a pool worker."""
    return f"{pool}/{group}/{replica}@{socket.gethostname()}:{pid}"


def sdk_default_identity(pid: int, host: str | None = None) -> str:
    """temporalio's identity for a worker given none, `<pid>@<host>` (this host unless given): a command worker that
    keeps it is still recognised as the replica with that pid."""
    return f"{pid}@{host or socket.gethostname()}"


def pool_of(identity: str) -> str:
    """The pool part of a pool identity (`<pool>/<group>/<n>@host:pid`, `<pool>/supervisor@host:pid`)."""
    return identity.partition("/")[0]


def host_of(identity: str) -> str:
    """The host part of an identity (`...@host:pid`), "?" when it has none."""
    return identity.rpartition("@")[2].rpartition(":")[0] or "?"


def with_pid(identity: str, pid: int) -> str:
    return identity.replace(PID_TOKEN, str(pid))


EVENTS_LOG = "supervisor.log"  # the supervisor's own events, JSON lines, in its log directory (`pipelex-pool events`)
