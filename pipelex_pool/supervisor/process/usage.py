"""A process's resource usage read from /proc (RSS, CPU, threads, open descriptors, kernel state): what the
resource watch samples and the view shows. Reads only /proc; knows nothing of the pool."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

FDS_EVERY_S = 10.0  # open file descriptors are counted at most this often (a directory listing per replica)
CPU_WINDOW_S = 1.0  # CPU% is measured over this much time at least (a sample sooner repeats the last figure)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
STATES = {
    "R": "running",
    "S": "sleeping",
    "D": "disk-sleep",
    "Z": "zombie",
    "T": "stopped",
    "t": "tracing-stop",
    "X": "dead",
    "I": "idle",
}
CANNOT_RUN = ("stopped", "tracing-stop", "zombie", "dead")


@dataclass(frozen=True)
class Usage:
    rss_bytes: int
    cpu_percent: float
    cpu_seconds: float  # user + system CPU time of the process so far
    threads: int
    open_fds: int | None
    status: str  # the kernel's process state: "running", "sleeping", "stopped" (SIGSTOP), "zombie", ...

    @property
    def can_run(self) -> bool:
        """False for a process that cannot poll anything whatever Temporal still lists (stopped, zombie)."""
        return self.status not in CANNOT_RUN


@dataclass(frozen=True)
class _Stat:
    state: str
    cpu_s: float
    threads: int
    started: int  # clock ticks after boot: tells a reused pid from the process this probe was made for
    rss_bytes: int


def _read_stat(fd: int) -> _Stat | None:
    """`fd`: /proc/<pid>/stat, kept open (read again from its start: the kernel writes it anew for each read; a
    process reaped since answers an error, never another process's figures)."""
    try:
        text = os.pread(fd, 4096, 0).decode(errors="replace")
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()  # the command name may hold spaces and parentheses
    return _Stat(
        state=STATES.get(fields[0], fields[0]),
        cpu_s=(int(fields[11]) + int(fields[12])) / CLOCK_TICKS,
        threads=int(fields[17]),
        started=int(fields[19]),
        rss_bytes=int(fields[21]) * PAGE_SIZE,
    )


def _open_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


class ResourceProbe:
    """Samples one pid through its /proc/<pid>/stat, opened once (a path lookup per sample is most of what a
    sample costs); CPU% is measured over the time since the last sample at least CPU_WINDOW_S before (samples
    come both on a period and when someone looks: two looks a moment apart show the same CPU%, not the few clock
    ticks between them). Raises ProcessLookupError when the pid does not exist. `close()` when done with it."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._fd = -1
        try:
            self._fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, ProcessLookupError) as exc:
            raise ProcessLookupError(pid) from exc
        except OSError:  # out of descriptors: opened for each sample instead
            pass
        first = self._read()
        if first is None:
            self.close()
            raise ProcessLookupError(pid)
        self._started = first.started
        self._last = (time.monotonic(), first.cpu_s)
        self._cpu_percent = 0.0
        self._fds: int | None = None
        self._fds_at = -FDS_EVERY_S

    def _read(self) -> _Stat | None:
        if self._fd >= 0:
            return _read_stat(self._fd)
        try:
            fd = os.open(f"/proc/{self.pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            return _read_stat(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def sample(self) -> Usage | None:
        stat = self._read()
        if stat is None or stat.started != self._started:
            return None
        now = time.monotonic()
        then, cpu_then = self._last
        if now - then >= CPU_WINDOW_S:
            self._cpu_percent = 100 * (stat.cpu_s - cpu_then) / (now - then)
            self._last = (now, stat.cpu_s)
        if now - self._fds_at >= FDS_EVERY_S:
            self._fds, self._fds_at = _open_fds(self.pid), now
        return Usage(
            rss_bytes=stat.rss_bytes,
            cpu_percent=self._cpu_percent,
            cpu_seconds=stat.cpu_s,
            threads=stat.threads,
            open_fds=self._fds,
            status=stat.state,
        )
