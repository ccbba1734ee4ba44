"""Who polls a task queue, as Temporal sees it.

DescribeTaskQueue in its default mode reports the root partition only, where a new worker may stay invisible
for ~50 s while it polls another partition (DESIGN.md section 8); so every partition is described and merged.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime

from temporalio.api.enums.v1 import TaskQueueKind, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

DEFAULT_PARTITIONS = 4


class QueueType(enum.Enum):
    WORKFLOW = TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW
    ACTIVITY = TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY


@dataclass(frozen=True)
class Poller:
    identity: str
    last_access: datetime


def partition_names(queue: str, partitions: int = DEFAULT_PARTITIONS) -> list[str]:
    """The root partition's name is the queue's; the others are /_sys/<queue>/<n>."""
    return [queue, *(f"/_sys/{queue}/{n}" for n in range(1, partitions))]


async def queue_pollers(
    client: Client, queue: str, queue_type: QueueType, partitions: int = DEFAULT_PARTITIONS
) -> dict[str, Poller]:
    """Every poller of `queue` for `queue_type` across its partitions, by identity (latest access kept)."""
    found: dict[str, Poller] = {}
    for name in partition_names(queue, partitions):
        response = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=client.namespace,
                task_queue=TaskQueue(name=name, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL),
                task_queue_type=queue_type.value,
            )
        )
        for info in response.pollers:
            seen = info.last_access_time.ToDatetime(tzinfo=UTC)
            previous = found.get(info.identity)
            if previous is None or previous.last_access < seen:
                found[info.identity] = Poller(info.identity, seen)
    return found
