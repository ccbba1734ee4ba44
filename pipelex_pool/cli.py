"""The `pipelex-pool` command: thin click commands over the topology, worker, supervisor and control modules."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from pipelex_pool import __version__
from pipelex_pool.errors import TopologyError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_RUNNING = 0, 1, 2, 3


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
            click.echo(json.dumps({"ok": False, "file": exc.file, "issues": [i.as_dict() for i in exc.issues]}, indent=2))
        else:
            errors = sum(1 for issue in exc.issues if issue.severity.value == "error")
            click.echo(f"{exc}\n{errors} error(s) in {exc.file}", err=True)
        sys.exit(EXIT_USAGE)
    if as_json:
        click.echo(json.dumps({"ok": True, **summarize(loaded)}, indent=2))
    else:
        click.echo(render_summary(loaded))
