"""Observers of one child process: its output (to a rotating log), its sd_notify datagrams, its exit, and
readiness checks that live outside it. They only report events; the loop decides."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable

import anyio
import structlog
from anyio.abc import ByteReceiveStream, ObjectSendStream

from pipelex_pool.supervisor.events import Event, Exited, Notified, SeenReady
from pipelex_pool.supervisor.process.handle import ProcessHandle
from pipelex_pool.supervisor.process.state import ProcState
from pipelex_pool.supervisor.spawning.launch import Launched
from pipelex_pool.supervisor.spawning.logfile import RotatingLog
from pipelex_pool.supervisor.watchers.datagrams import MAX_DATAGRAM, parse_notify, routed
from pipelex_pool.supervisor.watchers.notify_batch import NotifyBatch
from pipelex_pool.temporal.devserver import wait_until_serving

log = structlog.get_logger("pipelex_pool.supervisor")
OUTPUT_DRAIN_S = 1.0
TAIL_BYTES = 4096
LAST_LINE_CHARS = 400


class OutputTail:
    """The last TAIL_BYTES a child wrote, for the last line of a failed exit."""

    def __init__(self) -> None:
        self.data = b""

    def add(self, chunk: bytes) -> None:
        self.data = (self.data + chunk[-TAIL_BYTES:])[-TAIL_BYTES:]

    def last_line(self) -> str:
        lines = [line.strip() for line in self.data.decode(errors="replace").splitlines()]
        text = next((line for line in reversed(lines) if line), "")
        return text if len(text) <= LAST_LINE_CHARS else text[: LAST_LINE_CHARS - 3] + "..."


async def _pump(stream: ByteReceiveStream, output: RotatingLog, done: anyio.Event, tail: OutputTail) -> None:
    try:
        async for chunk in stream:
            output.write(chunk)
            tail.add(chunk)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
        pass
    finally:
        done.set()


async def _read_notify(
    sock: socket.socket,
    handle: ProcessHandle,
    generation: int,
    events: ObjectSendStream[Event],
    note: Callable[[Notified], None],
    batch: NotifyBatch | None,
) -> None:
    """The child's datagrams, to the loop's inbox (pings and reports noted, the rest sent), as they come until the
    replica is READY; from then on its socket is read with the other READY replicas' (NotifyBatch)."""
    while True:
        await anyio.wait_readable(sock)
        while True:  # every datagram queued now, for one wake
            try:
                datagram = sock.recv(MAX_DATAGRAM)
            except BlockingIOError:
                break
            notified, noted = routed(datagram, handle, generation)
            if noted:
                note(notified)
            else:
                await events.send(notified)
        if batch is not None and handle.state is ProcState.READY and handle.generation == generation:
            batch.join(sock, handle, generation)
            return


async def _drain_notify(
    sock: socket.socket, handle: ProcessHandle, generation: int, events: ObjectSendStream[Event]
) -> None:
    while True:
        try:
            datagram = sock.recv(MAX_DATAGRAM)
        except (BlockingIOError, OSError):
            return
        await events.send(Notified(handle, generation, parse_notify(datagram)))


async def watch_child(
    handle: ProcessHandle,
    generation: int,
    launched: Launched,
    events: ObjectSendStream[Event],
    note: Callable[[Notified], None],
    batch: NotifyBatch | None = None,
) -> None:
    """Pump output and notifications until the process exits, then report the exit (always, even on cancel);
    release what the spawn allocated."""
    process, output, notify = launched.child, launched.output, launched.notify
    returncode = -9
    tail = OutputTail()
    try:
        async with anyio.create_task_group() as tg:
            drained = anyio.Event()
            if process.stdout is not None:
                tg.start_soon(_pump, process.stdout, output, drained, tail)
            else:
                drained.set()
            if notify is not None:
                tg.start_soon(_read_notify, notify.sock, handle, generation, events, note, batch)
            returncode = await process.wait()
            if notify is not None:  # what it said just before exiting (its final task counts, in-flight attempts)
                if batch is not None:
                    batch.leave(notify.sock)
                await _drain_notify(notify.sock, handle, generation, events)
            with anyio.move_on_after(OUTPUT_DRAIN_S):  # a grandchild may hold the pipe open: do not wait on it
                await drained.wait()
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            output.close()
            if notify is not None:
                if batch is not None:
                    batch.leave(notify.sock)
                notify.close()
            await process.aclose()
            with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):  # (the loop is gone)
                code = process.returncode if process.returncode is not None else returncode
                await events.send(Exited(handle, generation, code, tail.last_line()))


async def watch_serving(
    handle: ProcessHandle, generation: int, target: str, namespace: str, within: float, events: ObjectSendStream[Event]
) -> None:
    try:
        await wait_until_serving(target, namespace, within=within)
    except Exception as exc:  # not serving in time: the handle's start_timeout kills and restarts it
        log.warning("devserver.not_serving", target=target, error=str(exc))
        return
    await events.send(SeenReady(handle, generation))
