"""One spawn, with everything it allocates taken in one place: the replica's log file, its notify socket and its
environment. Each allocation is released if anything after it fails, so a failed spawn leaves nothing behind;
on success they belong to the child's watcher (watchers/child.py), which releases them when the child exits."""

from __future__ import annotations

import socket
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path

from pipelex_pool.contract import BUILD_ID_ENV, NOTIFY_SOCKET_ENV, SDK_METRICS_ENV, WATCHDOG_USEC_ENV
from pipelex_pool.paths import private_dir
from pipelex_pool.supervisor.spawning.logfile import RotatingLog
from pipelex_pool.supervisor.spawning.spawner import Child, ChildSpec, Register, Spawner


@dataclass(frozen=True)
class NotifySocket:
    """A replica's own sd_notify socket (one path per process ever spawned)."""

    sock: socket.socket
    path: Path

    def close(self) -> None:
        self.sock.close()
        self.path.unlink(missing_ok=True)


@dataclass(frozen=True)
class LaunchPlan:
    """What to allocate for one spawn."""

    log_path: Path
    log_max_bytes: int
    log_backups: int
    notify_path: Path | None = None  # None: the group's readiness does not use sd_notify
    watchdog_s: float | None = None
    sdk_metrics: str | None = None  # "host:port" for the Temporal SDK's metrics
    build_id: str | None = None  # the Worker Deployment Version's build the worker registers as


@dataclass
class Launched:
    """A started child and what it owns until it exits."""

    child: Child
    output: RotatingLog
    notify: NotifySocket | None


def bind_notify_socket(path: Path) -> socket.socket:
    """Bind a replica's notify socket; its directory is recreated (0700) if something removed it (a tmp cleaner,
    a logout), and an error names the path."""
    private_dir(path.parent)
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    try:
        sock.bind(str(path))
        path.chmod(0o600)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot bind the notify socket {path}: {exc.strerror}") from exc
    except BaseException:
        sock.close()
        raise
    return sock


async def launch(spawner: Spawner, spec: ChildSpec, plan: LaunchPlan, register: Register) -> Launched:
    """Allocate, then spawn; any exception releases what was allocated and propagates (the caller fails the
    replica, never the supervisor)."""
    with ExitStack() as undo:
        output = RotatingLog(plan.log_path, plan.log_max_bytes, plan.log_backups)
        undo.callback(output.close)
        env = dict(spec.env)
        notify = None
        if plan.notify_path is not None:
            notify = NotifySocket(bind_notify_socket(plan.notify_path), plan.notify_path)
            undo.callback(notify.close)
            env[NOTIFY_SOCKET_ENV] = str(plan.notify_path)
            if plan.watchdog_s:
                # as systemd's WatchdogSec: WATCHDOG_USEC is the allowed gap, the worker pings every half of it
                # (2 pings per gap; each ping wakes the supervisor, so fewer pings make a quieter supervisor)
                env[WATCHDOG_USEC_ENV] = str(int(plan.watchdog_s * 1e6))
        if plan.sdk_metrics is not None:
            env[SDK_METRICS_ENV] = plan.sdk_metrics
        if plan.build_id is not None:
            env[BUILD_ID_ENV] = plan.build_id
        child = await spawner.spawn(replace(spec, env=env), register)
        undo.pop_all()
        return Launched(child, output, notify)
