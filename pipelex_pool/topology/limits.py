"""How many replicas one pool may run: a bound sized to the machine, so a typo (`scale llm 1000`) is refused
instead of filling memory with Python processes."""

from __future__ import annotations

import psutil

MIB = 2**20
MEMORY_PER_REPLICA = 100 * MIB  # a built-in worker is ~65 MiB RSS idle; a real app's more


def default_max_replicas() -> int:
    """The machine's memory / 100 MiB (245 on a 24 GiB machine): `[pool] max_replicas` overrides it."""
    return max(1, int(psutil.virtual_memory().total // MEMORY_PER_REPLICA))
