"""The reconcile loop's one stream: requests (control commands, signals, watchers) and observers' reports, in the
order they arrive. Anyone may put on it; only the loop takes from it. Once closed (the pool has shut down) a
request is refused at once, and whatever was still queued is refused, so no requester waits forever.

A watchdog ping is noted without waking the loop: it changes nothing the loop decides before the replica's
watchdog deadline, and the loop wakes by that deadline anyway and takes every noted ping first. 32 replicas ping
4 times a second together; each woke the loop for nothing."""

from __future__ import annotations

import contextlib
from collections import deque

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from pipelex_pool.errors import ErrorCode, RequestRefused
from pipelex_pool.supervisor.desired.requests import Request
from pipelex_pool.supervisor.events import Event, HandedBack, Notified, RunsHandedBack, Sampled, Submitted

CAPACITY = 100_000


class Inbox:
    def __init__(self) -> None:
        self.send: MemoryObjectSendStream[Event]  # (what the children's watchers report on)
        self.send, self._receive = anyio.create_memory_object_stream[Event](max_buffer_size=CAPACITY)
        self._held: Event | None = None  # what ended the last wait, taken first next time
        self._noted: deque[Notified] = deque()  # watchdog pings, taken before anything else
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

    def note(self, ping: Notified) -> None:
        """(from a child's watcher) a watchdog ping, for the loop's next iteration: it does not wake the loop."""
        if not self.closed:
            self._noted.append(ping)

    async def wait(self, seconds: float) -> None:
        """Until something arrives (kept for the next `take`), or `seconds` have passed."""
        with anyio.move_on_after(seconds):
            self._held = await self._receive.receive()

    def take(self) -> Event | None:
        """The next event that arrived (the noted pings first), or None."""
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
        while True:
            try:
                event = self._receive.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream):
                break
            if isinstance(event, Submitted):
                event.settle(refused=refused)
        self.send.close()
        self._receive.close()
