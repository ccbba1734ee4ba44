"""Which replicas a scale-down retires (pure): the ones that lose the least work.

First the slots with no process (stopped, failed, waiting out a backoff), then the ones still starting, then the
READY ones with the fewest activity attempts in flight; ties go to the youngest process (the one that has the
least warm state: cached workflow runs, connections), then to the highest replica number."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pipelex_pool.supervisor.process.handle import ProcessHandle
from pipelex_pool.supervisor.process.state import ProcState


def retire_first(
    handles: Sequence[ProcessHandle], count: int, inflight: Callable[[ProcessHandle], int]
) -> list[ProcessHandle]:
    """The `count` handles to retire, in the order above."""

    def cost(handle: ProcessHandle) -> tuple[int, int, float, int]:
        rank = {ProcState.STARTING: 1, ProcState.READY: 2}.get(handle.state, 0)
        return (rank, inflight(handle) if rank == 2 else 0, -(handle.started_at or 0.0), -handle.replica)

    return sorted(handles, key=cost)[: max(0, count)]


def why(handle: ProcessHandle, inflight: int, by_autoscaler: bool) -> str:
    """What `status` says of a replica a scale-down retires."""
    who = "the autoscaler" if by_autoscaler else "scale-down"
    if handle.state is not ProcState.READY:
        return f"{who}: retired first (not serving yet)"
    if inflight == 0:
        return f"{who}: idle (no attempt in flight), retired first"
    return f"{who}: {inflight} attempt(s) in flight, the fewest of the group; they finish within the drain"
