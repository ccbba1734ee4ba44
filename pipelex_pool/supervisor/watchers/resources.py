"""Per-replica resource use: RSS, CPU%, threads, state from one read of /proc/<pid>/stat per replica and sample
(open file descriptors every few samples), so that watching 32 replicas costs next to nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from pipelex_pool.supervisor.desired.requests import Request, RollReplica
from pipelex_pool.supervisor.events import Sampled
from pipelex_pool.supervisor.process.handle import ProcessHandle
from pipelex_pool.supervisor.process.state import ProcState
from pipelex_pool.supervisor.process.usage import ResourceProbe, Usage
from pipelex_pool.ticks import sleep_on_grid
from pipelex_pool.units import format_size

if TYPE_CHECKING:
    from pipelex_pool.supervisor.pool_state import PoolState

log = structlog.get_logger("pipelex_pool.supervisor")

SAMPLE_INTERVAL_S = 2.0  # RSS, CPU% and state in status are at most this old


async def watch_resources(
    view: PoolState, submit: Callable[[Request], object], report: Callable[[Sampled], None]
) -> None:
    """Sample every replica's usage and `report` it (the loop records it: it alone writes replica facts); a
    replica over its group's max_memory is submitted for a rolling restart (replacement READY first, so its
    in-flight work drains instead of being killed). The probes (each keeps its process's last CPU times) are the
    sampler's own."""
    probes: dict[int, ResourceProbe] = {}
    while True:
        await sleep_on_grid(SAMPLE_INTERVAL_S)
        readings: list[tuple[ProcessHandle, int, Usage | None]] = []
        live: set[int] = set()
        for group in view.all_groups():
            for handle in group.all_handles():
                pid = handle.pid
                if pid is None or handle not in view.info:
                    continue
                live.add(pid)
                probe = probes.get(pid)
                if probe is None:
                    try:
                        probe = probes[pid] = ResourceProbe(pid)
                    except ProcessLookupError:
                        continue
                usage = probe.sample()
                readings.append((handle, pid, usage))
                limit = group.spec.max_memory if group.spec else None
                if (
                    limit
                    and usage is not None
                    and usage.rss_bytes > limit
                    and handle.state is ProcState.READY
                    and handle in group.handles
                    and group.slot_of(handle.replica) not in group.roll_queue
                ):
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
        for gone in set(probes) - live:
            del probes[gone]
        if readings:
            report(Sampled(tuple(readings)))
