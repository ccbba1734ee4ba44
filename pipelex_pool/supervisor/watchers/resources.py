"""Per-replica resource use, sampled with psutil: RSS, CPU%, threads, open file descriptors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio
import psutil
import structlog

from pipelex_pool.supervisor.desired.requests import Request, RollReplica
from pipelex_pool.supervisor.process.state import ProcState
from pipelex_pool.units import format_size

if TYPE_CHECKING:
    from pipelex_pool.supervisor.view import PoolView

log = structlog.get_logger("pipelex_pool.supervisor")

SAMPLE_INTERVAL_S = 2.0


@dataclass(frozen=True)
class Usage:
    rss_bytes: int
    cpu_percent: float
    threads: int
    open_fds: int
    status: str  # psutil's process status: "running", "sleeping", "stopped" (SIGSTOP), "zombie", ...

    @property
    def can_run(self) -> bool:
        """False for a process that cannot poll anything whatever Temporal still lists (stopped, zombie)."""
        return self.status not in (
            psutil.STATUS_STOPPED,
            psutil.STATUS_TRACING_STOP,
            psutil.STATUS_ZOMBIE,
            psutil.STATUS_DEAD,
        )


class ResourceProbe:
    """Keeps the psutil.Process of one pid so cpu_percent measures the time between two samples."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._proc = psutil.Process(pid)
        self._proc.cpu_percent(None)  # the first call only primes the measurement

    def sample(self) -> Usage | None:
        try:
            with self._proc.oneshot():
                return Usage(
                    rss_bytes=self._proc.memory_info().rss,
                    cpu_percent=self._proc.cpu_percent(None),
                    threads=self._proc.num_threads(),
                    open_fds=self._proc.num_fds(),
                    status=self._proc.status(),
                )
        except psutil.Error:
            return None


async def watch_resources(view: PoolView, submit: Callable[[Request], object]) -> None:
    """Sample every replica's usage; a replica over its group's max_memory is submitted for a rolling restart
    (replacement READY first, so its in-flight work drains instead of being killed)."""
    while True:
        await anyio.sleep(SAMPLE_INTERVAL_S)
        for group in view.all_groups():
            for handle in group.all_handles():
                info = view.info.get(handle)
                if handle.pid is None or info is None:
                    continue
                if info.probe is None or info.probe.pid != handle.pid:
                    try:
                        info.probe = ResourceProbe(handle.pid)
                    except psutil.Error:
                        continue
                info.usage = info.probe.sample()
                limit = group.spec.max_memory if group.spec else None
                if (
                    limit
                    and info.usage is not None
                    and info.usage.rss_bytes > limit
                    and handle.state is ProcState.READY
                    and handle in group.handles
                    and handle.replica not in group.roll_queue
                ):
                    log.warning(
                        "worker.memory_exceeded",
                        group=group.name,
                        replica=handle.replica,
                        pid=handle.pid,
                        rss_bytes=info.usage.rss_bytes,
                        rss=format_size(info.usage.rss_bytes),
                        max_memory=format_size(limit),
                        action="rolling restart",
                    )
                    reason = f"RSS {format_size(info.usage.rss_bytes)} over max_memory {format_size(limit)}"
                    submit(RollReplica(group.name, handle.replica, handle.pid, reason))
