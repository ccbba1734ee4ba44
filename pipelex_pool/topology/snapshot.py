"""The topology as the supervisor validated it, written for its workers.

Workers read their configuration from a file. If they read the topology file itself, an edit that `reload` then
refuses (or one never reloaded) would reach every replica started afterwards: the next restart would fail on a
file the pool had refused. So the supervisor writes what it validated (`Topology.document`) to its state
directory, one file per version (named by its content), and gives workers that file; `{config_dir}` in a
command stays the topology file's own directory.
"""

from __future__ import annotations

from hashlib import sha256
from pathlib import Path

import tomlkit

from pipelex_pool.paths import open_private_file
from pipelex_pool.topology.env_refs import escape_refs
from pipelex_pool.topology.load import Topology

KEEP = 8  # versions kept: replicas of a recent version (a deploy's parked build) may still restart on theirs
HEADER = "# written by pipelex-pool from {file} as validated: workers read this copy; edit {file} instead\n"


def write_validated(topology: Topology, directory: Path) -> Path:
    """Write `topology`'s validated document under `directory` (if not there yet); returns its path."""
    # (already expanded: every `$` is escaped, so the worker, which expands what it reads, gets the same values)
    text = HEADER.format(file=topology.file) + tomlkit.dumps(escape_refs(topology.document))
    path = directory / f"validated-{sha256(text.encode()).hexdigest()[:16]}.toml"
    if not path.exists():
        tmp = path.with_name(f".{path.name}.tmp")
        with open_private_file(tmp, truncate=True) as file:
            file.write(text.encode())
        tmp.replace(path)
    path.touch()  # the newest in use, whatever its age: pruning goes by this
    versions = sorted(directory.glob("validated-*.toml"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in versions[KEEP:]:
        old.unlink(missing_ok=True)
    return path
