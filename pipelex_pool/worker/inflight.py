"""The activity attempts a worker has started and not finished, reported to its supervisor so that, if the process
dies, the supervisor can hand each one back to Temporal by its task token at once.

The activity interceptor records starts and finishes in the ledger (a dict operation: it never waits on anything).
The worker's reporter sends what changed, a few times a second, as datagrams of at most MAX_DATAGRAM bytes on the
notify socket, never blocking: a datagram the supervisor's queue cannot take stays queued here, and if too much
piles up (a paused supervisor), the ledger is reported whole instead (`reset`), so the supervisor always ends up
with the current set, however long it was away."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from pipelex_pool.contract import INFLIGHT_KEY

MAX_DATAGRAM = 32 * 1024  # the supervisor reads up to 64 KiB per datagram
MAX_QUEUED_DATAGRAMS = 64  # beyond this, report the whole ledger again instead of every change


@dataclass(frozen=True)
class Attempt:
    """One activity attempt as Temporal dispatched it to this worker."""

    token: str  # the task token, base64: names exactly this attempt
    workflow_id: str
    run_id: str
    activity_id: str
    activity_type: str
    attempt: int
    task_queue: str
    started_at: float  # wall clock

    @classmethod
    def from_info(cls, info: Any) -> Attempt:
        return cls(
            token=base64.b64encode(info.task_token).decode(),
            workflow_id=info.workflow_id or "",
            run_id=info.workflow_run_id or "",
            activity_id=info.activity_id,
            activity_type=info.activity_type,
            attempt=info.attempt,
            task_queue=info.task_queue,
            started_at=time.time(),
        )

    @property
    def task_token(self) -> bytes:
        return base64.b64decode(self.token)


def decode_report(value: str) -> tuple[bool, dict[int, Attempt], list[int]]:
    """(reset, attempts started, ids finished) from one datagram's INFLIGHT value; raises ValueError if malformed."""
    data = json.loads(value)
    added = {int(key): Attempt(**fields) for key, fields in data.get("add", {}).items()}
    return bool(data.get("reset")), added, [int(key) for key in data.get("del", [])]


class InflightLedger:
    """What runs now, and the changes not yet handed to the reporter. Thread-safe: sync activities run on threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next_id = 0
        self.running: dict[int, Attempt] = {}
        self._added: dict[int, Attempt] = {}
        self._removed: list[int] = []
        self._reset = True  # the first report tells the supervisor to start from an empty set

    def started(self, attempt: Attempt) -> int:
        with self._lock:
            self._next_id += 1
            self.running[self._next_id] = attempt
            self._added[self._next_id] = attempt
            return self._next_id

    def finished(self, key: int) -> None:
        with self._lock:
            self.running.pop(key, None)
            if self._added.pop(key, None) is None:  # reported as started: report that it finished
                self._removed.append(key)

    def force_reset(self) -> None:
        """Report the whole ledger next time (what was queued for the supervisor was dropped)."""
        with self._lock:
            self._reset = True

    def take_report(self) -> list[str]:
        """The changes since the last call (or everything, after a reset), as notify lines of bounded size."""
        with self._lock:
            reset = self._reset
            added = dict(self.running) if reset else self._added
            removed = [] if reset else self._removed
            self._reset, self._added, self._removed = False, {}, []
        if not (reset or added or removed):
            return []
        lines: list[str] = []
        chunk: dict[str, Any] = {"reset": reset, "add": {}, "del": []}
        size = 0
        for key, attempt in added.items():
            entry = asdict(attempt)
            cost = len(json.dumps(entry)) + 16
            if size + cost > MAX_DATAGRAM and (chunk["add"] or chunk["del"]):
                lines.append(_line(chunk))
                chunk, size = {"add": {}, "del": []}, 0
            chunk["add"][str(key)] = entry
            size += cost
        for key in removed:
            if size + 12 > MAX_DATAGRAM:
                lines.append(_line(chunk))
                chunk, size = {"add": {}, "del": []}, 0
            chunk["del"].append(key)
            size += 12
        lines.append(_line(chunk))
        return lines


def _line(chunk: dict[str, Any]) -> str:
    return f"{INFLIGHT_KEY}={json.dumps(chunk, separators=(',', ':'))}"


class Ledger(Protocol):
    """What the outbox reports: changes as notify lines, or everything again after `force_reset`."""

    def take_report(self) -> list[str]: ...

    def force_reset(self) -> None: ...


class Outbox:
    """Datagrams for the supervisor, in order, sent without ever blocking the worker."""

    def __init__(self, *ledgers: Ledger) -> None:
        self.ledgers = ledgers
        self.queued: deque[str] = deque()

    def flush(self, send: Any) -> None:
        """Queue the ledgers' changes and send what the supervisor's socket takes now; `send(line) -> bool`."""
        for ledger in self.ledgers:
            self.queued.extend(ledger.take_report())
        while self.queued:
            if not send(self.queued[0]):
                break
            self.queued.popleft()
        if len(self.queued) > MAX_QUEUED_DATAGRAMS:  # the supervisor is away: send the whole sets when it is back
            self.queued.clear()
            for ledger in self.ledgers:
                ledger.force_reset()


LEDGER = InflightLedger()
