"""Hand back to Temporal the activity attempts a dead replica had started and not finished.

Each attempt is failed by its task token (RespondActivityTaskFailed) with a retryable failure naming the dead worker
and its exit, so Temporal schedules the next attempt under the activity's retry policy at once instead of waiting
for the start-to-close timeout. A token names one attempt: a late hand-back can never fail a newer attempt running
elsewhere, Temporal refuses it (NOT_FOUND) and that refusal is counted, not retried. Heartbeat details the attempt
recorded are passed on, so the next attempt resumes where this one was."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
import structlog
from temporalio.api.common.v1 import Payloads, WorkflowExecution
from temporalio.api.failure.v1 import ApplicationFailureInfo, Failure
from temporalio.api.workflowservice.v1 import (
    DescribeWorkflowExecutionRequest,
    RespondActivityTaskFailedRequest,
)
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from pipelex_pool.worker.inflight import Attempt

log = structlog.get_logger("pipelex_pool.handback")
FAILURE_TYPE = "WorkerProcessDied"
CONCURRENCY = 16  # hand-backs in flight at once
RETRY_FOR_S = 30.0  # Temporal unreachable: keep trying this long, then leave it to the start-to-close timeout
REFUSED = (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION, RPCStatusCode.INVALID_ARGUMENT)


@dataclass(frozen=True)
class HandBackResult:
    attempt: Attempt
    outcome: str  # "handed_back" | "refused" | "failed"
    detail: str = ""


async def hand_back(
    client: Callable[[], Awaitable[Client]],
    attempts: list[Attempt],
    message: str,
    identity: str,
) -> list[HandBackResult]:
    """Fail every attempt by its token; returns one result per attempt (never raises for one attempt)."""
    results: list[HandBackResult] = []
    limiter = anyio.CapacityLimiter(CONCURRENCY)
    connected = await client()

    async def one(attempt: Attempt) -> None:
        async with limiter:
            results.append(await _hand_back_one(connected, attempt, message, identity))

    async with anyio.create_task_group() as tg:
        for attempt in attempts:
            tg.start_soon(one, attempt)
    return results


async def _hand_back_one(client: Client, attempt: Attempt, message: str, identity: str) -> HandBackResult:
    deadline = anyio.current_time() + RETRY_FOR_S
    delay = 0.2
    while True:
        try:
            details = await _heartbeat_details(client, attempt)
            await client.workflow_service.respond_activity_task_failed(
                RespondActivityTaskFailedRequest(
                    namespace=client.namespace,
                    task_token=attempt.task_token,
                    failure=Failure(
                        message=message,
                        source="pipelex-pool",
                        application_failure_info=ApplicationFailureInfo(type=FAILURE_TYPE, non_retryable=False),
                    ),
                    identity=identity,
                    last_heartbeat_details=details,
                )
            )
        except RPCError as exc:
            if exc.status in REFUSED:  # already completed, timed out, retried elsewhere, or the workflow is gone
                return HandBackResult(attempt, "refused", exc.message)
            if anyio.current_time() + delay > deadline:
                return HandBackResult(attempt, "failed", exc.message)
            await anyio.sleep(delay)  # Temporal unavailable for a moment: try again, for a bounded time
            delay = min(delay * 2, 5.0)
            continue
        return HandBackResult(attempt, "handed_back")


async def _heartbeat_details(client: Client, attempt: Attempt) -> Payloads | None:
    """The details the attempt last heartbeated (Temporal keeps them on the pending activity), to pass on."""
    try:
        described = await client.workflow_service.describe_workflow_execution(
            DescribeWorkflowExecutionRequest(
                namespace=client.namespace,
                execution=WorkflowExecution(workflow_id=attempt.workflow_id, run_id=attempt.run_id),
            )
        )
    except RPCError:
        return None  # the hand-back itself will say what is wrong
    for pending in described.pending_activities:
        if pending.activity_id == attempt.activity_id and pending.HasField("heartbeat_details"):
            return pending.heartbeat_details
    return None
