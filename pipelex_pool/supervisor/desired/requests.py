"""Requests: every change of desired state is one of these events, put on the reconcile loop's stream.

Control commands, signals, the autoscaler and the memory watcher build a request and submit it; the loop applies
the requests that arrived at one point of each iteration with `apply` (README, Architecture, "One writer").
`apply` does no I/O and touches no process: it changes what the pool should look like and answers; the rest of
the iteration makes the processes follow."""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from pipelex_pool.errors import ErrorCode, RequestRefused
from pipelex_pool.supervisor.desired.reload_plan import RunningGroup, plan_reload
from pipelex_pool.supervisor.groups import ParkedFate, SupervisedGroup, worker_group
from pipelex_pool.supervisor.process.state import ProcState
from pipelex_pool.topology.load import Topology

log = structlog.get_logger("pipelex_pool.supervisor")


@dataclass(frozen=True)
class RestartFailed:
    """restart-failed: every FATAL replica starts again, its crash history and restart count reset."""


@dataclass(frozen=True)
class Restart:
    """restart GROUP...: a rolling restart of each group (all groups when empty)."""

    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class SetStopped:
    """stop GROUP / start GROUP: drain the group and keep it down (across reloads), or bring it back."""

    group: str
    stopped: bool


@dataclass(frozen=True)
class SetPaused:
    """pause GROUP / resume GROUP: its built-in workers stop taking tasks and stay (warm), or poll again."""

    group: str
    paused: bool


@dataclass(frozen=True)
class Scale:
    """scale GROUP N (by the operator) or an autoscaling decision (`by_autoscaler`)."""

    group: str
    replicas: int
    by_autoscaler: bool = False
    reason: str = ""


@dataclass(frozen=True)
class Reload:
    """A validated topology to run from now on (reload command or SIGHUP; the file was read off the loop)."""

    topology: Topology


@dataclass(frozen=True)
class RollReplica:
    """Replace one replica by a rolling restart (max_memory): only if `pid` still runs in that slot."""

    group: str
    replica: int
    pid: int
    reason: str


@dataclass(frozen=True)
class Shutdown:
    """down, SIGTERM or SIGINT: drain everything, the dev server last, then exit."""

    reason: str


@dataclass(frozen=True)
class Deploy:
    """deploy --build-id B: roll every group onto build B beside the old build's processes, which keep serving
    (parked) until the deploy controller releases them."""

    build_id: str
    ramp: tuple[int, ...] = ()  # percentages of new runs sent to B before it becomes current (100 at the end)
    pause_s: float = 60.0  # between ramp steps
    fleet_timeout_s: float = 1800.0  # how long to wait for every pool of the fleet to run the new build


@dataclass(frozen=True)
class ReleaseParked:
    """From the deploy controller after a rollback: the rolled-back build has drained; its parked processes go."""


@dataclass(frozen=True)
class EndDeploy:
    """From the deploy controller: the new build is current and the old one may go (`failed` is None: its parked
    processes drain), or the deploy failed (`failed` says why: the old processes take their slots back, the new
    ones drain)."""

    failed: str | None = None
    rolled_back: bool = False  # a rollback: the old build is current again, its processes take their slots back


class DeployOutcome(enum.Enum):
    DONE = "done"  # the new build current, the old one's processes let go
    ROLLED_BACK = "rolled back"  # the old build current again (this pool's `deploy --build-id <old>`, or the fleet's)
    FAILED = "failed"  # the new build never became current; the old processes took their slots back


@dataclass
class DeployPlan:
    """The deploy in progress or last done: desired state, written by `apply` alone."""

    from_build: str | None
    to_build: str
    ramp: tuple[int, ...]
    pause_s: float
    started: float  # wall clock
    fleet_timeout_s: float = 1800.0
    outcome: DeployOutcome | None = None  # None while in progress
    failure: str = ""  # why it failed (FAILED)
    rollback_requested: bool = False  # `deploy --build-id <from_build>` while in progress: back at once

    @property
    def outcome_text(self) -> str | None:
        """What status says: "done", "rolled back to A", "failed: <why>"; None while in progress."""
        if self.outcome is DeployOutcome.ROLLED_BACK:
            return f"rolled back to {self.from_build}"
        if self.outcome is DeployOutcome.FAILED:
            return f"failed: {self.failure}"
        return self.outcome.value if self.outcome else None


Request = (
    RestartFailed
    | Restart
    | SetStopped
    | SetPaused
    | Scale
    | Reload
    | RollReplica
    | Shutdown
    | Deploy
    | EndDeploy
    | ReleaseParked
)


class DesiredState(Protocol):
    """What `apply` reads and writes: the supervisor, seen as its desired state."""

    topology: Topology
    groups: dict[str, SupervisedGroup]
    shutting_down: bool
    max_replicas: int
    build_id: str | None  # the build new processes run (Worker Deployment Versioning)
    deploy: DeployPlan | None


@dataclass
class Applied:
    """The answer for the requester, and what the loop must do besides converging."""

    answer: Any = None
    refresh_spawner: bool = False  # new code must run: retire anything the spawner keeps warm
    reloading: bool = False  # tell systemd RELOADING=1 until the pool has settled again
    shutdown_started: bool = False


def apply(state: DesiredState, request: Request) -> Applied:
    """Apply one request to the desired state; raises RequestRefused (desired state untouched) if it cannot be."""
    if isinstance(request, Shutdown):
        started = not state.shutting_down
        state.shutting_down = True
        return Applied({"stopping": True}, shutdown_started=started)
    if state.shutting_down:
        raise RequestRefused(ErrorCode.STOPPING, "the pool is shutting down")
    if isinstance(request, RestartFailed):
        return Applied({"revived": _restart_failed(state)})
    if isinstance(request, Restart):
        return _restart(state, request)
    if isinstance(request, SetStopped):
        group = _group(state, request.group)
        if request.stopped:
            _refuse_if_busy(state, [group.name])
        group.stopped_by_operator = request.stopped
        return Applied({"stopped" if request.stopped else "started": group.name})
    if isinstance(request, SetPaused):
        return _set_paused(state, request)
    if isinstance(request, Scale):
        return _scale(state, request)
    if isinstance(request, Reload):
        return _reload(state, request.topology)
    if isinstance(request, Deploy):
        return _deploy(state, request)
    if isinstance(request, EndDeploy):
        return _end_deploy(state, request)
    if isinstance(request, ReleaseParked):
        for group in state.groups.values():
            group.parked_fate = ParkedFate.RELEASE
        return Applied({"released": True})
    return _roll_replica(state, request)


def _group(state: DesiredState, name: str) -> SupervisedGroup:
    group = state.groups.get(name)
    if group is None or group.removed:
        known = ", ".join(sorted(n for n, g in state.groups.items() if not g.removed))
        raise RequestRefused(ErrorCode.UNKNOWN_GROUP, f"no group {name!r} in this pool (groups: {known})")
    return group


def busy(groups: Mapping[str, SupervisedGroup], names: list[str] | None = None) -> str | None:
    """What in-progress operation a new mutating request would conflict with, if any."""
    for group in groups.values():
        if group.park_old or group.parked:
            return "a deploy is in progress (the old build's processes serve until the new build is current)"
        if (names is None or group.name in names) and (group.roll_queue or group.replacement):
            left = len(group.roll_queue)
            return f"a rolling restart of group {group.name!r} is in progress ({left} replica(s) left)"
    return None


def _refuse_if_busy(state: DesiredState, names: list[str] | None = None) -> None:
    conflict = busy(state.groups, names)
    if conflict:
        raise RequestRefused(
            ErrorCode.BUSY, f"{conflict}; wait for it to finish (see `pipelex-pool status`) and try again"
        )


def _set_paused(state: DesiredState, request: SetPaused) -> Applied:
    group = _group(state, request.group)
    if request.paused and group.spec is not None and group.spec.command is not None:
        raise RequestRefused(
            ErrorCode.BAD_ARGS,
            f"group {group.name!r} runs a command of yours ({group.spec.command[0]}), which the pool cannot tell to "
            f"stop polling: only built-in workers pause; use `pipelex-pool stop {group.name}` to drain it",
        )
    if request.paused and (group.stopped_by_operator or group.park_old or group.parked):
        raise RequestRefused(
            ErrorCode.BUSY,
            f"group {group.name!r} is stopped or mid-deploy; pause it once it runs (`pipelex-pool status`)",
        )
    group.paused_by_operator = request.paused
    return Applied({"paused" if request.paused else "resumed": group.name})


def _restart_failed(state: DesiredState) -> list[str]:
    fatal = []
    for group in state.groups.values():
        names = [h.name for h in group.handles if h.state is ProcState.FATAL]
        group.revive = group.revive or bool(names)
        fatal += names
    return fatal


def _restart(state: DesiredState, request: Restart) -> Applied:
    names = list(request.groups) or [n for n, g in state.groups.items() if not g.removed]
    groups = [_group(state, name) for name in names]
    _refuse_if_busy(state)
    for group in groups:
        group.roll_queue = list(range(len(group.handles)))
    # replacements run the code installed now, not what a warm spawner imported
    return Applied({"rolling": names}, refresh_spawner=True)


def pool_replicas(groups: Mapping[str, SupervisedGroup], override: tuple[str, int] | None = None) -> int:
    """The replicas the pool is asked to run (a group's `desired`, or `override` for one group)."""
    total = 0
    for name, group in groups.items():
        if group.removed:
            continue
        total += override[1] if override is not None and override[0] == name else group.desired
    return total


def _scale(state: DesiredState, request: Scale) -> Applied:
    group = _group(state, request.group)
    spec = group.spec
    if request.by_autoscaler:
        if group.stopped_by_operator or busy(state.groups, [group.name]):  # one change at a time
            return Applied({"group": group.name, "replicas": group.desired, "applied": False})
    else:
        if spec is not None and spec.autoscale is not None:
            raise RequestRefused(
                ErrorCode.AUTOSCALED,
                f"group {group.name!r} is autoscaled ({spec.autoscale.min}..{spec.autoscale.max}); "
                f"change [workers.{group.name}.autoscale] min/max and reload instead",
            )
        _refuse_if_busy(state, [group.name])
    total = pool_replicas(state.groups, (group.name, request.replicas))
    if request.replicas > group.desired and total > state.max_replicas:
        raise RequestRefused(
            ErrorCode.OVER_LIMIT,
            f"scale {group.name} {request.replicas}: the pool would run {total} replicas, over [pool] max_replicas "
            f"({state.max_replicas}); ask for fewer, or raise [pool] max_replicas if this machine can hold them "
            "(each replica is a Python process of ~65 MiB and more)",
        )
    before, group.desired = group.desired, request.replicas
    if request.by_autoscaler:
        log.info("autoscale.applied", group=group.name, replicas_from=before, replicas_to=request.replicas)
    return Applied({"group": group.name, "replicas": request.replicas, "applied": True})


def _reload(state: DesiredState, new: Topology) -> Applied:
    _refuse_if_busy(state)
    running = {
        name: RunningGroup(g.desired, g.stopped_by_operator) for name, g in state.groups.items() if not g.removed
    }
    plan = plan_reload(state.topology, new, running)  # raises TopologyError for a change a reload cannot make
    total = sum(
        0 if plan.stays_stopped(name) else plan.replicas_after(name, spec.replicas) for name, spec in new.groups.items()
    )
    if total > state.max_replicas:
        raise RequestRefused(
            ErrorCode.OVER_LIMIT,
            f"reload refused, the pool is unchanged: {total} replicas over [pool] max_replicas ({state.max_replicas})",
        )
    for name in plan.removed:
        state.groups[name].removed = True
    for name, spec in new.groups.items():
        fresh = worker_group(new, spec)
        old = state.groups.get(name)
        if old is not None:  # (a group removed by an earlier reload and still draining comes back too)
            fresh.adopt(old)
        fresh.desired = plan.replicas_after(name, spec.replicas)
        if name in plan.rolled:
            fresh.roll_queue = list(range(min(len(fresh.handles), fresh.desired)))
        state.groups[name] = fresh
    state.topology = new
    log.info("supervisor.reloaded", **plan.as_dict())
    return Applied(plan.as_dict(), refresh_spawner=True, reloading=True)


def _deploy(state: DesiredState, request: Deploy) -> Applied:
    deployment = state.topology.pool.deployment
    if deployment is None:
        raise RequestRefused(
            ErrorCode.BAD_ARGS,
            "this pool is not versioned: set [pool] deployment (and build_id) in the topology, then reload or restart",
        )
    if state.deploy is not None and state.deploy.outcome is None and request.build_id == state.deploy.from_build:
        plan = state.deploy  # instant rollback: its processes still serve (parked); the controller switches back
        plan.rollback_requested = True
        log.info("deploy.rollback_requested", to_build=plan.from_build, from_build=plan.to_build)
        back = {"deployment": deployment, "to_build": plan.from_build, "from_build": plan.to_build, "rollback": True}
        return Applied(back)
    if state.deploy is not None and state.deploy.outcome is None:
        raise RequestRefused(
            ErrorCode.BUSY,
            f"a deploy of build {state.deploy.to_build!r} is in progress; wait for it (see `pipelex-pool status`)",
        )
    if request.build_id == state.build_id:
        raise RequestRefused(ErrorCode.BAD_ARGS, f"the pool already runs build {request.build_id!r}")
    paused = [g.name for g in state.groups.values() if g.paused_by_operator and not g.removed]
    if paused:  # the new build's processes would start paused and never poll: the deploy could not complete
        raise RequestRefused(
            ErrorCode.BUSY, f"paused: {', '.join(paused)}; resume them first (`pipelex-pool resume GROUP`)"
        )
    _refuse_if_busy(state)
    rolled = []
    for group in state.groups.values():
        if group.removed or group.stopped_by_operator:
            continue
        group.park_old = True
        group.roll_queue = list(range(len(group.handles)))
        rolled.append(group.name)
    state.deploy = DeployPlan(
        state.build_id, request.build_id, request.ramp, request.pause_s, time.time(), request.fleet_timeout_s
    )
    before, state.build_id = state.build_id, request.build_id
    log.info("deploy.started", deployment=deployment, from_build=before, to_build=request.build_id, groups=rolled)
    answer = {"deployment": deployment, "from_build": before, "to_build": request.build_id, "groups": rolled}
    return Applied(answer, refresh_spawner=True)  # the new build is new code: nothing imported before may run it


def _end_deploy(state: DesiredState, request: EndDeploy) -> Applied:
    plan = state.deploy
    if plan is None or plan.outcome is not None:
        return Applied({"ended": False})
    if plan.rollback_requested and not request.rolled_back:  # the controller rolls back instead: keep the parked
        return Applied({"ended": False})
    back = request.failed is not None or request.rolled_back
    fate = ParkedFate.SWAP if request.rolled_back else ParkedFate.RESTORE if back else ParkedFate.RELEASE
    for group in state.groups.values():
        group.park_old = False
        group.parked_fate = fate
        if back:
            group.roll_queue.clear()
    if back:
        state.build_id = plan.from_build
    if request.rolled_back:
        plan.outcome = DeployOutcome.ROLLED_BACK
    elif request.failed is not None:
        plan.outcome, plan.failure = DeployOutcome.FAILED, request.failed
    else:
        plan.outcome = DeployOutcome.DONE
    log.info("deploy.ended", to_build=plan.to_build, outcome=plan.outcome_text)
    return Applied({"ended": True, "outcome": plan.outcome_text})


def _roll_replica(state: DesiredState, request: RollReplica) -> Applied:
    group = state.groups.get(request.group)
    slot = group.slot_of(request.replica) if group is not None else None
    if group is None or group.removed or group.stopped_by_operator or slot is None:
        return Applied({"queued": False})
    handle = group.handles[slot]
    if handle.pid != request.pid or handle.state is not ProcState.READY or slot in group.roll_queue:
        return Applied({"queued": False})  # already replaced, or already queued: nothing to do
    group.roll_queue.append(slot)
    log.info("worker.roll_queued", group=group.name, replica=request.replica, pid=request.pid, reason=request.reason)
    return Applied({"queued": True})
