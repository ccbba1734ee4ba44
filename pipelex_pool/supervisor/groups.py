"""What the reconcile loop supervises: worker groups and the embedded dev server, each a list of handles."""

from __future__ import annotations

import enum
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pipelex_pool.supervisor.process.handle import HandleTimings, ProcessHandle
from pipelex_pool.supervisor.process.policy import RestartPolicy
from pipelex_pool.supervisor.process.state import ProcState
from pipelex_pool.supervisor.spawning.spawner import ChildSpec, child_environment, pdeathsig_wrapped, worker_spec
from pipelex_pool.temporal.devserver import dev_server_command, split_target
from pipelex_pool.topology.load import Topology
from pipelex_pool.topology.schema import ResolvedGroup, RestartConfig
from pipelex_pool.units import parse_duration
from pipelex_pool.worker.counts import TaskCounts
from pipelex_pool.worker_command import stop_timeout

DEV_SERVER_GROUP = "temporal-dev-server"


class ParkedFate(enum.Enum):
    """What becomes of the parked processes of a deploy (desired state, carried out by the loop)."""

    KEEP = "keep"  # they serve on, beside the new build's
    RELEASE = "release"  # they drain (the new build is current and the old one drained)
    RESTORE = "restore"  # back in their slots, the new build's processes drain (a failed deploy)
    SWAP = "swap"  # back in their slots, the new build's processes parked in turn (a rollback: B's runs finish)


class Readiness(enum.Enum):
    NOTIFY = "notify"  # READY=1 over the child's NOTIFY_SOCKET
    TEMPORAL = "temporal"  # its identity seen polling its task queue
    DELAY = "delay"  # running for a fixed time
    SERVING = "serving"  # (dev server) answers gRPC


@dataclass
class SupervisedGroup:
    """A group's desired state (`desired` ... `parked_fate`) and its replica handles (slots in replica order; a
    number may be skipped). Who writes which field: README, Architecture, "One writer"."""

    name: str
    readiness: Readiness
    restart: RestartConfig
    timings: HandleTimings
    make_spec: Callable[[int], ChildSpec]
    desired: int
    spec: ResolvedGroup | None = None  # None for the dev server
    ready_delay: float = 0.0
    stopped_by_operator: bool = False
    paused_by_operator: bool = False  # pause GROUP: its processes stay, warm, and take no task (desired state)
    removed: bool = False  # dropped by a reload: drain, then forget
    revive: bool = False  # restart-failed: the loop revives its FATAL replicas (as fast as it may spawn)
    handles: list[ProcessHandle] = field(default_factory=list)  # the slots, in replica order (numbers may skip)
    roll_queue: list[int] = field(default_factory=list)  # slots (indices in `handles`) waiting for a rolling restart
    replacement: ProcessHandle | None = None  # the new process of the replica being rolled
    retiring: list[ProcessHandle] = field(default_factory=list)  # replaced processes, draining
    roll_aborted: tuple[str, float] | None = None  # the last aborted roll: why, and when (wall clock)
    # deploy: the roll parks the old build's processes (still serving) instead of draining them (desired state)
    park_old: bool = False
    parked_fate: ParkedFate = ParkedFate.KEEP  # desired state
    parked: list[ProcessHandle] = field(default_factory=list)  # the old build's processes, serving (loop-owned)
    rng: random.Random = field(default_factory=random.Random)
    restarts_total: int = 0  # automatic restarts, for metrics (survives replaced handles)
    spawn_failures: int = 0  # spawns that raised (no process, or the pool could not record it)
    handed_back: Counter[str] = field(default_factory=Counter)  # in-flight attempts handed back, by exit reason
    hand_back_refused: int = 0  # hand-backs Temporal refused (already completed, timed out, workflow gone)
    hand_back_failed: int = 0  # hand-backs that could not reach Temporal in time
    runs_handed_back: int = 0  # cached workflow runs of dead replicas moved off their sticky queues
    exits_total: Counter[tuple[str, str]] = field(default_factory=Counter)  # by (code, signal) label values
    tasks_history: TaskCounts = field(default_factory=TaskCounts)  # counts of processes that have exited

    def make_handle(self, replica: int) -> ProcessHandle:
        return ProcessHandle(self.name, replica, RestartPolicy(self.restart, self.rng), self.timings)

    def new_handle(self) -> ProcessHandle:
        """A new slot, with the lowest replica number no slot has (a scale-down may retire any replica: idle
        first), kept in replica order."""
        used = {handle.replica for handle in self.handles}
        handle = self.make_handle(min(set(range(len(self.handles) + 1)) - used))
        self.handles.append(handle)
        self.handles.sort(key=lambda h: h.replica)
        return handle

    def slot_of(self, replica: int) -> int | None:
        """The index in `handles` of replica number `replica` (they differ once a scale-down retired a middle one)."""
        return next((index for index, handle in enumerate(self.handles) if handle.replica == replica), None)

    def next_deadline(self) -> float | None:
        """When a handle's `tick` (or a delay readiness) may next have something to do."""
        times = [t for t in (h.next_deadline() for h in self.all_handles()) if t is not None]
        if self.readiness is Readiness.DELAY:
            times += [
                h.started_at + self.ready_delay
                for h in self.all_handles()
                if h.state is ProcState.STARTING and h.started_at
            ]
        return min(times) if times else None

    def all_handles(self) -> list[ProcessHandle]:
        return [*self.handles, *([self.replacement] if self.replacement else []), *self.retiring, *self.parked]

    def adopt(self, old: SupervisedGroup) -> None:
        """Take over the running state of `old` (same group, previous topology) after a reload."""
        self.handles, self.retiring, self.replacement = old.handles, old.retiring, old.replacement
        self.roll_queue, self.stopped_by_operator, self.rng = old.roll_queue, old.stopped_by_operator, old.rng
        self.paused_by_operator = old.paused_by_operator and self.spec is not None and self.spec.command is None
        self.restarts_total, self.exits_total, self.spawn_failures = (
            old.restarts_total,
            old.exits_total,
            old.spawn_failures,
        )
        self.tasks_history, self.revive, self.roll_aborted = old.tasks_history, old.revive, old.roll_aborted
        self.park_old, self.parked_fate, self.parked = old.park_old, old.parked_fate, old.parked
        self.handed_back, self.hand_back_refused, self.hand_back_failed, self.runs_handed_back = (
            old.handed_back,
            old.hand_back_refused,
            old.hand_back_failed,
            old.runs_handed_back,
        )
        for handle in self.all_handles():
            handle.policy = RestartPolicy(self.restart, self.rng)
            handle.timings = self.timings


def worker_group(topology: Topology, group: ResolvedGroup) -> SupervisedGroup:
    """A group of built-in or command workers; they read the topology as validated (Topology.config_for_workers)."""
    readiness, delay = Readiness.NOTIFY, 0.0
    if group.readiness == "temporal":
        readiness = Readiness.TEMPORAL
    elif group.readiness.startswith("delay:"):
        readiness, delay = Readiness.DELAY, parse_duration(group.readiness.removeprefix("delay:")).total_seconds()
    timings = HandleTimings(
        start_timeout=group.start_timeout.total_seconds(),
        stop_timeout=stop_timeout(group).total_seconds(),
        watchdog=group.watchdog.total_seconds() or None if group.watchdog and readiness is Readiness.NOTIFY else None,
    )
    pool = topology.pool.name
    config, config_dir = topology.config_for_workers, topology.file.parent
    connection = topology.connection

    def make_spec(replica: int) -> ChildSpec:
        # a command worker gets the connection as TEMPORAL_* variables (what envconfig and the `temporal` CLI
        # read), its key read at each start; the built-in worker resolves the same settings from the same
        # sources itself, so its key stays a file it follows (temporal/connect.py follow_key)
        extra = connection.command_env() if group.command is not None else {}
        return worker_spec(pool, group, replica, config, extra, config_dir=config_dir)

    return SupervisedGroup(
        name=group.name,
        readiness=readiness,
        restart=group.restart,
        timings=timings,
        make_spec=make_spec,
        desired=group.replicas,
        spec=group,
        ready_delay=delay,
    )


def dev_server_group(topology: Topology, state_dir: Path) -> SupervisedGroup:
    server = topology.temporal.selected_server()
    assert server is not None
    host, port = split_target(topology.connection.address)
    settings = topology.dev_server
    db = Path(settings.db_filename) if settings.db_filename else state_dir / "temporal.db"
    attributes = (
        tuple(topology.temporal.search_attributes.attributes) if topology.temporal.search_attributes.enabled else ()
    )
    argv = dev_server_command(
        port,
        db,
        ip="127.0.0.1" if host in ("localhost", "127.0.0.1") else host,
        namespaces=tuple(dict.fromkeys((topology.connection.namespace, server.namespace))),
        search_attributes=attributes,
        ui_port=settings.ui_port,
        log_level=settings.log_level,
    )
    spec = ChildSpec(name=f"{DEV_SERVER_GROUP}/0", argv=pdeathsig_wrapped(argv), env=child_environment(), identity="")
    return SupervisedGroup(
        name=DEV_SERVER_GROUP,
        readiness=Readiness.SERVING,
        restart=topology.pool.restart.model_copy(update={"policy": "always"}),
        timings=HandleTimings(start_timeout=settings.start_timeout.total_seconds(), stop_timeout=15.0, watchdog=None),
        make_spec=lambda replica: spec,
        desired=1,
    )
