"""The read-only view of the pool that status, /health, /metrics and systemd's STATUS= read: the pool's state
(pool_state.py) and its watchers' findings.

`PoolView` is what they may see of the supervisor: properties only, so mypy refuses a write through it. Desired
state changes only through requests (desired/requests.py), process state only in the loop (loop.py)."""

from __future__ import annotations

from typing import Protocol

from pipelex_pool.supervisor.deploy.controller import DeployController
from pipelex_pool.supervisor.desired.requests import Request
from pipelex_pool.supervisor.notifications import Notifications
from pipelex_pool.supervisor.pool_state import (
    PoolState,
    ReplicaInfo,
    counts,
    settled,
    summary,
    temporal_expected_down,
    uptime,
)
from pipelex_pool.supervisor.watchers.queues import TemporalWatch
from pipelex_pool.supervisor.watchers.temporal_health import TemporalHealth

__all__ = ["PoolControl", "PoolView", "ReplicaInfo", "counts", "settled", "summary", "temporal_expected_down", "uptime"]


class PoolView(PoolState, Protocol):
    """The supervisor as everything but the loop sees it: its state and what its watchers found."""

    @property
    def watch(self) -> TemporalWatch: ...
    @property
    def deployer(self) -> DeployController: ...
    @property
    def health(self) -> TemporalHealth: ...
    @property
    def notifications(self) -> Notifications: ...

    async def fresh(self) -> None:
        """Until every replica's reports and resources are read as of now (bounded: a busy loop, what it has)."""
        ...


class PoolControl(PoolView, Protocol):
    """What control commands get: the view, and the way to ask for a change (a request the loop applies)."""

    async def submit(self, request: Request) -> object: ...
    async def reload_file(self) -> object: ...
