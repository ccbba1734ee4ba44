"""How a replica's process is made. Everything goes through the Spawner interface, so nothing else in the
supervisor assumes how a child was created: plain exec here, a warm fork server in forkspawn.py."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import anyio
from anyio.abc import ByteReceiveStream

from pipelex_pool.contract import (
    CONFIG_ENV,
    GROUP_ENV,
    IDENTITY_ENV,
    LISTED_BY_POOL_ENV,
    REPLICA_ENV,
    SUPERVISOR_PID_ENV,
    identity_for,
)
from pipelex_pool.packs import AppRef
from pipelex_pool.supervisor.systemd import SYSTEMD_ENV
from pipelex_pool.topology.schema import ResolvedGroup
from pipelex_pool.worker_command import worker_argv


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


class RegistrationFailed(Exception):
    """The pool could not record a new child (its state file); the child was stopped before it ran its program."""


Register = Callable[[int], None]
"""Called with a new child's pid before the child may run its program: the pool records it first (state file),
so no child it started is ever unknown to it, even if the supervisor dies the next instant."""


class Spawner(Protocol):
    """Everything the loop needs from the way processes are made."""

    async def spawn(self, spec: ChildSpec, register: Register) -> Child: ...

    def refresh(self, preload: AppRef | None = None) -> None:
        """Forget anything kept warm, so the next spawn runs the code installed now (with the task packs
        `preload` imported before the fork, if the spawner keeps a warm process)."""

    def own_pids(self) -> set[int]:
        """Helper processes of the spawner itself (a fork server), which the pool must not treat as orphans."""

    def signal(self, pid: int, signum: int) -> None:
        """Send `signum` to the child's process group; a child already gone is not an error."""

    def reap_orphans(self, known: set[int]) -> list[int]:
        """Reap adopted descendants that exited and are none of `known` (nor the spawner's); returns their pids."""

    async def aclose(self) -> None: ...


# The built-in worker's command; the fork server runs what follows it without exec
BUILTIN_WORKER = [sys.executable, "-m", "pipelex_pool"]


class ExecSpawner:
    """Plain fork+exec in a new session (its own process group), stdout and stderr on one pipe."""

    def refresh(self, preload: AppRef | None = None) -> None:
        pass

    def own_pids(self) -> set[int]:
        return set()

    def signal(self, pid: int, signum: int) -> None:
        signal_group(pid, signum)

    def reap_orphans(self, known: set[int]) -> list[int]:
        return []  # not a subreaper: orphans of its children go to init

    async def aclose(self) -> None:
        pass

    async def spawn(self, spec: ChildSpec, register: Register) -> Child:
        process = await anyio.open_process(
            spec.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=spec.env,
            start_new_session=True,
        )
        # An exec'd child checks $PIPELEX_POOL_SUPERVISOR_PID against its parent once its parent-death signal is
        # armed, so recording it right after exec is enough: if we die before this, it exits by itself.
        try:
            register(process.pid)
        except Exception as exc:
            with anyio.CancelScope(shield=True):
                process.kill()
                await process.aclose()
            raise RegistrationFailed(f"cannot record pid {process.pid}: {exc}") from exc
        return process


def child_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The supervisor's environment without systemd's per-process variables (a child must not answer systemd
    in the supervisor's name: it gets its own NOTIFY_SOCKET from the pool), plus the supervisor's pid."""
    env = {key: value for key, value in (os.environ if base is None else base).items() if key not in SYSTEMD_ENV}
    env[SUPERVISOR_PID_ENV] = str(os.getpid())  # for the child's parent-death check (parent_death.expected_parent)
    return env


def pdeathsig_wrapped(argv: list[str]) -> list[str]:
    return [sys.executable, "-m", "pipelex_pool.supervisor.spawning.pdeathsig", *argv]


def worker_spec(
    pool: str,
    group: ResolvedGroup,
    replica: int,
    topology_file: Path,
    connection_env: Mapping[str, str],
    *,
    config_dir: Path | None = None,
) -> ChildSpec:
    """The built-in worker, or the group's command template with its placeholders filled."""
    identity = identity_for(pool, group.name, replica)
    env = {
        **child_environment(),
        **connection_env,  # the pool's defaults (where Temporal is), which the group's own env may override
        **group.env,
        CONFIG_ENV: str(topology_file),
        GROUP_ENV: group.name,
        REPLICA_ENV: str(replica),
        IDENTITY_ENV: identity,
        "PYTHONUNBUFFERED": "1",
    }
    argv = worker_argv(
        pool, group, program=BUILTIN_WORKER, python=sys.executable, config=str(topology_file), replica=str(replica),
        identity=identity, config_dir=str(config_dir or topology_file.parent),
    )  # fmt: skip
    if group.command is None:
        env[LISTED_BY_POOL_ENV] = "1"
    else:
        argv = pdeathsig_wrapped(argv)  # a program of the user's may not watch its parent: the wrapper does
    return ChildSpec(name=f"{group.name}/{replica}", argv=argv, env=env, identity=identity)


def signal_group(pid: int, signum: int) -> None:
    """Signal a child's process group (it leads its own session); already gone: its exit is on the way."""
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        pass
