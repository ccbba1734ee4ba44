"""A group brought toward what is wanted of it, one bounded step per loop iteration: its replicas started as the
spawn budget allows, surplus ones retired (those that lose the least work first), FATAL ones revived on request,
and a deploy's parked processes given their fate. The loop calls these on its own task; they act through the
loop's `execute` (ProcessHandle actions) and ask its `may_spawn` (the spawn budget) before each start."""

from __future__ import annotations

from collections.abc import Callable

import structlog

from pipelex_pool.supervisor import scale_down
from pipelex_pool.supervisor.groups import ParkedFate, SupervisedGroup
from pipelex_pool.supervisor.pool_state import ReplicaInfo
from pipelex_pool.supervisor.process.handle import ProcessHandle
from pipelex_pool.supervisor.process.state import ProcState
from pipelex_pool.supervisor.rolling import Execute

log = structlog.get_logger("pipelex_pool.supervisor")
MaySpawn = Callable[[float], bool]


async def converge(
    group: SupervisedGroup,
    desired: int,
    now: float,
    execute: Execute,
    may_spawn: MaySpawn,
    infos: dict[ProcessHandle, ReplicaInfo],
    *,
    may_start: bool = True,
) -> None:
    """Start the group's stopped replicas up to `desired` (while the budget allows and `may_start`), retire and
    stop the ones beyond it, and drop the trailing slots that have no process left (and their facts)."""
    while len(group.handles) < desired:
        group.new_handle()
    for handle in group.handles[:desired]:
        if handle.state is ProcState.STOPPED and may_start:
            if not may_spawn(now):
                break  # the rest in the next iterations, after a look at new requests
            await execute(group, handle, handle.start(now), now)
    if desired > 0 and len(group.handles) > desired:  # a scale-down: idle first (scale_down.py)
        await retire(group, len(group.handles) - desired, now, execute, infos)
    for handle in group.handles[desired:]:
        await execute(group, handle, handle.stop(now), now)
    while len(group.handles) > desired and group.handles[-1].state in (
        ProcState.STOPPED,
        ProcState.EXITED,
        ProcState.FATAL,
    ):
        infos.pop(group.handles.pop(), None)


async def retire(
    group: SupervisedGroup, count: int, now: float, execute: Execute, infos: dict[ProcessHandle, ReplicaInfo]
) -> None:
    """Retire `count` replicas, those that lose the least work first; they drain among `retiring`."""

    def inflight(handle: ProcessHandle) -> int:
        info = infos.get(handle)
        return len(info.inflight) if info is not None else 0

    by_autoscaler = group.spec is not None and group.spec.autoscale is not None
    for handle in scale_down.retire_first(group.handles, count, inflight):
        group.handles.remove(handle)
        reason = scale_down.why(handle, inflight(handle), by_autoscaler)
        actions = handle.stop(now)
        if not handle.state.alive:
            infos.pop(handle, None)
            continue
        infos.setdefault(handle, ReplicaInfo()).retiring_because = reason
        group.retiring.append(handle)
        log.info("worker.retiring", group=group.name, replica=handle.replica, pid=handle.pid, reason=reason)
        await execute(group, handle, actions, now)


async def revive(group: SupervisedGroup, now: float, execute: Execute, may_spawn: MaySpawn) -> bool:
    """Start the group's FATAL replicas as the budget allows; True while some are left to revive."""
    for handle in group.handles[: group.desired]:
        if handle.state is ProcState.FATAL:
            if not may_spawn(now):
                return True
            await execute(group, handle, handle.revive(now), now)
    return False


async def settle_parked(group: SupervisedGroup, now: float, execute: Execute, *, stopping: bool) -> None:
    """Carry out the fate of a deploy's parked processes: drain them once the new build is current (RELEASE,
    or any stop), put them back in their slots and drain the new ones (RESTORE: a failed deploy), or put them
    back and park the new ones in turn (SWAP: a rollback, whose build's pinned runs finish on it)."""
    fate = ParkedFate.RELEASE if stopping else group.parked_fate
    if fate is ParkedFate.KEEP:
        return
    group.parked_fate = ParkedFate.KEEP
    swapped: list[ProcessHandle] = []
    if fate in (ParkedFate.RESTORE, ParkedFate.SWAP):
        if group.replacement is not None:
            group.retiring.append(group.replacement)
            await execute(group, group.replacement, group.replacement.stop(now), now)
            group.replacement = None
        for old in list(group.parked):
            slot = group.slot_of(old.replica)
            if slot is not None and old.state.alive:
                new = group.handles[slot]
                group.handles[slot] = old
                group.parked.remove(old)
                log.info("worker.restored", group=group.name, replica=old.replica, pid=old.pid, new_pid=new.pid)
                if fate is ParkedFate.SWAP and new.state.alive:
                    swapped.append(new)  # parked in turn: it serves its build's pinned runs until released
                    continue
                group.retiring.append(new)
                await execute(group, new, new.stop(now), now)
    for old in list(group.parked):  # released, or with no slot to go back to
        group.parked.remove(old)
        group.retiring.append(old)
        log.info("worker.released", group=group.name, replica=old.replica, pid=old.pid)
        await execute(group, old, old.stop(now), now)
    group.parked.extend(swapped)
