"""The reconcile loop: the one owner of process state and the one writer of desired state.

Each iteration: apply what arrived on the stream (observers' reports, then requests, through
`desired.requests.apply`), act on the time (timeouts, backoff), then converge a bounded batch: at most what the
spawn budget allows is started before the loop looks at its stream again, so the latest request always takes
effect within one iteration. Only this module spawns, signals and reaps (through ProcessHandle actions)."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import anyio
import structlog
from anyio.abc import TaskGroup

from pipelex_pool.contract import (
    PAUSE_SIGNAL,
    POLLING_KEY,
    RESUME_SIGNAL,
    sdk_default_identity,
)
from pipelex_pool.errors import ErrorCode, PoolError, RequestRefused, TopologyError
from pipelex_pool.paths import PoolPaths
from pipelex_pool.supervisor import start_order
from pipelex_pool.supervisor.convergence import converge, revive, settle_parked
from pipelex_pool.supervisor.deploy.controller import DeployController
from pipelex_pool.supervisor.desired.requests import DeployPlan, Reload, Request, Shutdown, apply
from pipelex_pool.supervisor.events import (
    Exited,
    HandedBack,
    Look,
    Notified,
    ProcessEvent,
    ReportsDue,
    RunsHandedBack,
    Sampled,
    SeenReady,
    Submitted,
)
from pipelex_pool.supervisor.fault import FAULTS, StallGuard, keep_running
from pipelex_pool.supervisor.groups import (
    DEV_SERVER_GROUP,
    ParkedFate,
    Readiness,
    SupervisedGroup,
    dev_server_group,
    worker_group,
)
from pipelex_pool.supervisor.handback.dead_replica import HandBacks
from pipelex_pool.supervisor.inbox import Inbox
from pipelex_pool.supervisor.lock import ChildRecords, write_state
from pipelex_pool.supervisor.notifications import Notifications
from pipelex_pool.supervisor.process.handle import Action, ProcessHandle
from pipelex_pool.supervisor.process.state import ExitStatus, ProcState
from pipelex_pool.supervisor.reports import REPORT_ONLY, mark_ready, record_handed_back, record_notify, record_sampled
from pipelex_pool.supervisor.rolling import advance_roll
from pipelex_pool.supervisor.spawning.budget import (
    SpawnBudget,
    default_in_start,
    default_spawn_batch,
    default_spawn_rate,
)
from pipelex_pool.supervisor.spawning.spawner import ExecSpawner, Spawner
from pipelex_pool.supervisor.starting import Starter
from pipelex_pool.supervisor.systemd import SystemdNotifier
from pipelex_pool.supervisor.view import ReplicaInfo, settled, summary, temporal_expected_down
from pipelex_pool.supervisor.watchers.listing import Listing
from pipelex_pool.supervisor.watchers.notify_batch import NotifyBatch
from pipelex_pool.supervisor.watchers.queues import TemporalWatch, served_types
from pipelex_pool.supervisor.watchers.resources import ResourceSampler
from pipelex_pool.supervisor.watchers.temporal_health import TemporalHealth
from pipelex_pool.temporal.codec import data_converter
from pipelex_pool.temporal.connect import LazyClient
from pipelex_pool.temporal.fleet import beacon_identity, hold_beacon
from pipelex_pool.temporal.watch import LIVE_WITHIN
from pipelex_pool.ticks import next_on_grid
from pipelex_pool.topology.limits import default_max_replicas
from pipelex_pool.topology.load import Topology, load_topology
from pipelex_pool.topology.snapshot import write_validated

log = structlog.get_logger("pipelex_pool.supervisor")
MAX_IDLE_S = 5.0
REAP_EVERY_S = 5.0  # exited descendants the fork spawner adopted are reaped within this
FRESH_WAIT_S = 0.25  # a look waits this long at most for a loop busy with starts (then: what it has)
EXITED_IDENTITY_KEPT_S = 2 * LIVE_WITHIN.total_seconds()
PAUSE_TOLERANCE_S = 1.0  # a loop that wakes later than this was paused (SIGSTOP, swap, a long pass)


@dataclass
class Supervisor:
    topology: Topology
    paths: PoolPaths
    dev_server: bool
    spawner: Spawner = field(default_factory=ExecSpawner)
    clock: Callable[[], float] = time.monotonic
    budget: SpawnBudget | None = None  # default: [pool] spawn_rate / spawn_batch, else sized to the machine
    groups: dict[str, SupervisedGroup] = field(default_factory=dict)
    dev: SupervisedGroup | None = None
    info: dict[ProcessHandle, ReplicaInfo] = field(default_factory=dict)
    # identities of the pool's processes that exited, and when (clock): Temporal lists them for up to LIVE_WITHIN
    exited_identities: dict[str, float] = field(default_factory=dict)
    build_id: str | None = None  # desired: the build new worker processes run (set from the topology at start)
    deploy: DeployPlan | None = None  # desired: the deploy in progress or last done
    shutting_down: bool = False
    max_replicas: int = 0
    started_wall: float = field(default_factory=time.time)
    pid: int = field(default_factory=os.getpid)

    def __post_init__(self) -> None:
        self.inbox = Inbox()
        self.notify_batch = NotifyBatch(self.inbox)  # READY replicas' notify sockets, read together
        self.sampler = ResourceSampler()  # their resources, on a period and whenever someone looks
        self._records = ChildRecords()
        self._tg: TaskGroup | None = None
        self.steps = 0  # loop iterations: the stall guard's sign of progress
        self._starved = False  # a start was held back by the spawn budget this iteration
        self._next_reap = 0.0
        self._due_at: float | None = None  # when the loop's wait should end at the latest
        self._held_by_order: set[str] = set()  # groups whose start waits for their `after` groups (for the log)
        self._quiet = False  # the last full iteration left nothing pending: reports alone need no reconcile
        self._full_due: float | None = None  # when the next full iteration is due at the latest
        pool = self.topology.pool
        if self.budget is None:
            rate = pool.spawn_rate or default_spawn_rate(pool.spawner)
            batch = pool.spawn_batch or default_spawn_batch()
            self.budget = SpawnBudget(rate=rate, batch=batch, in_start=default_in_start(pool.spawner))
        self.max_replicas = pool.max_replicas or default_max_replicas()
        self.build_id = pool.build_id if pool.deployment else None
        self.systemd = SystemdNotifier()
        connection = self.topology.connection
        expected_down = lambda: temporal_expected_down(self)  # noqa: E731
        converter = data_converter(self.topology.temporal.payload_codec_config)
        self.temporal = LazyClient(
            connection, f"{self.topology.pool.name}/supervisor@{os.getpid()}", expected_down, converter
        )
        self.health = TemporalHealth(connection.address, expected_down, problem=lambda: self.temporal.problem)
        self.watch = TemporalWatch(self, self.temporal.get, self.request, expected_down)
        self.deployer = DeployController(self, self.temporal.get, self.request, self.watch.fleet_lagging)
        self.notifications = Notifications(
            lambda: self.topology.pool.notify, pool.name, lambda: self.health.down_since, self.watch.routing_mismatches
        )
        identity = f"{self.topology.pool.name}/supervisor@{socket.gethostname()}:{os.getpid()}"
        stuck_after = pool.stuck_attempt_after.total_seconds()
        self.hand_backs = HandBacks(self.temporal.get, identity, self.inbox.report, stuck_after)
        record = lambda: self._write_state(must=True)  # noqa: E731
        self.listing = Listing(self.temporal.get, self.inbox.send)  # who is polling yet, for READY
        self.starter = Starter(
            self.paths, self.spawner, self.info, self.inbox.send, self.inbox.note, self.notify_batch, self.listing,
            record,
        )  # fmt: skip
        self.groups = {name: worker_group(self.topology, spec) for name, spec in self.topology.groups.items()}
        if self.dev_server:
            self.dev = dev_server_group(self.topology, self.paths.state_dir)

    # -- requests (from control commands, signals and watchers) ---------------------------------------------------

    def request(self, request: Request) -> Submitted:
        """Put a request on the loop's stream; it is applied at the start of the next iteration."""
        return self.inbox.request(request)

    async def submit(self, request: Request) -> object:
        """Submit a request and wait until the loop has applied it; returns its answer or raises RequestRefused."""
        submitted = self.request(request)
        await submitted.applied.wait()
        if submitted.refused is not None:
            raise submitted.refused
        return submitted.answer

    async def fresh(self) -> None:
        """Until the loop has read every replica's reports and resources, so what status, the live view and
        /metrics show is as of now; at most FRESH_WAIT_S (a loop busy with a mass start: what it has)."""
        done = self.inbox.look()
        with anyio.move_on_after(FRESH_WAIT_S):
            await done.wait()

    async def reload_file(self) -> object:
        """Re-read the topology file (off the loop) and submit it; TopologyError leaves everything as it is."""
        new = await anyio.to_thread.run_sync(self._load_validated)
        return await self.submit(Reload(new))

    def _load_validated(self) -> Topology:
        """The topology file, validated, with the copy its workers will read written (snapshot.py)."""
        new = load_topology(self.topology.file)
        return replace(new, validated_file=write_validated(new, self.paths.state_dir))

    # -- the loop ------------------------------------------------------------------------------------------------

    def all_groups(self) -> list[SupervisedGroup]:
        return ([self.dev] if self.dev else []) + list(self.groups.values())

    def handles(self) -> list[ProcessHandle]:
        return [handle for group in self.all_groups() for handle in group.all_handles()]

    async def run(self) -> None:
        """Supervise until shutdown is requested and every child has exited."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            # each behind a fault boundary: a fault is logged, counted and the task started again (supervisor/fault.py)
            tg.start_soon(keep_running, "signals", self._signals)
            tg.start_soon(keep_running, "resources", self.sampler.run, self, self.request, self.inbox.report)
            tg.start_soon(keep_running, "temporal_health", self.health.run, self.temporal.once)
            tg.start_soon(keep_running, "api_key", self.temporal.follow_key)
            tg.start_soon(keep_running, "temporal_watch", self.watch.run)
            tg.start_soon(keep_running, "listing", self.listing.run)
            tg.start_soon(keep_running, "reports", self.inbox.keep_reports_fresh)
            tg.start_soon(keep_running, "notify_batch", self.notify_batch.run)
            tg.start_soon(keep_running, "deploy", self.deployer.run)
            tg.start_soon(keep_running, "notify", self.notifications.run)
            beacon = beacon_identity(self.topology.pool.name, self.pid)
            tg.start_soon(keep_running, "beacon", hold_beacon, self.temporal.get, self.topology.pool.fleet_name, beacon)
            log.info(
                "supervisor.started", pool=self.topology.pool.name, pid=os.getpid(), topology=str(self.topology.file)
            )
            try:
                with StallGuard(lambda: self.steps):
                    while not await self.step():
                        await self.wait()
            finally:
                self.close()
            tg.cancel_scope.cancel()
        log.info("supervisor.stopped", pool=self.topology.pool.name)

    def attach(self, tg: TaskGroup) -> None:
        """Run the children's watchers in `tg` (for driving the loop step by step, as the loop tests do)."""
        self._tg = tg

    async def _signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum != signal.SIGHUP:
                    self.request(Shutdown(signal.Signals(signum).name))
                    continue
                try:
                    await self.reload_file()
                except TopologyError as exc:
                    log.error("supervisor.reload_refused", errors=[i.render(str(exc.file)) for i in exc.issues])
                except RequestRefused as exc:
                    log.error("supervisor.reload_refused", errors=[exc.message])
                except Exception:  # whatever the file did to the loader: refused, the pool unchanged
                    FAULTS["reload"] += 1
                    log.exception("supervisor.reload_failed", effect="the pool is unchanged")

    async def step(self) -> bool:
        """One iteration: apply what arrived, act on the time, converge a bounded batch. True once the pool has
        shut down (every child exited). An iteration woken before its deadline by reports alone (watchdog pings,
        task counts, in-flight attempts, resource samples: nothing that changes what the pool should do) records
        them and goes back to waiting: an idle pool of 32 replicas is not reconciled 4 times a second."""
        self.steps += 1
        due = self._due_at
        self._excuse_own_pause()
        self.notify_batch.read(wake=False)  # (a watchdog deadline is never judged on a ping left unread)
        material = await self._drain()
        now = self.clock()
        if not material and self._quiet and due is not None and now < due:
            return False  # reports alone: recorded, nothing to converge
        self._starved = False
        await self._tick(now)
        await self._reconcile(now)
        self._reap_orphans(now)
        self._look_for_lost_work(now)
        if self.shutting_down and not any(h.state.alive for h in self.handles()):
            return True
        self._tell_systemd(now)
        if not self._quiet:
            self.watch.poke()  # something under way (a start, a stop): the watch looks again now, not at its round
        return False

    async def _tick(self, now: float) -> None:
        """Act on the time: readiness by delay, backoffs ended (within the spawn budget), timeouts."""
        for group in self.all_groups():
            for handle in group.all_handles():
                if group.readiness is Readiness.DELAY and handle.state is ProcState.STARTING:
                    if handle.started_at is not None and now >= handle.started_at + group.ready_delay:
                        mark_ready(handle, now)
                if handle.state is ProcState.BACKOFF and not self._may_spawn_at(handle.backoff_until, now):
                    continue
                await self._execute(group, handle, handle.tick(now), now)

    def _reap_orphans(self, now: float) -> None:
        """Descendants the spawner adopted that exited and are no replica (the fork spawner is a subreaper)."""
        if now >= self._next_reap:
            self._next_reap = now + REAP_EVERY_S
            known = {h.pid for h in self.handles() if h.pid is not None}
            for pid in self.spawner.reap_orphans(known):
                log.info("supervisor.orphan_reaped", pid=pid)

    def _look_for_lost_work(self, now: float) -> None:
        """Attempts dispatched to no live poller, and attempts stuck on a live one (handback/, off the loop)."""
        if not self.shutting_down:
            assert self._tg is not None
            self.hand_backs.scan_if_due(self._tg, now)
            self.hand_backs.check_stuck_if_due(self._tg, now, list(self.groups.values()), self.info)

    def _tell_systemd(self, now: float) -> None:
        """READY=1 / STATUS= as the pool settles; whether reports alone may skip the next iteration."""
        is_settled = settled(self)
        self.systemd.settled(summary(self), is_settled)
        self._quiet = is_settled and self._nothing_pending()
        # the next multiple of MAX_IDLE_S: with the periodic tasks' wake-ups (ticks.py), at most MAX_IDLE_S away
        self._full_due = next_on_grid(now, MAX_IDLE_S)
        self.notify_batch.set_prompt(not self._quiet or self._pause_pending())

    def _pause_pending(self) -> bool:
        """A pause or resume signalled to a replica that has not reported it done (a command waits on it)."""
        return any(
            info.pause_asked != (info.pause == "paused")
            for handle, info in self.info.items()
            if handle.state is ProcState.READY
        )

    def _nothing_pending(self) -> bool:
        """No step of an operation is left for a next iteration (which a report must then not skip)."""
        if self.shutting_down or self._starved:
            return False
        for group in self.all_groups():
            wanted = 0 if group.stopped_by_operator or group.removed else group.desired
            if group.revive or group.removed or group.parked_fate is not ParkedFate.KEEP or len(group.handles) > wanted:
                return False
            if group.name in self._held_by_order:
                return False
        return True

    async def wait(self) -> None:
        """Until the next event, or the next deadline of a handle, the spawn budget or systemd's watchdog."""
        now = self.clock()
        deadlines = [d for d in (g.next_deadline() for g in self.all_groups()) if d is not None]
        ping = self.systemd.ping_due(now)  # a stuck loop stops these, and systemd restarts the service
        if ping is not None:
            deadlines.append(ping)
        if self.hand_backs.scan_at is not None:
            deadlines.append(self.hand_backs.scan_at)
        if self._starved:
            assert self.budget is not None
            deadlines.append(self.budget.next_at(now, self._in_start()))
        # a full iteration at least every MAX_IDLE_S, however many reports arrive in between
        timeout = max(0.0, min([self._full_due or now + MAX_IDLE_S, *deadlines]) - self.clock())
        self._due_at = self.clock() + timeout
        await self.inbox.wait(timeout)

    def _excuse_own_pause(self) -> None:
        """If the loop itself woke late (the supervisor was stopped, swapped out, or busy), no worker is blamed for
        the silence: their watchdog deadlines move by the time the loop was away."""
        if self._due_at is None:
            return
        late = self.clock() - self._due_at
        self._due_at = None
        if late > PAUSE_TOLERANCE_S:
            log.warning("supervisor.was_paused", seconds=round(late, 1), action="watchdog deadlines moved")
            for handle in self.handles():
                handle.excuse(late)
            self.hand_backs.postpone_stuck_check(self.clock())  # reports queued meanwhile must arrive first

    async def _drain(self) -> bool:
        """The one point where what arrived is applied: observers' reports first, in order, then requests, then a
        fresh reading of the replicas' resources if someone looks (status, top, /metrics). True if anything arrived
        that may change what the loop does (a request, an exit, a readiness, a wait for Temporal), False for reports
        alone (REPORT_ONLY)."""
        requests: list[Submitted] = []
        looks: list[Look] = []
        material = False
        while (event := self.inbox.take()) is not None:
            if isinstance(event, Submitted):
                requests.append(event)
                material = True
            elif isinstance(event, Look):
                looks.append(event)
            elif isinstance(event, Sampled):
                record_sampled(self.info, event)
            elif isinstance(event, HandedBack | RunsHandedBack):
                record_handed_back(self.groups, event)
            elif isinstance(event, ReportsDue):
                continue  # (a wake-up: the reports it was for were taken first)
            else:
                material = material or not (isinstance(event, Notified) and event.fields.keys() <= REPORT_ONLY)
                await self._observe(event)
        for submitted in requests:
            self._apply(submitted)
        self.sampler.note_work(self)
        if looks:  # (the reports were read at the start of this iteration and applied above, requests too)
            if (sampled := self.sampler.sample(self, self.request)) is not None:
                record_sampled(self.info, sampled)
            for look in looks:
                look.done.set()
        return material

    def _apply(self, submitted: Submitted) -> None:
        try:
            applied = apply(self, submitted.request)
        except (RequestRefused, TopologyError) as exc:
            refused = (
                exc
                if isinstance(exc, RequestRefused)
                else RequestRefused(ErrorCode.INVALID_TOPOLOGY, f"reload refused, the pool is unchanged:\n{exc}")
            )
            log.info("request.refused", request=type(submitted.request).__name__, code=refused.code.value)
            submitted.settle(refused=refused)
            return
        if applied.shutdown_started:
            assert isinstance(submitted.request, Shutdown)
            log.info("supervisor.stopping", reason=submitted.request.reason)
            self.systemd.stopping()
        if applied.reloading:
            self.systemd.reloading()
        if applied.refresh_spawner:
            self.spawner.refresh(self.topology.preload)
        if applied.reloading:
            log.info("supervisor.connection_reloaded", what=self.temporal.update(self.topology.connection))
        submitted.settle(answer=applied.answer)

    def close(self) -> None:
        """No more requests: what is still queued is refused, so no requester waits forever."""
        self.inbox.close()
        self.notify_batch.close()
        self.sampler.close()

    def _in_start(self) -> list[float]:
        """When each child still starting was started (one waiting for Temporal, or polling and waiting only to be
        listed, is through its start's CPU-heavy part: it holds no start back)."""
        return [
            h.started_at
            for h in self.handles()
            if h.state is ProcState.STARTING
            and not h.waiting_for_temporal
            and h.started_at is not None
            and not self.listing.polling(h)
        ]

    def _may_spawn(self, now: float) -> bool:
        assert self.budget is not None
        if self.budget.take(now, self._in_start()):
            return True
        self._starved = True
        return False

    def _may_spawn_at(self, due: float | None, now: float) -> bool:
        """For a handle whose start is due at `due`: not due yet (nothing to spend), or a start is in the budget."""
        return due is None or now < due or self._may_spawn(now)

    async def _reconcile(self, now: float) -> None:
        dev_ready = self.dev is None or any(h.state is ProcState.READY for h in self.dev.handles)
        workers_alive = any(h.state.alive for g in self.groups.values() for h in g.all_handles())
        if self.dev is not None:
            desired = 0 if self.shutting_down and not workers_alive else 1
            await converge(self.dev, desired, now, self._execute, self._may_spawn, self.info)
        for group in self.all_groups():
            if group.revive:
                group.revive = await revive(group, now, self._execute, self._may_spawn)
        for group in list(self.groups.values()):
            desired = 0 if self.shutting_down or group.stopped_by_operator or group.removed else group.desired
            waiting = start_order.waiting_for(group, self.groups)
            self._note_start_order(group, waiting)
            if not (self.shutting_down and start_order.held_by(group, self.groups)):  # down: in reverse order
                may_start = dev_ready and not waiting
                await converge(group, desired, now, self._execute, self._may_spawn, self.info, may_start=may_start)
            self._follow_pause(group)
            if dev_ready or group.replacement is not None:
                await advance_roll(group, now, self._execute, self._may_spawn, stopping=self.shutting_down)
            stopping = self.shutting_down or group.stopped_by_operator or group.removed
            await settle_parked(group, now, self._execute, stopping=stopping)
            if group.removed and not group.all_handles():
                del self.groups[group.name]
                log.info("group.removed", group=group.name)

    def _note_start_order(self, group: SupervisedGroup, waiting: list[str]) -> None:
        """Log when a group's start is held by `after`, and when it is let go."""
        held = group.name in self._held_by_order
        if waiting and not held and any(h.state is ProcState.STOPPED for h in group.handles[: group.desired]):
            self._held_by_order.add(group.name)
            log.info("group.start_waits", group=group.name, waiting_for=waiting)
        elif held and not waiting:
            self._held_by_order.discard(group.name)
            log.info("group.start_released", group=group.name, after=start_order.after(group))

    def _follow_pause(self, group: SupervisedGroup) -> None:
        """Tell each READY built-in worker of the group to pause or resume, once per change (a signal: the worker
        keeps the latest wish, so a repeated or crossed one is harmless)."""
        if group.spec is None or group.spec.command is not None:
            return
        wanted = group.paused_by_operator
        for handle in group.handles:
            info = self.info.get(handle)
            if handle.state is not ProcState.READY or handle.pid is None or info is None or info.pause_asked == wanted:
                continue
            info.pause_asked = wanted
            log.info("worker.pause_signalled" if wanted else "worker.resume_signalled", group=group.name,
                     replica=handle.replica, pid=handle.pid)  # fmt: skip
            self.spawner.signal(handle.pid, signal.Signals[PAUSE_SIGNAL if wanted else RESUME_SIGNAL])

    # -- what observers report -----------------------------------------------------------------------------------

    async def _observe(self, event: ProcessEvent) -> None:
        handle = event.handle
        if event.generation != handle.generation:
            return  # a late report about a process this handle has already replaced
        now = self.clock()
        group = self._group_of(handle)
        if isinstance(event, Exited):
            await self._on_exit(group, handle, ExitStatus.from_returncode(event.returncode, event.last_line), now)
        elif isinstance(event, SeenReady):
            mark_ready(handle, now)
        elif isinstance(event, Notified):
            if event.fields.get("READY") == "1" and group.readiness is Readiness.NOTIFY:
                mark_ready(handle, now)
            elif event.fields.get(POLLING_KEY) == "1" and group.readiness is Readiness.NOTIFY:
                self._expect_listed(group, handle)
            record_notify(self.replica_info(handle), handle, event.fields, now)

    def _expect_listed(self, group: SupervisedGroup, handle: ProcessHandle) -> None:
        """A pool worker polls: READY once Temporal lists it (the listing watcher looks for every starting one)."""
        info = self.info.get(handle)
        if group.spec is None or info is None or handle.state is not ProcState.STARTING:
            return
        types = served_types(self, group.spec.scope)
        self.listing.expect(handle, group.spec.task_queue, types, info.identity)

    def _remember_exited(self, identity: str, now: float) -> None:
        """Keep an exited process's identity while Temporal may still list its last polls (then forget it)."""
        forget_before = now - EXITED_IDENTITY_KEPT_S
        for old in [i for i, at in self.exited_identities.items() if at < forget_before]:
            del self.exited_identities[old]
        self.exited_identities[identity] = now

    async def _on_exit(self, group: SupervisedGroup, handle: ProcessHandle, status: ExitStatus, now: float) -> None:
        pid = handle.pid
        actions = handle.exited(status, now)
        status = handle.last_exit or status
        group.exits_total[status.labels] += 1
        info = self.info.get(handle)
        if info is not None and info.identity:
            self._remember_exited(info.identity, now)
        if pid is not None:  # a command worker that kept temporalio's own identity
            self._remember_exited(sdk_default_identity(pid), now)
        if info is not None and info.tasks is not None:  # keep its counts in the group's history
            group.tasks_history = group.tasks_history + info.tasks
            info.tasks = None
        if info is not None:
            assert self._tg is not None
            attempts, info.inflight = list(info.inflight.values()), {}
            self.hand_backs.replica_exited(self._tg, group, info.identity, attempts, status, now)
            runs, info.cached_runs = info.cached_runs, set()
            self.hand_backs.runs_exited(self._tg, group, info.identity, runs)
        if handle.state is ProcState.BACKOFF:
            group.restarts_total += 1
        if handle in group.retiring and not handle.state.alive:
            group.retiring.remove(handle)
            self.info.pop(handle, None)
        if handle in group.parked and not handle.state.alive:  # the old build's process died: not restarted
            group.parked.remove(handle)
            self.info.pop(handle, None)
        fields = {"group": handle.group, "replica": handle.replica, "pid": pid, "status": status.describe()}
        if handle.state is ProcState.BACKOFF:
            delay = round((handle.backoff_until or now) - now, 2)
            log.warning("worker.exited", **fields, next="restart at once" if delay <= 0 else "backoff", delay_s=delay)
        elif handle.state is ProcState.FATAL:
            log.error("worker.fatal", **fields, reason=handle.reason)
        else:
            log.info("worker.exited", **fields, next=handle.state.value)
        self._write_state()
        await self._execute(group, handle, actions, now)

    # -- actions -------------------------------------------------------------------------------------------------

    async def _execute(self, group: SupervisedGroup, handle: ProcessHandle, actions: list[Action], now: float) -> None:
        for action in actions:
            if action is Action.SPAWN:
                await self._spawn(group, handle, now)
            elif handle.pid is not None:
                signum = signal.SIGTERM if action is Action.TERMINATE else signal.SIGKILL
                if action is Action.KILL and handle.pool_kill:
                    log.warning(
                        "worker.killed",
                        group=handle.group,
                        replica=handle.replica,
                        pid=handle.pid,
                        reason=handle.pool_kill,
                    )
                self.spawner.signal(handle.pid, signum)

    async def _spawn(self, group: SupervisedGroup, handle: ProcessHandle, now: float) -> None:
        """Start the handle's process. Any failure fails this replica (counted, backoff), never the supervisor."""
        assert self._tg is not None
        types = served_types(self, group.spec.scope) if group.spec is not None else []
        build_id = self.build_id if group is not self.dev else None
        error = await self.starter.start(self._tg, self.topology, group, handle, build_id=build_id, types=types)
        if error is not None:
            group.spawn_failures += 1
            log.error("worker.spawn_failed", group=handle.group, replica=handle.replica, error=error)
            await self._execute(group, handle, handle.spawn_failed(error, now), now)
            self._write_state()

    # -- bookkeeping ---------------------------------------------------------------------------------------------

    def _group_of(self, handle: ProcessHandle) -> SupervisedGroup:
        if handle.group == DEV_SERVER_GROUP and self.dev is not None:
            return self.dev
        return self.groups[handle.group]

    def replica_info(self, handle: ProcessHandle) -> ReplicaInfo:
        return self.info.setdefault(handle, ReplicaInfo())

    def _write_state(self, *, must: bool = False) -> None:
        """Record every live child (pid, start time, how long it may take to drain) for the next `up`. A failure
        is raised when `must` (a new child is not run unrecorded), else logged: an exit is still handled."""
        live = [(h.pid, h.name, h.timings.stop_timeout) for h in self.handles() if h.pid is not None]
        records = self._records.of(live)
        try:
            write_state(self.paths.state_file, records)
        except (OSError, PoolError) as exc:
            if must:
                raise
            FAULTS["state_file"] += 1
            log.warning("supervisor.state_file_not_written", path=str(self.paths.state_file), error=str(exc))
