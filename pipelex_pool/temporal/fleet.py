"""A fleet: pools on several machines (or several pools on one) that serve the same queues, found through Temporal
itself. Each pool's supervisor keeps a long poll open on its fleet's beacon queue, a task queue no task is ever
sent to; Temporal lists the beacon's pollers like any queue's, so describing it names every live pool of the
fleet and its host, with no registry, port or configuration beyond the fleet's name."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import anyio
import structlog
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import PollActivityTaskQueueRequest
from temporalio.client import Client

from pipelex_pool.contract import host_of, pool_of
from pipelex_pool.temporal.pollers import QueueType, queue_pollers

log = structlog.get_logger("pipelex_pool.fleet")
# Each beacon poll ends (its deadline) after BEACON_POLL and the next starts at once: Temporal's list then shows a
# live pool's poll at most BEACON_POLL old, so a pool not seen for BEACON_LIVE_WITHIN is gone. With the watch describing
# the beacon every FLEET_REFRESH_S, a dead pool leaves the fleet's share within BEACON_LIVE_WITHIN + FLEET_REFRESH_S.
BEACON_POLL = timedelta(seconds=10)
BEACON_LIVE_WITHIN = timedelta(seconds=20)
FLEET_REFRESH_S = 10.0
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
