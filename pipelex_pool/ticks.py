"""The supervisor's tick grid: its periodic tasks (reading READY replicas' reports, sampling their resources,
checking Temporal's health, watching the queues) sleep until the next multiple of their period on the event loop's
clock, so that those due at the same time wake the process once together instead of each at its own phase."""

from __future__ import annotations

import math

import anyio


def until_grid(period: float) -> float:
    """Seconds from now to the next multiple of `period` on the event loop's clock (never 0: a full tick at most)."""
    now = anyio.current_time()
    return next_on_grid(now, period) - now


def on_grid(deadline: float, period: float = 1.0) -> float:
    """`deadline` moved to the next multiple of `period` (a deadline that may come a little later)."""
    return math.ceil(deadline / period) * period


def next_on_grid(now: float, period: float) -> float:
    """The first multiple of `period` after `now` (at most a period away, never `now` itself)."""
    return (math.floor(now / period) + 1) * period


async def sleep_on_grid(period: float) -> None:
    await anyio.sleep(until_grid(period))
