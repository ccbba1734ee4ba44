"""The read-only state of the pool (PoolState), the replica facts beside each state machine (ReplicaInfo), and
the pure judgements made on them (settled, summary, counts). Imports no watcher: watchers read this, and
view.py adds the watchers on top for status, /health and /metrics."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from pipelex_pool.supervisor.desired.requests import DeployPlan
from pipelex_pool.supervisor.groups import SupervisedGroup
from pipelex_pool.supervisor.process.handle import ProcessHandle
from pipelex_pool.supervisor.process.state import ProcState
from pipelex_pool.supervisor.process.usage import Usage
from pipelex_pool.topology.load import Topology
from pipelex_pool.worker.counts import TaskCounts
from pipelex_pool.worker.inflight import Attempt

if TYPE_CHECKING:
    from pipelex_pool.paths import PoolPaths


@dataclass
class ReplicaInfo:
    """What the loop knows about a replica beyond its state machine (for status)."""

    identity: str = ""
    status_text: str = ""
    tasks: TaskCounts | None = None  # the process's own counts, as it last reported them
    usage: Usage | None = None
    sdk_metrics_given: str | None = None  # "host:port" given to the process for the SDK's metrics
    sdk_metrics: str | None = None  # "host:port" the process reported serving them on
    inflight: dict[int, Attempt] = field(default_factory=dict)  # activity attempts it runs now, as it reported them
    cached_runs: set[tuple[str, str]] = field(default_factory=set)  # (workflow_id, run_id) in its workflow cache
    build_id: str | None = None  # the build the process was started on (Worker Deployment Versioning)
    retiring_because: str = ""  # why a scale-down chose it (status)
    pause: str = ""  # as the worker last reported: "pausing", "paused", or "" (polling)
    pause_asked: bool = False  # the pause (True) or resume (False) the loop last signalled to this process


class PoolState(Protocol):
    """The supervisor's processes and desired state, read-only: what the watchers read (they are parts of the
    fuller PoolView, so they see the pool without its watchers)."""

    @property
    def topology(self) -> Topology: ...
    @property
    def paths(self) -> PoolPaths: ...
    @property
    def pid(self) -> int: ...
    @property
    def started_wall(self) -> float: ...
    @property
    def shutting_down(self) -> bool: ...
    @property
    def max_replicas(self) -> int: ...
    @property
    def groups(self) -> Mapping[str, SupervisedGroup]: ...
    @property
    def dev(self) -> SupervisedGroup | None: ...
    @property
    def info(self) -> Mapping[ProcessHandle, ReplicaInfo]: ...
    @property
    def exited_identities(self) -> Mapping[str, float]: ...
    @property
    def build_id(self) -> str | None: ...
    @property
    def deploy(self) -> DeployPlan | None: ...
    @property
    def clock(self) -> Callable[[], float]: ...

    def all_groups(self) -> list[SupervisedGroup]: ...
    def handles(self) -> list[ProcessHandle]: ...


def uptime(supervisor: PoolState, handle: ProcessHandle) -> float | None:
    if handle.state is not ProcState.READY or handle.ready_at is None or handle.started_at is None:
        return None
    return max(0.0, supervisor.clock() - handle.started_at)


def temporal_expected_down(supervisor: PoolState) -> bool:
    """Whether Temporal not answering is part of a normal start or stop: the pool's own dev server is not up yet,
    or the pool is shutting down (it stops the dev server last)."""
    dev = supervisor.dev
    return supervisor.shutting_down or (dev is not None and not any(h.state is ProcState.READY for h in dev.handles))


@dataclass(frozen=True)
class GroupProgress:
    """Where a group stands against what is wanted of it: the one judgement of "done" that `settled` (systemd's
    READY=1, the loop's idle pace), the deploy controller and status (`groups.G.progress`, read by --wait's
    failure text and the tests) share."""

    wanted: int  # replicas wanted (0 for a group stopped by the operator or removed)
    ready: tuple[ProcessHandle, ...]  # wanted slots whose process is READY
    given_up: int  # wanted slots FATAL or EXITED (restart-failed brings them back)
    moving: bool  # a roll, a replacement or a slot not started yet: not done whatever the states

    @property
    def settled(self) -> bool:
        """Every wanted replica READY or given up on, nothing moving."""
        return not self.moving and len(self.ready) + self.given_up == self.wanted

    @property
    def all_ready(self) -> bool:
        """Every wanted replica READY, nothing moving."""
        return not self.moving and len(self.ready) == self.wanted


def group_progress(group: SupervisedGroup) -> GroupProgress:
    if group.stopped_by_operator or group.removed:
        return GroupProgress(0, (), 0, False)
    wanted = group.handles[: group.desired]
    moving = bool(group.roll_queue) or group.replacement is not None or len(group.handles) < group.desired
    ready = tuple(h for h in wanted if h.state is ProcState.READY)
    given_up = sum(h.state in (ProcState.FATAL, ProcState.EXITED) for h in wanted)
    return GroupProgress(group.desired, ready, given_up, moving)


def settled(supervisor: PoolState) -> bool:
    """Every wanted replica is READY or given up on (FATAL/EXITED), and nothing is being rolled."""
    if temporal_expected_down(supervisor):
        return False
    return all(group_progress(group).settled for group in supervisor.groups.values())


def summary(supervisor: PoolState) -> str:
    """One line for systemd's STATUS=, e.g. "7/8 ready, 1 fatal"."""
    wanted = sum(0 if g.stopped_by_operator else g.desired for g in supervisor.groups.values())
    states = [h.state for g in supervisor.groups.values() for h in g.handles]
    parts = [f"{states.count(ProcState.READY)}/{wanted} ready"]
    for state in (ProcState.FATAL, ProcState.BACKOFF, ProcState.STARTING):
        if states.count(state):
            parts.append(f"{states.count(state)} {state.value.lower()}")
    if supervisor.shutting_down:
        parts.append("stopping")
    return ", ".join(parts)


def counts(supervisor: PoolState) -> dict[str, int]:
    states = [h.state for g in supervisor.groups.values() for h in g.handles]
    return {state.value: states.count(state) for state in ProcState if state in states}
