"""The reconcile loop: the one owner of process state.

Signals and control commands change desired state and send a Wake; observers report Notified / SeenReady /
Exited events. Only this loop spawns, signals and reaps (through ProcessHandle actions)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
import structlog
from anyio.abc import TaskGroup
from temporalio.client import Client

from pipelex_pool.errors import TopologyError
from pipelex_pool.notify import SDK_METRICS_KEY
from pipelex_pool.paths import PoolPaths
from pipelex_pool.supervisor.events import Event, Exited, Notified, SeenReady, Wake
from pipelex_pool.supervisor.groups import DEV_SERVER_GROUP, Readiness, SupervisedGroup, dev_server_group, worker_group
from pipelex_pool.supervisor.handle import Action, ProcessHandle
from pipelex_pool.supervisor.health import check_temporal, watch_resources
from pipelex_pool.supervisor.lock import record_for, write_state
from pipelex_pool.supervisor.logfile import RotatingLog
from pipelex_pool.supervisor.observe import bind_notify_socket, watch_child, watch_polling, watch_serving
from pipelex_pool.supervisor.overview import settled, summary
from pipelex_pool.supervisor.ports import pick_port
from pipelex_pool.supervisor.requests import reload_from_file
from pipelex_pool.supervisor.resources import ResourceProbe, Usage
from pipelex_pool.supervisor.rolling import advance_roll
from pipelex_pool.supervisor.spawn import ExecSpawner, Spawner
from pipelex_pool.supervisor.state import ExitStatus, ProcState
from pipelex_pool.supervisor.systemd import SystemdNotifier
from pipelex_pool.supervisor.watch import TemporalWatch, served_types
from pipelex_pool.temporal.connect import connect
from pipelex_pool.temporal.pollers import QueueType
from pipelex_pool.topology.load import Topology
from pipelex_pool.units import split_port_range
from pipelex_pool.worker.accounting import NOTIFY_KEY, TaskCounts
from pipelex_pool.worker.config import SDK_METRICS_ENV

log = structlog.get_logger("pipelex_pool.supervisor")
MAX_IDLE_S = 5.0


@dataclass
class ReplicaInfo:
    """What the loop knows about a replica beyond its state machine (for status)."""

    identity: str = ""
    status_text: str = ""
    probe: ResourceProbe | None = None
    tasks: TaskCounts | None = None  # the process's own counts, as it last reported them
    usage: Usage | None = None
    sdk_metrics_given: str | None = None  # "host:port" given to the process for the SDK's metrics
    sdk_metrics: str | None = None  # "host:port" the process reported serving them on


@dataclass
class Supervisor:
    topology: Topology
    paths: PoolPaths
    dev_server: bool
    spawner: Spawner = field(default_factory=ExecSpawner)
    clock: Callable[[], float] = time.monotonic
    groups: dict[str, SupervisedGroup] = field(default_factory=dict)
    dev: SupervisedGroup | None = None
    info: dict[ProcessHandle, ReplicaInfo] = field(default_factory=dict)
    shutting_down: bool = False
    temporal_error: str | None = "not checked yet"
    started_wall: float = field(default_factory=time.time)
    pid: int = field(default_factory=os.getpid)

    def __post_init__(self) -> None:
        self._send, self._receive = anyio.create_memory_object_stream[Event](max_buffer_size=10_000)
        self._tg: TaskGroup | None = None
        self._client: Client | None = None
        self._spawn_count = 0
        self.systemd = SystemdNotifier()
        self.watch = TemporalWatch(self)
        self.groups = {
            name: worker_group(self.topology, group, self.topology.file) for name, group in self.topology.groups.items()
        }
        if self.dev_server:
            self.dev = dev_server_group(self.topology, self.paths.state_dir)

    # -- desired state (called by signal handlers and control commands) ------------------------------------------

    def wake(self, reason: str) -> None:
        self._send.send_nowait(Wake(reason))

    def request_shutdown(self, reason: str) -> None:
        if not self.shutting_down:
            log.info("supervisor.stopping", reason=reason)
            self.systemd.stopping()
        self.shutting_down = True
        self.wake(reason)

    def group(self, name: str) -> SupervisedGroup:
        """A worker group by name; raises KeyError naming the known groups."""
        if name not in self.groups or self.groups[name].removed:
            raise KeyError(f"no group {name!r} in this pool (groups: {', '.join(sorted(self.groups))})")
        return self.groups[name]

    # -- the loop ------------------------------------------------------------------------------------------------

    def all_groups(self) -> list[SupervisedGroup]:
        return ([self.dev] if self.dev else []) + list(self.groups.values())

    def handles(self) -> list[ProcessHandle]:
        return [handle for group in self.all_groups() for handle in group.all_handles()]

    async def run(self) -> None:
        """Supervise until shutdown is requested and every child has exited."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            tg.start_soon(self._signals)
            tg.start_soon(watch_resources, self)
            tg.start_soon(check_temporal, self)
            tg.start_soon(self.watch.run)
            log.info(
                "supervisor.started", pool=self.topology.pool.name, pid=os.getpid(), topology=str(self.topology.file)
            )
            await self._loop()
            tg.cancel_scope.cancel()
        log.info("supervisor.stopped", pool=self.topology.pool.name)

    async def _signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    try:
                        await reload_from_file(self)
                    except TopologyError as exc:
                        log.error("supervisor.reload_refused", errors=[i.render(str(exc.file)) for i in exc.issues])
                else:
                    self.request_shutdown(signal.Signals(signum).name)

    async def _loop(self) -> None:
        while True:
            now = self.clock()
            for group in self.all_groups():
                for handle in group.all_handles():
                    if group.readiness is Readiness.DELAY and handle.state is ProcState.STARTING:
                        if handle.started_at is not None and now >= handle.started_at + group.ready_delay:
                            self._mark_ready(handle, now)
                    await self._execute(group, handle, handle.tick(now), now)
            await self._reconcile(now)
            if self.shutting_down and not any(h.state.alive for h in self.handles()):
                return
            self.systemd.settled(summary(self), settled(self))
            deadlines = [d for d in (self._next_deadline(g) for g in self.all_groups()) if d is not None]
            ping = self.systemd.ping_due(now)  # a stuck loop stops these, and systemd restarts the service
            if ping is not None:
                deadlines.append(ping)
            timeout = max(0.0, min([now + MAX_IDLE_S, *deadlines]) - self.clock())
            with anyio.move_on_after(timeout):
                await self._apply(await self._receive.receive())
            while True:
                try:
                    event = self._receive.receive_nowait()
                except anyio.WouldBlock:
                    break
                await self._apply(event)

    def _next_deadline(self, group: SupervisedGroup) -> float | None:
        times = [t for t in (h.next_deadline() for h in group.all_handles()) if t is not None]
        if group.readiness is Readiness.DELAY:
            times += [
                h.started_at + group.ready_delay
                for h in group.all_handles()
                if h.state is ProcState.STARTING and h.started_at
            ]
        return min(times) if times else None

    async def _reconcile(self, now: float) -> None:
        dev_ready = self.dev is None or any(h.state is ProcState.READY for h in self.dev.handles)
        workers_alive = any(h.state.alive for g in self.groups.values() for h in g.handles)
        if self.dev is not None:
            await self._converge(self.dev, 0 if self.shutting_down and not workers_alive else 1, now)
        for group in self.all_groups():
            if group.revive_requested:
                group.revive_requested = False
                for handle in group.handles:
                    await self._execute(group, handle, handle.revive(now), now)
        for group in list(self.groups.values()):
            desired = 0 if self.shutting_down or group.stopped_by_operator or group.removed else group.desired
            await self._converge(group, desired, now, may_start=dev_ready)
            await advance_roll(group, now, self._execute, stopping=self.shutting_down)
            if group.removed and not group.all_handles():
                del self.groups[group.name]
                log.info("group.removed", group=group.name)

    async def _converge(self, group: SupervisedGroup, desired: int, now: float, may_start: bool = True) -> None:
        while len(group.handles) < desired:
            group.new_handle()
        for handle in group.handles[:desired]:
            if handle.state is ProcState.STOPPED and may_start:
                await self._execute(group, handle, handle.start(now), now)
        for handle in group.handles[desired:]:
            await self._execute(group, handle, handle.stop(now), now)
        while len(group.handles) > desired and group.handles[-1].state in (
            ProcState.STOPPED,
            ProcState.EXITED,
            ProcState.FATAL,
        ):
            self.info.pop(group.handles.pop(), None)

    # -- events --------------------------------------------------------------------------------------------------

    async def _apply(self, event: Event) -> None:
        if isinstance(event, Wake):
            return
        handle = event.handle
        if event.generation != handle.generation:
            return  # a late report about a process this handle has already replaced
        now = self.clock()
        group = self._group_of(handle)
        if isinstance(event, Exited):
            await self._on_exit(group, handle, ExitStatus.from_returncode(event.returncode), now)
        elif isinstance(event, SeenReady):
            self._mark_ready(handle, now)
        elif isinstance(event, Notified):
            fields = event.fields
            if "STATUS" in fields:
                self.replica_info(handle).status_text = fields["STATUS"]
            if fields.get("READY") == "1" and group.readiness is Readiness.NOTIFY:
                self._mark_ready(handle, now)
            if fields.get("WATCHDOG") == "1":
                handle.watchdog_ping(now)
            if NOTIFY_KEY in fields:
                self.replica_info(handle).tasks = TaskCounts.from_notify(fields[NOTIFY_KEY])
            if SDK_METRICS_KEY in fields:
                self.replica_info(handle).sdk_metrics = fields[SDK_METRICS_KEY]
            if fields.get("STOPPING") == "1":
                log.info("worker.draining", group=handle.group, replica=handle.replica, pid=handle.pid)

    def _mark_ready(self, handle: ProcessHandle, now: float) -> None:
        if handle.state is ProcState.STARTING:
            handle.ready(now)
            startup = now - (handle.started_at or now)
            log.info(
                "worker.ready", group=handle.group, replica=handle.replica, pid=handle.pid, startup_s=round(startup, 3)
            )
            self.wake("ready")

    async def _on_exit(self, group: SupervisedGroup, handle: ProcessHandle, status: ExitStatus, now: float) -> None:
        pid = handle.pid
        actions = handle.exited(status, now)
        group.exits_total[status.describe()] += 1
        info = self.info.get(handle)
        if info is not None and info.tasks is not None:  # keep its counts in the group's history
            group.tasks_history = group.tasks_history + info.tasks
            info.tasks = None
        if handle.state is ProcState.BACKOFF:
            group.restarts_total += 1
        if handle in group.retiring and not handle.state.alive:
            group.retiring.remove(handle)
            self.info.pop(handle, None)
        fields = {"group": handle.group, "replica": handle.replica, "pid": pid, "status": status.describe()}
        if handle.state is ProcState.BACKOFF:
            log.warning(
                "worker.exited", **fields, next="backoff", delay_s=round((handle.backoff_until or now) - now, 2)
            )
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
                if action is Action.KILL and handle.kill_reason:
                    log.warning(
                        "worker.killed",
                        group=handle.group,
                        replica=handle.replica,
                        pid=handle.pid,
                        reason=handle.kill_reason,
                    )
                try:
                    os.killpg(handle.pid, signum)
                except ProcessLookupError:
                    pass  # already gone: its Exited event is on the way

    async def _spawn(self, group: SupervisedGroup, handle: ProcessHandle, now: float) -> None:
        assert self._tg is not None
        spec = group.make_spec(handle.replica)
        notify = None
        env = dict(spec.env)
        if group.readiness is Readiness.NOTIFY:
            # One path per process ever spawned: a replacement must not take over (or later unlink) the socket
            # of the process it replaces, which is still draining and reporting on it.
            self._spawn_count += 1
            path = self.paths.notify_dir / f"{handle.group}-{handle.replica}-{self._spawn_count}.sock"
            notify = (bind_notify_socket(path), path)
            env["NOTIFY_SOCKET"] = str(path)
            if handle.timings.watchdog:
                env["WATCHDOG_USEC"] = str(int(handle.timings.watchdog * 1e6 / 3))  # 3 pings per allowed gap
        metrics_address = self._sdk_metrics_address(group, handle)
        if metrics_address is not None:
            env[SDK_METRICS_ENV] = metrics_address
        output = RotatingLog(
            self.paths.log_dir / f"{handle.group}-{handle.replica}.log",
            self.topology.pool.log_max_bytes,
            self.topology.pool.log_backups,
        )
        try:
            process = await self.spawner.spawn(spec.__class__(spec.name, spec.argv, env, spec.identity))
        except OSError as exc:
            output.close()
            if notify is not None:
                notify[0].close()
                notify[1].unlink(missing_ok=True)
            log.error("worker.spawn_failed", group=handle.group, replica=handle.replica, error=str(exc))
            await self._execute(group, handle, handle.spawn_failed(str(exc), now), now)
            return
        handle.spawned(process.pid)
        info = self.replica_info(handle)
        info.identity = spec.identity.replace("__PID__", str(process.pid))
        info.status_text = ""
        info.sdk_metrics_given, info.sdk_metrics = metrics_address, None
        log.info(
            "worker.spawned", group=handle.group, replica=handle.replica, pid=process.pid, generation=handle.generation
        )
        self._write_state()
        generation = handle.generation
        self._tg.start_soon(watch_child, handle, generation, process, output, notify, self._send.clone())
        if group.readiness is Readiness.SERVING:
            server = self.topology.temporal.selected_server()
            assert server is not None
            self._tg.start_soon(
                watch_serving,
                handle,
                generation,
                server.target_host,
                server.namespace,
                handle.timings.start_timeout,
                self._send.clone(),
            )
        elif group.readiness is Readiness.TEMPORAL and group.spec is not None:
            types = served_types(self, group.spec.scope)
            self._tg.start_soon(self._watch_polling, handle, generation, group.spec.task_queue, types, info.identity)

    def _sdk_metrics_address(self, group: SupervisedGroup, handle: ProcessHandle) -> str | None:
        """The address (host:port) for this process's SDK metrics: the lowest port no other live replica holds."""
        if self.topology.pool.worker_metrics is None or group is self.dev:
            return None
        host, ports = split_port_range(self.topology.pool.worker_metrics)
        given = [i.sdk_metrics_given for h, i in self.info.items() if h.state.alive and h is not handle]
        port = pick_port(host, ports, [int(a.rpartition(":")[2]) for a in given if a])
        if port is None:
            log.warning("worker.sdk_metrics_no_port", group=handle.group, replica=handle.replica, ports=str(ports))
            return None
        return f"{host}:{port}"

    async def _watch_polling(
        self, handle: ProcessHandle, generation: int, queue: str, types: list[QueueType], identity: str
    ) -> None:
        client = await self.temporal_client()
        await watch_polling(client, handle, generation, queue, types, identity, self._send.clone())

    async def temporal_client(self, *, retry: bool = True) -> Client:
        """The supervisor's one Temporal client, connected on first use (retrying while the server boots,
        unless `retry` is False)."""
        while self._client is None:
            server = self.topology.temporal.selected_server()
            assert server is not None
            try:
                self._client = await connect(server, f"{self.topology.pool.name}/supervisor@{os.getpid()}")
            except Exception as exc:  # server not up yet: readiness checks wait, nothing is marked failed
                if not retry:
                    raise
                log.warning("supervisor.temporal_unreachable", target=server.target_host, error=str(exc))
                await anyio.sleep(1.0)
        return self._client

    # -- bookkeeping ---------------------------------------------------------------------------------------------

    def _group_of(self, handle: ProcessHandle) -> SupervisedGroup:
        if handle.group == DEV_SERVER_GROUP and self.dev is not None:
            return self.dev
        return self.groups[handle.group]

    def replica_info(self, handle: ProcessHandle) -> ReplicaInfo:
        return self.info.setdefault(handle, ReplicaInfo())

    def _write_state(self) -> None:
        records = [record_for(h.pid, h.name) for h in self.handles() if h.pid is not None]
        write_state(self.paths.state_file, [r for r in records if r is not None])
