"""A fleet: pools on several machines (or several pools on one) that serve the same queues, found through Temporal
itself. Each pool's supervisor keeps a long poll open on its fleet's beacon queue, a task queue no task is ever
sent to; Temporal lists the beacon's pollers like any queue's, so describing it names every live pool of the
fleet and its host, with no registry, port or configuration beyond the fleet's name."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import anyio
import structlog
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import PollActivityTaskQueueRequest
from temporalio.client import Client

from pipelex_pool.contract import host_of, pool_of
from pipelex_pool.temporal.pollers import QueueType, queue_pollers
from pipelex_pool.temporal.watch import LIVE_WITHIN, QueueView

log = structlog.get_logger("pipelex_pool.fleet")
# Each beacon poll ends (its deadline) after BEACON_POLL and the next starts at once: Temporal's list then shows a
# live pool's poll at most BEACON_POLL old, so a pool not seen for BEACON_LIVE_WITHIN is gone. With the watch describing
# the beacon every FLEET_REFRESH_S, a dead pool leaves the fleet's share within BEACON_LIVE_WITHIN + FLEET_REFRESH_S.
BEACON_POLL = timedelta(seconds=10)
BEACON_LIVE_WITHIN = timedelta(seconds=20)
FLEET_REFRESH_S = 10.0
# a fleet pool seen polling a queue within this (Temporal's poller history) still serves it, for a deploy's switch
SEEN_ON_QUEUE_WITHIN = timedelta(minutes=5)
RETRY_S = 2.0


def beacon_queue(fleet: str) -> str:
    return f"pipelex-pool-fleet-{fleet}"


def beacon_identity(pool: str, pid: int) -> str:
    """`<pool>/supervisor@<host>:<pid>`: the pool's name and host, as the fleet sees them."""
    return f"{pool}/supervisor@{socket.gethostname()}:{pid}"


@dataclass
class FleetView:
    """The fleet's live pools, as Temporal last listed the beacon's pollers: pool name -> hosts."""

    name: str
    pools: dict[str, set[str]] = field(default_factory=dict)
    seen_at: datetime | None = None

    def members(self, own: str) -> int:
        """How many pools of the fleet are live, this one included (it may not be listed yet)."""
        return len(set(self.pools) | {own})

    def lagging(self, own: str, views: Iterable[QueueView], version: str, now: datetime) -> list[str]:
        """The other live pools of the fleet seen polling one of `views`' queues lately that have no live poller
        with `version` there, e.g. "host2-pool (host2) runs only A on llm_q (activity)". A pool seen on a queue
        counts until it has not polled it for SEEN_ON_QUEUE_WITHIN: a poller missing from one describe (it long-
        polls another partition) must not let a switch through while that pool runs only the old build."""
        found = []
        for view in views:
            recent: dict[str, dict[str | None, timedelta]] = {}  # pool -> version -> age of its newest poll
            for identity, poller in view.pollers.items():
                pool = pool_of(identity)
                if pool == own or host_of(identity) not in self.pools.get(pool, ()):
                    continue
                age = now - poller.last_access
                if age <= SEEN_ON_QUEUE_WITHIN:
                    ages = recent.setdefault(pool, {})
                    ages[poller.version] = min(age, ages.get(poller.version, age))
            for pool, ages in sorted(recent.items()):
                newest = ages.get(version)
                if newest is not None and newest <= LIVE_WITHIN:
                    continue
                hosts = ", ".join(sorted(self.pools[pool]))
                where = f"{view.queue} ({view.queue_type.name.lower()})"
                if newest is not None:
                    quiet = f"{newest.total_seconds():.0f}s"
                    found.append(f"{pool} ({hosts}) has not polled {version.rpartition('.')[2]} on {where} for {quiet}")
                    continue
                builds = sorted(v.rpartition(".")[2] for v in ages if v) or ["no version"]
                found.append(f"{pool} ({hosts}) runs only {', '.join(builds)} on {where}")
        return found


async def hold_beacon(client: Callable[[], Awaitable[Client]], fleet: str, identity: str) -> None:
    """Keep a long poll open on the fleet's beacon queue, for as long as the supervisor runs."""
    request_queue = TaskQueue(name=beacon_queue(fleet))
    while True:
        try:
            connected = await client()
            await connected.workflow_service.poll_activity_task_queue(
                PollActivityTaskQueueRequest(
                    namespace=connected.namespace, task_queue=request_queue, identity=identity
                ),
                timeout=BEACON_POLL,
            )
        except Exception as exc:  # the poll's deadline (poll again at once), or the server restarts or is down
            if "deadline" in str(exc).lower():
                continue
            log.debug("fleet.beacon_retry", error=str(exc) or type(exc).__name__)
            await anyio.sleep(RETRY_S)


async def describe_fleet(client: Client, fleet: str) -> FleetView:
    pollers = await queue_pollers(client, beacon_queue(fleet), QueueType.ACTIVITY)
    now = datetime.now(UTC)
    view = FleetView(fleet, seen_at=now)
    for identity, poller in pollers.items():
        if now - poller.last_access <= BEACON_LIVE_WITHIN:
            view.pools.setdefault(pool_of(identity), set()).add(host_of(identity))
    return view
