"""The watch between rounds: at rest it waits for its next round (QUIET_INTERVAL_S away, or more), and the reconcile
loop's poke (a start or a stop under way) makes it look at the pool now. A fake pool and a fake Temporal: the watch's
round is replaced by a recorder, so nothing is asked of a server; the watch's own waiting is what runs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import anyio
import pytest

from pipelex_pool.supervisor.pool_state import PoolState
from pipelex_pool.supervisor.watchers.queues import TemporalWatch

WatchAtRest = tuple[TemporalWatch, list[bool], list[float]]  # the watch, whether a replica starts, its rounds
HANG_GUARD_S = 30.0  # a round comes within a tick (WATCH_INTERVAL_S) of the poke; this only stops a hang


@dataclass
class FakePool:
    """What the watch's waiting reads of the pool: its clock (the watch's next round is far past this test)."""

    now: float = 100.0
    groups: dict[str, Any] = field(default_factory=dict)

    def clock(self) -> float:
        return self.now


async def no_client() -> Any:
    return None


@asynccontextmanager
async def watch_at_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[TemporalWatch, list[bool], list[float]]]:
    """A running watch whose last round said: nothing to learn, the next round in an hour; with the flag `looking()`
    reads (whether a replica is starting) and the pool's clock at each of its rounds. Stopped on the way out."""
    pool, starting, rounds = FakePool(), [False], list[float]()
    watch = TemporalWatch(cast(PoolState, pool), no_client, lambda request: None)
    watch.next_round = pool.now + 3600.0

    async def recorded_round(client: object) -> None:
        rounds.append(pool.clock())
        watch.next_round = pool.now + 3600.0

    monkeypatch.setattr(watch, "_round", recorded_round)
    monkeypatch.setattr(watch, "looking", lambda: starting[0])
    with anyio.fail_after(HANG_GUARD_S):
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch.run)
            await anyio.wait_all_tasks_blocked()
            yield watch, starting, rounds
            tg.cancel_scope.cancel()


async def test_a_poke_while_a_replica_starts_makes_the_watch_look_now(monkeypatch: pytest.MonkeyPatch) -> None:
    async with watch_at_rest(monkeypatch) as (watch, starting, rounds):
        assert rounds == []  # at rest: waiting for a round an hour away
        starting[0] = True  # the loop spawned a replica ...
        watch.poke()  # ... and pokes the watch
        while not rounds:
            await anyio.sleep(0.05)
        assert rounds == [100.0]  # looked at the pool now, not at its next round


async def test_a_poke_with_nothing_under_way_leaves_the_watch_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    async with watch_at_rest(monkeypatch) as (watch, starting, rounds):
        waiting_for = watch._poked  # noqa: SLF001 (the event the watch waits on between rounds)
        watch.poke()
        while watch._poked is waiting_for:  # noqa: SLF001 (it woke, found nothing to learn, waits again)
            await anyio.sleep(0.05)
        assert rounds == []  # no round: the poke alone is nothing to learn
        starting[0] = True  # and a later poke with a start under way still works: the watch is waiting again
        watch.poke()
        while not rounds:
            await anyio.sleep(0.05)
