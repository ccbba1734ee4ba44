"""Desired-state requests from control commands and signals.

Each one only changes what the pool should look like and wakes the reconcile loop, which alone acts on
processes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import structlog

from pipelex_pool.supervisor.groups import worker_group
from pipelex_pool.supervisor.reload import ReloadPlan, plan_reload
from pipelex_pool.supervisor.state import ProcState
from pipelex_pool.topology.load import Topology, load_topology

if TYPE_CHECKING:
    from pipelex_pool.supervisor.loop import Supervisor

log = structlog.get_logger("pipelex_pool.supervisor")


def busy(supervisor: Supervisor, names: list[str] | None = None) -> str | None:
    """What in-progress operation a new mutating command would conflict with, if any."""
    for group in supervisor.groups.values():
        if (names is None or group.name in names) and (group.roll_queue or group.replacement):
            left = len(group.roll_queue)
            return f"a rolling restart of group {group.name!r} is in progress ({left} replica(s) left)"
    return None


def restart_failed(supervisor: Supervisor) -> list[str]:
    """Bring every FATAL replica back (its restart budget starts afresh); returns their names."""
    fatal = [h.name for g in supervisor.all_groups() for h in g.handles if h.state is ProcState.FATAL]
    for group in supervisor.all_groups():
        group.revive_requested = any(h.state is ProcState.FATAL for h in group.handles)
    supervisor.wake("restart-failed")
    return fatal


def restart(supervisor: Supervisor, names: list[str]) -> None:
    """Roll each group: one replica at a time, its replacement READY before it drains."""
    for name in names:
        group = supervisor.group(name)
        group.roll_queue = list(range(len(group.handles)))
    supervisor.spawner.refresh()  # replacements run the code installed now, not what a warm spawner imported
    supervisor.wake("restart")


def set_stopped(supervisor: Supervisor, name: str, stopped: bool) -> None:
    supervisor.group(name).stopped_by_operator = stopped
    supervisor.wake("stop" if stopped else "start")


def scale(supervisor: Supervisor, name: str, replicas: int) -> None:
    supervisor.group(name).desired = replicas
    supervisor.wake("scale")


def apply_topology(supervisor: Supervisor, new: Topology) -> ReloadPlan:
    """Apply a validated topology: new groups start, removed ones drain, changed ones roll, replicas scale."""
    plan = plan_reload(supervisor.topology, new)
    supervisor.systemd.reloading()
    for name in plan.removed:
        supervisor.groups[name].removed = True
    for name, spec in new.groups.items():
        fresh = worker_group(new, spec, new.file)
        if name in supervisor.groups:  # (a group removed by an earlier reload and still draining comes back)
            fresh.adopt(supervisor.groups[name])
            if name in plan.rolled:
                fresh.roll_queue = list(range(min(len(fresh.handles), fresh.desired)))
        supervisor.groups[name] = fresh
    supervisor.topology = new
    supervisor.spawner.refresh()
    log.info("supervisor.reloaded", **plan.as_dict())
    supervisor.wake("reload")
    return plan


async def reload_from_file(supervisor: Supervisor) -> ReloadPlan:
    """Re-read the topology file (off the event loop) and apply it; TopologyError leaves everything as is."""
    new = await anyio.to_thread.run_sync(load_topology, supervisor.topology.file)
    return apply_topology(supervisor, new)
