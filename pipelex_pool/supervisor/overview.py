"""Read-only summaries of the pool for status, systemd's STATUS= and readiness."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipelex_pool.supervisor.handle import ProcessHandle
from pipelex_pool.supervisor.state import ProcState

if TYPE_CHECKING:
    from pipelex_pool.supervisor.loop import Supervisor


def uptime(supervisor: Supervisor, handle: ProcessHandle) -> float | None:
    if handle.state is not ProcState.READY or handle.ready_at is None or handle.started_at is None:
        return None
    return max(0.0, supervisor.clock() - handle.started_at)


def settled(supervisor: Supervisor) -> bool:
    """Every wanted replica is READY or given up on (FATAL/EXITED), and nothing is being rolled."""
    dev = supervisor.dev
    if supervisor.shutting_down or (dev is not None and not any(h.state is ProcState.READY for h in dev.handles)):
        return False
    for group in supervisor.groups.values():
        if group.stopped_by_operator or group.removed:
            continue
        if group.roll_queue or group.replacement or len(group.handles) < group.desired:
            return False
        done = (ProcState.READY, ProcState.FATAL, ProcState.EXITED)
        if any(h.state not in done for h in group.handles[: group.desired]):
            return False
    return True


def summary(supervisor: Supervisor) -> str:
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


def counts(supervisor: Supervisor) -> dict[str, int]:
    states = [h.state for g in supervisor.groups.values() for h in g.handles]
    return {state.value: states.count(state) for state in ProcState if state in states}
