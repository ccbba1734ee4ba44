"""How fast the loop may start processes: a token bucket, so one iteration starts a bounded batch and then looks
at new requests again (a `scale 1000` cannot hold the loop, and a `down` takes effect between two batches)."""

from __future__ import annotations

import os
from dataclasses import dataclass


def default_spawn_rate(spawner: str = "exec") -> float:
    """Starts per second per core, by what a start costs: an exec'd one ~0.3-0.7 s of one core (its interpreter's
    cold start and imports): 2; a forked one ~0.03 CPU-s of the child's own plus the supervisor's and the fork
    server's part (scripts/bench/forked_start.py): 8. Measured at 32 replicas on 2 cores, a forked cold start took
    9.3 s at 2 per core (paced by the budget) and 4.2 s at 8."""
    return (8.0 if spawner == "fork" else 2.0) * (os.cpu_count() or 1)


def default_spawn_batch() -> int:
    """As many starts in one iteration as the machine has cores."""
    return os.cpu_count() or 1


@dataclass
class SpawnBudget:
    """`batch` starts at once at most, refilled at `rate` per second."""

    rate: float
    batch: int
    tokens: float = -1.0
    updated_at: float | None = None

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = float(self.batch)

    def _refill(self, now: float) -> None:
        if self.updated_at is not None:
            self.tokens = min(float(self.batch), self.tokens + (now - self.updated_at) * self.rate)
        self.updated_at = now

    def take(self, now: float) -> bool:
        """Spend one start if the budget has one."""
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def next_at(self, now: float) -> float:
        """When the next start will be allowed."""
        self._refill(now)
        return now if self.tokens >= 1.0 else now + (1.0 - self.tokens) / self.rate
