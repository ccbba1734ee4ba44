"""The resource sampler's pace, pure: every 2 s while someone looks at the pool or something moves, every 10 s
for an idle pool nobody looks at (what only a status shows is not read 16 times a second for 32 replicas)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, cast

from pipelex_pool.supervisor.pool_state import Audience, PoolState
from pipelex_pool.supervisor.process.state import ProcState
from pipelex_pool.supervisor.watchers.resources import UNWATCHED_SAMPLE_S, sample_now


@dataclass
class Handle:
    state: ProcState


@dataclass
class Spec:
    max_memory: int | None = None


@dataclass
class Group:
    handles: list[Handle]
    spec: Spec = field(default_factory=Spec)

    def all_handles(self) -> list[Handle]:
        return self.handles


@dataclass
class View:
    groups: list[Group]
    audience: Audience = field(default_factory=Audience)

    def all_groups(self) -> list[Any]:
        return self.groups


def idle_pool() -> View:
    return View([Group([Handle(ProcState.READY), Handle(ProcState.READY)])])


def test_an_idle_pool_nobody_looks_at_is_sampled_every_ten_seconds() -> None:
    view = cast(PoolState, idle_pool())
    assert not sample_now(view, last=time.monotonic())
    assert sample_now(view, last=time.monotonic() - UNWATCHED_SAMPLE_S)


def test_a_look_at_the_pool_makes_the_next_sample_due() -> None:
    pool = idle_pool()
    pool.audience.look()  # (what a status, a `top` frame or a /metrics scrape does)
    assert sample_now(cast(PoolState, pool), last=time.monotonic())


def test_a_replica_starting_or_stopping_or_a_memory_limit_keeps_the_fast_pace() -> None:
    for state in (ProcState.STARTING, ProcState.STOPPING):
        pool = idle_pool()
        pool.groups[0].handles[1].state = state
        assert sample_now(cast(PoolState, pool), last=time.monotonic()), state
    pool = idle_pool()
    pool.groups[0].spec.max_memory = 1 << 30
    assert sample_now(cast(PoolState, pool), last=time.monotonic())
