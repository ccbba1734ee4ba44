"""`pipelex-pool` commands that talk to a running pool over its control socket."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import click

from pipelex_pool.cli.base import EXIT_FAILED, EXIT_NO_SUCH_NAME, EXIT_NOT_RUNNING, EXIT_OK, EXIT_USAGE, main
from pipelex_pool.control.status_doc import Deploy, Replica, Status
from pipelex_pool.control.waiting import Goal, Want, old_pids

POOL_NAME_META = "pipelex_pool.pool_name"


def pool_options(func: Callable[..., None]) -> Callable[..., None]:
    """-c TOPOLOGY / --socket PATH / --json, shared by every control command."""
    func = click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")(func)
    func = click.option(
        "--pool",
        "pool_name",
        expose_value=False,
        callback=_remember_pool,
        help="The pool of this name (when several run for this user).",
    )(func)
    func = click.option(
        "--socket", "socket_path", type=click.Path(path_type=Path), help="Control socket (or $PIPELEX_POOL_SOCKET)."
    )(func)
    return click.option(
        "-c", "--config", "topology", type=click.Path(path_type=Path), help="Find the pool of this topology file."
    )(func)


def _remember_pool(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    ctx.meta[POOL_NAME_META] = value


def chosen_pool() -> str | None:
    """The --pool NAME of the command being run, if any."""
    context = click.get_current_context(silent=True)
    return context.meta.get(POOL_NAME_META) if context is not None else None


def call_pool(
    topology: Path | None,
    socket_path: Path | None,
    cmd: str,
    args: dict[str, Any] | None = None,
    *,
    on_behalf: str | None = None,
) -> Any:
    """One request to the pool; exits 3 when no pool answers, 2 or 1 when the command is refused. `on_behalf`:
    the command the user ran, when this request only serves it (`reload --wait` asks for the status first)."""
    from pipelex_pool.control.client import CommandFailed, ControlClient, resolve_socket
    from pipelex_pool.errors import PoolError, PoolNotRunningError

    try:
        return ControlClient(resolve_socket(socket_path, topology, pool=chosen_pool())).call(cmd, args)
    except PoolNotRunningError as exc:
        click.echo(f"pipelex-pool {on_behalf or cmd}: {exc}", err=True)
        sys.exit(EXIT_NOT_RUNNING)
    except CommandFailed as exc:
        click.echo(f"pipelex-pool {on_behalf or cmd}: {exc}", err=True)
        sys.exit(EXIT_USAGE if exc.usage else EXIT_FAILED)
    except PoolError as exc:
        click.echo(f"pipelex-pool {on_behalf or cmd}: {exc}", err=True)
        sys.exit(EXIT_USAGE)


def follow_status(topology: Path | None, socket_path: Path | None, cmd: str) -> Iterator[Status | None]:
    """The pool's status as it changes, pushed by the pool (`subscribe`, status alone, looked at every POLL_S),
    and None on a quiet POLL_S (for the caller's deadline); exits as call_pool does when no pool answers."""
    from pipelex_pool.control.client import CommandFailed, ControlClient, resolve_socket
    from pipelex_pool.errors import PoolError, PoolNotRunningError

    try:
        client = ControlClient(resolve_socket(socket_path, topology, pool=chosen_pool()))
        for frame in client.follow({"events": False, "every": POLL_S}, tick=POLL_S):
            yield cast(Status, frame)
    except PoolNotRunningError as exc:
        click.echo(f"pipelex-pool {cmd}: {exc}", err=True)
        sys.exit(EXIT_NOT_RUNNING)
    except CommandFailed as exc:
        click.echo(f"pipelex-pool {cmd}: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    except PoolError as exc:
        click.echo(f"pipelex-pool {cmd}: {exc}", err=True)
        sys.exit(EXIT_USAGE)


def echo_result(result: Any, as_json: bool, text: str) -> None:
    click.echo(json.dumps(result, indent=2, default=str) if as_json else text)


def wait_options(func: Callable[..., None]) -> Callable[..., None]:
    """--wait/--no-wait and --timeout, shared by the commands that change the pool."""
    func = click.option(
        "--timeout",
        type=click.FloatRange(min=0),
        default=DEFAULT_WAIT_S,
        show_default=True,
        help="With --wait: seconds to wait before giving up (exit 1, naming what is not done).",
    )(func)
    return click.option(
        "--wait/--no-wait",
        default=None,
        help="Wait until the operation is done, showing each replica's progress (default: on a terminal).",
    )(func)


DEFAULT_WAIT_S = 600.0
POLL_S = 0.25


def waiting(wait: bool | None) -> bool:
    """--wait, --no-wait, or (neither) whether stdout is a terminal, as systemctl and kubectl do."""
    return sys.stdout.isatty() if wait is None else wait


def wait_for(
    topology: Path | None,
    socket_path: Path | None,
    cmd: str,
    goal: Goal,
    before: Status,
    timeout: float,
    as_json: bool,
) -> dict[str, Any]:
    """Follow the pool's progress (pushed by the pool as it changes) until `goal` is met, printing one line per
    replica change (not with --json). Exits 1 when the operation failed or `timeout` passed, naming what is not
    done; returns a summary for the final answer."""
    import time

    from pipelex_pool.control.waiting import Progress

    progress = Progress(set(goal.wants))
    progress.prime(before)
    started = time.monotonic()
    verdict = goal.judge(before)
    elapsed = 0.0
    try:
        for status in follow_status(topology, socket_path, cmd):
            elapsed = time.monotonic() - started
            if status is not None:
                for line in [] if as_json else progress.lines(status):
                    click.echo(f"[{elapsed:5.1f}s] {line}")
                verdict = goal.judge(status)
            if verdict.done or verdict.failed or elapsed > timeout:
                break
    except KeyboardInterrupt:
        click.echo(f"\npipelex-pool {cmd}: stopped waiting; the pool carries on (see `pipelex-pool status`)", err=True)
        sys.exit(130)
    summary = {
        "done": verdict.done,
        "elapsed_s": round(elapsed, 2),
        "failed": verdict.failed,
        "pending": list(verdict.pending),
    }
    if verdict.done:
        return summary
    why = f"failed: {verdict.failed}" if verdict.failed else f"timed out after {timeout:g}s"
    pending = f"; not done: {', '.join(verdict.pending)}" if verdict.pending else ""
    if as_json:
        click.echo(json.dumps({"wait": summary}, indent=2))
    click.echo(f"pipelex-pool {cmd}: {why}{pending}", err=True)
    sys.exit(EXIT_FAILED)


def done_text(summary: dict[str, Any] | None) -> str:
    return f"\ndone in {summary['elapsed_s']:.1f}s" if summary else ""


def select(status: Status, targets: tuple[str, ...]) -> tuple[Status, list[str]]:
    """The status restricted to `targets` (GROUP or GROUP/N; all if none), and the targets that name nothing."""
    if not targets:
        return status, []
    rows: list[Replica] = []
    unknown: list[str] = []
    named: set[str] = set()
    for target in targets:
        group, _, replica = target.partition("/")
        found = [r for r in status["replicas"] if r["group"] == group and (not replica or str(r["replica"]) == replica)]
        if not found and not (group in status["groups"] and not replica):  # a stopped group is still a group
            unknown.append(target)
        named.add(group)
        rows += [r for r in found if r not in rows]
    groups = {name: g for name, g in status["groups"].items() if name in named}
    return {**status, "replicas": rows, "groups": groups}, unknown


def not_ready(status: Status) -> list[str]:
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
@click.option("--fleet", "fleet", is_flag=True, help="Per queue, every pool and host of the fleet polling it.")
def status(
    topology: Path | None,
    socket_path: Path | None,
    as_json: bool,
    watch: bool,
    fleet: bool,
    targets: tuple[str, ...],
) -> None:
    """Show every replica (or those of GROUP, GROUP/N) with state, pid, uptime, restarts, last exit, RSS, CPU%.

    Exit status, as supervisorctl's: 0 every wanted replica shown is READY, 3 one is not (or no pool answers),
    4 a name matches no replica.
    """
    import shutil
    import time

    from pipelex_pool.control.render import render_fleet, render_status

    while True:
        full = cast(Status, call_pool(topology, socket_path, "status"))
        result, unknown = select(full, targets)
        if watch and not as_json:
            click.clear()
        # on a terminal the table fits its width (columns dropped by priority); piped, every column is printed
        width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
        if fleet:
            echo_result({"fleet": full["fleet"], "queues": full["queues"]}, as_json, render_fleet(full))
        else:
            echo_result(result, as_json, render_status(result, width))
        for target in unknown:
            groups = ", ".join(full["groups"])
            click.echo(f"pipelex-pool status: {target}: no such group or replica (groups: {groups})", err=True)
        if not watch:
            stuck = not_ready(result) or result.get("routing_mismatches")  # (new runs waiting for nobody)
            sys.exit(EXIT_NO_SUCH_NAME if unknown else EXIT_NOT_RUNNING if stuck else EXIT_OK)
        time.sleep(2)


@main.command("restart-failed")
@pool_options
@wait_options
def restart_failed(
    topology: Path | None, socket_path: Path | None, as_json: bool, wait: bool | None, timeout: float
) -> None:
    """Start every FATAL replica again, with its crash count reset."""
    import time

    before = call_pool(topology, socket_path, "status", on_behalf="restart-failed") if waiting(wait) else None
    sent = time.time()
    result = call_pool(topology, socket_path, "restart-failed")
    revived = result["revived"]
    summary = None
    if before is not None and revived:
        goal = Goal({name.partition("/")[0]: Want.READY for name in revived}, since=sent)
        summary = wait_for(topology, socket_path, "restart-failed", goal, before, timeout, as_json)
    text = f"restarting {', '.join(revived)}" if revived else "no FATAL replica"
    echo_result({**result, "wait": summary}, as_json, text + done_text(summary))


@main.command()
@pool_options
@wait_options
@click.argument("groups", nargs=-1)
def restart(
    topology: Path | None,
    socket_path: Path | None,
    as_json: bool,
    wait: bool | None,
    timeout: float,
    groups: tuple[str, ...],
) -> None:
    """Rolling restart of GROUPS (all groups if none): each replacement is READY before its old process drains.

    With --wait: done when every replica of GROUPS runs a new process and is READY (old processes may still be
    draining); exit 1 if a replacement cannot start (the roll is aborted, the old process kept) or at --timeout.
    """
    import time

    before = call_pool(topology, socket_path, "status", on_behalf="restart") if waiting(wait) else None
    sent = time.time()
    result = call_pool(topology, socket_path, "restart", {"groups": list(groups)})
    summary = None
    if before is not None:
        rolling = set(result["rolling"])
        goal = Goal(dict.fromkeys(rolling, Want.REPLACED), since=sent, old_pids=old_pids(before, rolling))
        summary = wait_for(topology, socket_path, "restart", goal, before, timeout, as_json)
    text = f"rolling restart of {', '.join(result['rolling'])}"
    text += done_text(summary) if summary else " started (see `status`)"
    echo_result({**result, "wait": summary}, as_json, text)


def _one_group_change(
    topology: Path | None,
    socket_path: Path | None,
    as_json: bool,
    wait: bool | None,
    timeout: float,
    cmd: str,
    args: dict[str, Any],
    want: Want,
    text: str,
) -> None:
    """stop, start, scale: send the command, then (with --wait) wait for the group to reach `want`."""
    import time

    before = call_pool(topology, socket_path, "status", on_behalf=cmd) if waiting(wait) else None
    sent = time.time()
    result = call_pool(topology, socket_path, cmd, args)
    summary = None
    if before is not None:
        goal = Goal({args["group"]: want}, since=sent)
        summary = wait_for(topology, socket_path, cmd, goal, before, timeout, as_json)
    echo_result({**result, "wait": summary}, as_json, text + done_text(summary))


@main.command()
@pool_options
@wait_options
@click.argument("group")
def stop(
    topology: Path | None, socket_path: Path | None, as_json: bool, wait: bool | None, timeout: float, group: str
) -> None:
    """Drain GROUP and keep it stopped (also across reloads) until `start GROUP`; --wait: until every process
    of it has exited."""
    _one_group_change(
        topology, socket_path, as_json, wait, timeout, "stop", {"group": group}, Want.STOPPED, f"stopping {group}"
    )


@main.command()
@pool_options
@wait_options
@click.argument("group")
def start(
    topology: Path | None, socket_path: Path | None, as_json: bool, wait: bool | None, timeout: float, group: str
) -> None:
    """Start GROUP again after `stop GROUP`; --wait: until every replica is READY."""
    _one_group_change(
        topology, socket_path, as_json, wait, timeout, "start", {"group": group}, Want.READY, f"starting {group}"
    )


@main.command()
@pool_options
@wait_options
@click.argument("group")
def pause(
    topology: Path | None, socket_path: Path | None, as_json: bool, wait: bool | None, timeout: float, group: str
) -> None:
    """GROUP's replicas stop taking tasks; the ones in flight finish; the processes stay, warm (also across
    reloads) until `resume GROUP`. --wait: until every replica is PAUSED (idle)."""
    _one_group_change(
        topology, socket_path, as_json, wait, timeout, "pause", {"group": group}, Want.PAUSED, f"pausing {group}"
    )


@main.command()
@pool_options
@wait_options
@click.argument("group")
def resume(
    topology: Path | None, socket_path: Path | None, as_json: bool, wait: bool | None, timeout: float, group: str
) -> None:
    """GROUP's paused replicas poll again (the same processes); --wait: until every one polls."""
    _one_group_change(
        topology, socket_path, as_json, wait, timeout, "resume", {"group": group}, Want.RESUMED, f"resuming {group}"
    )


@main.command()
@pool_options
@wait_options
@click.argument("group")
@click.argument("replicas", type=click.IntRange(min=0))
@click.option("--save", is_flag=True, help="Also write the new replicas into the topology file (comments kept).")
def scale(
    topology: Path | None,
    socket_path: Path | None,
    as_json: bool,
    wait: bool | None,
    timeout: float,
    group: str,
    replicas: int,
    save: bool,
) -> None:
    """Set GROUP's number of replicas; --wait: until that many are READY and the others have exited."""
    args = {"group": group, "replicas": replicas, "save": save}
    text = f"{group}: {replicas} replica(s)"
    if save:  # where it was saved is known once the pool answers: say it after the answer
        text += " (saved to the topology file)"
    _one_group_change(topology, socket_path, as_json, wait, timeout, "scale", args, Want.READY, text)


@main.command()
@pool_options
@wait_options
def reload(topology: Path | None, socket_path: Path | None, as_json: bool, wait: bool | None, timeout: float) -> None:
    """Re-read the topology and apply what changed; a broken file is refused and the pool left as it is.

    With --wait: until added, scaled and rolled groups are READY (rolled ones on new processes) and removed
    groups have drained."""
    import time

    before = call_pool(topology, socket_path, "status", on_behalf="reload") if waiting(wait) else None
    sent = time.time()
    plan = call_pool(topology, socket_path, "reload")
    parts = [
        f"{key}: {', '.join(plan[key])}"
        for key in ("added", "removed", "rolled", "unchanged", "stopped")
        if plan.get(key)
    ]
    parts += [f"scaled: {', '.join(f'{g}={n}' for g, n in plan['scaled'].items())}"] if plan["scaled"] else []
    summary = None
    if before is not None:
        wants = {g: Want.READY for g in [*plan.get("added", []), *plan["scaled"]]}
        wants |= {g: Want.REPLACED for g in plan.get("rolled", [])}
        wants |= {g: Want.GONE for g in plan.get("removed", [])}
        rolled = set(plan.get("rolled", []))
        goal = Goal(wants, since=sent, old_pids=old_pids(before, rolled))
        summary = wait_for(topology, socket_path, "reload", goal, before, timeout, as_json)
    text = "reloaded; " + ("; ".join(parts) or "nothing changed") + "".join(f"\nnote: {n}" for n in plan["notes"])
    echo_result({**plan, "wait": summary}, as_json, text + done_text(summary))


@main.command()
@pool_options
@wait_options
@click.option("--build-id", required=True, help="The new build (a git SHA, a version); no dots.")
@click.option("--ramp", default="", help="Percentages of new runs sent to the new build first, e.g. 10,50,100.")
@click.option("--pause", default="60s", show_default=True, help="How long each ramp step lasts.")
@click.option(
    "--fleet-timeout",
    default="30m",
    show_default=True,
    help="In a fleet: how long to wait for every pool to run the new build before the switch (then it fails).",
)
def deploy(
    topology: Path | None,
    socket_path: Path | None,
    as_json: bool,
    wait: bool | None,
    timeout: float,
    build_id: str,
    ramp: str,
    pause: str,
    fleet_timeout: str,
) -> None:
    """Deploy new code with Temporal's Worker Deployment Versioning: start BUILD's replicas beside the running
    ones, make BUILD current once Temporal sees it poll every queue (after the --ramp steps), then drain the old
    build's replicas (at once for auto-upgrade workflows; pinned runs finish on the old build first).

    With --wait (default on a terminal): until done (exit 0) or failed (exit 1: the old build serves on)."""
    import time

    try:
        steps = [int(p) for p in ramp.split(",") if p.strip()]
    except ValueError:
        click.echo(f"pipelex-pool deploy: --ramp {ramp!r}: give percentages, e.g. 10,50,100", err=True)
        sys.exit(EXIT_USAGE)
    args = {"build_id": build_id, "ramp": steps, "pause": pause, "fleet_timeout": fleet_timeout}
    result = call_pool(topology, socket_path, "deploy", args)
    rollback = bool(result.get("rollback"))
    text = (
        f"rolling back to build {result['to_build']} of {result['deployment']} (the deploy of "
        f"{result['from_build']} stops; {result['to_build']}'s processes take their slots back)"
        if rollback
        else f"deploying build {result['to_build']} of {result['deployment']} (from {result['from_build']})"
    )
    if not waiting(wait):
        echo_result(result, as_json, text + " (see `status`)")
        return
    if not as_json:
        click.echo(text)
    started, seen, elapsed = time.monotonic(), "", 0.0
    plan: Deploy | None = None
    for status in follow_status(topology, socket_path, "deploy"):
        elapsed = time.monotonic() - started
        if status is not None:
            plan = deployment["deploy"] if (deployment := status["deployment"]) else None
            line = f"{plan['phase']}: {plan['detail']}" if plan else seen
            if line != seen and not as_json:
                click.echo(f"[{elapsed:5.1f}s] {line}")
                seen = line
        if (plan and plan["outcome"]) or elapsed > timeout:
            break
    outcome = plan["outcome"] if plan else None
    succeeded = outcome == "done" or (rollback and str(outcome).startswith("rolled back"))
    summary = {"done": succeeded, "elapsed_s": round(elapsed, 2), "outcome": outcome}
    if succeeded:
        echo_result({**result, "wait": summary}, as_json, f"build {build_id} current; done in {elapsed:.1f}s")
        return
    why = outcome or f"timed out after {timeout:g}s in phase {plan['phase'] if plan else None}"
    if as_json:
        click.echo(json.dumps({**result, "wait": summary}, indent=2))
    click.echo(f"pipelex-pool deploy: {why}", err=True)
    sys.exit(EXIT_FAILED)


def _refuse_if_invalid(topology: Path) -> None:
    from pipelex_pool.errors import TopologyError
    from pipelex_pool.topology.load import load_topology

    try:
        load_topology(topology, read_connection_files=False)
    except TopologyError as exc:
        click.echo(
            f"{exc}\npipelex-pool wait-ready: {topology} is invalid: `up` refuses it, no pool will start", err=True
        )
        sys.exit(EXIT_USAGE)


NO_SUPERVISOR_AFTER_S = 15.0  # `up` takes its lock once the file is validated (the app imported): a few seconds


def _no_supervisor(socket: Path) -> str | None:
    """Why no pool will answer on `socket` (no live supervisor holds its lock), or None while one may be starting."""
    import psutil

    lock = socket.with_name(socket.name + ".lock")
    try:
        holder = int(lock.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        holder = None
    if holder is not None and psutil.pid_exists(holder):
        return None
    return (
        f"no supervisor runs for this pool: nothing answers on {socket} and no live process holds {lock} after "
        f"{NO_SUPERVISOR_AFTER_S:g}s; start it with `pipelex-pool up TOPOLOGY` (its own output says why it stopped)"
    )


@main.command("wait-ready")
@pool_options
@click.argument("targets", nargs=-1, metavar="[GROUP]...")
@click.option("--timeout", type=click.FloatRange(min=0), default=DEFAULT_WAIT_S, show_default=True)
def wait_ready(
    topology: Path | None, socket_path: Path | None, as_json: bool, targets: tuple[str, ...], timeout: float
) -> None:
    """Wait until the pool answers and every wanted replica (of GROUPs, or all) is READY, for scripts that start
    `up` in the background. Exit 0 when READY, 1 when a replica went FATAL or at --timeout, 4 for an unknown group,
    2 at once when -c names a file `up` refuses.
    """
    import time

    from pipelex_pool.control.client import ControlClient, resolve_socket
    from pipelex_pool.errors import PoolError, PoolNotRunningError

    started, checked = time.monotonic(), False
    while True:  # the pool may still be starting: wait for its socket to answer
        try:
            before = ControlClient(resolve_socket(socket_path, topology, pool=chosen_pool())).call("status")
            break
        except PoolNotRunningError as exc:
            if topology is not None and not checked:  # a file `up` refuses: no pool will ever answer, say so now
                checked = True
                _refuse_if_invalid(topology)
            if time.monotonic() - started > timeout:
                click.echo(f"pipelex-pool wait-ready: timed out after {timeout:g}s: {exc}", err=True)
                sys.exit(EXIT_NOT_RUNNING)
            if time.monotonic() - started > NO_SUPERVISOR_AFTER_S:
                why = _no_supervisor(resolve_socket(socket_path, topology, pool=chosen_pool()))
                if why:
                    click.echo(f"pipelex-pool wait-ready: {why}", err=True)
                    sys.exit(EXIT_NOT_RUNNING)
            time.sleep(POLL_S)
        except PoolError as exc:  # which pool is meant cannot be told (a broken file, several pools)
            if topology is not None:
                _refuse_if_invalid(topology)
            click.echo(f"pipelex-pool wait-ready: {exc}", err=True)
            sys.exit(EXIT_USAGE)
    unknown = [g for g in targets if g not in before["groups"]]
    if unknown:
        groups = ", ".join(before["groups"])
        click.echo(f"pipelex-pool wait-ready: no group {', '.join(unknown)} (groups: {groups})", err=True)
        sys.exit(EXIT_NO_SUCH_NAME)
    names = targets or tuple(g for g, info in before["groups"].items() if not info.get("stopped_by_operator"))
    goal = Goal(dict.fromkeys(names, Want.READY), since=time.time())
    left = max(0.0, timeout - (time.monotonic() - started))
    summary = wait_for(topology, socket_path, "wait-ready", goal, before, left, as_json)
    echo_result({"wait": summary}, as_json, f"ready: {', '.join(names)}" + done_text(summary))


@main.command()
@pool_options
@click.option("--no-wait", is_flag=True, help="Return once the drain has started.")
@click.option(
    "--timeout", default=DEFAULT_WAIT_S, show_default=True, help="Seconds to wait for the supervisor to exit."
)
def down(topology: Path | None, socket_path: Path | None, as_json: bool, no_wait: bool, timeout: float) -> None:
    """Drain every replica, then stop the supervisor; waits for it (showing each replica as it exits) unless
    --no-wait."""
    import time

    import psutil

    from pipelex_pool.control.client import ControlClient, resolve_socket
    from pipelex_pool.control.waiting import Progress
    from pipelex_pool.errors import PoolError

    def exited(pid: int) -> bool:  # a zombie has exited too: its parent (systemd, a shell) reaps it
        try:
            return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
        except psutil.NoSuchProcess:
            return True

    before = call_pool(topology, socket_path, "status", on_behalf="down")
    result = call_pool(topology, socket_path, "down")
    if not no_wait:
        progress = Progress(set(before["groups"]))
        progress.prime(before)
        started = time.monotonic()
        client = ControlClient(resolve_socket(socket_path, topology, pool=chosen_pool()))
        while not exited(result["pid"]):
            elapsed = time.monotonic() - started
            if elapsed > timeout:
                message = f"the supervisor (pid {result['pid']}) is still draining after {timeout:g}s"
                click.echo(f"pipelex-pool down: {message}", err=True)
                sys.exit(EXIT_FAILED)
            try:
                lines = progress.lines(client.call("status"))
            except PoolError:  # the supervisor closed its socket: it is about to exit
                lines = []
            for line in [] if as_json else lines:
                click.echo(f"[{elapsed:5.1f}s] {line}")
            time.sleep(POLL_S)
    echo_result(result, as_json, "pool stopped" if not no_wait else "pool draining")


def log_location(topology: Path | None, socket_path: Path | None) -> tuple[Path, list[str]]:
    """The running pool's log directory and groups; with no pool answering, those of the topology (-c)."""
    from pipelex_pool.control.client import ControlClient, logs_of, resolve_socket
    from pipelex_pool.errors import PoolError, PoolNotRunningError

    try:
        status = ControlClient(resolve_socket(socket_path, topology, pool=chosen_pool())).call("status")
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


COLOURS = ("cyan", "green", "yellow", "magenta", "blue", "red")


def _prefixed(name: str, line: str, width: int, colour: bool) -> str:
    """ "llm/0    | line", the name coloured on a terminal (one colour per name, as docker compose logs)."""
    prefix = f"{name:<{width}} |"
    if colour:
        prefix = click.style(prefix, fg=COLOURS[sum(name.encode()) % len(COLOURS)])
    return f"{prefix} {line}"


@main.command()
@pool_options
@click.argument("target", metavar="GROUP[/N]", required=False)
@click.option("--all", "every", is_flag=True, help="Every replica's output, merged, each line prefixed with its name.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing what the replica writes.")
@click.option("-n", "--lines", default=50, show_default=True, help="Lines to show from the end (per replica).")
def logs(
    topology: Path | None,
    socket_path: Path | None,
    as_json: bool,
    target: str | None,
    every: bool,
    follow: bool,
    lines: int,
) -> None:
    """Show a replica's output (stdout and stderr), from <log_dir>/<group>-<N>.log; GROUP alone: each of its
    replicas', merged and prefixed with its name; --all: every replica's (GROUP then limits it to that group).
    Also while the pool is down, with -c TOPOLOGY."""
    import os

    from pipelex_pool.control.logs import follow_file, follow_many, replica_logs, tail_lines

    if target is None and not every:
        click.echo("pipelex-pool logs: name a replica (GROUP or GROUP/N), or use --all", err=True)
        sys.exit(EXIT_USAGE)
    group, _, replica = (target or "").partition("/")
    log_dir, groups = log_location(topology, socket_path)
    if target is not None and group not in groups:
        click.echo(f"pipelex-pool logs: no group {group!r} (groups: {', '.join(groups)})", err=True)
        sys.exit(EXIT_USAGE)
    if target is not None and not replica and len(replica_logs(log_dir, [group])) > 1:
        every = True  # GROUP alone names all of its replicas: merged and prefixed, never silently its first one
    if every:
        wanted = [group] if target else groups
        found = replica_logs(log_dir, wanted)
        if not found and not follow:
            click.echo(f"pipelex-pool logs: no replica log in {log_dir} yet", err=True)
            sys.exit(EXIT_FAILED)
        colour = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        width = max((len(name) for name in found), default=8)
        for name, path in found.items():
            for line in tail_lines(path, lines):
                click.echo(_prefixed(name, line, width, colour))
        if follow:
            for name, line in follow_many(lambda: replica_logs(log_dir, wanted)):
                click.echo(_prefixed(name, line, width, colour))
        return
    path = log_dir / f"{group}-{replica or 0}.log"
    if not path.exists():
        click.echo(f"pipelex-pool logs: {path} does not exist (has {target} started yet?)", err=True)
        sys.exit(EXIT_FAILED)
    for line in tail_lines(path, lines):
        click.echo(line)
    if follow:
        for chunk in follow_file(path):
            click.echo(chunk, nl=False)


def render_event(line: str) -> str:
    """One supervisor event as a line to read: time, level, event, then its fields (the JSON as is if it is not)."""
    try:
        event = json.loads(line)
    except ValueError:
        return line
    if not isinstance(event, dict):
        return line
    stamp = str(event.pop("timestamp", ""))[:23].replace("T", " ")
    level = str(event.pop("level", "")).upper()
    name = event.pop("event", "")
    event.pop("pool", None)
    fields = " ".join(f"{key}={value}" for key, value in event.items())
    return f"{stamp} {level:<7} {name} {fields}".rstrip()


@main.command()
@pool_options
@click.option("-f", "--follow", is_flag=True, help="Keep printing new events.")
@click.option("-n", "--lines", default=50, show_default=True, help="Events to show from the end.")
def events(topology: Path | None, socket_path: Path | None, as_json: bool, follow: bool, lines: int) -> None:
    """The supervisor's own events (starts, exits, restarts, hand-backs, reloads, warnings), from
    <log_dir>/supervisor.log (rotated as replica logs are); --json prints them as stored. Also while the pool is
    down, with -c TOPOLOGY."""
    from pipelex_pool.contract import EVENTS_LOG
    from pipelex_pool.control.logs import Follower, tail_lines

    log_dir, _ = log_location(topology, socket_path)
    path = log_dir / EVENTS_LOG
    if not path.exists():
        click.echo(f"pipelex-pool events: {path} does not exist (has this pool run yet?)", err=True)
        sys.exit(EXIT_FAILED)
    show = (lambda line: line) if as_json else render_event
    for line in tail_lines(path, lines):
        click.echo(show(line))
    if follow:
        import time

        follower = Follower(path)
        while True:
            new = follower.lines()
            for line in new:
                click.echo(show(line))
            if not new:
                time.sleep(0.2)
