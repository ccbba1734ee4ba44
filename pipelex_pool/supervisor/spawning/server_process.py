"""A fork server's process, started with nothing but the standard library: `up` starts one first thing, before
its own imports and the topology's validation, so the two boot side by side on two cores (~0.6 s each)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipelex_pool.packs import AppRef


@dataclass
class ServerProcess:
    """A fork server's process and the supervisor's end of its socket: a Popen (it may be started before the
    event loop), waited for through a pidfd."""

    process: subprocess.Popen[bytes]
    sock: socket.socket
    preload: AppRef | None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def stop(self) -> None:
        """Kill it now, without waiting (an `up` that refuses to start: it exits right after)."""
        self.sock.close()
        if self.process.poll() is None:
            self.process.kill()

    async def wait(self) -> None:
        """Until it has exited (and is reaped)."""
        import anyio

        if self.process.poll() is None:
            pidfd = os.pidfd_open(self.process.pid)
            try:
                await anyio.wait_readable(pidfd)  # readable once the process has exited
            finally:
                os.close(pidfd)
            self.process.wait()  # (it has exited: this does not block)


def start_fork_server(preload: AppRef | None = None) -> ServerProcess:
    """Start a fork server; it boots (its imports, ~0.6 CPU-s) while the caller goes on, and greets on its socket."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        process = subprocess.Popen(
            [
                sys.executable,
                "-u",
                "-m",
                "pipelex_pool.supervisor.spawning.fork_server",
                str(theirs.fileno()),
                *([preload.spec, str(preload.search_path or "")] if preload else []),
            ],
            pass_fds=[theirs.fileno()],
            start_new_session=True,
        )
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    ours.setblocking(False)
    return ServerProcess(process, ours, preload)


def early_fork_server(topology: Path) -> ServerProcess | None:
    """A fork server for the pool of `topology`, started before anything else when its `[pool]` surely wants one
    without preloading (the defaults); None otherwise (the spawner starts its own, after validation). The file is
    only peeked at: a file that does not parse is left to the validation to report, and a fork server started for
    a topology then refused is stopped by `up` (or, if `up` dies first, by its parent-death signal or the closed
    socket)."""
    try:
        pool = tomllib.loads(topology.read_text(encoding="utf-8")).get("pool", {})
    except (OSError, ValueError):
        return None
    if not isinstance(pool, dict) or pool.get("spawner", "fork") != "fork" or pool.get("preload", False) is not False:
        return None
    try:
        return start_fork_server()
    except OSError:
        return None
