"""One small object per control command: it checks its arguments, submits a request to the reconcile loop (which
alone changes desired state, and may still refuse it) and answers once the request is applied. The table COMMANDS
maps the wire name to the object."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

import anyio
import tomlkit

from pipelex_pool.control.status import pool_status
from pipelex_pool.errors import ErrorCode, RequestRefused, TopologyError
from pipelex_pool.supervisor.desired import requests
from pipelex_pool.supervisor.view import PoolControl


def _group_arg(args: dict[str, Any]) -> str:
    name = args.get("group")
    if not isinstance(name, str) or not name:
        raise RequestRefused(ErrorCode.BAD_ARGS, '"group" must be a group name')
    return name


class Command:
    name: ClassVar[str]
    mutating: ClassVar[bool] = True
    arguments: ClassVar[dict[str, type]] = {}  # the keys `args` may hold, with their JSON types

    def check_arguments(self, args: dict[str, Any]) -> None:
        """Unknown keys and wrong types are refused before anything runs."""
        for key, value in args.items():
            expected = self.arguments.get(key)
            if expected is None:
                known = ", ".join(self.arguments) or "none"
                raise RequestRefused(ErrorCode.BAD_ARGS, f"{self.name}: unknown argument {key!r} (arguments: {known})")
            if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                raise RequestRefused(
                    ErrorCode.BAD_ARGS, f"{self.name}: argument {key!r} must be of type {expected.__name__}"
                )

    async def run(self, supervisor: PoolControl, args: dict[str, Any]) -> Any:
        raise NotImplementedError


class Status(Command):
    """status: the pool header, every group and every replica (state, pid, uptime, restarts, last exit, RSS, CPU)."""

    name = "status"
    mutating = False

    async def run(self, supervisor: PoolControl, args: dict[str, Any]) -> Any:
        await supervisor.fresh()
        return pool_status(supervisor)


class RestartFailed(Command):
    """restart-failed: forget the crash history of every FATAL replica and start it again (RESTARTS back to 0)."""

    name = "restart-failed"

    async def run(self, supervisor: PoolControl, args: dict[str, Any]) -> Any:
        return await supervisor.submit(requests.RestartFailed())


class Restart(Command):
    """restart [groups]: rolling restart (replacement READY before the old process drains); all groups if none."""

    name = "restart"
    arguments = {"groups": list}

    async def run(self, supervisor: PoolControl, args: dict[str, Any]) -> Any:
        names = args.get("groups") or []
        if not all(isinstance(n, str) and n for n in names):
            raise RequestRefused(ErrorCode.BAD_ARGS, '"groups" must be a list of group names')
        return await supervisor.submit(requests.Restart(tuple(names)))


class Stop(Command):
    """stop GROUP: drain every replica of the group and keep it stopped (across reloads) until `start`."""

    name = "stop"
    arguments = {"group": str}

    async def run(self, supervisor: PoolControl, args: dict[str, Any]) -> Any:
        return await supervisor.submit(requests.SetStopped(_group_arg(args), stopped=True))


class Start(Command):
    """start GROUP: undo `stop GROUP`."""

    name = "start"
    arguments = {"group": str}

    async def run(self, supervisor: PoolControl, args: dict[str, Any]) -> Any:
        return await supervisor.submit(requests.SetStopped(_group_arg(args), stopped=False))


class Pause(Command):
    """pause GROUP: its replicas stop taking tasks, finish the ones in flight and stay alive, warm (across reloads
    too) until `resume`."""

    name = "pause"
    arguments = {"group": str}

    async def run(self, supervisor: PoolControl, args: dict[str, Any]) -> Any:
        return await supervisor.submit(requests.SetPaused(_group_arg(args), paused=True))


class Resume(Command):
    """resume GROUP: undo `pause GROUP` (the same processes poll again)."""

    name = "resume"
    arguments = {"group": str}

    async def run(self, supervisor: PoolControl, args: dict[str, Any]) -> Any:
        return await supervisor.submit(requests.SetPaused(_group_arg(args), paused=False))


class Scale(Command):
    """scale GROUP N [save]: set the group's replicas (at most [pool] max_replicas in the pool); with save, write
    them back to the topology file once the pool has accepted them."""

    name = "scale"
    arguments = {"group": str, "replicas": int, "save": bool}

    async def run(self, supervisor: PoolControl, args: dict[str, Any]) -> Any:
        name = _group_arg(args)
        replicas = args.get("replicas")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise RequestRefused(ErrorCode.BAD_ARGS, '"replicas" must be an integer >= 0')
        answer = await supervisor.submit(requests.Scale(name, replicas))
        saved = None
        if args.get("save"):
            saved = await anyio.to_thread.run_sync(save_replicas, supervisor.topology.file, name, replicas)
        return {**answer, "saved": saved} if isinstance(answer, dict) else answer


def save_replicas(file: Path, group: str, replicas: int) -> str:
    """Write workers.<group>.replicas back to the topology with tomlkit (comments and layout kept)."""
    doc = tomlkit.parse(file.read_text())
    try:
        doc["workers"][group]["replicas"] = replicas
    except (KeyError, TypeError) as exc:
        raise RequestRefused(
            ErrorCode.SAVE_FAILED,
            f"{file}: cannot find [workers.{group}] to write replicas into; the pool runs {replicas} replica(s) "
            "of it, unsaved",
        ) from exc
    tmp = file.with_name(f".{file.name}.tmp")
    tmp.write_text(tomlkit.dumps(doc))
    tmp.replace(file)
    return str(file)


class Reload(Command):
    """reload: re-read the topology file; if valid, apply what differs from what runs now (unsaved `scale` and
    `stop` included), else refuse and touch nothing."""

    name = "reload"

    async def run(self, supervisor: PoolControl, args: dict[str, Any]) -> Any:
        try:
            return await supervisor.reload_file()
        except TopologyError as exc:
            raise RequestRefused(ErrorCode.INVALID_TOPOLOGY, f"reload refused, the pool is unchanged:\n{exc}") from exc


class Deploy(Command):
    """deploy BUILD [ramp] [pause]: roll every group onto the new build beside the old one, make it current in
    Temporal (after the ramp steps), then drain the old build's processes once Temporal reports it drained."""

    name = "deploy"
    arguments = {"build_id": str, "ramp": list, "pause": str, "fleet_timeout": str}

    async def run(self, supervisor: PoolControl, args: dict[str, Any]) -> Any:
        from pipelex_pool.topology.schema import DEPLOYMENT_PATTERN
        from pipelex_pool.units import parse_duration

        build = args.get("build_id")
        if not isinstance(build, str) or not re.fullmatch(DEPLOYMENT_PATTERN, build):
            raise RequestRefused(ErrorCode.BAD_ARGS, '"build_id" must be letters, digits, "_" or "-" (no dots)')
        ramp = args.get("ramp") or []
        if not all(isinstance(p, int) and not isinstance(p, bool) and 0 < p <= 100 for p in ramp):
            raise RequestRefused(ErrorCode.BAD_ARGS, '"ramp" must be percentages from 1 to 100, e.g. [10, 50, 100]')
        try:
            pause = parse_duration(args.get("pause") or "60s").total_seconds()
            fleet_timeout = parse_duration(args.get("fleet_timeout") or "30m").total_seconds()
        except ValueError as exc:
            raise RequestRefused(ErrorCode.BAD_ARGS, f'"pause" / "fleet_timeout": {exc}') from exc
        return await supervisor.submit(requests.Deploy(build, tuple(ramp), pause, fleet_timeout))


class Down(Command):
    """down: drain every replica (and the embedded dev server last), then exit the supervisor."""

    name = "down"

    async def run(self, supervisor: PoolControl, args: dict[str, Any]) -> Any:
        await supervisor.submit(requests.Shutdown("down"))
        return {"stopping": True, "pid": supervisor.pid}


COMMANDS: dict[str, Command] = {
    command.name: command
    for command in (
        Status(),
        RestartFailed(),
        Restart(),
        Stop(),
        Start(),
        Pause(),
        Resume(),
        Scale(),
        Reload(),
        Deploy(),
        Down(),
    )
}
