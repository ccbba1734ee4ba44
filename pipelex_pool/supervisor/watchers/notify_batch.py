"""READY replicas' notify sockets, read together instead of one wake-up of the supervisor per datagram.

A READY replica sends watchdog pings (32 idle replicas: 4 a second together) and reports (a busy one: its in-flight
attempts 4 times a second); nothing in them must reach the loop at once, so its socket joins this batch, which
reads whatever its members sent (one epoll of them all) at the start of each of the loop's iterations (a watchdog
deadline is never judged on a ping left unread; status, the live view and /metrics make one: supervisor/loop.py,
`fresh`). Between iterations it reads:
- while something is under way (a start, a stop, a pause asked for, ...): as soon as any member has something;
- while replicas report (a read found a report less than REPORTING_FOR_S ago): once a TICK_S, on the supervisor's
  tick grid (a busy replica's socket holds 10 datagrams, 2.5 s of its reports; one that finds it full keeps what
  it could not send and sends it all later, worker/inflight.py);
- while the pool is idle (pings alone): not at all; the loop's own pass (every 5 s at least) reads them, and a
  report it finds there turns the tick back on. An idle pool of 32 was woken once a second for nothing.
A replica's exit is seen by its process watcher, which takes its socket out of the batch and reads what is left
before reporting the exit."""

from __future__ import annotations

import contextlib
import math
import select
import socket
import time
from dataclasses import dataclass

import anyio

from pipelex_pool.supervisor.events import Notified
from pipelex_pool.supervisor.inbox import PING, REPORTS_WAIT_S, Inbox
from pipelex_pool.supervisor.process.handle import ProcessHandle
from pipelex_pool.supervisor.watchers.datagrams import MAX_DATAGRAM, routed
from pipelex_pool.ticks import until_grid

TICK_S = REPORTS_WAIT_S  # a report of a READY replica reaches the loop within this, while replicas report
REPORTING_FOR_S = 3.0  # ... that is, while a read found one less than this ago


@dataclass(frozen=True)
class _Member:
    sock: socket.socket
    handle: ProcessHandle
    generation: int


class NotifyBatch:
    def __init__(self, inbox: Inbox) -> None:
        self._inbox = inbox
        self._epoll = select.epoll()
        self._members: dict[int, _Member] = {}  # by file descriptor
        self._prompt = False
        self._reported_at = -math.inf  # (monotonic) when a read last found a report
        self._woken = anyio.Event()  # set when the batch turns prompt or reporting (wakes its wait)

    def join(self, sock: socket.socket, handle: ProcessHandle, generation: int) -> None:
        """(from a replica's notify reader, once the replica is READY) read its socket with the others from now."""
        if self._epoll.closed or sock.fileno() in self._members:
            return
        self._members[sock.fileno()] = _Member(sock, handle, generation)
        self._epoll.register(sock.fileno(), select.EPOLLIN)

    def leave(self, sock: socket.socket) -> None:
        """(from the process watcher, at the replica's exit, before its socket is read for the last time and
        closed) no more of this socket here. Idempotent."""
        fd = sock.fileno()
        member = self._members.get(fd)
        if member is not None and member.sock is sock:
            del self._members[fd]
            with contextlib.suppress(OSError, ValueError):  # (ValueError: the batch is closed)
                self._epoll.unregister(fd)

    @property
    def reporting(self) -> bool:
        """A read found a report less than REPORTING_FOR_S ago: the batch reads on the tick."""
        return time.monotonic() - self._reported_at < REPORTING_FOR_S

    @property
    def members(self) -> int:
        return len(self._members)

    def set_prompt(self, prompt: bool) -> None:
        """(from the loop, after each iteration) whether something is under way that a report may settle."""
        if prompt and not self._prompt:
            self._woken.set()
        self._prompt = prompt

    def read(self, *, wake: bool) -> None:
        """Read every datagram the members have queued, to the inbox (pings and reports noted, the rest sent);
        `wake`: a report among them wakes the loop now (they have waited already)."""
        if not self._members:
            return
        noted: list[Notified] = []
        for fd, _ in self._epoll.poll(0):
            member = self._members.get(fd)
            if member is None:
                continue
            while True:
                try:
                    datagram = member.sock.recv(MAX_DATAGRAM)
                except OSError:  # BlockingIOError: all read
                    break
                notified, is_noted = routed(datagram, member.handle, member.generation)
                if is_noted:
                    noted.append(notified)
                else:
                    self._inbox.notify(notified)
        if any(n.fields != PING for n in noted):
            if not self.reporting:
                self._woken.set()
            self._reported_at = time.monotonic()
        if noted:
            self._inbox.note_read(noted, wake=wake)

    async def run(self) -> None:
        """(a task of the supervisor's) Read the batch at once while something is under way, once a tick while
        replicas report, and leave it to the loop's pass while the pool is idle."""
        while True:
            if self._prompt:
                with anyio.move_on_after(TICK_S):  # (and look again whether it is still prompt)
                    await anyio.wait_readable(self._epoll.fileno())
            else:
                self._woken = anyio.Event()
                with anyio.move_on_after(until_grid(TICK_S) if self.reporting else math.inf):
                    await self._woken.wait()
            self.read(wake=True)

    def close(self) -> None:
        self._members.clear()
        self._epoll.close()
