"""The workflow runs a worker holds in its cache, reported to its supervisor so that, if the process dies, their
next workflow task goes to a live worker at once.

Temporal sends a cached run's next workflow task to the worker's sticky queue; once that worker is dead the task
waits there `sticky_queue_schedule_to_start_timeout` before Temporal moves it to the normal queue. The supervisor
resets each run the dead replica held (ResetStickyTaskQueue), which moves it now. The workflow runner records a
run when it creates its instance and forgets it when the run is evicted (cache full, run finished, shutdown);
the reporter sends the changes with the in-flight attempts (worker/inflight.py), same bounds, never blocking."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from pipelex_pool.contract import RUNS_KEY

MAX_DATAGRAM = 32 * 1024
Run = tuple[str, str]  # (workflow_id, run_id)


def decode_runs(value: str) -> tuple[bool, list[Run], list[Run]]:
    """(reset, runs cached, runs evicted) from one datagram's RUNS value; raises ValueError if malformed."""
    data = json.loads(value)
    if not isinstance(data, dict):
        raise ValueError("not an object")
    added = [(str(w), str(r)) for w, r in data.get("add", [])]
    removed = [(str(w), str(r)) for w, r in data.get("del", [])]
    return bool(data.get("reset")), added, removed


def _nothing() -> None:
    pass


class RunLedger:
    """Runs cached now, and the changes not yet reported. Thread-safe: workflow activations run on threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.cached: set[Run] = set()
        self._added: set[Run] = set()
        self._removed: set[Run] = set()
        self._reset = True  # the first report tells the supervisor to start from an empty set
        self.on_change: Callable[[], None] = _nothing  # the reporter's wakeup (inflight.Outbox)

    def cache(self, run: Run) -> None:
        with self._lock:
            self.cached.add(run)
            self._added.add(run)
            self._removed.discard(run)
        self.on_change()

    def evict(self, run: Run) -> None:
        with self._lock:
            self.cached.discard(run)
            if run in self._added:
                self._added.discard(run)  # never reported: nothing to take back
            else:
                self._removed.add(run)
        self.on_change()

    def force_reset(self) -> None:
        with self._lock:
            self._reset = True
        self.on_change()

    def take_report(self) -> list[str]:
        """The changes since the last call (or every cached run, after a reset), as notify lines of bounded size."""
        with self._lock:
            reset = self._reset
            added = set(self.cached) if reset else self._added
            removed = set() if reset else self._removed
            self._reset, self._added, self._removed = False, set(), set()
        if not (reset or added or removed):
            return []
        lines: list[str] = []
        chunk: dict[str, Any] = {"reset": reset, "add": [], "del": []}
        size = 0
        for kind, runs in (("add", added), ("del", removed)):
            for run in sorted(runs):
                cost = len(run[0]) + len(run[1]) + 8
                if size + cost > MAX_DATAGRAM and (chunk["add"] or chunk["del"]):
                    lines.append(_line(chunk))
                    chunk, size = {"add": [], "del": []}, 0
                chunk[kind].append(list(run))
                size += cost
        lines.append(_line(chunk))
        return lines


def _line(chunk: dict[str, Any]) -> str:
    return f"{RUNS_KEY}={json.dumps(chunk, separators=(',', ':'))}"


RUNS = RunLedger()
