"""The activity attempts a worker has started and not finished, reported to its supervisor so that, if the process
dies, the supervisor can hand each one back to Temporal by its task token at once.

The activity interceptor records starts and finishes in the ledger (a dict operation: it never waits on anything).
The first change after a report wakes the worker's reporter, which waits a batch interval (the changes meanwhile
join the batch: an attempt that starts and ends within it is never sent) and sends what changed as datagrams of at
most MAX_DATAGRAM bytes on the notify socket, never blocking: an idle worker sends nothing and is not woken. A
datagram the supervisor's queue cannot take stays queued here, and if too much piles up (a paused supervisor), the
ledger is reported whole instead (`reset`), so the supervisor always ends up with the current set, however long it
was away."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
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


def _nothing() -> None:
    pass


class Wakeup:
    """What the reporter waits on: set by a ledger's change from any thread (sync activities and workflow
    activations run on threads); only the first change after a report calls into the event loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.dirty = True  # the first report (a reset) is due at once
        self._notify: Callable[[], object] | None = None

    def set(self) -> None:
        with self._lock:
            if self.dirty:
                return
            self.dirty, notify = True, self._notify
        if notify is not None:
            with contextlib.suppress(RuntimeError):  # the event loop closed meanwhile (the worker is exiting)
                notify()

    def clear(self) -> None:
        """(the reporter, before it takes the ledgers' reports)"""
        with self._lock:
            self.dirty = False

    async def wait(self) -> None:
        """Until a ledger changed since the last `clear` (at once if one did already)."""
        loop, changed = asyncio.get_running_loop(), asyncio.Event()
        with self._lock:
            if self.dirty:
                return
            self._notify = lambda: loop.call_soon_threadsafe(changed.set)
        try:
            await changed.wait()
        finally:
            with self._lock:
                self._notify = None


class InflightLedger:
    """What runs now, and the changes not yet handed to the reporter. Thread-safe: sync activities run on threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next_id = 0
        self.running: dict[int, Attempt] = {}
        self._added: dict[int, Attempt] = {}
        self._removed: list[int] = []
        self._reset = True  # the first report tells the supervisor to start from an empty set
        self.on_change: Callable[[], None] = _nothing  # the reporter's wakeup (Outbox)

    def started(self, attempt: Attempt) -> int:
        with self._lock:
            self._next_id += 1
            self.running[self._next_id] = attempt
            self._added[self._next_id] = attempt
            key = self._next_id
        self.on_change()
        return key

    def finished(self, key: int) -> None:
        with self._lock:
            self.running.pop(key, None)
            if self._added.pop(key, None) is None:  # reported as started: report that it finished
                self._removed.append(key)
        self.on_change()

    def force_reset(self) -> None:
        """Report the whole ledger next time (what was queued for the supervisor was dropped)."""
        with self._lock:
            self._reset = True
        self.on_change()

    def take_report(self) -> list[str]:
        """The changes since the last call (or everything, after a reset), as notify lines of bounded size."""
        with self._lock:
            reset = self._reset
            added = dict(self.running) if reset else self._added
            removed = [] if reset else self._removed
            self._reset, self._added, self._removed = False, {}, []
        if not (reset or added or removed):
            return []
        # each attempt serialised once, the lines assembled around them: a batch costs one dumps per attempt
        entries = [f'"{key}":{json.dumps(attempt.__dict__, separators=(",", ":"))}' for key, attempt in added.items()]
        lines: list[str] = []
        parts: tuple[list[str], list[str]] = ([], [])  # (adds, dels) of the line being filled
        size = 0
        for kind, items in ((0, entries), (1, [str(key) for key in removed])):
            for item in items:
                if size + len(item) + 1 > MAX_DATAGRAM and (parts[0] or parts[1]):
                    lines.append(_line(reset and not lines, *parts))
                    parts, size = ([], []), 0
                parts[kind].append(item)
                size += len(item) + 1
        lines.append(_line(reset and not lines, *parts))
        return lines


def _line(reset: bool, adds: list[str], dels: list[str]) -> str:
    """One INFLIGHT line: {"reset": .., "add": {key: attempt, ..}, "del": [key, ..]} from serialised parts."""
    flag = "true" if reset else "false"
    return f'{INFLIGHT_KEY}={{"reset":{flag},"add":{{{",".join(adds)}}},"del":[{",".join(dels)}]}}'


class Ledger(Protocol):
    """What the outbox reports: changes as notify lines, or everything again after `force_reset`; `on_change` is
    called on every change."""

    on_change: Callable[[], None]

    def take_report(self) -> list[str]: ...

    def force_reset(self) -> None: ...


class Outbox:
    """Datagrams for the supervisor, in order, sent without ever blocking the worker; the ledgers' changes wake
    `wakeup`."""

    def __init__(self, *ledgers: Ledger) -> None:
        self.ledgers = ledgers
        self.queued: deque[str] = deque()
        self.wakeup = Wakeup()
        for ledger in ledgers:
            ledger.on_change = self.wakeup.set

    def flush(self, send: Callable[..., bool]) -> None:
        """Queue the ledgers' changes and send what the supervisor's socket takes now, several ledgers' lines in one
        datagram when they fit; `send(*lines) -> bool`."""
        self.wakeup.clear()
        for ledger in self.ledgers:
            self.queued.extend(ledger.take_report())
        while self.queued:
            lines = self._next_datagram()
            if not send(*lines):
                break
            for _ in lines:
                self.queued.popleft()
        if len(self.queued) > MAX_QUEUED_DATAGRAMS:  # the supervisor is away: send the whole sets when it is back
            self.queued.clear()
            for ledger in self.ledgers:
                ledger.force_reset()

    def _next_datagram(self) -> list[str]:
        """The first queued lines that share one datagram: distinct keys (one datagram holds one value per key),
        at most MAX_DATAGRAM bytes together."""
        lines = [self.queued[0]]
        keys, size = {self.queued[0].partition("=")[0]}, len(self.queued[0])
        for line in list(self.queued)[1:]:
            key = line.partition("=")[0]
            if key in keys or size + len(line) + 1 > MAX_DATAGRAM:
                break
            lines.append(line)
            keys.add(key)
            size += len(line) + 1
        return lines


LEDGER = InflightLedger()
