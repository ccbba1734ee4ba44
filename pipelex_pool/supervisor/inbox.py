"""The reconcile loop's one stream: requests (control commands, signals, watchers) and observers' reports, in the
order they arrive. Anyone may put on it; only the loop takes from it. Once closed (the pool has shut down) a
request is refused at once, and whatever was still queued is refused, so no requester waits forever.

What replicas report that changes nothing the loop decides is noted, without waking the loop each time, and taken
before anything else at the loop's next iteration: a watchdog ping waits for it (the loop wakes by the replica's
watchdog deadline anyway); a report (in-flight attempts, cached runs, task counts) wakes it within REPORTS_WAIT_S,
once for every report noted meanwhile (`keep_reports_fresh`), so that status shows it within that. An exit, a
readiness or a request still wakes the loop at once, after the notes made before it are taken. 32 replicas ping 4
times a second together, and each busy replica reports 4 times a second: each woke the loop."""

from __future__ import annotations

import contextlib
from collections import deque

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from pipelex_pool.errors import ErrorCode, RequestRefused
from pipelex_pool.supervisor.desired.requests import Request
from pipelex_pool.supervisor.events import (
    Event,
    HandedBack,
    Look,
    Notified,
    ReportsDue,
    RunsHandedBack,
    Sampled,
    Submitted,
)
from pipelex_pool.ticks import sleep_on_grid

CAPACITY = 100_000
REPORTS_WAIT_S = 1.0  # a noted report reaches the loop (and status) within this
PING = {"WATCHDOG": "1"}


class Inbox:
    def __init__(self) -> None:
        self.send: MemoryObjectSendStream[Event]  # (what the children's watchers report on)
        self.send, self._receive = anyio.create_memory_object_stream[Event](max_buffer_size=CAPACITY)
        self._held: Event | None = None  # what ended the last wait, taken first next time
        self._noted: deque[Notified] = deque()  # watchdog pings and reports, taken before anything else
        self._report_noted: anyio.Event | None = None  # set when a report was noted since the last wake-up
        self.closed = False

    def request(self, request: Request) -> Submitted:
        """Put a request on the stream; the loop applies it at the start of its next iteration."""
        submitted = Submitted(request)
        if self.closed:
            submitted.settle(refused=RequestRefused(ErrorCode.STOPPING, "the pool is shutting down"))
        else:
            self.send.send_nowait(submitted)
        return submitted

    def report(self, event: Sampled | HandedBack | RunsHandedBack) -> None:
        """(from the sampler and the hand-back tasks) what they found, for the loop to record"""
        with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
            self.send.send_nowait(event)

    def look(self) -> anyio.Event:
        """(from status, the live view, /metrics) ask the loop for a fresh reading; the event is set once it is
        recorded (or the pool has shut down)."""
        look = Look()
        if self.closed:
            look.done.set()
        else:
            with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                self.send.send_nowait(look)
        return look.done

    def note(self, noted: Notified) -> None:
        """(from a child's watcher) a watchdog ping or a report, for the loop's next iteration: a ping does not wake
        the loop, a report wakes it within REPORTS_WAIT_S."""
        if self.closed:
            return
        self._noted.append(noted)
        if noted.fields != PING:
            self._reports_event().set()

    def note_read(self, noted: list[Notified], *, wake: bool) -> None:
        """(from the READY replicas' batch, NotifyBatch) pings and reports read together; `wake`: a report among
        them wakes the loop now (they waited for the batch's tick already)."""
        if self.closed:
            return
        self._noted.extend(noted)
        if wake and any(n.fields != PING for n in noted):
            with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                self.send.send_nowait(ReportsDue())

    def notify(self, notified: Notified) -> None:
        """(from the READY replicas' batch) a datagram that may change what the loop does, sent as it is."""
        with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
            self.send.send_nowait(notified)

    def _reports_event(self) -> anyio.Event:
        if self._report_noted is None:
            self._report_noted = anyio.Event()
        return self._report_noted

    async def keep_reports_fresh(self) -> None:
        """(a task of the supervisor's) Wake the loop REPORTS_WAIT_S after a report is noted: one wake-up for every
        report noted meanwhile."""
        while not self.closed:
            await self._reports_event().wait()
            await sleep_on_grid(REPORTS_WAIT_S)  # (with the other periodic tasks: ticks.py)
            self._report_noted = None  # (a report noted from now on starts the next wait)
            with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                self.send.send_nowait(ReportsDue())

    async def wait(self, seconds: float) -> bool:
        """Until something arrives (kept for the next `take`: True), or `seconds` have passed (False)."""
        with anyio.move_on_after(seconds):
            self._held = await self._receive.receive()
            return True
        return False

    def take(self) -> Event | None:
        """The next event: what was noted first (pings and reports), then what arrived on the stream; or None."""
        if self._noted:
            return self._noted.popleft()
        if self._held is not None:
            event, self._held = self._held, None
            return event
        try:
            return self._receive.receive_nowait()
        except anyio.WouldBlock:
            return None

    def close(self) -> None:
        """No more requests: refuse what is still queued; close the stream."""
        if self.closed:
            return
        self.closed = True
        self._noted.clear()
        refused = RequestRefused(ErrorCode.STOPPING, "the pool has shut down")
        if isinstance(self._held, Submitted):
            self._held.settle(refused=refused)
        elif isinstance(self._held, Look):
            self._held.done.set()
        while True:
            try:
                event = self._receive.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream):
                break
            if isinstance(event, Submitted):
                event.settle(refused=refused)
            elif isinstance(event, Look):
                event.done.set()
        self.send.close()
        self._receive.close()
