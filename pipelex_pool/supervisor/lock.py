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
from typing import Any

import psutil
import structlog

from pipelex_pool.errors import PoolAlreadyRunningError
from pipelex_pool.paths import open_private_file

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
    with open_private_file(tmp, truncate=True) as file:
        file.write(json.dumps({"supervisor_pid": os.getpid(), "children": [asdict(c) for c in children]}).encode())
    tmp.replace(path)


class ChildRecords:
    """Records of the live children, each one's create time read once: the state file is rewritten at every spawn,
    and reading every child's again each time made a mass start quadratic (64 starts: 2,000 reads of /proc)."""

    def __init__(self) -> None:
        self._created: dict[int, float] = {}

    def of(self, children: list[tuple[int, str, float]]) -> list[ChildRecord]:
        """(pid, name, stop timeout) of each live child -> its record; a pid already gone is left out."""
        created: dict[int, float] = {}
        for pid, _name, _stop_timeout in children:
            known = self._created.get(pid)
            if known is None:
                try:
                    known = psutil.Process(pid).create_time()
                except psutil.Error:
                    continue
            created[pid] = known
        self._created = created  # (the exited are forgotten: a recycled pid is read anew)
        return [ChildRecord(pid, created[pid], name, stop) for pid, name, stop in children if pid in created]


def read_state(path: Path) -> dict[str, Any]:
    """The state file's content; a file that cannot be read as one (truncated, not UTF-8, not JSON, not an object)
    is moved aside with a warning, never a reason not to start: the next supervisor must always come up."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, RecursionError) as exc:  # (UnicodeDecodeError and JSONDecodeError are ValueErrors)
        data, problem = None, f"{type(exc).__name__}: {exc}"
    else:
        problem = "" if isinstance(data, dict) else "not a JSON object"
    if problem:
        aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
        try:
            path.replace(aside)
        except OSError as exc:
            aside = Path(f"(could not be moved: {exc})")
        log.warning(
            "supervisor.state_file_corrupt",
            path=str(path),
            moved_to=str(aside),
            error=problem[:300],
            effect="children a crashed supervisor left behind (if any) are not stopped from it",
        )
        return {}
    assert isinstance(data, dict)
    return data


def stop_leftovers(path: Path) -> list[ChildRecord]:
    """Stop the children a crashed supervisor left behind (each in its own process group), each with its
    profile's full grace to drain its in-flight work; returns them."""
    data = read_state(path)
    found: list[ChildRecord] = []
    for raw in data.get("children", []) if isinstance(data.get("children"), list) else []:
        try:
            record = ChildRecord(**raw)
            process = psutil.Process(record.pid)
            if abs(process.create_time() - record.create_time) < 0.05 and process.status() != psutil.STATUS_ZOMBIE:
                found.append(record)  # (a zombie has exited already: nothing to stop)
        except (psutil.Error, TypeError, ValueError):
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
