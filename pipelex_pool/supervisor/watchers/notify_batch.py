"""READY replicas' notify sockets, read together instead of one wake-up of the supervisor per datagram.

A READY replica sends watchdog pings (32 idle replicas: 4 a second together) and reports (a busy one: its in-flight
attempts 4 times a second); nothing in them must reach the loop at once, so its socket joins this batch, which
reads whatever its members sent (one epoll of them all) at the start of each of the loop's iterations (a watchdog
deadline is never judged on a ping left unread) and, while the pool is quiet, once a TICK_S (on the supervisor's
tick grid, with its other periodic tasks); while something is under way (a start, a stop, a pause asked for, ...)
it reads as soon as any member has something. A replica's exit is seen by its process watcher, which takes its
socket out of the batch and reads what is left before reporting the exit."""

from __future__ import annotations

import contextlib
import select
import socket
from dataclasses import dataclass

import anyio

from pipelex_pool.supervisor.events import Notified
from pipelex_pool.supervisor.inbox import REPORTS_WAIT_S, Inbox
from pipelex_pool.supervisor.process.handle import ProcessHandle
from pipelex_pool.supervisor.watchers.datagrams import MAX_DATAGRAM, routed
from pipelex_pool.ticks import until_grid

TICK_S = REPORTS_WAIT_S  # a report of a READY replica reaches the loop (and status) within this


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
        self._prompted = anyio.Event()  # set when the batch turns prompt (wakes the tick's sleep)

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
    def members(self) -> int:
        return len(self._members)

    def set_prompt(self, prompt: bool) -> None:
        """(from the loop, after each iteration) whether something is under way that a report may settle."""
        if prompt and not self._prompt:
            self._prompted.set()
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
        if noted:
            self._inbox.note_read(noted, wake=wake)

    async def run(self) -> None:
        """(a task of the supervisor's) Read the batch once a tick while the pool is quiet, at once while it is
        not."""
        while True:
            if self._prompt:
                with anyio.move_on_after(TICK_S):  # (and look again whether it is still prompt)
                    await anyio.wait_readable(self._epoll.fileno())
            else:
                self._prompted = anyio.Event()
                with anyio.move_on_after(until_grid(TICK_S)):
                    await self._prompted.wait()
            self.read(wake=True)

    def close(self) -> None:
        self._members.clear()
        self._epoll.close()
