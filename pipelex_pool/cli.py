"""The `pipelex-pool` command: thin click commands over the topology, worker, supervisor and control modules."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import NoReturn

import click

from pipelex_pool import __version__
from pipelex_pool.errors import TopologyError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_RUNNING, EXIT_NO_SUCH_NAME = 0, 1, 2, 3, 4  # as supervisorctl


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
@click.option(
    "--sdk-metrics",
    envvar="PIPELEX_POOL_SDK_METRICS",
    help="Serve the Temporal SDK's Prometheus metrics on HOST:PORT (default: $PIPELEX_POOL_SDK_METRICS, or none).",
)
def worker(
    task_queue: str | None,
    scope: str | None,
    profile: str | None,
    no_sandbox: bool,
    unit_testing: bool,
    config: Path | None,
    identity: str | None,
    sdk_metrics: str | None,
) -> None:
    """Run one Temporal worker, as the pool spawns it (same flags as `pipelex worker`).

    Exits 0 after a graceful drain (SIGTERM, SIGINT or parent death), 78 on a configuration error, 1 when
    Temporal cannot be reached or the worker fails.
    """
    import traceback

    import anyio

    from pipelex_pool.errors import EX_CONFIG, WorkerBootError
    from pipelex_pool.logs import configure_logging
    from pipelex_pool.worker.config import load_worker_settings
    from pipelex_pool.worker.run import run_worker

    try:
        settings = load_worker_settings(
            config,
            task_queue,
            scope,
            profile,
            identity,
            sandbox=not no_sandbox,
            unit_testing=unit_testing,
            sdk_metrics=sdk_metrics,
        )
    except WorkerBootError as exc:
        click.echo(f"pipelex-pool worker: configuration error: {exc}", err=True)
        sys.exit(EX_CONFIG)
    configure_logging(identity=settings.identity)
    code = 1
    try:
        code = anyio.run(run_worker, settings)
    except WorkerBootError as exc:  # the last line of the log, which the pool shows as the replica's LAST EXIT
        click.echo(f"pipelex-pool worker: configuration error: {exc}", err=True)
        code = EX_CONFIG
    except Exception as exc:  # never a silent exit: the traceback, then its last line on its own
        traceback.print_exc()
        click.echo(f"pipelex-pool worker: failed: {type(exc).__name__}: {exc}", err=True)
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
    from pipelex_pool.logs import EVENT_FILE, configure_logging
    from pipelex_pool.supervisor.main import serve_pool
    from pipelex_pool.topology.load import load_topology

    try:
        loaded = load_topology(topology)
    except TopologyError as exc:
        click.echo(
            f"{exc}\npipelex-pool up: refusing to start: fix the errors above (see `pipelex-pool validate`)", err=True
        )
        sys.exit(EXIT_USAGE)
    configure_logging(pool=loaded.pool.name, events=EVENT_FILE)
    for issue in loaded.warnings:
        click.echo(issue.render(str(loaded.file)), err=True)
    try:
        code = anyio.run(serve_pool, loaded)
    except PoolError as exc:
        click.echo(f"pipelex-pool up: {exc}", err=True)
        exit_skipping_finalization(EXIT_USAGE)
    exit_skipping_finalization(code)


@main.command()
def schema() -> None:
    """Print a JSON Schema of the topology file, for editors (see the README: Taplo / Even Better TOML)."""
    from pipelex_pool.topology.json_schema import topology_json_schema

    click.echo(json.dumps(topology_json_schema(), indent=2))


# The other commands register themselves on `main` when their modules are imported.
from pipelex_pool import cli_control, cli_export, cli_temporal  # noqa: E402, F401
