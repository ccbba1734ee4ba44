"""Per-replica resource use, sampled with psutil: RSS, CPU%, threads, open file descriptors."""

from __future__ import annotations

from dataclasses import dataclass

import psutil

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
