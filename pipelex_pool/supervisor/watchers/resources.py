"""Per-replica resource use: RSS, CPU%, threads, state from one read of /proc/<pid>/stat per replica and sample,
from a descriptor opened once per process (open file descriptors every 10 s at most), so that watching 32
replicas costs next to nothing.

Sampled when someone looks (status, the live view and /metrics ask the loop for a fresh reading: `sample`) and in
the background (`run`): every replica every SAMPLE_INTERVAL_S (the CPU% of the next look, a leak), and a replica
that runs activities in a group with max_memory every BUSY_SAMPLE_S (memory grows with work: an activity that
bloats its worker for a few seconds is seen while it does). An idle pool is sampled every 10 s only."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import anyio
import structlog

from pipelex_pool.supervisor.desired.requests import Request, RollReplica
from pipelex_pool.supervisor.events import Sampled
from pipelex_pool.supervisor.process.handle import ProcessHandle
from pipelex_pool.supervisor.process.state import ProcState
from pipelex_pool.supervisor.process.usage import ResourceProbe, Usage
from pipelex_pool.ticks import next_on_grid, sleep_on_grid, until_grid
from pipelex_pool.units import format_size

if TYPE_CHECKING:
    from pipelex_pool.supervisor.pool_state import PoolState

log = structlog.get_logger("pipelex_pool.supervisor")

# Every replica (what status shows is read when it is asked for: sampling 32 idle replicas every 2 s was a fifth
# of an idle supervisor's CPU) ...
SAMPLE_INTERVAL_S = 10.0
# ... and a replica running activities in a group with max_memory (superlance's memmon example looks once a minute)
BUSY_SAMPLE_S = 2.0


class ResourceSampler:
    """Every replica's probe, sampled on a period (`run`) and when someone looks (`sample`, from the loop)."""

    def __init__(self) -> None:
        self.probes = Probes()
        self._busy = anyio.Event()  # set by the loop when a replica with a memory limit has work (`note_work`)

    def sample(
        self, view: PoolState, submit: Callable[[Request], object], only: Iterable[ProcessHandle] | None = None
    ) -> Sampled | None:
        """A reading of every replica with a process, or of `only` those (None: none has one); a replica over its
        group's max_memory is submitted for a rolling restart (replacement READY first, so its in-flight work
        drains instead of being killed)."""
        handles = view.handles() if only is None else only
        processes = [(handle, handle.pid) for handle in handles if handle.pid is not None and handle in view.info]
        readings = self.probes.sample(processes, keep_others=only is not None)
        for handle, pid, usage in readings:
            if usage is not None:
                check_memory(view, handle, pid, usage, submit)
        return Sampled(tuple(readings)) if readings else None

    def note_work(self, view: PoolState) -> None:
        """(from the loop, after it applied reports) a replica with a memory limit runs activities: sample it every
        BUSY_SAMPLE_S from now."""
        if not self._busy.is_set() and working(view):
            self._busy.set()

    async def run(
        self, view: PoolState, submit: Callable[[Request], object], report: Callable[[Sampled], None]
    ) -> None:
        """Sample on the tick grid and `report` it (the loop records it: it alone writes replica facts)."""
        next_all = 0.0
        while True:
            if working(view):
                await sleep_on_grid(BUSY_SAMPLE_S)
            else:
                self._busy = anyio.Event()
                with anyio.move_on_after(until_grid(SAMPLE_INTERVAL_S)):
                    await self._busy.wait()
                    await sleep_on_grid(BUSY_SAMPLE_S)
            every = anyio.current_time() >= next_all
            if every:
                next_all = next_on_grid(anyio.current_time(), SAMPLE_INTERVAL_S)
            sampled = self.sample(view, submit, None if every else working(view))
            if sampled is not None:
                report(sampled)

    def close(self) -> None:
        self.probes.close()


class Probes:
    """The sampler's probes, one per replica process (each keeps its process's /proc/<pid>/stat open and its last
    CPU times), closed when their process is gone or the sampler stops."""

    def __init__(self) -> None:
        self._probes: dict[tuple[ProcessHandle, int], ResourceProbe] = {}

    def __enter__(self) -> Probes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for probe in self._probes.values():
            probe.close()
        self._probes.clear()

    def sample(
        self, processes: Iterable[tuple[ProcessHandle, int]], *, keep_others: bool = False
    ) -> list[tuple[ProcessHandle, int, Usage | None]]:
        """A reading of each (replica, pid) (None: the process is gone, or the pid now names another); probes of
        processes no longer listed are closed (unless `keep_others`: a reading of some of them)."""
        readings: list[tuple[ProcessHandle, int, Usage | None]] = []
        live: set[tuple[ProcessHandle, int]] = set()
        for handle, pid in processes:
            key = (handle, pid)
            live.add(key)
            probe = self._probes.get(key)
            if probe is None:
                try:
                    probe = self._probes[key] = ResourceProbe(pid)
                except ProcessLookupError:
                    continue
            readings.append((handle, pid, probe.sample()))
        if not keep_others:
            for gone in set(self._probes) - live:
                self._probes.pop(gone).close()
        return readings

    @property
    def open(self) -> int:
        """How many probes are held (each with one descriptor)."""
        return len(self._probes)


def working(view: PoolState) -> list[ProcessHandle]:
    """The replicas of groups with a max_memory that run activities now (as they reported them)."""
    found = []
    for group in view.groups.values():
        if group.spec is None or not group.spec.max_memory:
            continue
        for handle in group.handles:
            info = view.info.get(handle)
            if info is not None and info.inflight and handle.pid is not None:
                found.append(handle)
    return found


def check_memory(
    view: PoolState, handle: ProcessHandle, pid: int, usage: Usage, submit: Callable[[Request], object]
) -> None:
    """A READY replica over its group's max_memory, not already queued for a rolling restart: submitted for one."""
    group = view.groups.get(handle.group)
    limit = group.spec.max_memory if group is not None and group.spec else None
    if (
        group is None
        or not limit
        or usage.rss_bytes <= limit
        or handle.state is not ProcState.READY
        or handle not in group.handles
        or group.slot_of(handle.replica) in group.roll_queue
    ):
        return
    log.warning(
        "worker.memory_exceeded",
        group=group.name,
        replica=handle.replica,
        pid=pid,
        rss_bytes=usage.rss_bytes,
        rss=format_size(usage.rss_bytes),
        max_memory=format_size(limit),
        action="rolling restart",
    )
    reason = f"RSS {format_size(usage.rss_bytes)} over max_memory {format_size(limit)}"
    submit(RollReplica(group.name, handle.replica, pid, reason))
