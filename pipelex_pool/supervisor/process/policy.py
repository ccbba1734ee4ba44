"""RestartPolicy: whether a replica that exited comes back, after how long, and when to give up."""

from __future__ import annotations

import enum
import random
from collections import deque
from dataclasses import dataclass, field

from pipelex_pool.supervisor.process.state import ExitStatus
from pipelex_pool.topology.schema import RestartConfig


class Verdict(enum.Enum):
    RESTART = "restart"  # back off, then start again
    STAY_EXITED = "exited"  # the policy does not restart this exit
    FATAL = "fatal"  # give up until asked


@dataclass
class CrashHistory:
    """Per replica: failure times within the window and the consecutive-failure count that drives backoff."""

    times: deque[float] = field(default_factory=deque)
    consecutive: int = 0

    def reset(self) -> None:
        self.times.clear()
        self.consecutive = 0


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    delay: float = 0.0
    reason: str = ""


class RestartPolicy:
    """Exponential backoff with jitter between backoff_initial and backoff_max; reset after stable_after of
    uptime; more than max_restarts failures within window -> FATAL; exit 78 -> FATAL at once."""

    def __init__(self, config: RestartConfig, rng: random.Random | None = None) -> None:
        self.config = config
        self.rng = rng or random.Random()

    def backoff(self, consecutive: int) -> float:
        """Delay before restart number `consecutive` (1-based), jittered by +-20% and kept within bounds."""
        initial = self.config.backoff_initial.total_seconds()
        ceiling = self.config.backoff_max.total_seconds()
        base = min(ceiling, initial * self.config.backoff_factor ** max(consecutive - 1, 0))
        return min(ceiling, max(initial, base * self.rng.uniform(0.8, 1.2)))

    def decide(
        self, status: ExitStatus, uptime: float, now: float, history: CrashHistory, *, failed_start: bool
    ) -> Decision:
        if status.config_error:
            return Decision(Verdict.FATAL, reason="configuration error (exit 78): fix the config, then restart-failed")
        clean = status.success and not failed_start
        if self.config.policy == "never" or (self.config.policy == "on-failure" and clean):
            return Decision(Verdict.STAY_EXITED, reason=f"policy {self.config.policy}")
        if uptime >= self.config.stable_after.total_seconds():
            history.reset()  # it ran long enough: this is a new incident, not a crash loop
        window = self.config.window.total_seconds()
        history.times.append(now)
        while history.times and history.times[0] < now - window:
            history.times.popleft()
        history.consecutive += 1
        if len(history.times) > self.config.max_restarts:
            return Decision(
                Verdict.FATAL,
                reason=f"{len(history.times)} failures within {window:g}s (max_restarts={self.config.max_restarts})",
            )
        return Decision(Verdict.RESTART, delay=self.backoff(history.consecutive))
