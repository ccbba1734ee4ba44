"""One supervisor per pool (an flock'd lock file), and the state file that lets the next one clean up after a
supervisor that was killed."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil
import structlog

from pipelex_pool.errors import PoolAlreadyRunningError

log = structlog.get_logger("pipelex_pool.supervisor")


class PoolLock:
    """Held for the supervisor's lifetime; the file holds its pid so a second `up` can name it."""

    def __init__(self, path: Path, pool: str) -> None:
        self.path = path
        self.pool = pool
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise PoolAlreadyRunningError(
                f"pool {self.pool!r} is already running (supervisor pid {holder}, lock {self.path}); "
                f"check it with `pipelex-pool status`, stop it with `pipelex-pool down`, or give this pool "
                "another [pool] name"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


LEFTOVER_GRACE_S = 35.0  # a record without its own: the default profile's 30 s grace + the stop margin


@dataclass(frozen=True)
class ChildRecord:
    pid: int
    create_time: float
    name: str
    stop_timeout: float = LEFTOVER_GRACE_S  # its profile's graceful_shutdown_timeout + margin


def write_state(path: Path, children: list[ChildRecord]) -> None:
    """Atomically record the live children (pid + create time: a recycled pid is not mistaken for ours)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"supervisor_pid": os.getpid(), "children": [asdict(c) for c in children]}))
    tmp.replace(path)


def record_for(pid: int, name: str, stop_timeout: float) -> ChildRecord | None:
    try:
        return ChildRecord(pid=pid, create_time=psutil.Process(pid).create_time(), name=name, stop_timeout=stop_timeout)
    except psutil.Error:
        return None


def stop_leftovers(path: Path) -> list[ChildRecord]:
    """Stop the children a crashed supervisor left behind (each in its own process group), each with its
    profile's full grace to drain its in-flight work; returns them."""
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return []
    found: list[ChildRecord] = []
    for raw in data.get("children", []):
        try:
            record = ChildRecord(**raw)
            process = psutil.Process(record.pid)
            if abs(process.create_time() - record.create_time) < 0.05 and process.status() != psutil.STATUS_ZOMBIE:
                found.append(record)  # (a zombie has exited already: nothing to stop)
        except (psutil.Error, TypeError):
            continue
    start = time.monotonic()
    for record in found:
        log.warning("supervisor.leftover_found", name=record.name, pid=record.pid, grace_s=record.stop_timeout)
        _signal_group(record.pid, signal.SIGTERM)
    for record in found:
        deadline = start + record.stop_timeout
        while time.monotonic() < deadline and psutil.pid_exists(record.pid) and not _zombie(record.pid):
            time.sleep(0.1)
        _signal_group(record.pid, signal.SIGKILL)
    path.unlink(missing_ok=True)
    return found


def _zombie(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return True


def _signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, signum)
        except (ProcessLookupError, PermissionError):
            pass
