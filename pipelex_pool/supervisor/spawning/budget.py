"""How fast the loop may start processes: a token bucket, so one iteration starts a bounded batch and then looks
at new requests again (a `scale 1000` cannot hold the loop, and a `down` takes effect between two batches), and a
bound on the children still in their start, so a cold start goes as fast as the machine takes them: a start is
held back while that many are still starting, and goes as soon as one of them is through."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pipelex_pool.supervisor.spawning.cores import usable_cores

# How long a child counts as "in its start" at most (unless it is READY or waiting for Temporal before): a forked
# one is through its CPU-heavy part (connect, build its Worker, first polls) in ~0.1-0.3 s, an exec'd one in ~1 s
# (its interpreter's imports); one still not listed after that is waiting on Temporal's side, not on the machine.
IN_START_WINDOW_S = 2.0


def default_spawn_rate(spawner: str = "exec") -> float:
    """Starts per second at most, per core, by what a start costs: an exec'd one ~0.3-0.7 s of one core (its
    interpreter's cold start and imports): 2; a forked one ~0.05 CPU-s of the child's own plus the supervisor's and
    the fork server's part: 32, a cap the bound on children in their start (below) reaches first on a busy machine.
    Measured with 64 forked replicas on 2 cores (scripts/bench/cold_start.py): 16 starts a second paced the start
    (5.1-5.3 s), 64 a second let the machine pace it (4.4 s, everything at once 4.0-4.3 s)."""
    return (32.0 if spawner == "fork" else 2.0) * usable_cores()


def default_spawn_batch() -> int:
    """As many starts in one iteration as the supervisor has cores (usable_cores: its CPUs and CPU quota)."""
    return usable_cores()


def default_in_start(spawner: str = "exec") -> int:
    """Children in their start at once at most, per core: an exec'd start keeps a core busy for most of it, then
    waits for Temporal to list it (2); a forked one mostly waits on Temporal's answers (8)."""
    return (8 if spawner == "fork" else 2) * usable_cores()


@dataclass
class SpawnBudget:
    """`batch` starts at once at most, refilled at `rate` per second, while fewer than `in_start` children are
    still in their start (None: no such bound)."""

    rate: float
    batch: int
    in_start: int | None = None
    tokens: float = -1.0
    updated_at: float | None = None

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = float(self.batch)

    def _refill(self, now: float) -> None:
        if self.updated_at is not None:
            self.tokens = min(float(self.batch), self.tokens + (now - self.updated_at) * self.rate)
        self.updated_at = now

    def _full(self, starting: Sequence[float], now: float) -> bool:
        current = [at for at in starting if now - at < IN_START_WINDOW_S]
        return self.in_start is not None and len(current) >= self.in_start

    def take(self, now: float, starting: Sequence[float] = ()) -> bool:
        """Spend one start if the budget has one; `starting`: when each child still in its start was started."""
        self._refill(now)
        if self.tokens >= 1.0 and not self._full(starting, now):
            self.tokens -= 1.0
            return True
        return False

    def next_at(self, now: float, starting: Sequence[float] = ()) -> float:
        """When the next start will be allowed, at the latest (a child through its start frees one sooner)."""
        self._refill(now)
        at = now if self.tokens >= 1.0 else now + (1.0 - self.tokens) / self.rate
        if self._full(starting, now):
            assert self.in_start is not None
            current = sorted(a for a in starting if now - a < IN_START_WINDOW_S)
            at = max(at, current[len(current) - self.in_start] + IN_START_WINDOW_S)
        return at
