"""READY replicas' notify sockets read together (NotifyBatch): real datagram sockets and the loop's real inbox, no
process and no server. What the loop gets, when it is woken, and that nothing is lost or read twice."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import anyio
import pytest

from pipelex_pool.contract import INFLIGHT_KEY
from pipelex_pool.supervisor.events import Event, Notified, ReportsDue
from pipelex_pool.supervisor.inbox import Inbox
from pipelex_pool.supervisor.watchers import notify_batch
from pipelex_pool.supervisor.watchers.notify_batch import NotifyBatch
from pipelex_pool.ticks import on_grid, until_grid
from tests.test_handle import make_handle

pytestmark = pytest.mark.anyio

REPORT = f'{INFLIGHT_KEY}={{"reset":false,"add":{{}},"del":[1]}}'.encode()


@pytest.fixture
def pairs() -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    """Datagram socket pairs: (the supervisor's end, non-blocking as the spawner makes it; the replica's end)."""
    made: list[tuple[socket.socket, socket.socket]] = []
    for _ in range(2):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        ours.setblocking(False)
        made.append((ours, theirs))
    yield made
    for ours, theirs in made:
        ours.close()
        theirs.close()


def taken(inbox: Inbox) -> list[Event]:
    found = []
    while (event := inbox.take()) is not None:
        found.append(event)
    return found


async def test_the_batch_reads_every_members_datagrams_at_once_pings_noted_the_rest_sent(
    pairs: list[tuple[socket.socket, socket.socket]],
) -> None:
    inbox, (first, second) = Inbox(), pairs
    batch = NotifyBatch(inbox)
    one, two = make_handle(), make_handle()
    batch.join(first[0], one, 1)
    batch.join(second[0], two, 3)
    first[1].send(b"WATCHDOG=1")
    second[1].send(b"WATCHDOG=1")
    second[1].send(b"STATUS=polling llm_q")
    assert await inbox.wait(0.2) is False  # nothing read yet: the loop was not woken
    batch.read(wake=True)
    events = taken(inbox)
    pings = [e for e in events if isinstance(e, Notified) and e.fields == {"WATCHDOG": "1"}]
    assert {(e.handle, e.generation) for e in pings} == {(one, 1), (two, 3)}
    assert events[:2] == pings  # noted: taken before anything sent
    assert isinstance(events[2], Notified) and events[2].fields == {"STATUS": "polling llm_q"}
    assert len(events) == 3  # pings alone wake nobody: no ReportsDue
    batch.read(wake=True)
    assert taken(inbox) == []  # nothing read twice
    batch.close()
    inbox.close()


async def test_a_report_read_by_the_batch_wakes_the_loop_at_once_unless_the_loop_reads_it_itself(
    pairs: list[tuple[socket.socket, socket.socket]],
) -> None:
    inbox, (first, _) = Inbox(), pairs
    batch = NotifyBatch(inbox)
    batch.join(first[0], make_handle(), 1)
    first[1].send(REPORT)
    batch.read(wake=False)  # (the loop's own read, at the start of an iteration: it takes them itself)
    events = taken(inbox)
    assert len(events) == 1 and isinstance(events[0], Notified) and INFLIGHT_KEY in events[0].fields
    first[1].send(REPORT)
    batch.read(wake=True)  # (the batch's tick)
    events = taken(inbox)
    assert isinstance(events[0], Notified) and isinstance(events[1], ReportsDue) and len(events) == 2
    batch.close()
    inbox.close()


async def test_a_member_that_left_is_read_no_more(pairs: list[tuple[socket.socket, socket.socket]]) -> None:
    inbox, (first, second) = Inbox(), pairs
    batch = NotifyBatch(inbox)
    batch.join(first[0], make_handle(), 1)
    batch.join(second[0], make_handle(), 1)
    batch.leave(first[0])
    batch.leave(first[0])  # (idempotent: the exit path and the watcher's cleanup both leave)
    first[1].send(b"X_PIPELEX_TASKS=1")
    second[1].send(b"WATCHDOG=1")
    batch.read(wake=True)
    assert [e.fields for e in taken(inbox) if isinstance(e, Notified)] == [{"WATCHDOG": "1"}]
    assert first[0].recv(1024) == b"X_PIPELEX_TASKS=1"  # left for the exit's own last read
    assert batch.members == 1
    batch.close()
    inbox.close()


async def test_while_something_is_under_way_the_batch_reads_as_datagrams_come_not_on_its_tick(
    pairs: list[tuple[socket.socket, socket.socket]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(notify_batch, "TICK_S", 3600.0)  # a quiet batch would read nothing for an hour
    inbox, (first, _) = Inbox(), pairs
    batch = NotifyBatch(inbox)
    batch.join(first[0], make_handle(), 1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(batch.run)
        first[1].send(b"STATUS=pausing")
        assert await inbox.wait(0.5) is False  # quiet: left for the tick (or the loop's own read)
        batch.set_prompt(True)  # (the loop: a pause is asked for) wakes the sleeping tick
        with anyio.fail_after(60):  # (a hang guard, far below the tick)
            assert await inbox.wait(60) is True
        assert [e.fields for e in taken(inbox) if isinstance(e, Notified)] == [{"STATUS": "pausing"}]
        first[1].send(b"X_PIPELEX_PAUSE=paused")
        with anyio.fail_after(60):  # prompt: read as it comes
            assert await inbox.wait(60) is True
        assert [e.fields for e in taken(inbox) if isinstance(e, Notified)] == [{"X_PIPELEX_PAUSE": "paused"}]
        tg.cancel_scope.cancel()
    batch.close()
    inbox.close()


async def test_an_idle_batch_leaves_pings_to_the_loop_and_reads_on_its_tick_once_replicas_report(
    pairs: list[tuple[socket.socket, socket.socket]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(notify_batch, "TICK_S", 0.05)
    inbox, (first, _) = Inbox(), pairs
    batch = NotifyBatch(inbox)
    batch.join(first[0], make_handle(), 1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(batch.run)
        first[1].send(b"WATCHDOG=1")
        assert await inbox.wait(1.0) is False  # idle: no tick at all (20 of them would have passed)
        assert first[0].recv(1024) == b"WATCHDOG=1"  # left unread for the loop's own pass
        first[1].send(REPORT)
        batch.read(wake=False)  # (the loop's pass finds a report: replicas report again)
        assert [e for e in taken(inbox) if isinstance(e, Notified)][0].fields.keys() == {INFLIGHT_KEY}
        assert batch.reporting
        first[1].send(REPORT)  # the next one is read on the batch's tick, the loop woken for it
        with anyio.fail_after(60):
            assert await inbox.wait(60) is True
        events = taken(inbox)
        assert isinstance(events[0], Notified) and INFLIGHT_KEY in events[0].fields
        assert isinstance(events[-1], ReportsDue)
        tg.cancel_scope.cancel()
    batch.close()
    inbox.close()


async def test_periodic_tasks_of_different_periods_wake_on_the_same_grid() -> None:
    now = anyio.current_time()
    for period in (1.0, 2.0, 3.0):
        delay = until_grid(period)
        assert 0 < delay <= period
        deadline = now + delay
        assert abs(deadline - round(deadline / period) * period) < 0.05  # on a multiple of its period
    assert on_grid(12.3) == 13.0 and on_grid(12.0) == 12.0 and on_grid(12.3, 5.0) == 15.0
