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
    """Crash-loop protection aimed at crash loops (supervisord's startsecs, pm2's min_uptime):

    - a replica that had been READY for `min_uptime` and then died *ran*: something outside killed it (OOM, an
      operator, a chaos test) or a task broke it; it is restarted at once and its backoff forgotten (a READY time
      of `stable_after` also forgets its earlier young deaths);
    - a replica that died before READY, or within `min_uptime` of it, *died young*: that is how a crash loop
      looks. It restarts after an exponential backoff with jitter (backoff_initial x backoff_factor^(n-1) for
      the n-th young death in a row, capped at backoff_max), and more than `max_restarts` young deaths within
      `window` make it FATAL until restart-failed;
    - exit 78 (configuration error) is FATAL at once.
    """

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
        self, status: ExitStatus, ready_for: float | None, now: float, history: CrashHistory, *, killed_as_failed: bool
    ) -> Decision:
        """`ready_for`: how long the process had been READY when it died (None: it never was)."""
        if status.config_error:
            return Decision(Verdict.FATAL, reason="configuration error (exit 78): fix the config, then restart-failed")
        clean = status.success and not killed_as_failed
        if self.config.policy == "never" or (self.config.policy == "on-failure" and clean):
            return Decision(Verdict.STAY_EXITED, reason=f"policy {self.config.policy}")
        if ready_for is not None and ready_for >= self.config.min_uptime.total_seconds():
            history.consecutive = 0
            if ready_for >= self.config.stable_after.total_seconds():
                history.times.clear()
            return Decision(Verdict.RESTART, reason=f"it had been READY for {ready_for:.1f}s")
        window = self.config.window.total_seconds()
        history.times.append(now)
        while history.times and history.times[0] < now - window:
            history.times.popleft()
        history.consecutive += 1
        young = "never READY" if ready_for is None else f"READY for {ready_for:.1f}s only"
        if len(history.times) > self.config.max_restarts:
            return Decision(
                Verdict.FATAL,
                reason=f"{len(history.times)} young deaths ({young}) within {window:g}s "
                f"(max_restarts={self.config.max_restarts})",
            )
        return Decision(Verdict.RESTART, delay=self.backoff(history.consecutive), reason=young)
