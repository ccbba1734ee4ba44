"""A worker's reports to its supervisor, pure (no server, no process): what the batch sends, what it never sends,
and when the reporter is woken."""

from __future__ import annotations

import asyncio
import threading

import anyio
import pytest

from pipelex_pool.contract import INFLIGHT_KEY, RUNS_KEY
from pipelex_pool.supervisor.watchers.datagrams import parse_notify
from pipelex_pool.worker.cached_runs import RunLedger, decode_runs
from pipelex_pool.worker.inflight import MAX_DATAGRAM, Attempt, InflightLedger, Outbox, decode_report


def attempt(n: int) -> Attempt:
    return Attempt(f"dG9rZW4{n}", f"wf-{n}", "run", "1", "act_llm_gen_text", 1, "llm_q", 0.0)


class Socket:
    """The supervisor's end: each accepted datagram, parsed as the supervisor parses it; refuses while `full`."""

    def __init__(self) -> None:
        self.datagrams: list[dict[str, str]] = []
        self.full = False

    def send(self, *lines: str) -> bool:
        if self.full:
            return False
        self.datagrams.append(parse_notify("\n".join(lines).encode()))
        return True


def test_the_first_report_resets_both_sets_in_one_datagram() -> None:
    inflight, runs, socket = InflightLedger(), RunLedger(), Socket()
    Outbox(inflight, runs).flush(socket.send)
    (datagram,) = socket.datagrams
    assert decode_report(datagram[INFLIGHT_KEY]) == (True, {}, [])
    assert decode_runs(datagram[RUNS_KEY]) == (True, [], [])


def test_an_attempt_that_starts_and_ends_within_one_batch_is_never_sent() -> None:
    inflight, socket = InflightLedger(), Socket()
    outbox = Outbox(inflight)
    outbox.flush(socket.send)
    inflight.finished(inflight.started(attempt(1)))
    outbox.flush(socket.send)
    assert len(socket.datagrams) == 1  # the first report only


def test_an_attempt_that_outlives_a_batch_is_sent_started_then_finished() -> None:
    inflight, socket = InflightLedger(), Socket()
    outbox = Outbox(inflight)
    outbox.flush(socket.send)
    first, second = inflight.started(attempt(1)), inflight.started(attempt(2))
    outbox.flush(socket.send)
    inflight.finished(first)
    outbox.flush(socket.send)
    started, finished = (decode_report(d[INFLIGHT_KEY]) for d in socket.datagrams[1:])
    assert started == (False, {first: attempt(1), second: attempt(2)}, [])
    assert finished == (False, {}, [first])


def test_what_a_full_supervisor_queue_refused_is_sent_later_in_order() -> None:
    inflight, socket = InflightLedger(), Socket()
    outbox = Outbox(inflight)
    outbox.flush(socket.send)
    socket.full = True
    key = inflight.started(attempt(1))
    outbox.flush(socket.send)
    inflight.finished(key)
    outbox.flush(socket.send)
    assert len(socket.datagrams) == 1 and len(outbox.queued) == 2
    socket.full = False
    outbox.flush(socket.send)
    reports = [decode_report(d[INFLIGHT_KEY]) for d in socket.datagrams[1:]]
    assert reports == [(False, {key: attempt(1)}, []), (False, {}, [key])]  # two datagrams: one key each


@pytest.mark.anyio
async def test_the_reporter_sleeps_while_nothing_changes_and_wakes_on_a_change_from_any_thread() -> None:
    inflight, runs, socket = InflightLedger(), RunLedger(), Socket()
    outbox = Outbox(inflight, runs)
    with anyio.fail_after(5):
        await outbox.wakeup.wait()  # the first report is due: no wait
    outbox.flush(socket.send)
    woken = asyncio.Event()

    async def reporter() -> None:
        await outbox.wakeup.wait()
        woken.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(reporter)
        await anyio.wait_all_tasks_blocked()
        assert not woken.is_set()  # nothing changed: still waiting
        thread = threading.Thread(target=runs.cache, args=(("wf-1", "run-1"),))  # as a workflow activation does
        thread.start()
        thread.join()
        with anyio.fail_after(5):  # (a hang guard)
            await woken.wait()
    outbox.flush(socket.send)
    assert decode_runs(socket.datagrams[-1][RUNS_KEY]) == (False, [("wf-1", "run-1")], [])


def test_a_large_report_is_split_into_datagrams_the_supervisor_can_read_whole() -> None:
    inflight, socket = InflightLedger(), Socket()
    attempts = {
        inflight.started(Attempt(f"t{n}", f"wf-é-{n}-" + "x" * 200, "run", "1", "act", 1, "llm_q", 0.0)): n
        for n in range(400)
    }
    Outbox(inflight).flush(socket.send)  # the first report: every attempt, after a reset
    assert len(socket.datagrams) > 1
    seen: dict[int, Attempt] = {}
    for n, datagram in enumerate(socket.datagrams):
        assert len(datagram[INFLIGHT_KEY]) <= MAX_DATAGRAM + 64
        reset, added, finished = decode_report(datagram[INFLIGHT_KEY])
        assert reset is (n == 0) and finished == []
        seen.update(added)
    assert seen.keys() == attempts.keys()
    assert seen[next(iter(attempts))].workflow_id.startswith("wf-é-0-")
