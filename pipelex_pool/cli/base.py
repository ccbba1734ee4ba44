"""The `pipelex-pool` group and what every command shares: exit codes (as supervisorctl's), a clean exit after
Temporal's client was used. Imports nothing of the commands: each command module registers itself on `main`."""

from __future__ import annotations

import os
import sys
from typing import NoReturn

import click

from pipelex_pool import __version__

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
