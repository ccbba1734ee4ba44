"""Fault boundaries: supervision never stops silently.

Every long-running task beside the loop (signals, watchers, the control server, the beacon) runs under
`keep_running`: an exception is logged with its traceback, counted (status and /metrics show the count), and the
task starts again after a backoff, so no single fault ends the supervisor or silently stops a part of it. The
watchers of one process (its output and exit, its readiness) run under `guarded`: logged and counted, not started
again (the process's exit is still reported: its watcher does so whatever happens).

The last line is `StallGuard`: a thread (it runs even when the event loop is blocked) that exits the supervisor
with status 70 if the loop makes no step for STALL_S. Its workers notice their parent's death and drain (as they
do when a supervisor is SIGKILLed), and systemd restarts the unit. A process paused as a whole (SIGSTOP, swap) is
not a stall: the guard's own sleep comes back late too, and that time is not counted.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import structlog

log = structlog.get_logger("pipelex_pool.supervisor")

FAULTS: Counter[str] = Counter()  # faults caught per task, since the supervisor started
RESTART_FIRST_S = 0.5
RESTART_MAX_S = 30.0
STALL_S = 90.0  # no loop step for this long (the idle loop steps every few seconds): the supervisor exits
STALL_CHECK_S = 5.0  # (its own thread: each check wakes the process)
EXIT_STALLED = 70  # EX_SOFTWARE


async def keep_running(name: str, task: Callable[..., Awaitable[Any]], *args: Any) -> None:
    """Run `task(*args)` until it returns; restart it (with backoff) whenever it raises."""
    delay = RESTART_FIRST_S
    while True:
        started = time.monotonic()
        try:
            await task(*args)
            return
        except Exception:
            FAULTS[name] += 1
            log.exception("supervisor.task_failed", task=name, faults=FAULTS[name], restart_in_s=delay)
        if time.monotonic() - started > RESTART_MAX_S:  # it had run a good while: start again quickly
            delay = RESTART_FIRST_S
        await anyio.sleep(delay)
        delay = min(delay * 2, RESTART_MAX_S)


async def guarded(name: str, task: Callable[..., Awaitable[Any]], *args: Any) -> None:
    """Run a task that is not started again (one per process: its watchers): a fault is logged with its
    traceback and counted, never raised into the supervisor's task group."""
    try:
        await task(*args)
    except Exception:
        FAULTS[name] += 1
        log.exception("supervisor.task_failed", task=name, faults=FAULTS[name], restart_in_s=None)


class StallGuard:
    """Exits the process if `steps()` stops growing for STALL_S of the process's own running time."""

    def __init__(self, steps: Callable[[], int], stall_s: float = STALL_S, check_s: float = STALL_CHECK_S) -> None:
        self.steps, self.stall_s, self.check_s = steps, stall_s, check_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="stall-guard", daemon=True)

    def __enter__(self) -> StallGuard:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    def _watch(self) -> None:
        seen, stalled = self.steps(), 0.0
        while True:
            before = time.monotonic()
            if self._stop.wait(self.check_s):
                return
            slept = time.monotonic() - before
            if slept > self.check_s * 3:  # this thread was paused too: the whole process was, not its loop
                seen, stalled = self.steps(), 0.0
                continue
            now_steps = self.steps()
            if now_steps != seen:
                seen, stalled = now_steps, 0.0
                continue
            stalled += slept
            if stalled >= self.stall_s:
                log.critical(
                    "supervisor.loop_stalled",
                    seconds=round(stalled),
                    action=f"exit {EXIT_STALLED}: workers drain on their parent's death, systemd restarts the unit",
                )
                os._exit(EXIT_STALLED)
