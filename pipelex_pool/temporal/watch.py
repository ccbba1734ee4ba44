"""What Temporal sees of the pool's queues: pollers on every partition, and backlog statistics."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from temporalio.api.enums.v1 import TaskQueueKind
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from pipelex_pool.temporal.pollers import Poller, QueueType, queue_pollers

LIVE_WITHIN = timedelta(seconds=75)  # an idle worker re-polls at least every ~60 s (long-poll expiry)


@dataclass(frozen=True)
class QueueStats:
    backlog: int = 0
    backlog_age_s: float = 0.0
    add_rate: float = 0.0
    dispatch_rate: float = 0.0


@dataclass
class QueueView:
    """One task queue and type as Temporal described it at `seen_at`."""

    queue: str
    queue_type: QueueType
    pollers: dict[str, Poller] = field(default_factory=dict)
    stats: QueueStats = field(default_factory=QueueStats)
    seen_at: datetime | None = None
    error: str | None = None

    def live_pollers(self, now: datetime | None = None) -> dict[str, Poller]:
        now = now or datetime.now(UTC)
        return {i: p for i, p in self.pollers.items() if now - p.last_access <= LIVE_WITHIN}


async def queue_stats(client: Client, queue: str, queue_type: QueueType) -> QueueStats:
    """Backlog statistics (cached ~5 s by the server, sticky tasks excluded, 0 once a queue idles out)."""
    response = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=queue, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL),
            task_queue_type=queue_type.value,
            report_stats=True,
        )
    )
    stats = response.stats
    return QueueStats(
        backlog=stats.approximate_backlog_count,
        backlog_age_s=stats.approximate_backlog_age.ToTimedelta().total_seconds(),
        add_rate=stats.tasks_add_rate,
        dispatch_rate=stats.tasks_dispatch_rate,
    )


async def describe(client: Client, queue: str, queue_type: QueueType) -> QueueView:
    view = QueueView(queue, queue_type)
    view.pollers = await queue_pollers(client, queue, queue_type)
    view.stats = await queue_stats(client, queue, queue_type)
    view.seen_at = datetime.now(UTC)
    return view
