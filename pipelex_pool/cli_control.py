"""`pipelex-pool` commands that talk to a running pool over its control socket."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from pipelex_pool.cli import EXIT_FAILED, EXIT_NO_SUCH_NAME, EXIT_NOT_RUNNING, EXIT_OK, EXIT_USAGE, main


def pool_options(func: Callable[..., None]) -> Callable[..., None]:
    """-c TOPOLOGY / --socket PATH / --json, shared by every control command."""
    func = click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")(func)
    func = click.option(
        "--socket", "socket_path", type=click.Path(path_type=Path), help="Control socket (or $PIPELEX_POOL_SOCKET)."
    )(func)
    return click.option(
        "-c", "--config", "topology", type=click.Path(path_type=Path), help="Find the pool of this topology file."
    )(func)


def call_pool(topology: Path | None, socket_path: Path | None, cmd: str, args: dict[str, Any] | None = None) -> Any:
    """One request to the pool; exits 3 when no pool answers, 2 or 1 when the command is refused."""
    from pipelex_pool.control.client import CommandFailed, ControlClient, resolve_socket
    from pipelex_pool.errors import PoolError, PoolNotRunningError

    try:
        return ControlClient(resolve_socket(socket_path, topology)).call(cmd, args)
    except PoolNotRunningError as exc:
        click.echo(f"pipelex-pool {cmd}: {exc}", err=True)
        sys.exit(EXIT_NOT_RUNNING)
    except CommandFailed as exc:
        click.echo(f"pipelex-pool {cmd}: {exc}", err=True)
        sys.exit(EXIT_USAGE if exc.usage else EXIT_FAILED)
    except PoolError as exc:
        click.echo(f"pipelex-pool {cmd}: {exc}", err=True)
        sys.exit(EXIT_USAGE)


def echo_result(result: Any, as_json: bool, text: str) -> None:
    click.echo(json.dumps(result, indent=2, default=str) if as_json else text)


def select(status: dict[str, Any], targets: tuple[str, ...]) -> tuple[dict[str, Any], list[str]]:
    """The status restricted to `targets` (GROUP or GROUP/N; all if none), and the targets that name nothing."""
    if not targets:
        return status, []
    rows, unknown = [], []
    for target in targets:
        group, _, replica = target.partition("/")
        found = [r for r in status["replicas"] if r["group"] == group and (not replica or str(r["replica"]) == replica)]
        if not found:
            unknown.append(target)
        rows += [r for r in found if r not in rows]
    groups = {name: g for name, g in status["groups"].items() if any(r["group"] == name for r in rows)}
    return {**status, "replicas": rows, "groups": groups}, unknown


def not_ready(status: dict[str, Any]) -> list[str]:
    """The wanted replicas that are not READY: every replica of a group the operator has not stopped (a
    replacement being started or a retiring process is not wanted yet, or any more)."""
    stopped = {name for name, g in status["groups"].items() if g.get("stopped_by_operator")}
    return [
        f"{r['group']}/{r['replica']}"
        for r in status["replicas"]
        if r["role"] == "replica" and r["group"] not in stopped and r["state"] != "READY"
    ]


@main.command()
@pool_options
@click.argument("targets", nargs=-1, metavar="[GROUP|GROUP/N]...")
@click.option("--watch", is_flag=True, help="Refresh every 2 seconds until interrupted.")
def status(
    topology: Path | None, socket_path: Path | None, as_json: bool, watch: bool, targets: tuple[str, ...]
) -> None:
    """Show every replica (or those of GROUP, GROUP/N) with state, pid, uptime, restarts, last exit, RSS, CPU%.

    Exit status, as supervisorctl's: 0 every wanted replica shown is READY, 3 one is not (or no pool answers),
    4 a name matches no replica.
    """
    import time

    from pipelex_pool.control.render import render_status

    while True:
        full = call_pool(topology, socket_path, "status")
        result, unknown = select(full, targets)
        if watch and not as_json:
            click.clear()
        echo_result(result, as_json, render_status(result))
        for target in unknown:
            groups = ", ".join(full["groups"])
            click.echo(f"pipelex-pool status: {target}: no such group or replica (groups: {groups})", err=True)
        if not watch:
            sys.exit(EXIT_NO_SUCH_NAME if unknown else EXIT_NOT_RUNNING if not_ready(result) else EXIT_OK)
        time.sleep(2)


@main.command("restart-failed")
@pool_options
def restart_failed(topology: Path | None, socket_path: Path | None, as_json: bool) -> None:
    """Start every FATAL replica again, with its crash count reset."""
    result = call_pool(topology, socket_path, "restart-failed")
    revived = result["revived"]
    echo_result(result, as_json, f"restarting {', '.join(revived)}" if revived else "no FATAL replica")


@main.command()
@pool_options
@click.argument("groups", nargs=-1)
def restart(topology: Path | None, socket_path: Path | None, as_json: bool, groups: tuple[str, ...]) -> None:
    """Rolling restart of GROUPS (all groups if none): each replacement is READY before its old process drains."""
    result = call_pool(topology, socket_path, "restart", {"groups": list(groups)})
    echo_result(result, as_json, f"rolling restart of {', '.join(result['rolling'])} started (see `status`)")


@main.command()
@pool_options
@click.argument("group")
def stop(topology: Path | None, socket_path: Path | None, as_json: bool, group: str) -> None:
    """Drain GROUP and keep it stopped (also across reloads) until `start GROUP`."""
    echo_result(call_pool(topology, socket_path, "stop", {"group": group}), as_json, f"stopping {group}")


@main.command()
@pool_options
@click.argument("group")
def start(topology: Path | None, socket_path: Path | None, as_json: bool, group: str) -> None:
    """Start GROUP again after `stop GROUP`."""
    echo_result(call_pool(topology, socket_path, "start", {"group": group}), as_json, f"starting {group}")


@main.command()
@pool_options
@click.argument("group")
@click.argument("replicas", type=click.IntRange(min=0))
@click.option("--save", is_flag=True, help="Also write the new replicas into the topology file (comments kept).")
def scale(
    topology: Path | None, socket_path: Path | None, as_json: bool, group: str, replicas: int, save: bool
) -> None:
    """Set GROUP's number of replicas."""
    result = call_pool(topology, socket_path, "scale", {"group": group, "replicas": replicas, "save": save})
    saved = f" (saved to {result['saved']})" if result.get("saved") else ""
    echo_result(result, as_json, f"{group}: {replicas} replica(s){saved}")


@main.command()
@pool_options
def reload(topology: Path | None, socket_path: Path | None, as_json: bool) -> None:
    """Re-read the topology and apply what changed; a broken file is refused and the pool left as it is."""
    plan = call_pool(topology, socket_path, "reload")
    parts = [
        f"{key}: {', '.join(plan[key])}"
        for key in ("added", "removed", "rolled", "unchanged", "stopped")
        if plan.get(key)
    ]
    parts += [f"scaled: {', '.join(f'{g}={n}' for g, n in plan['scaled'].items())}"] if plan["scaled"] else []
    echo_result(
        plan,
        as_json,
        "reloaded; " + ("; ".join(parts) or "nothing changed") + "".join(f"\nnote: {n}" for n in plan["notes"]),
    )


@main.command()
@pool_options
@click.option("--no-wait", is_flag=True, help="Return once the drain has started.")
@click.option("--timeout", default=600.0, show_default=True, help="Seconds to wait for the supervisor to exit.")
def down(topology: Path | None, socket_path: Path | None, as_json: bool, no_wait: bool, timeout: float) -> None:
    """Drain every replica, then stop the supervisor (waits for it unless --no-wait)."""
    import time

    import psutil

    def exited(pid: int) -> bool:  # a zombie has exited too: its parent (systemd, a shell) reaps it
        try:
            return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
        except psutil.NoSuchProcess:
            return True

    result = call_pool(topology, socket_path, "down")
    if not no_wait:
        deadline = time.monotonic() + timeout
        while not exited(result["pid"]):
            if time.monotonic() > deadline:
                message = f"the supervisor (pid {result['pid']}) is still draining after {timeout:g}s"
                click.echo(f"pipelex-pool down: {message}", err=True)
                sys.exit(EXIT_FAILED)
            time.sleep(0.1)
    echo_result(result, as_json, "pool stopped" if not no_wait else "pool draining")


def log_location(topology: Path | None, socket_path: Path | None) -> tuple[Path, list[str]]:
    """The running pool's log directory and groups; with no pool answering, those of the topology (-c)."""
    from pipelex_pool.control.client import ControlClient, logs_of, resolve_socket
    from pipelex_pool.errors import PoolError, PoolNotRunningError

    try:
        status = ControlClient(resolve_socket(socket_path, topology)).call("status")
        return Path(status["pool"]["log_dir"]), list(status["groups"])
    except PoolNotRunningError as exc:
        if topology is None:
            click.echo(f"pipelex-pool logs: {exc}; with the pool down, name its topology (-c TOPOLOGY)", err=True)
            sys.exit(EXIT_NOT_RUNNING)
        try:
            return logs_of(topology)
        except PoolError as error:
            click.echo(f"pipelex-pool logs: {error}", err=True)
            sys.exit(EXIT_USAGE)
    except PoolError as exc:
        click.echo(f"pipelex-pool logs: {exc}", err=True)
        sys.exit(EXIT_USAGE)


@main.command()
@pool_options
@click.argument("target", metavar="GROUP[/N]")
@click.option("-f", "--follow", is_flag=True, help="Keep printing what the replica writes.")
@click.option("-n", "--lines", default=50, show_default=True, help="Lines to show from the end.")
def logs(topology: Path | None, socket_path: Path | None, as_json: bool, target: str, follow: bool, lines: int) -> None:
    """Show a replica's output (stdout and stderr), from <log_dir>/<group>-<N>.log; also while the pool is down,
    with -c TOPOLOGY."""
    from pipelex_pool.control.logs import follow_file, tail_lines

    group, _, replica = target.partition("/")
    log_dir, groups = log_location(topology, socket_path)
    if group not in groups:
        click.echo(f"pipelex-pool logs: no group {group!r} (groups: {', '.join(groups)})", err=True)
        sys.exit(EXIT_USAGE)
    path = log_dir / f"{group}-{replica or 0}.log"
    if not path.exists():
        click.echo(f"pipelex-pool logs: {path} does not exist (has {target} started yet?)", err=True)
        sys.exit(EXIT_FAILED)
    for line in tail_lines(path, lines):
        click.echo(line)
    if follow:
        for chunk in follow_file(path):
            click.echo(chunk, nl=False)
