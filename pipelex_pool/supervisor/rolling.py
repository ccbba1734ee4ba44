"""Rolling restart of a group, one replica at a time: start the replacement, wait for it to be READY, then
drain the old process, so the group never drops below its capacity."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import structlog

from pipelex_pool.supervisor.groups import SupervisedGroup
from pipelex_pool.supervisor.process.handle import Action, ProcessHandle
from pipelex_pool.supervisor.process.state import ProcState

log = structlog.get_logger("pipelex_pool.supervisor")
Execute = Callable[[SupervisedGroup, ProcessHandle, list[Action], float], Awaitable[None]]


async def advance_roll(
    group: SupervisedGroup, now: float, execute: Execute, may_spawn: Callable[[float], bool], *, stopping: bool
) -> None:
    """Move the group's rolling restart one step forward, if it has one. A step that starts a process waits
    for `may_spawn` (the loop's spawn budget)."""
    if stopping or group.stopped_by_operator or group.removed:
        if group.replacement is not None:
            group.retiring.append(group.replacement)
            await execute(group, group.replacement, group.replacement.stop(now), now)
            group.replacement = None
        group.roll_queue.clear()
        return
    replacement = group.replacement
    if replacement is None:
        while group.roll_queue:
            index = group.roll_queue[0]
            if index >= len(group.handles):
                group.roll_queue.pop(0)
                continue
            old = group.handles[index]
            if not may_spawn(now):
                return  # next iteration
            if old.state is ProcState.READY:
                group.replacement = group.make_handle(old.replica)
                log.info("worker.rolling", group=group.name, replica=old.replica, old_pid=old.pid)
                await execute(group, group.replacement, group.replacement.start(now), now)
                return
            # Not serving anyway: nothing to keep up, so restart it in place.
            group.roll_queue.pop(0)
            actions = old.revive(now) if old.state is ProcState.FATAL else old.stop(now, restart=True)
            await execute(group, old, actions, now)
        return
    if replacement.state is ProcState.READY:
        index = group.roll_queue.pop(0)
        if index >= len(group.handles):  # the group was scaled down meanwhile: this replacement is not needed
            group.replacement = None
            group.retiring.append(replacement)
            await execute(group, replacement, replacement.stop(now), now)
            return
        old = group.handles[index]
        group.handles[index] = replacement
        group.replacement = None
        replacement.restarts = old.restarts
        if group.park_old and old.state.alive:  # a deploy: the old build serves on until the new one is current
            group.parked.append(old)
            log.info("worker.parked", group=group.name, replica=old.replica, old_pid=old.pid, new_pid=replacement.pid)
            return
        group.retiring.append(old)
        log.info("worker.replaced", group=group.name, replica=old.replica, old_pid=old.pid, new_pid=replacement.pid)
        await execute(group, old, old.stop(now), now)
    elif replacement.state in (ProcState.FATAL, ProcState.EXITED):
        kept = (
            group.handles[group.roll_queue[0]]
            if group.roll_queue and group.roll_queue[0] < len(group.handles)
            else None
        )
        log.error(
            "worker.rolling_aborted",
            group=group.name,
            replica=replacement.replica,
            reason=replacement.reason,
            kept_pid=kept.pid if kept else None,
        )
        group.roll_aborted = (
            f"{group.name}/{replacement.replica}: the replacement never became READY "
            f"({replacement.state.value}: {replacement.reason or 'no reason recorded'}); the old process "
            f"(pid {kept.pid if kept else None}) serves on and the rest of the roll was dropped",
            time.time(),
        )
        group.replacement = None
        group.roll_queue.clear()
