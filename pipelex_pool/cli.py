"""The `pipelex-pool` command: thin click commands over the topology, worker, supervisor and control modules."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click

from pipelex_pool import __version__
from pipelex_pool.errors import TopologyError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_RUNNING = 0, 1, 2, 3


def exit_skipping_finalization(code: int) -> NoReturn:
    """Exit without interpreter teardown after the Temporal client was used: its Rust threads can abort a
    finalizing interpreter (PyGILState_Release, temporalio/sdk-python#300), turning a clean exit into SIGABRT,
    and a leftover thread can hang it."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pipelex-pool")
def main() -> None:
    """Supervise a pool of Temporal worker processes (Pipelex router/runner topologies) on one machine."""


@main.command()
@click.argument("topology", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary or the errors as JSON.")
def validate(topology: Path, as_json: bool) -> None:
    """Check TOPOLOGY without starting anything; exit 0 with a summary, 2 with every error found."""
    from pipelex_pool.topology.load import load_topology
    from pipelex_pool.topology.summary import render_summary, summarize

    try:
        loaded = load_topology(topology)
    except TopologyError as exc:
        if as_json:
            click.echo(
                json.dumps({"ok": False, "file": exc.file, "issues": [i.as_dict() for i in exc.issues]}, indent=2)
            )
        else:
            errors = sum(1 for issue in exc.issues if issue.severity.value == "error")
            click.echo(f"{exc}\n{errors} error(s) in {exc.file}", err=True)
        sys.exit(EXIT_USAGE)
    if as_json:
        click.echo(json.dumps({"ok": True, **summarize(loaded)}, indent=2))
    else:
        click.echo(render_summary(loaded))


@main.command()
@click.option("--task-queue", help="Queue to poll (default: default_task_queue); must be a known queue.")
@click.option("--scope", help="Worker scope (default: worker_scopes.default_scope).")
@click.option("--profile", help="Runtime profile (default: worker_runtime_profiles.default_profile).")
@click.option("--no-sandbox", is_flag=True, help="Run workflows without Temporal's sandbox.")
@click.option("--unit-testing", is_flag=True, help="Unit-testing run mode (sets PIPELEX_RUN_MODE=unit_test).")
@click.option(
    "--config",
    type=click.Path(path_type=Path),
    help="Topology file or pipelex.toml (default: $PIPELEX_POOL_CONFIG).",
)
@click.option("--identity", help='Worker identity (default: "<pool>/<group>/<replica>@<host>:<pid>").')
def worker(
    task_queue: str | None,
    scope: str | None,
    profile: str | None,
    no_sandbox: bool,
    unit_testing: bool,
    config: Path | None,
    identity: str | None,
) -> None:
    """Run one Temporal worker, as the pool spawns it (same flags as `pipelex worker`).

    Exits 0 after a graceful drain (SIGTERM, SIGINT or parent death), 78 on a configuration error, 1 when
    Temporal cannot be reached or the worker fails.
    """
    import anyio

    from pipelex_pool.errors import EX_CONFIG, WorkerBootError
    from pipelex_pool.logs import configure_logging
    from pipelex_pool.worker.config import load_worker_settings
    from pipelex_pool.worker.run import run_worker

    try:
        settings = load_worker_settings(
            config, task_queue, scope, profile, identity, sandbox=not no_sandbox, unit_testing=unit_testing
        )
    except WorkerBootError as exc:
        click.echo(f"pipelex-pool worker: configuration error: {exc}", err=True)
        sys.exit(EX_CONFIG)
    configure_logging(identity=settings.identity)
    code = 1
    try:
        code = anyio.run(run_worker, settings)
    finally:  # whatever happened, never hang in interpreter teardown (SDK threads): see exit_skipping_finalization
        exit_skipping_finalization(code)


@main.command()
@click.argument("topology", type=click.Path(path_type=Path))
def up(topology: Path) -> None:
    """Validate TOPOLOGY, then run the pool in the foreground until SIGTERM, SIGINT or `down`.

    Refuses to start (exit 2) on any topology error, or when the pool is already running.
    """
    import anyio

    from pipelex_pool.errors import PoolError
    from pipelex_pool.logs import configure_logging
    from pipelex_pool.supervisor.main import serve_pool
    from pipelex_pool.topology.load import load_topology

    try:
        loaded = load_topology(topology)
    except TopologyError as exc:
        click.echo(
            f"{exc}\npipelex-pool up: refusing to start: fix the errors above (see `pipelex-pool validate`)", err=True
        )
        sys.exit(EXIT_USAGE)
    configure_logging(pool=loaded.pool.name)
    for issue in loaded.warnings:
        click.echo(issue.render(str(loaded.file)), err=True)
    try:
        code = anyio.run(serve_pool, loaded)
    except PoolError as exc:
        click.echo(f"pipelex-pool up: {exc}", err=True)
        exit_skipping_finalization(EXIT_USAGE)
    exit_skipping_finalization(code)


# -- commands that talk to a running pool over its control socket -------------------------------------------------


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
        sys.exit(EXIT_USAGE if exc.code in USAGE_ERRORS else EXIT_FAILED)
    except PoolError as exc:
        click.echo(f"pipelex-pool {cmd}: {exc}", err=True)
        sys.exit(EXIT_USAGE)


USAGE_ERRORS = {"bad_args", "unknown_group", "invalid_topology", "unknown_command", "autoscaled"}


def echo_result(result: Any, as_json: bool, text: str) -> None:
    click.echo(json.dumps(result, indent=2, default=str) if as_json else text)


@main.command()
@pool_options
@click.option("--watch", is_flag=True, help="Refresh every 2 seconds until interrupted.")
def status(topology: Path | None, socket_path: Path | None, as_json: bool, watch: bool) -> None:
    """Show every replica (state, pid, uptime, restarts, last exit, RSS, CPU%) and the pool."""
    import time

    from pipelex_pool.control.render import render_status

    while True:
        result = call_pool(topology, socket_path, "status")
        if watch and not as_json:
            click.clear()
        echo_result(result, as_json, render_status(result))
        if not watch:
            return
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
    parts = [f"{key}: {', '.join(plan[key])}" for key in ("added", "removed", "rolled", "unchanged") if plan[key]]
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


@main.command()
@pool_options
@click.argument("target", metavar="GROUP[/N]")
@click.option("-f", "--follow", is_flag=True, help="Keep printing what the replica writes.")
@click.option("-n", "--lines", default=50, show_default=True, help="Lines to show from the end.")
def logs(topology: Path | None, socket_path: Path | None, as_json: bool, target: str, follow: bool, lines: int) -> None:
    """Show a replica's output (stdout and stderr), from <log_dir>/<group>-<N>.log."""
    from pipelex_pool.control.logs import follow_file, tail_lines

    group, _, replica = target.partition("/")
    status = call_pool(topology, socket_path, "status")
    if group not in status["groups"]:
        click.echo(f"pipelex-pool logs: no group {group!r} (groups: {', '.join(status['groups'])})", err=True)
        sys.exit(EXIT_USAGE)
    path = Path(status["pool"]["log_dir"]) / f"{group}-{replica or 0}.log"
    if not path.exists():
        click.echo(f"pipelex-pool logs: {path} does not exist (has {target} started yet?)", err=True)
        sys.exit(EXIT_FAILED)
    for line in tail_lines(path, lines):
        click.echo(line)
    if follow:
        for chunk in follow_file(path):
            click.echo(chunk, nl=False)


# -- commands that talk to Temporal directly ----------------------------------------------------------------------


def load_or_exit(topology: Path | None) -> Any:
    """The topology named by -c (or $PIPELEX_POOL_CONFIG), validated; exit 2 with the errors otherwise."""
    from pipelex_pool.topology.load import load_topology

    path = topology or (Path(os.environ["PIPELEX_POOL_CONFIG"]) if os.environ.get("PIPELEX_POOL_CONFIG") else None)
    if path is None:
        click.echo("pipelex-pool: name the topology with -c TOPOLOGY (or set $PIPELEX_POOL_CONFIG)", err=True)
        sys.exit(EXIT_USAGE)
    try:
        return load_topology(path)
    except TopologyError as exc:
        click.echo(str(exc), err=True)
        sys.exit(EXIT_USAGE)


async def connect_or_exit(loaded: Any) -> Any:
    from pipelex_pool.temporal.connect import connect

    server = loaded.temporal.selected_server()
    try:
        return await connect(server)
    except Exception as exc:  # report which server could not be reached and stop: nothing was changed
        click.echo(f"pipelex-pool: cannot reach Temporal at {server.target_host} ({server.namespace}): {exc}", err=True)
        exit_skipping_finalization(EXIT_FAILED)


@main.command("setup-namespace")
@click.option("-c", "--config", "topology", type=click.Path(path_type=Path), help="Topology (its selected server).")
@click.option("--dry-run", is_flag=True, help="Print the equivalent `temporal operator` commands; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def setup_namespace(topology: Path | None, dry_run: bool, as_json: bool) -> None:
    """Register the custom search attributes (PipeCode, PipelineRunId, SessionId, UserId, DomainCode: Keyword).

    Idempotent: a second run changes nothing and says so. A permission error prints what an admin must run.
    """
    import anyio
    from temporalio.service import RPCError, RPCStatusCode

    from pipelex_pool.temporal.namespace import apply_namespace, plan_namespace

    loaded = load_or_exit(topology)
    attributes = list(loaded.temporal.search_attributes.attributes)
    address = loaded.temporal.selected_server().target_host

    async def run() -> int:
        client = await connect_or_exit(loaded)
        plan = await plan_namespace(client, attributes)
        if as_json:
            click.echo(json.dumps({**plan.as_dict(), "dry_run": dry_run, "commands": plan.commands(address)}, indent=2))
        for name, kind in plan.conflicts.items():
            click.echo(f"search attribute {name} exists as {kind}, not Keyword: an admin must resolve it", err=True)
        if not plan.missing:
            if not as_json:
                click.echo(
                    f"namespace {plan.namespace}: all {len(plan.present)} search attributes present; nothing to do"
                )
            return EXIT_FAILED if plan.conflicts else EXIT_OK
        if dry_run:
            if not as_json:
                click.echo("\n".join(plan.commands(address)))
            return EXIT_OK
        try:
            await apply_namespace(client, plan)
        except RPCError as exc:
            if exc.status is RPCStatusCode.PERMISSION_DENIED:
                click.echo(
                    f"permission denied ({exc}); an admin must run:\n" + "\n".join(plan.commands(address)), err=True
                )
                return EXIT_FAILED
            raise
        if not as_json:
            click.echo(f"namespace {plan.namespace}: created {', '.join(plan.missing)}")
        return EXIT_FAILED if plan.conflicts else EXIT_OK

    if not loaded.temporal.search_attributes.enabled:
        click.echo("[temporal.search_attributes] enabled = false: nothing to do")
        return
    exit_skipping_finalization(anyio.run(run))


@main.command()
@click.argument("topology", type=click.Path(path_type=Path))
@click.option("--runs", default=100, show_default=True, type=click.IntRange(min=1), help="Pipe runs to submit.")
@click.option("--concurrency", default=10, show_default=True, type=click.IntRange(min=1), help="Runs in flight.")
@click.option("--mix", "mix_file", type=click.Path(path_type=Path), help="TOML: parallel = bool and [[steps]].")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def loadtest(topology: Path, runs: int, concurrency: int, mix_file: Path | None, as_json: bool) -> None:
    """Submit simulated pipe runs through a running pool; report throughput, latency p50/p95/p99, retries and
    failures per queue, cross-checked against Temporal's count of completed executions.

    The runs use the simulated task packs (pipelex_pool.sim): a load model, not LLM calls.
    """
    import anyio

    from pipelex_pool.errors import PoolError
    from pipelex_pool.sim.loadtest import default_mix, load_mix, run_loadtest

    loaded = load_or_exit(topology)
    try:
        mix = load_mix(mix_file) if mix_file else default_mix(loaded)
    except (PoolError, TopologyError) as exc:
        click.echo(f"pipelex-pool loadtest: {exc}", err=True)
        sys.exit(EXIT_USAGE)

    async def run() -> int:
        client = await connect_or_exit(loaded)
        with click.progressbar(length=runs, label="pipe runs", file=sys.stderr) as bar:
            report = await run_loadtest(client, loaded, runs, concurrency, mix, lambda: bar.update(1))
        data = report.as_dict()
        if as_json:
            click.echo(json.dumps(data, indent=2))
        else:
            click.echo(render_loadtest(data))
        return EXIT_OK if data["failed"] == 0 and data["temporal_completed"] == data["completed"] else EXIT_FAILED

    exit_skipping_finalization(anyio.run(run))


def render_loadtest(data: dict[str, Any]) -> str:
    latency = data["run_latency"]
    lines = [
        f"load test {data['loadtest_id']}: {data['completed']}/{data['runs']} runs completed, {data['failed']} failed, "
        f"in {data['wall_s']:.1f}s ({data['runs_per_second']} runs/s, concurrency {data['concurrency']})",
        f"Temporal counts {data['temporal_completed']} completed executions for this load test",
        f"run latency: p50 {latency['p50_s']}s  p95 {latency['p95_s']}s  p99 {latency['p99_s']}s",
        "",
        f"{'QUEUE':<24}{'ACTIVITIES':>11}{'PER S':>8}{'P50 S':>9}{'P95 S':>9}{'P99 S':>9}{'RETRIES':>9}",
    ]
    for queue, q in data["queues"].items():
        lines.append(
            f"{queue:<24}{q['activities']:>11}{q['per_second']:>8}{q['p50_s']:>9}{q['p95_s']:>9}{q['p99_s']:>9}{q['retries']:>9}"
        )
    lines += [f"failure: {f}" for f in data["failures"]]
    return "\n".join(lines)
