"""The loop's inbox, pure (no process, no server): what wakes the loop, what waits for it, in which order it is
taken."""

from __future__ import annotations

import anyio
import pytest

from pipelex_pool.contract import INFLIGHT_KEY
from pipelex_pool.supervisor.desired.requests import Scale
from pipelex_pool.supervisor.events import Notified, ReportsDue, Submitted
from pipelex_pool.supervisor.inbox import Inbox
from tests.test_handle import make_handle

pytestmark = pytest.mark.anyio


def ping() -> Notified:
    return Notified(make_handle(), 1, {"WATCHDOG": "1"})


def report() -> Notified:
    return Notified(make_handle(), 1, {INFLIGHT_KEY: '{"reset":false,"add":{},"del":[1]}'})


async def test_a_watchdog_ping_waits_for_the_loop_and_is_taken_first() -> None:
    inbox = Inbox()
    noted = ping()
    inbox.note(noted)
    assert await inbox.wait(0.2) is False  # the loop was not woken for it
    submitted = inbox.request(Scale("llm", 2))
    with anyio.fail_after(10):  # (a hang guard)
        assert await inbox.wait(10) is True  # a request wakes it at once
    assert inbox.take() is noted  # what was noted before it first
    taken = inbox.take()
    assert isinstance(taken, Submitted) and taken is submitted
    assert inbox.take() is None
    inbox.close()


async def test_reports_wake_the_loop_once_for_all_of_them() -> None:
    inbox = Inbox()
    async with anyio.create_task_group() as tg:
        tg.start_soon(inbox.keep_reports_fresh)
        first, second = report(), report()
        inbox.note(first)
        inbox.note(second)
        with anyio.fail_after(10):  # (a hang guard: they are due within REPORTS_WAIT_S)
            assert await inbox.wait(10) is True
        assert [inbox.take(), inbox.take()] == [first, second]
        assert isinstance(inbox.take(), ReportsDue)  # one wake-up for both
        assert inbox.take() is None
        tg.cancel_scope.cancel()
    inbox.close()


async def test_a_closed_inbox_refuses_what_was_queued_and_what_comes() -> None:
    inbox = Inbox()
    queued = inbox.request(Scale("llm", 2))
    inbox.note(report())
    inbox.close()
    inbox.note(ping())  # (the pool has shut down: a late datagram is dropped, never raised)
    assert queued.refused is not None and queued.applied.is_set()
    later = inbox.request(Scale("llm", 3))
    assert later.refused is not None and later.applied.is_set()
