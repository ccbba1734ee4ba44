"""`pipelex-pool worker`: one worker process, as the pool spawns it (defined with the worker, in worker/entry.py,
which the fork server runs in its children without importing the CLI)."""

from __future__ import annotations

from pipelex_pool.cli.base import main
from pipelex_pool.worker.entry import worker

main.add_command(worker)
