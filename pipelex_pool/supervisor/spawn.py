"""How a replica's process is made. Everything goes through the Spawner interface, so nothing else in the
supervisor assumes how a child was created: plain exec here, a warm fork server in forkspawn.py."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import anyio
from anyio.abc import ByteReceiveStream

from pipelex_pool.supervisor.pdeathsig import PID_TOKEN
from pipelex_pool.supervisor.systemd import SYSTEMD_ENV
from pipelex_pool.topology.schema import ResolvedGroup


@dataclass(frozen=True)
class ChildSpec:
    """One process to start: its argv, its full environment, and what the pool calls it."""

    name: str
    argv: list[str]
    env: dict[str, str]
    identity: str  # may hold __PID__, replaced by the pid once known


class Child(Protocol):
    """A started process, whichever way it was made: in its own session, stdout and stderr on one stream."""

    @property
    def pid(self) -> int: ...

    @property
    def stdout(self) -> ByteReceiveStream | None: ...

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...

    async def aclose(self) -> None: ...


class Spawner(Protocol):
    async def spawn(self, spec: ChildSpec) -> Child: ...

    def refresh(self) -> None:
        """Forget anything kept warm, so the next spawn runs the code installed now."""

    async def aclose(self) -> None: ...


# The built-in worker's command; the fork server runs what follows it without exec
BUILTIN_WORKER = [sys.executable, "-m", "pipelex_pool"]


class ExecSpawner:
    """Plain fork+exec in a new session (its own process group), stdout and stderr on one pipe."""

    def refresh(self) -> None:
        pass

    async def aclose(self) -> None:
        pass

    async def spawn(self, spec: ChildSpec) -> Child:
        return await anyio.open_process(
            spec.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=spec.env,
            start_new_session=True,
        )


def child_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The supervisor's environment without systemd's per-process variables (a child must not answer systemd
    in the supervisor's name: it gets its own NOTIFY_SOCKET from the pool)."""
    return {key: value for key, value in (os.environ if base is None else base).items() if key not in SYSTEMD_ENV}


def identity_for(pool: str, group: str, replica: int, pid: int | str = PID_TOKEN) -> str:
    return f"{pool}/{group}/{replica}@{socket.gethostname()}:{pid}"


def pdeathsig_wrapped(argv: list[str]) -> list[str]:
    return [sys.executable, "-m", "pipelex_pool.supervisor.pdeathsig", *argv]


def worker_spec(
    pool: str,
    group: ResolvedGroup,
    replica: int,
    topology_file: Path,
    extra_env: Mapping[str, str],
    base_env: Mapping[str, str] | None = None,
) -> ChildSpec:
    """The built-in worker, or the group's command template with its placeholders filled."""
    identity = identity_for(pool, group.name, replica)
    env = {
        **child_environment(base_env),
        **group.env,
        "PIPELEX_POOL_CONFIG": str(topology_file),
        "PIPELEX_POOL_GROUP": group.name,
        "PIPELEX_POOL_REPLICA": str(replica),
        "PIPELEX_POOL_IDENTITY": identity,
        "PYTHONUNBUFFERED": "1",
        **extra_env,
    }
    if group.command is None:
        argv = [
            *BUILTIN_WORKER,
            "worker",
            "--config",
            str(topology_file),
            "--task-queue",
            group.task_queue,
            "--scope",
            group.scope,
            "--profile",
            group.profile,
        ]
    else:
        values = {
            "task_queue": group.task_queue,
            "scope": group.scope,
            "profile": group.profile,
            "group": group.name,
            "replica": str(replica),
            "identity": identity,
            "pool": pool,
            "python": sys.executable,
            "config": str(topology_file),
        }
        argv = pdeathsig_wrapped([part.format(**values) for part in group.command])
    return ChildSpec(name=f"{group.name}/{replica}", argv=argv, env=env, identity=identity)
