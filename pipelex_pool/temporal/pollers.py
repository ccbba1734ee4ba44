"""Who polls a task queue, as Temporal sees it.

DescribeTaskQueue in its default mode reports the root partition only, where a new worker may stay invisible
for ~50 s while it polls another partition (measured on the dev server: a task queue has 4 partitions by
default); so every partition is described and merged.
"""

from __future__ import annotations

import enum
import socket
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
from temporalio.api.enums.v1 import TaskQueueKind, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import (
    DescribeTaskQueueRequest,
    DescribeTaskQueueResponse,
    PollActivityTaskQueueRequest,
)
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

if TYPE_CHECKING:
    from pipelex_pool.packs import ResolvedScope

DEFAULT_PARTITIONS = 4


class QueueType(enum.Enum):
    WORKFLOW = TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW
    ACTIVITY = TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY


def queue_types(scope: ResolvedScope) -> list[QueueType]:
    """What a worker of `scope` polls its task queue for: workflow tasks if it runs workflows, activity tasks if
    it runs activities (the worker's readiness and the supervisor's watch ask Temporal about these)."""
    return ([QueueType.WORKFLOW] if scope.workflows else []) + ([QueueType.ACTIVITY] if scope.activities else [])


@dataclass(frozen=True)
class Poller:
    identity: str
    last_access: datetime
    version: str | None = None  # "<deployment>.<build_id>" a versioned worker polls as (Worker Deployments)


def partition_names(queue: str, partitions: int = DEFAULT_PARTITIONS) -> list[str]:
    """The root partition's name is the queue's; the others are /_sys/<queue>/<n>."""
    return [queue, *(f"/_sys/{queue}/{n}" for n in range(1, partitions))]


async def describe_partition(
    client: Client, name: str, queue_type: QueueType, *, report_stats: bool = False
) -> DescribeTaskQueueResponse:
    return await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=name, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL),
            task_queue_type=queue_type.value,
            report_stats=report_stats,
        )
    )


def merge_pollers(found: dict[str, Poller], response: DescribeTaskQueueResponse) -> None:
    """Add a partition's pollers to `found`, by identity, keeping the latest access."""
    for info in response.pollers:
        seen = info.last_access_time.ToDatetime(tzinfo=UTC)
        previous = found.get(info.identity)
        if previous is None or previous.last_access < seen:
            options = info.deployment_options
            version = f"{options.deployment_name}.{options.build_id}" if options.deployment_name else None
            found[info.identity] = Poller(info.identity, seen, version)


async def queue_pollers(
    client: Client, queue: str, queue_type: QueueType, partitions: int = DEFAULT_PARTITIONS
) -> dict[str, Poller]:
    """Every poller of `queue` for `queue_type` across its partitions, by identity (latest access kept). The
    partitions are asked side by side: their answers come back together, one wake-up of the caller."""
    found: dict[str, Poller] = {}

    async def one(name: str) -> None:
        merge_pollers(found, await describe_partition(client, name, queue_type))

    await side_by_side(*(partial(one, name) for name in partition_names(queue, partitions)))
    return found


async def side_by_side(*calls: Callable[[], Coroutine[Any, Any, object]]) -> None:
    """Run `calls` together (their answers come back together: one wake-up of the caller). The first error is
    raised as itself, not wrapped in a group (what it says reaches status and the logs), the other calls
    cancelled."""
    try:
        async with anyio.create_task_group() as tg:
            for call in calls:
                tg.start_soon(call)
    except ExceptionGroup as group:
        first: BaseException = group
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None


PROBE_TIMEOUT = timedelta(seconds=1)


async def poller_limit_error(client: Client) -> str | None:
    """Whether the namespace refuses new long polls (`namespace concurrent poller limit exceeded`): one short
    poll on a queue of its own, which no task can ever be on, so it takes no work from anyone. The SDK retries
    refused polls quietly, so a worker cannot tell; this can. None: polls are accepted."""
    request = PollActivityTaskQueueRequest(
        namespace=client.namespace,
        task_queue=TaskQueue(name=f"pipelex-pool-probe-{uuid.uuid4().hex}"),
        identity=f"pipelex-pool-probe@{socket.gethostname()}",
    )
    try:
        await client.workflow_service.poll_activity_task_queue(request, timeout=PROBE_TIMEOUT)
    except RPCError as exc:
        if exc.status is RPCStatusCode.RESOURCE_EXHAUSTED:
            return exc.message or "namespace concurrent poller limit exceeded"
        if exc.status is RPCStatusCode.DEADLINE_EXCEEDED:
            return None  # the long poll was accepted and waited: no limit reached
        raise
    return None
