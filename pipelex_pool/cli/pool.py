"""`validate`, `up` and `schema`: the topology and the supervisor in the foreground."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from pipelex_pool.cli.base import EXIT_FAILED, EXIT_USAGE, main
from pipelex_pool.errors import TopologyError
from pipelex_pool.finalization import exit_skipping_finalization


@main.command()
@click.argument("topology", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary or the errors as JSON.")
@click.option(
    "--check-connection",
    is_flag=True,
    help="Also connect to Temporal once as the pool would (TLS, API key) and report; exit 1 when it fails.",
)
def validate(topology: Path, as_json: bool, check_connection: bool) -> None:
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
    connected: dict[str, object] = {}
    if check_connection:
        connected = _check_connection(loaded)
    if as_json:
        click.echo(json.dumps({"ok": connected.get("ok", True), **summarize(loaded), **connected}, indent=2))
    else:
        click.echo(render_summary(loaded))
        if connected:
            click.echo(f"\nconnection check: {connected['check']}", err=not connected["ok"])
    if connected and not connected["ok"]:
        sys.exit(EXIT_FAILED)


def _check_connection(loaded: Any) -> dict[str, object]:
    import anyio

    from pipelex_pool.temporal.connect import check_once
    from pipelex_pool.temporal.connection import ConnectionConfigError

    try:
        return {"ok": True, "check": anyio.run(check_once, loaded.connection)}
    except ConnectionConfigError as exc:
        return {"ok": False, "check": f"FAILED: {exc}"}


@main.command()
@click.argument("topology", type=click.Path(path_type=Path))
def up(topology: Path) -> None:
    """Validate TOPOLOGY, then run the pool in the foreground until SIGTERM, SIGINT or `down`.

    Refuses to start (exit 2) on any topology error, or when the pool is already running.
    """
    from pipelex_pool.supervisor.spawning.server_process import early_fork_server

    early = early_fork_server(topology)  # first: it boots beside this process's imports and the validation
    from pipelex_pool.lean import import_structlog_without_rich

    import_structlog_without_rich()
    import anyio

    from pipelex_pool.errors import PoolError
    from pipelex_pool.event_feed import FEED
    from pipelex_pool.logs import EVENT_FILE, configure_logging
    from pipelex_pool.supervisor.main import serve_pool
    from pipelex_pool.topology.load import load_topology

    try:
        loaded = load_topology(topology)
    except TopologyError as exc:
        if early is not None:
            early.stop()
        click.echo(
            f"{exc}\npipelex-pool up: refusing to start: fix the errors above (see `pipelex-pool validate`)", err=True
        )
        sys.exit(EXIT_USAGE)
    configure_logging(pool=loaded.pool.name, events=EVENT_FILE, feeds=(FEED,))
    for issue in loaded.warnings:
        click.echo(issue.render(str(loaded.file)), err=True)
    try:
        code = anyio.run(serve_pool, loaded, early)
    except PoolError as exc:
        if early is not None:
            early.stop()  # (refused before the spawner took it: already running, Temporal unreachable, ...)
        click.echo(f"pipelex-pool up: {exc}", err=True)
        exit_skipping_finalization(EXIT_USAGE)
    exit_skipping_finalization(code)


@main.command()
def schema() -> None:
    """Print a JSON Schema of the topology file, for editors (see the README: Taplo / Even Better TOML)."""
    from pipelex_pool.topology.json_schema import topology_json_schema

    click.echo(json.dumps(topology_json_schema(), indent=2))
