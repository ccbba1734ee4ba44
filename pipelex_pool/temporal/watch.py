"""What Temporal sees of the pool's queues: pollers on every partition, and backlog statistics."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial

from temporalio.api.workflowservice.v1 import DescribeTaskQueueResponse
from temporalio.client import Client

from pipelex_pool.temporal.pollers import (
    Poller,
    QueueType,
    describe_partition,
    merge_pollers,
    partition_names,
    side_by_side,
)

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
    # Worker Deployment routing of the queue: the versions ("<deployment>.<build_id>") its new runs go to
    current_version: str | None = None
    ramping_version: str | None = None

    def live_pollers(self, now: datetime | None = None) -> dict[str, Poller]:
        now = now or datetime.now(UTC)
        return {i: p for i, p in self.pollers.items() if now - p.last_access <= LIVE_WITHIN}


async def describe(client: Client, queue: str, queue_type: QueueType, previous: QueueView | None = None) -> QueueView:
    """The root partition with its backlog statistics (cached ~5 s by the server, sticky tasks excluded, 0 once a
    queue idles out), and its pollers: added to `previous`'s if given, else every partition is described (a new
    worker may poll another partition than the root for ~50 s), all side by side with the root."""
    view = QueueView(queue, queue_type, pollers=dict(previous.pollers) if previous else {})
    answers: list[DescribeTaskQueueResponse] = []

    async def ask_root() -> None:
        answers.append(await describe_partition(client, queue, queue_type, report_stats=True))

    others = [] if previous else partition_names(queue)[1:]
    merges = (partial(_merge_partition, client, name, queue_type, view.pollers) for name in others)
    await side_by_side(ask_root, *merges)  # (one wave: their answers come back together)
    root = answers[0]
    stats = root.stats
    view.stats = QueueStats(
        backlog=stats.approximate_backlog_count,
        backlog_age_s=stats.approximate_backlog_age.ToTimedelta().total_seconds(),
        add_rate=stats.tasks_add_rate,
        dispatch_rate=stats.tasks_dispatch_rate,
    )
    merge_pollers(view.pollers, root)
    routing = root.versioning_info
    if routing.current_deployment_version.deployment_name:
        version = routing.current_deployment_version
        view.current_version = f"{version.deployment_name}.{version.build_id}"
    if routing.ramping_deployment_version.deployment_name:
        version = routing.ramping_deployment_version
        view.ramping_version = f"{version.deployment_name}.{version.build_id}"
    view.seen_at = datetime.now(UTC)
    return view


async def _merge_partition(client: Client, name: str, queue_type: QueueType, pollers: dict[str, Poller]) -> None:
    merge_pollers(pollers, await describe_partition(client, name, queue_type))
