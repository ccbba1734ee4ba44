"""One small object per control command: it validates its arguments, changes the supervisor's desired state
(never a process directly) and answers. The table COMMANDS maps the wire name to the object."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import anyio
import tomlkit

from pipelex_pool.control.status import pool_status
from pipelex_pool.errors import TopologyError
from pipelex_pool.supervisor import requests
from pipelex_pool.supervisor.loop import Supervisor


class CommandError(Exception):
    """A command that cannot be carried out: `code` for scripts, `message` for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _group_arg(supervisor: Supervisor, args: dict[str, Any]) -> str:
    name = args.get("group")
    if not isinstance(name, str) or not name:
        raise CommandError("bad_args", '"group" must be a group name')
    try:
        supervisor.group(name)
    except KeyError as exc:
        raise CommandError("unknown_group", str(exc.args[0])) from exc
    return name


def _refuse_if_busy(supervisor: Supervisor, names: list[str] | None = None) -> None:
    busy = requests.busy(supervisor, names)
    if busy:
        raise CommandError("busy", f"{busy}; wait for it to finish (see `pipelex-pool status`) and try again")
    if supervisor.shutting_down:
        raise CommandError("stopping", "the pool is shutting down")


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
                raise CommandError("bad_args", f"{self.name}: unknown argument {key!r} (arguments: {known})")
            if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                raise CommandError("bad_args", f"{self.name}: argument {key!r} must be of type {expected.__name__}")

    async def run(self, supervisor: Supervisor, args: dict[str, Any]) -> Any:
        raise NotImplementedError


class Status(Command):
    """status: the pool header, every group and every replica (state, pid, uptime, restarts, last exit, RSS, CPU)."""

    name = "status"
    mutating = False

    async def run(self, supervisor: Supervisor, args: dict[str, Any]) -> Any:
        return pool_status(supervisor)


class RestartFailed(Command):
    """restart-failed: forget the crash history of every FATAL replica and start it again."""

    name = "restart-failed"

    async def run(self, supervisor: Supervisor, args: dict[str, Any]) -> Any:
        return {"revived": requests.restart_failed(supervisor)}


class Restart(Command):
    """restart [groups]: rolling restart (replacement READY before the old process drains); all groups if none."""

    name = "restart"
    arguments = {"groups": list}

    async def run(self, supervisor: Supervisor, args: dict[str, Any]) -> Any:
        names = args.get("groups") or list(supervisor.groups)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise CommandError("bad_args", '"groups" must be a list of group names')
        for name in names:
            _group_arg(supervisor, {"group": name})
        _refuse_if_busy(supervisor)
        requests.restart(supervisor, names)
        return {"rolling": names}


class Stop(Command):
    """stop GROUP: drain every replica of the group and keep it stopped (across reloads) until `start`."""

    name = "stop"
    arguments = {"group": str}

    async def run(self, supervisor: Supervisor, args: dict[str, Any]) -> Any:
        name = _group_arg(supervisor, args)
        _refuse_if_busy(supervisor, [name])
        requests.set_stopped(supervisor, name, True)
        return {"stopped": name}


class Start(Command):
    """start GROUP: undo `stop GROUP`."""

    name = "start"
    arguments = {"group": str}

    async def run(self, supervisor: Supervisor, args: dict[str, Any]) -> Any:
        name = _group_arg(supervisor, args)
        requests.set_stopped(supervisor, name, False)
        return {"started": name}


class Scale(Command):
    """scale GROUP N [save]: set the group's replicas; with save, write them back to the topology file."""

    name = "scale"
    arguments = {"group": str, "replicas": int, "save": bool}

    async def run(self, supervisor: Supervisor, args: dict[str, Any]) -> Any:
        name = _group_arg(supervisor, args)
        replicas = args.get("replicas")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise CommandError("bad_args", '"replicas" must be an integer >= 0')
        spec = supervisor.group(name).spec
        if spec is not None and spec.autoscale is not None:
            raise CommandError(
                "autoscaled",
                f"group {name!r} is autoscaled ({spec.autoscale.min}..{spec.autoscale.max}); "
                "change [workers.{name}.autoscale] min/max and reload instead",
            )
        _refuse_if_busy(supervisor, [name])
        saved = None
        if args.get("save"):
            saved = await anyio.to_thread.run_sync(save_replicas, supervisor.topology.file, name, replicas)
        requests.scale(supervisor, name, replicas)
        return {"group": name, "replicas": replicas, "saved": saved}


def save_replicas(file: Path, group: str, replicas: int) -> str:
    """Write workers.<group>.replicas back to the topology with tomlkit (comments and layout kept)."""
    doc = tomlkit.parse(file.read_text())
    try:
        doc["workers"][group]["replicas"] = replicas
    except (KeyError, TypeError) as exc:
        raise CommandError("save_failed", f"{file}: cannot find [workers.{group}] to write replicas into") from exc
    tmp = file.with_name(f".{file.name}.tmp")
    tmp.write_text(tomlkit.dumps(doc))
    tmp.replace(file)
    return str(file)


class Reload(Command):
    """reload: re-read the topology file; if valid, apply only what changed, else refuse and touch nothing."""

    name = "reload"

    async def run(self, supervisor: Supervisor, args: dict[str, Any]) -> Any:
        _refuse_if_busy(supervisor)
        try:
            plan = await requests.reload_from_file(supervisor)
        except TopologyError as exc:
            raise CommandError("invalid_topology", f"reload refused, the pool is unchanged:\n{exc}") from exc
        return plan.as_dict()


class Down(Command):
    """down: drain every replica (and the embedded dev server last), then exit the supervisor."""

    name = "down"

    async def run(self, supervisor: Supervisor, args: dict[str, Any]) -> Any:
        supervisor.request_shutdown("down")
        return {"stopping": True, "pid": supervisor.pid}


COMMANDS: dict[str, Command] = {
    command.name: command
    for command in (Status(), RestartFailed(), Restart(), Stop(), Start(), Scale(), Reload(), Down())
}
