"""Lost dispatches: activity attempts Temporal recorded as started on a replica that never ran them.

A task the server hands to a long poll of a worker just as that worker shuts down can be recorded as started on it
and never reach its code (seen in this project's tests: a poll answered while the SDK shuts its pollers down):
the worker's own report cannot name it (it never saw a token). So
after replicas exit, the pool asks Temporal: among the namespace's open workflows, which pending activities are
STARTED with a dead replica's identity as their last worker? Each one is failed at once (by id: there is no token
to use; the attempt was just read as the dead worker's, so it is that attempt that is failed), for Temporal to
retry under the activity's retry policy.

Cost, bounded: one scan per burst of exits, SCAN_DELAY_S after the last one; at most SCAN_LIMIT open workflows
(the newest) listed and described per scan, SCAN_CONCURRENCY at a time."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import anyio
import structlog
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.api.failure.v1 import ApplicationFailureInfo, Failure
from temporalio.api.workflowservice.v1 import (
    DescribeWorkflowExecutionRequest,
    ListWorkflowExecutionsRequest,
    RespondActivityTaskFailedByIdRequest,
)
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from pipelex_pool.contract import HAND_BACK_FAILURE_TYPE as FAILURE_TYPE

log = structlog.get_logger("pipelex_pool.handback")
SCAN_DELAY_S = 2.0
SCAN_LIMIT = 500
SCAN_CONCURRENCY = 8
PAGE_SIZE = 100
REFUSED = (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION, RPCStatusCode.INVALID_ARGUMENT)


@dataclass(frozen=True)
class LostDispatch:
    workflow_id: str
    run_id: str
    activity_id: str
    activity_type: str
    attempt: int
    identity: str  # the replica Temporal names as its last worker
    started_s_ago: float = 0.0


async def find_lost(client: Client, dead: set[str]) -> list[LostDispatch]:
    """Pending activities STARTED on one of the `dead` (or, for the stuck check, live) identities, among the
    newest open workflows."""
    executions: list[WorkflowExecution] = []
    token = b""
    while len(executions) < SCAN_LIMIT:
        page = await client.workflow_service.list_workflow_executions(
            ListWorkflowExecutionsRequest(
                namespace=client.namespace,
                page_size=min(PAGE_SIZE, SCAN_LIMIT - len(executions)),
                next_page_token=token,
                query="ExecutionStatus = 'Running'",
            )
        )
        executions += [info.execution for info in page.executions]
        token = page.next_page_token
        if not token:
            break
    found: list[LostDispatch] = []
    limiter = anyio.CapacityLimiter(SCAN_CONCURRENCY)

    async def describe(execution: WorkflowExecution) -> None:
        async with limiter:
            try:
                described = await client.workflow_service.describe_workflow_execution(
                    DescribeWorkflowExecutionRequest(namespace=client.namespace, execution=execution)
                )
            except RPCError:
                return  # closed meanwhile
        for pending in described.pending_activities:
            if (
                pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
                and pending.last_worker_identity in dead
            ):
                started = (
                    pending.last_started_time.ToDatetime(tzinfo=UTC) if pending.HasField("last_started_time") else None
                )
                found.append(
                    LostDispatch(
                        execution.workflow_id,
                        execution.run_id,
                        pending.activity_id,
                        pending.activity_type.name,
                        pending.attempt,
                        pending.last_worker_identity,
                        (datetime.now(UTC) - started).total_seconds() if started else 0.0,
                    )
                )

    async with anyio.create_task_group() as tg:
        for execution in executions:
            tg.start_soon(describe, execution)
    return found


async def hand_back_lost(client: Client, lost: LostDispatch, identity: str, why: str | None = None) -> str:
    """Fail the attempt by id; returns "handed_back", "refused" or "failed"."""
    try:
        await client.workflow_service.respond_activity_task_failed_by_id(
            RespondActivityTaskFailedByIdRequest(
                namespace=client.namespace,
                workflow_id=lost.workflow_id,
                run_id=lost.run_id,
                activity_id=lost.activity_id,
                failure=Failure(
                    message=why
                    or f"worker process {lost.identity} exited without running this attempt (a dispatch lost at its "
                    "shutdown): handed back by pipelex-pool",
                    source="pipelex-pool",
                    application_failure_info=ApplicationFailureInfo(type=FAILURE_TYPE, non_retryable=False),
                ),
                identity=identity,
            )
        )
    except RPCError as exc:
        return "refused" if exc.status in REFUSED else "failed"
    return "handed_back"


async def scan_and_hand_back(
    client: Callable[[], Awaitable[Client]], dead: set[str], identity: str
) -> list[tuple[LostDispatch, str]]:
    """One scan for `dead` identities; every lost dispatch found is handed back. Returns them with outcomes."""
    connected = await client()
    lost = await find_lost(connected, dead)
    results = []
    for item in lost:
        outcome = await hand_back_lost(connected, item, identity)
        log.info(
            "handback.lost_dispatch",
            outcome=outcome,
            dead=item.identity,
            workflow_id=item.workflow_id,
            activity_id=item.activity_id,
            activity_type=item.activity_type,
            attempt=item.attempt,
        )
        results.append((item, outcome))
    return results


async def scan_stuck(
    client: Callable[[], Awaitable[Client]],
    running: dict[str, set[tuple[str, str, int]]],
    after_s: float,
    identity: str,
) -> list[tuple[LostDispatch, str]]:
    """Attempts Temporal says run on a live replica, started over `after_s` ago, that the replica's own report does
    not list: it never received them. Each is handed back. `running`: identity -> (workflow id, activity id,
    attempt) the replica reported."""
    connected = await client()
    results = []
    for item in await find_lost(connected, set(running)):
        if item.started_s_ago < after_s or (item.workflow_id, item.activity_id, item.attempt) in running[item.identity]:
            continue
        why = (
            f"worker process {item.identity} does not know of this attempt, started {item.started_s_ago:.0f}s ago "
            "(never received): handed back by pipelex-pool"
        )
        outcome = await hand_back_lost(connected, item, identity, why)
        log.warning("handback.stuck_attempt", outcome=outcome, worker=item.identity, workflow_id=item.workflow_id,
                    activity_id=item.activity_id, activity_type=item.activity_type, attempt=item.attempt,
                    started_s_ago=round(item.started_s_ago, 1))  # fmt: skip
        results.append((item, outcome))
    return results
