"""The worker process's entry: `pipelex-pool worker` (registered on the CLI by cli/worker.py) and what the fork
server runs in each forked child (`run`), without importing the rest of the CLI."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

import click

from pipelex_pool.finalization import exit_skipping_finalization


@click.command("worker")
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

    from pipelex_pool.lean import import_structlog_without_rich

    import_structlog_without_rich()
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


def run(args: list[str]) -> NoReturn:
    """Be the worker `args` describe (the options of `pipelex-pool worker`), then exit."""
    worker.main(args=args, prog_name="pipelex-pool worker")
    raise AssertionError("unreachable: the worker exits the process")
