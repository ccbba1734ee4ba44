"""The `pipelex-pool` command: thin click commands over the topology, worker, supervisor and control modules.

`base` holds the group and the exit codes; each module beside it holds commands and registers them on the group
when imported here (none imports this package back)."""

from __future__ import annotations

from pipelex_pool.cli import control, export, pool, temporal, top, worker  # noqa: F401 (registers the commands)
from pipelex_pool.cli.base import main

__all__ = ["main"]
