"""The simulated task packs behind a heavy import: a load model of a real Pipelex app's import cost, not real work.

Importing this module holds about IMPORT_MB of Python objects (module-level tables, as a real app's libraries and
models do) and burns about IMPORT_CPU_S of CPU (as executing their module code does), then offers the same packs
as `pipelex_pool.sim:packs`. It says on stderr which process paid for the import, so a log shows whether a worker
imported it itself or inherited it from a preloading fork server (`[pool] preload = true`).

    [pool]
    app = "pipelex_pool.sim.heavy:packs"
"""

from __future__ import annotations

import os
import sys
import time

from pipelex_pool.packs import TaskPack
from pipelex_pool.sim import HEAVY_IMPORTED_MARK
from pipelex_pool.sim import packs as sim_packs

IMPORT_MB = 100
IMPORT_CPU_S = 1.0


def _build_tables(megabytes: int) -> list[tuple[str, bytes]]:
    """Many small objects (strings and 1 KiB blobs), the shape of a big import, not one block of bytes."""
    return [(f"entry-{n}", os.urandom(1024)) for n in range(megabytes * 1024)]


def _burn(seconds: float) -> None:
    deadline = time.thread_time() + seconds
    value = 0
    while time.thread_time() < deadline:
        value = (value * 31 + 7) % 1_000_003


_started = time.perf_counter()
TABLES = _build_tables(IMPORT_MB)
_burn(IMPORT_CPU_S)
print(
    f"{HEAVY_IMPORTED_MARK} in pid {os.getpid()} ({IMPORT_MB} MB of objects, {time.perf_counter() - _started:.1f} s)",
    file=sys.stderr,
    flush=True,
)

packs: dict[str, TaskPack] = dict(sim_packs)
