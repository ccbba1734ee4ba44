"""Starting one replica's process: what its launch needs (its log file, a notify socket of its own, a port for the
SDK's metrics, the build it runs, a paused start), the launch, and the watchers that report on it (its exit, its
readiness) to the loop's inbox. Called by the loop, on its task; a failure is returned for the loop to count."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import structlog
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectSendStream

from pipelex_pool.contract import START_PAUSED_ENV, with_pid
from pipelex_pool.paths import PoolPaths
from pipelex_pool.supervisor.events import Event, Notified
from pipelex_pool.supervisor.fault import guarded
from pipelex_pool.supervisor.groups import Readiness, SupervisedGroup
from pipelex_pool.supervisor.pool_state import ReplicaInfo
from pipelex_pool.supervisor.process.handle import ProcessHandle
from pipelex_pool.supervisor.spawning.launch import LaunchPlan, launch
from pipelex_pool.supervisor.spawning.ports import pick_address
from pipelex_pool.supervisor.spawning.spawner import Spawner
from pipelex_pool.supervisor.watchers.child import watch_child, watch_serving
from pipelex_pool.supervisor.watchers.listing import Listing
from pipelex_pool.supervisor.watchers.notify_batch import NotifyBatch
from pipelex_pool.temporal.pollers import QueueType
from pipelex_pool.topology.load import Topology

log = structlog.get_logger("pipelex_pool.supervisor")


@dataclass
class Starter:
    paths: PoolPaths
    spawner: Spawner
    infos: dict[ProcessHandle, ReplicaInfo]
    send: MemoryObjectSendStream[Event]  # the loop's inbox: what the watchers report on
    note: Callable[[Notified], None]  # ... and where they note watchdog pings (Inbox.note)
    batch: NotifyBatch  # ... and where a READY replica's notify socket is read with the others'
    listing: Listing  # ... and who looks for a starting replica among Temporal's pollers
    record: Callable[[], None]  # the state file, written before a new child may run (raises if it cannot be)
    spawned: int = 0  # processes spawned with a notify socket: each gets a path of its own

    async def start(
        self,
        tg: TaskGroup,
        topology: Topology,
        group: SupervisedGroup,
        handle: ProcessHandle,
        *,
        build_id: str | None,
        types: list[QueueType],
    ) -> str | None:
        """Start the handle's process and its watchers in `tg`; the error, if it could not be started."""
        spec = group.make_spec(handle.replica)
        info = self.infos.setdefault(handle, ReplicaInfo())
        info.pause, info.pause_asked = "", False
        if group.paused_by_operator and group.spec is not None and group.spec.command is None:
            spec = replace(spec, env={**spec.env, START_PAUSED_ENV: "1"})  # it waits, warm, for `resume`
            info.pause_asked = True

        def register(pid: int) -> None:  # before the child may run: the state file knows it first
            handle.spawned(pid)
            info.identity = with_pid(spec.identity, pid)
            self.record()

        try:
            metrics_address = None
            if topology.pool.worker_metrics is not None and group.spec is not None:
                given = [i.sdk_metrics_given for h, i in self.infos.items() if h.state.alive and h is not handle]
                metrics_address = pick_address(topology.pool.worker_metrics, [a for a in given if a])
                if metrics_address is None:
                    log.warning("worker.sdk_metrics_no_port", group=handle.group, replica=handle.replica)
            notify_path = None
            if group.readiness is Readiness.NOTIFY:
                # One path per process ever spawned: a replacement must not take over (or later unlink) the socket
                # of the process it replaces, which is still draining and reporting on it.
                self.spawned += 1
                notify_path = self.paths.notify_dir / f"{handle.group}-{handle.replica}-{self.spawned}.sock"
            plan = LaunchPlan(
                log_path=self.paths.log_dir / f"{handle.group}-{handle.replica}.log",
                log_max_bytes=topology.pool.log_max_bytes,
                log_backups=topology.pool.log_backups,
                notify_path=notify_path,
                watchdog_s=handle.timings.watchdog,
                sdk_metrics=metrics_address,
                build_id=build_id,
            )
            launched = await launch(self.spawner, spec, plan, register)
        except Exception as exc:  # whatever it was, it is this replica's failure to start
            return str(exc) or type(exc).__name__
        info.status_text = ""
        info.sdk_metrics_given, info.sdk_metrics = metrics_address, None
        info.build_id = plan.build_id
        generation = handle.generation
        log.info("worker.spawned", group=handle.group, replica=handle.replica, pid=launched.child.pid,
                 generation=generation)  # fmt: skip
        tg.start_soon(guarded, "child_watch", watch_child, handle, generation, launched, self.send, self.note,
                      self.batch)  # fmt: skip
        if group.readiness is Readiness.SERVING:
            address, namespace = topology.connection.address, topology.connection.namespace
            timeout = handle.timings.start_timeout
            tg.start_soon(
                guarded, "serving_watch", watch_serving, handle, generation, address, namespace, timeout, self.send
            )
        elif group.readiness is Readiness.TEMPORAL and group.spec is not None:
            # a command's worker: by its pool identity, or temporalio's `<pid>@<host>` if it kept that one
            self.listing.expect(handle, group.spec.task_queue, types, info.identity, command=True)
        return None
