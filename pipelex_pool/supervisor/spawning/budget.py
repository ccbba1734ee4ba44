"""How fast the loop may start processes: a token bucket, so one iteration starts a bounded batch and then looks
at new requests again (a `scale 1000` cannot hold the loop, and a `down` takes effect between two batches)."""

from __future__ import annotations

import os
from dataclasses import dataclass


def default_spawn_rate() -> float:
    """Two starts per second per core: a cold start takes ~0.3-0.7 s of one core, a forked one ~0.1 s."""
    return 2.0 * (os.cpu_count() or 1)


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
