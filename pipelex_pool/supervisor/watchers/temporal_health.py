"""Whether the Temporal server answers: the pool's one judge of an outage, for status, /health, /metrics and the
events. It asks every UP_CHECK_INTERVAL_S while the server answers, every CHECK_INTERVAL_S while it does not (its
return is seen within a second), each time with a CHECK_TIMEOUT_S deadline (a hung server, whose connections stay
open, is seen as quickly as a dead one), and an outage is timed from the first check that failed to the first
that succeeded again. It only records what it sees: an outage never stalls the reconcile loop and never marks a
worker failed."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

import anyio
import structlog
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.client import Client

from pipelex_pool.ticks import sleep_on_grid

log = structlog.get_logger("pipelex_pool.supervisor")
CHECK_INTERVAL_S = 1.0
# On the loop's own 5 s pass (ticks.py): a lone RPC's answer wakes the process, and a check every 3 s was a fifth
# of an idle supervisor's CPU. A server that refuses connections is known within 5 s, a hung one within 7 s.
UP_CHECK_INTERVAL_S = 5.0
CHECK_TIMEOUT_S = 2.0  # a hung server is known within UP_CHECK_INTERVAL_S + CHECK_TIMEOUT_S
RPC_DEADLINE = timedelta(seconds=CHECK_TIMEOUT_S)


@dataclass
class TemporalHealth:
    target: str
    expected_down: Callable[[], bool] = bool  # True while not answering is normal (the pool's own dev server boots)
    error: str | None = "not checked yet"
    down_since: float | None = None  # wall clock: when the first failed check of the current outage was sent
    outages: int = 0  # outages seen (after the first answer) since the supervisor started
    last_outage_s: float = 0.0
    answered_once: bool = False
    problem: Callable[[], str | None] = lambda: None  # a named TLS or credentials problem, when there is one

    async def run(self, client: Callable[[], Awaitable[Client]]) -> None:
        """Ask the server for its system info (every UP_CHECK_INTERVAL_S while it answers, every CHECK_INTERVAL_S
        while it does not); `client()` connects without retrying."""
        while True:
            asked = time.time()
            try:
                with anyio.fail_after(CHECK_TIMEOUT_S):
                    connected = await client()
                    await connected.workflow_service.get_system_info(GetSystemInfoRequest(), timeout=RPC_DEADLINE)
            except Exception as exc:  # any failure to answer in time counts as unreachable, and is reported as such
                self._failed(asked, self.problem() or f"{self.target}: {str(exc) or type(exc).__name__}")
            else:
                self._answered()
            await sleep_on_grid(CHECK_INTERVAL_S if self.error else UP_CHECK_INTERVAL_S)

    def _failed(self, asked: float, error: str) -> None:
        if self.down_since is None:
            self.down_since = asked
            if self.answered_once:
                self.outages += 1
                level = log.info if self.expected_down() else log.warning
                level("temporal.unavailable", target=self.target, error=error, since=asked)
        self.error = error

    def _answered(self) -> None:
        if self.down_since is not None and self.answered_once:
            self.last_outage_s = time.time() - self.down_since
            log.info("temporal.available", target=self.target, down_s=round(self.last_outage_s, 1))
        self.error, self.down_since, self.answered_once = None, None, True
