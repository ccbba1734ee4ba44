"""The `pipelex-pool` group and what every command shares: exit codes (as supervisorctl's). Imports nothing of
the commands: each command module registers itself on `main`."""

from __future__ import annotations

import click

from pipelex_pool import __version__

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_RUNNING, EXIT_NO_SUCH_NAME = 0, 1, 2, 3, 4  # as supervisorctl


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pipelex-pool")
def main() -> None:
    """Supervise a pool of Temporal worker processes (Pipelex router/runner topologies) on one machine."""
