"""The supervisor's view of Temporal: pollers and backlog per queue, the autoscaler on top.

It asks Temporal as often as there is something to learn: every WATCH_INTERVAL_S (every partition of every queue)
while a replica is starting or not yet seen polling, a warning has just opened (for WARNING_FAST_S: one that stays
true, such as a group scaled to 0, does not keep the watch at full rate) or Temporal does not answer; otherwise the
root partition's backlog every QUIET_INTERVAL_S (every WATCH_INTERVAL_S for a queue an autoscaler reads) and every
partition's pollers every FULL_ROUND_S. A round's questions (the queues, the fleet's beacon, the workers'
heartbeats) go out together and their answers come back together: one wake-up of the supervisor, not one per
question (a wake-up costs about as much as reading an answer). It only reads Temporal and submits autoscaling
decisions as requests: an outage never stalls the reconcile loop and never marks a worker failed by itself."""

from __future__ import annotations

import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import anyio
import psutil
import structlog
from temporalio.client import Client

from pipelex_pool.contract import host_of, pool_of, sdk_default_identity
from pipelex_pool.supervisor.desired.requests import Request, Scale
from pipelex_pool.supervisor.process.handle import ProcessHandle
from pipelex_pool.supervisor.process.state import ProcState
from pipelex_pool.supervisor.watchers.autoscale import AutoscaleState, decide, retire_idle_only
from pipelex_pool.temporal.fleet import FLEET_REFRESH_S, FleetView, describe_fleet
from pipelex_pool.temporal.heartbeats import NoWorkerList, WorkerBeat, list_workers
from pipelex_pool.temporal.pollers import QueueType, poller_limit_error, queue_types
from pipelex_pool.temporal.watch import QueueView, describe
from pipelex_pool.ticks import on_grid, sleep_on_grid

if TYPE_CHECKING:
    from pipelex_pool.supervisor.pool_state import PoolState

log = structlog.get_logger("pipelex_pool.watch")
WATCH_INTERVAL_S = 2.0
QUIET_INTERVAL_S = 10.0
FULL_ROUND_S = 30.0  # under LIVE_WITHIN (75 s): a READY replica's poller never looks gone between two full rounds
RPC_TIMEOUT_S = 5.0
SLOW_START_S = 3.0  # a worker STARTING for longer makes the watch ask whether polls are refused
WARNING_FAST_S = 30.0  # a new warning is looked at every WATCH_INTERVAL_S this long, then every FULL_ROUND_S


@dataclass
class TemporalWatch:
    supervisor: PoolState
    client: Callable[[], Awaitable[Client]]
    submit: Callable[[Request], object]
    expected_down: Callable[[], bool] = bool  # True while Temporal not answering is normal (the dev server boots)
    views: dict[tuple[str, QueueType], QueueView] = field(default_factory=dict)
    fleet: FleetView | None = None  # the fleet's live pools, from its beacon queue (refreshed with full rounds)
    autoscale: dict[str, AutoscaleState] = field(default_factory=dict)
    # when (supervisor clock) each view's DescribeTaskQueue was sent: a replica READY after that is not in it yet
    asked_at: dict[tuple[str, QueueType], float] = field(default_factory=dict)
    error: str | None = None
    poller_limit: str | None = None  # Temporal's poller limit is reached: what, and how to fix it
    error_since: float | None = None  # wall clock: when Temporal stopped answering the watch
    next_round: float = 0.0  # supervisor clock
    full_round_due: float = 0.0
    fleet_due: float = 0.0  # supervisor clock: the fleet's beacon is described every FLEET_REFRESH_S
    # Temporal's worker heartbeats of this pool's and its fleet's workers (each round), when read, whether offered
    heartbeats: dict[str, WorkerBeat] = field(default_factory=dict)
    heartbeats_read_at: datetime | None = None
    heartbeats_offered: bool | None = None  # None: not asked yet
    mismatches_logged: set[str] = field(default_factory=set)  # routing mismatches already logged (error level)
    open_warnings: frozenset[str] = frozenset()  # the warnings last seen, and since when (supervisor clock) as such
    warnings_since: float = 0.0
    _poked: anyio.Event = field(default_factory=anyio.Event, init=False, repr=False)  # the loop: look now

    def watched(self) -> list[tuple[str, QueueType]]:
        """Every queue a group polls (with the types its scope serves), every routed queue, the default queue."""
        topology = self.supervisor.topology
        keys: set[tuple[str, QueueType]] = {(topology.temporal.default_task_queue, QueueType.WORKFLOW)}
        for queue in topology.temporal.known_queues():
            keys.add((queue, QueueType.ACTIVITY))
        for group in self.supervisor.groups.values():
            if group.spec is not None:
                keys |= {(group.spec.task_queue, t) for t in served_types(self.supervisor, group.spec.scope)}
        return sorted(keys, key=lambda k: (k[0], k[1].name))

    async def run(self) -> None:
        """A round when one is due or there is something to learn, looked at every WATCH_INTERVAL_S on the tick
        grid; while there is nothing to learn, not before the next round is due unless the loop pokes it."""
        while True:
            if self.supervisor.clock() >= self.next_round or self.looking():
                await self._round(await self.client())
            if self.looking():
                await sleep_on_grid(WATCH_INTERVAL_S)
                continue
            self._poked = anyio.Event()
            with anyio.move_on_after(on_grid(self.next_round, WATCH_INTERVAL_S) - self.supervisor.clock()):
                await self._poked.wait()
                await sleep_on_grid(WATCH_INTERVAL_S)  # (with the other periodic tasks)

    def poke(self) -> None:
        """(from the loop, while something is under way: a start, a stop, ...) look at the pool again now."""
        self._poked.set()

    def looking(self) -> bool:
        """Whether there is something to learn about pollers now: a replica starting or READY but not yet seen in a
        full description, an open warning, or Temporal not answering."""
        if self.error or self.poller_limit or self._new_warning():
            return True
        for group in self.supervisor.groups.values():
            if group.spec is None:
                continue
            for handle in group.all_handles():
                if handle.state is ProcState.STARTING:
                    return True
                if handle.state is ProcState.READY and handle.ready_at is not None:
                    types = served_types(self.supervisor, group.spec.scope)
                    if any(self._older_than((group.spec.task_queue, t), handle.ready_at) for t in types):
                        return True
        return False

    def _new_warning(self) -> bool:
        """A warning is open and the set of warnings changed within WARNING_FAST_S, as of the last round (the
        warnings are worked out once a round, from its views: not every time the watch looks at the pool)."""
        return bool(self.open_warnings) and self.supervisor.clock() - self.warnings_since < WARNING_FAST_S

    def _note_warnings(self, mismatches: list[str] | None) -> None:
        found = frozenset(self.warnings(mismatches))
        if found != self.open_warnings:
            self.open_warnings, self.warnings_since = found, self.supervisor.clock()

    async def _round(self, client: Client) -> None:
        started = self.supervisor.clock()
        full = started >= self.full_round_due or self.looking()
        fleet = full or started >= self.fleet_due
        asked_wall = time.time()  # (when the requests that may go unanswered were sent)
        errors, beats_error = await self._ask_all(client, full, fleet)
        if fleet:
            self.fleet_due = started + FLEET_REFRESH_S
        if errors and not self.error:
            self.error_since = asked_wall  # when the request that went unanswered was sent
            if self.expected_down():  # a normal start or stop: the pool's own dev server
                log.info(
                    "watch.temporal_not_answering", because="the pool's own dev server is not up", errors=errors[:1]
                )
            else:
                log.warning("watch.temporal_unavailable", errors=errors[:3])
        elif not errors and self.error:
            log.info("watch.temporal_available", after_s=round(time.time() - (self.error_since or time.time()), 1))
        self.error = "; ".join(errors) or None
        mismatches = None
        if not errors:
            if beats_error is not None:  # (while Temporal does not answer, that says it already)
                log.info("watch.worker_list_failed", error=beats_error)
            mismatches = self.routing_mismatches()
            for mismatch in sorted(set(mismatches) - self.mismatches_logged):
                log.error("watch.routing_mismatch", problem=mismatch)
            self.mismatches_logged = set(mismatches)
            if full:
                self.full_round_due = started + FULL_ROUND_S
            self._autoscale(self.supervisor.clock())
            await self._check_poller_limit(client)
        self._note_warnings(mismatches)
        autoscaled = any(g.spec is not None and g.spec.autoscale is not None for g in self.supervisor.groups.values())
        busy = autoscaled or self.looking()
        self.next_round = self.supervisor.clock() + (WATCH_INTERVAL_S if busy else QUIET_INTERVAL_S)

    async def _ask_all(self, client: Client, full: bool, fleet: bool) -> tuple[list[str], str | None]:
        """A round's questions, all side by side (their answers come back together: one wake-up of the supervisor
        for most of them, and a server that does not answer costs one timeout, not one per question): every
        watched queue (a queue that got no answer keeps its last view, marked stale), the fleet's beacon when
        `fleet`, the workers' heartbeats (of the fleet as last described). Returns what went wrong, and why the
        heartbeats could not be read."""
        errors: list[str] = []
        beats_error: list[str] = []

        async def one(key: tuple[str, QueueType]) -> None:
            previous = None if full else self.views.get(key)
            asked_at = self.supervisor.clock()
            try:
                with anyio.fail_after(RPC_TIMEOUT_S):
                    self.views[key] = await describe(client, *key, previous)
                if previous is None:
                    self.asked_at[key] = asked_at
            except Exception as exc:  # keep the last view, marked stale; retry next round
                errors.append(f"{key[0]}/{key[1].name}: {exc or type(exc).__name__}")
                if key in self.views:
                    self.views[key].error = errors[-1]

        async def beacon() -> None:
            try:
                with anyio.fail_after(RPC_TIMEOUT_S):
                    self.fleet = await describe_fleet(client, self.supervisor.topology.pool.fleet_name)
            except Exception as exc:
                errors.append(f"fleet beacon: {exc or type(exc).__name__}")

        async def beats() -> None:
            error = await self._read_heartbeats(client)
            if error is not None:
                beats_error.append(error)

        async with anyio.create_task_group() as tg:
            for key in self.watched():
                tg.start_soon(one, key)
            if fleet:
                tg.start_soon(beacon)
            if self.heartbeats_offered is not False:  # (one call per round: the pool's and its fleet's workers)
                tg.start_soon(beats)
        return sorted(errors), beats_error[0] if beats_error else None

    async def _check_poller_limit(self, client: Client) -> None:
        """While a worker takes long to start (or the limit was seen), ask whether Temporal refuses new polls."""
        now = self.supervisor.clock()
        slow = any(
            h.state is ProcState.STARTING and h.started_at is not None and now - h.started_at > SLOW_START_S
            for g in self.supervisor.groups.values()
            for h in g.all_handles()
        )
        if not slow and self.poller_limit is None:
            return
        try:
            with anyio.fail_after(RPC_TIMEOUT_S):
                refused = await poller_limit_error(client)
        except Exception as exc:  # the probe is a hint: a failure of it is no finding
            log.info("watch.poller_limit_probe_failed", error=str(exc) or type(exc).__name__)
            return
        if refused and self.poller_limit is None:
            log.error("watch.poller_limit", error=refused, namespace=client.namespace)
        elif not refused and self.poller_limit is not None:
            log.info("watch.poller_limit_cleared", namespace=client.namespace)
        self.poller_limit = (
            f"Temporal refuses new polls in namespace {client.namespace!r} ({refused}): replicas that start now get "
            "no work; run fewer replicas or fewer pollers per replica (max_concurrent_*_task_polls), or raise the "
            "namespace's limit (frontend.namespaceCount)"
            if refused
            else None
        )

    def _autoscale(self, now: float) -> None:
        for group in self.supervisor.groups.values():
            spec = group.spec
            if spec is None or spec.autoscale is None or group.stopped_by_operator or group.removed:
                continue
            if group.paused_by_operator:  # its backlog grows by the operator's wish: no replica would help
                continue
            if group.roll_queue or group.replacement:  # one change at a time: let the rolling restart finish
                continue
            types = served_types(self.supervisor, spec.scope)
            view = self.views.get(
                (spec.task_queue, QueueType.ACTIVITY if QueueType.ACTIVITY in types else QueueType.WORKFLOW)
            )
            if view is None:
                continue
            state = self.autoscale.setdefault(group.name, AutoscaleState(desired=group.desired, changed_at=now))
            before = group.desired
            members = self.fleet.members(self.supervisor.topology.pool.name) if self.fleet else 1
            decide(state, view.stats.backlog, before, spec.autoscale, now, members)
            idle = sum(1 for handle in group.handles if not self._busy(handle))
            after = retire_idle_only(state, before, idle, spec.autoscale.busy_wait.total_seconds(), now)
            if after != before:
                log.info(
                    "autoscale.decision",
                    group=group.name,
                    queue=spec.task_queue,
                    backlog=view.stats.backlog,
                    target_backlog_per_replica=spec.autoscale.target_backlog_per_replica,
                    replicas_from=before,
                    replicas_to=after,
                    fleet_pools=members,
                    reason=state.reason,
                )
                self.submit(Scale(group.name, after, by_autoscaler=True, reason=state.reason))

    def _busy(self, handle: ProcessHandle) -> bool:
        """A READY replica with attempts in flight (the autoscaler lets it finish them before it retires it)."""
        info = self.supervisor.info.get(handle)
        return handle.state is ProcState.READY and info is not None and bool(info.inflight)

    def polling(
        self, queue: str, types: list[QueueType], identities: tuple[str, ...], ready_at: float | None
    ) -> bool | None:
        """Whether Temporal sees one of the replica's `identities` polling `queue` recently for every type (None:
        not known yet)."""
        views = [self.views.get((queue, t)) for t in types]
        if not views or any(v is None or v.seen_at is None for v in views):
            return None
        if ready_at is not None and any(self._older_than((queue, t), ready_at) for t in types):
            return None  # described before this replica was READY: the next round tells
        now = datetime.now(UTC)
        return all(any(i in v.live_pollers(now) for i in identities) for v in views if v is not None)

    async def _read_heartbeats(self, client: Client) -> str | None:
        """The pool's workers' last heartbeats; a server without them is asked no more (said in status). Returns
        why they could not be read (the last ones are kept)."""
        try:
            with anyio.fail_after(RPC_TIMEOUT_S):
                pools = {self.supervisor.topology.pool.name, *(self.fleet.pools if self.fleet else ())}
                self.heartbeats = await list_workers(client, pools)  # this pool's and its fleet's
        except NoWorkerList as exc:
            log.info("watch.no_worker_heartbeats", reason=str(exc))
            self.heartbeats_offered, self.heartbeats = False, {}
            return None
        except Exception as exc:  # a view among others: keep the last one
            return str(exc) or type(exc).__name__
        self.heartbeats_offered, self.heartbeats_read_at = True, datetime.now(UTC)
        return None

    def fleet_lagging(self, version: str) -> list[str]:
        """The live pools of this pool's fleet that poll one of its queues and none with `version` there (a
        deploy switches only once this is empty): e.g. "host2-pool (host2) runs only A on llm_q (activity)"."""
        if self.fleet is None:
            return []
        views = [
            view for key in sorted(self._polled(), key=lambda k: (k[0], k[1].name)) if (view := self.views.get(key))
        ]
        return self.fleet.lagging(self.supervisor.topology.pool.name, views, version, datetime.now(UTC))

    def _polled(self) -> set[tuple[str, QueueType]]:
        return {
            (g.spec.task_queue, t)
            for g in self.supervisor.groups.values()
            if g.spec is not None and not g.removed
            for t in served_types(self.supervisor, g.spec.scope)
        }

    def routing_mismatches(self) -> list[str]:
        """The queues this pool polls whose new runs Temporal routes to a Worker Deployment version that no live
        poller serves (they wait in the backlog, whatever `status` says of the replicas): what, and the fix."""
        topology = self.supervisor.topology
        polled = self._polled()
        found = []
        now, pool, host = datetime.now(UTC), topology.pool.name, socket.gethostname()
        alive = live_identities(self.supervisor)
        for key in sorted(polled, key=lambda k: (k[0], k[1].name)):
            view = self.views.get(key)
            if view is None or view.seen_at is None or view.error:
                continue
            served = {  # by a live process: not one of this pool's that exited (Temporal lists it ~75 s more)
                poller.version
                for identity, poller in view.live_pollers(now).items()
                if identity in alive
                or (identity not in self.supervisor.exited_identities and not former_process(identity, pool, host))
            }
            for role, version in (("current", view.current_version), ("ramping", view.ramping_version)):
                if version is None or version in served:
                    continue
                deployment, _, build = version.rpartition(".")
                ours = topology.pool.deployment
                if ours is None:
                    why = "this pool is unversioned, so its replicas get none of them"
                    fix = f'set [pool] deployment = "{deployment}" (and build_id) and restart the pool'
                elif ours != deployment:
                    why = f"this pool registers in Worker Deployment {ours!r}, not {deployment!r}"
                    fix = f'set [pool] deployment = "{deployment}", or move the queue to {ours!r}'
                else:
                    why = f"this pool runs build {self.supervisor.build_id!r}, not {build!r}"
                    fix = f"`pipelex-pool deploy --build-id {build}`, or make this build current"
                release = (
                    f"`temporal worker deployment set-current-version --deployment-name {deployment} --unversioned`"
                    if role == "current"
                    else f"`temporal worker deployment set-ramping-version --deployment-name {deployment} --delete`"
                )
                found.append(
                    f"routing mismatch: queue {key[0]!r} ({key[1].name.lower()}): Temporal sends new runs to the "
                    f"{role} version {version} of Worker Deployment {deployment!r}, which no live poller serves; "
                    f"{why}. Fix: {fix}, or release the queue: {release}"
                )
        return found

    def warnings(self, mismatches: list[str] | None = None) -> list[str]:
        """What status warns about the queues (`mismatches`: the routing mismatches, when just worked out)."""
        topology = self.supervisor.topology
        routed: dict[str, list[str]] = {}
        for activity, route in topology.temporal.worker_config.activity_queues.items():
            for queue in route.queues():
                routed.setdefault(queue, []).append(activity)
        found = [self.poller_limit] if self.poller_limit else []
        found += self.routing_mismatches() if mismatches is None else mismatches
        now, alive = datetime.now(UTC), live_identities(self.supervisor)
        for (queue, queue_type), view in sorted(self.views.items(), key=lambda kv: (kv[0][0], kv[0][1].name)):
            if view.seen_at is None:
                continue
            owners = pollers_by_owner(self.supervisor, self.fleet, view, now, alive)
            routed_here = queue_type is QueueType.ACTIVITY and queue in routed
            if routed_here and not owners.serving and not owners.foreign and not self._ready_since(queue, view):
                paused = [g.name for g in self.supervisor.groups.values() if g.paused_by_operator and g.spec
                          and g.spec.task_queue == queue]  # fmt: skip
                why = f" (paused: {', '.join(paused)}; `pipelex-pool resume`)" if paused else ""
                found.append(
                    f"queue {queue!r} has routed activities ({', '.join(sorted(routed[queue]))}) but no live "
                    f"poller{why}: they will wait in its backlog"
                )
            for identity in owners.foreign:
                found.append(
                    f"queue {queue!r} ({queue_type.name.lower()}): poller {identity!r} is not one of this pool's "
                    f"live replicas nor of its fleet {self.supervisor.topology.pool.fleet_name!r} (a stray process, "
                    "or a pool of another fleet)"
                )
        return found

    def _older_than(self, key: tuple[str, QueueType], moment: float) -> bool:
        asked_at = self.asked_at.get(key)
        return asked_at is None or asked_at < moment

    def _ready_since(self, queue: str, view: QueueView) -> bool:
        """Whether a replica that polls this queue became READY after the view was asked for (so it may be missing)."""
        key = (queue, view.queue_type)
        for group in self.supervisor.groups.values():
            if group.spec is None or group.spec.task_queue != queue:
                continue
            if view.queue_type not in served_types(self.supervisor, group.spec.scope):
                continue
            if any(h.ready_at is not None and self._older_than(key, h.ready_at) for h in group.all_handles()):
                return True
        return False


def live_identities(supervisor: PoolState) -> set[str]:
    """Identities of the pool's processes that are alive and able to poll (not stopped by SIGSTOP, not zombies)."""
    alive, host = set(), socket.gethostname()
    for handle in supervisor.handles():
        info = supervisor.info.get(handle)
        if handle.pid is None or not handle.state.alive or info is None or not info.identity:
            continue
        if info.usage is None or info.usage.can_run:
            alive |= {info.identity, sdk_default_identity(handle.pid, host)}
    return alive


@dataclass(frozen=True)
class Owners:
    """A queue's live pollers by whose they are."""

    own: list[str]  # this pool's live replicas
    fleet: list[str]  # replicas of the other live pools of its fleet
    foreign: list[str]  # anyone else: a stray process, a pool of another fleet

    @property
    def serving(self) -> int:
        return len(self.own) + len(self.fleet)


def pollers_by_owner(
    supervisor: PoolState,
    fleet: FleetView | None,
    view: QueueView,
    now: datetime | None = None,
    alive: set[str] | None = None,
) -> Owners:
    """The queue's live pollers split by owner. This pool's are compared by exact identity (its live processes);
    its processes that exited within the last minutes are in no list (Temporal lists a dead worker's last polls
    for up to LIVE_WITHIN); the fleet's other pools are recognised by their name and host, as their beacons list
    them."""
    live = view.live_pollers(now)
    alive = live_identities(supervisor) if alive is None else alive  # (one set for every queue of a pass)
    pool, host = supervisor.topology.pool.name, socket.gethostname()
    members = set(fleet.pools) - {pool} if fleet else set()
    own: list[str] = []
    fleets: list[str] = []
    foreign: list[str] = []
    for identity in sorted(live):
        if identity in alive:
            own.append(identity)
        elif identity in supervisor.exited_identities or former_process(identity, pool, host):
            continue
        elif pool_of(identity) in members and fleet and host_of(identity) in fleet.pools[pool_of(identity)]:
            fleets.append(identity)  # (a fleet pool's name on a host its beacon does not list is a stray)
        else:
            foreign.append(identity)
    return Owners(own, fleets, foreign)


def former_process(identity: str, pool: str, host: str) -> bool:
    """A poller of this pool, on this host, whose process is gone (a previous `up`'s replica: Temporal lists its
    last polls for up to LIVE_WITHIN after it exited). A live process of the pool that this supervisor does not
    run is no former process: it is a stray, and warned about."""
    if pool_of(identity) != pool or host_of(identity) != host:
        return False
    pid = identity.rpartition(":")[2]
    return pid.isdigit() and not psutil.pid_exists(int(pid))  # (a pid reused since: warned about, for a minute)


def served_types(supervisor: PoolState, scope: str) -> list[QueueType]:
    resolved = supervisor.topology.scopes.get(scope)
    if resolved is None:
        return []
    return queue_types(resolved)
