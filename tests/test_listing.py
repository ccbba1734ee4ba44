"""The listing watcher (supervisor/watchers/listing.py) against a real Temporal dev server and real temporalio
Workers: a starting replica is READY once Temporal lists its identity among the pollers of every queue type it
serves, one not polling stays waiting, a replaced process is forgotten; while Temporal cannot be asked a pool worker
is shown waiting for it (a command's is not), and no longer once it answers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
import pytest
from anyio.abc import ObjectReceiveStream
from temporalio import activity
from temporalio.client import Client
from temporalio.worker import Worker

from pipelex_pool.contract import WAITING_KEY
from pipelex_pool.supervisor.events import Event, Notified, SeenReady
from pipelex_pool.supervisor.process.handle import HandleTimings, ProcessHandle
from pipelex_pool.supervisor.process.policy import RestartPolicy
from pipelex_pool.supervisor.process.state import ExitStatus
from pipelex_pool.supervisor.watchers.listing import Listing
from pipelex_pool.temporal.pollers import QueueType
from pipelex_pool.topology.schema import RestartConfig

pytestmark = pytest.mark.anyio
HANG_GUARD_S = 60.0


@activity.defn
async def noop() -> None:
    return None


def starting(replica: int, pid: int) -> ProcessHandle:
    """A replica's handle as the loop leaves it after a spawn: STARTING, its process's pid known."""
    handle = ProcessHandle("llm", replica, RestartPolicy(RestartConfig()), HandleTimings(10, 15, None))
    handle.start(0.0)
    handle.spawned(pid)
    return handle


@asynccontextmanager
async def polling(client: Client, queue: str, identity: str) -> AsyncIterator[None]:
    async with Worker(client, task_queue=queue, activities=[noop], identity=identity):
        yield


@asynccontextmanager
async def watching(get: Callable[[], Awaitable[Client]]) -> AsyncIterator[tuple[Listing, ObjectReceiveStream[Event]]]:
    """A running listing watcher and the stream its events arrive on (both closed after)."""
    send, receive = anyio.create_memory_object_stream[Event](100)
    with send, receive:
        listing = Listing(get, send)
        async with anyio.create_task_group() as tg:
            tg.start_soon(listing.run)
            yield listing, receive
            tg.cancel_scope.cancel()


async def next_event(receive: ObjectReceiveStream[Event]) -> Event:
    with anyio.fail_after(HANG_GUARD_S):
        return await receive.receive()


async def test_a_replica_is_ready_once_listed_and_one_not_polling_keeps_waiting(client: Client) -> None:
    queue = f"q-{uuid.uuid4().hex[:8]}"

    async def get() -> Client:
        return client

    seen, silent, replaced = starting(0, 101), starting(1, 102), starting(2, 103)
    async with polling(client, queue, "pool/llm/0@host:101"), watching(get) as (listing, receive):
        listing.expect(silent, queue, [QueueType.ACTIVITY], "pool/llm/1@host:102")
        listing.expect(replaced, queue, [QueueType.ACTIVITY], "pool/llm/2@host:103")
        replaced.exited(ExitStatus.from_returncode(1), 0.0)  # the process it was expected for is gone
        listing.expect(seen, queue, [QueueType.ACTIVITY], "pool/llm/0@host:101")
        event = await next_event(receive)
        assert isinstance(event, SeenReady) and event.handle is seen and event.generation == seen.generation
        assert list(listing.expected) == [silent]  # still looked for; the replaced one forgotten
        assert listing.polling(silent)  # it said it polls: it holds no other start back


async def test_a_command_keeping_the_sdk_identity_is_recognised_by_its_pid(client: Client) -> None:
    queue = f"q-{uuid.uuid4().hex[:8]}"

    async def get() -> Client:
        return client

    command = starting(0, 4242)
    async with polling(client, queue, "4242@somehost"), watching(get) as (listing, receive):
        listing.expect(command, queue, [QueueType.ACTIVITY], "pool/llm/0@host:4242", command=True)
        assert not listing.polling(command)  # looked for from its spawn: it may still be in its start
        event = await next_event(receive)
        assert isinstance(event, SeenReady) and event.handle is command


async def test_while_temporal_cannot_be_asked_a_pool_worker_is_shown_waiting_until_it_answers(
    client: Client,
) -> None:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    reachable = anyio.Event()

    async def get() -> Client:
        if not reachable.is_set():
            raise ConnectionError("127.0.0.1:1: connection refused")
        return client

    worker, command = starting(0, 201), starting(1, 202)
    async with polling(client, queue, "pool/llm/0@host:201"), watching(get) as (listing, receive):
        listing.expect(worker, queue, [QueueType.ACTIVITY], "pool/llm/0@host:201")
        listing.expect(command, queue, [QueueType.ACTIVITY], "pool/llm/1@host:202", command=True)
        event = await next_event(receive)
        assert isinstance(event, Notified) and event.handle is worker
        assert "connection refused" in event.fields[WAITING_KEY]
        reachable.set()
        events = [await next_event(receive)]
        while not isinstance(events[-1], SeenReady):
            events.append(await next_event(receive))
        waits = [e for e in events if isinstance(e, Notified)]
        assert all(e.handle is worker for e in waits)  # the command is never said to wait
        assert waits[-1].fields[WAITING_KEY] == ""  # ... and the worker no longer does once Temporal answers
        assert events[-1].handle is worker
        assert list(listing.expected) == [command]
