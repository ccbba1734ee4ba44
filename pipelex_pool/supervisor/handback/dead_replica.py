"""Hand back to Temporal the activity attempts a dead replica had started and not finished.

Each attempt is failed by its task token (RespondActivityTaskFailed) with a retryable failure naming the dead worker
and its exit, so Temporal schedules the next attempt under the activity's retry policy at once instead of waiting
for the start-to-close timeout. A token names one attempt: a late hand-back can never fail a newer attempt running
elsewhere, Temporal refuses it (NOT_FOUND) and that refusal is counted, not retried. Heartbeat details the attempt
recorded are passed on, so the next attempt resumes where this one was."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup
from temporalio.api.common.v1 import Payloads, WorkflowExecution
from temporalio.api.failure.v1 import ApplicationFailureInfo, Failure
from temporalio.api.workflowservice.v1 import (
    DescribeWorkflowExecutionRequest,
    ResetStickyTaskQueueRequest,
    RespondActivityTaskFailedRequest,
)
from temporalio.client import Client
from temporalio.service import RPCError

from pipelex_pool.contract import HAND_BACK_FAILURE_TYPE as FAILURE_TYPE
from pipelex_pool.supervisor.events import HandedBack, RunsHandedBack
from pipelex_pool.supervisor.groups import SupervisedGroup
from pipelex_pool.supervisor.handback.lost_dispatch import REFUSED, SCAN_DELAY_S, scan_and_hand_back, scan_stuck
from pipelex_pool.supervisor.process.state import ExitStatus, ProcState
from pipelex_pool.supervisor.view import ReplicaInfo
from pipelex_pool.worker.inflight import Attempt

log = structlog.get_logger("pipelex_pool.handback")
OUTCOMES = ("handed_back", "refused", "failed")
EVENTS = {outcome: f"handback.{outcome}" for outcome in OUTCOMES}
CONCURRENCY = 16  # hand-backs in flight at once
RETRY_FOR_S = 30.0  # Temporal unreachable: keep trying this long, then leave it to the start-to-close timeout


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


async def move_runs(client: Client, runs: set[tuple[str, str]]) -> list[str]:
    """ResetStickyTaskQueue for each (workflow_id, run_id): its next workflow task goes to the normal queue now,
    where a live worker takes it, instead of waiting for the sticky timeout on a dead worker's queue. Returns one
    outcome per run: "moved", "finished" (the run ended or is gone) or "failed" (Temporal did not answer)."""
    outcomes: list[str] = []
    limiter = anyio.CapacityLimiter(CONCURRENCY)

    async def one(workflow_id: str, run_id: str) -> None:
        async with limiter:
            delay, deadline = 0.2, anyio.current_time() + RETRY_FOR_S
            while True:
                try:
                    await client.workflow_service.reset_sticky_task_queue(
                        ResetStickyTaskQueueRequest(
                            namespace=client.namespace,
                            execution=WorkflowExecution(workflow_id=workflow_id, run_id=run_id),
                        )
                    )
                except RPCError as exc:
                    if exc.status in REFUSED:
                        outcomes.append("finished")
                        return
                    if anyio.current_time() + delay > deadline:
                        log.warning("handback.run_not_moved", workflow_id=workflow_id, run_id=run_id, error=exc.message)
                        outcomes.append("failed")
                        return
                    await anyio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                outcomes.append("moved")
                return

    async with anyio.create_task_group() as tg:
        for workflow_id, run_id in runs:
            tg.start_soon(one, workflow_id, run_id)
    return outcomes


class HandBacks:
    """What the loop asks of hand-back: on each exit, hand back what the replica reported in flight, and remember
    it to look for dispatches it never saw (a scan SCAN_DELAY_S after the last of a burst of exits). The work runs
    beside the loop; outcomes come back to it as HandedBack events (`report`)."""

    def __init__(
        self,
        client: Callable[[], Awaitable[Client]],
        identity: str,
        report: Callable[[HandedBack | RunsHandedBack], None],
        stuck_after_s: float,
    ) -> None:
        self.client, self.identity, self.report = client, identity, report
        self.dead: list[tuple[str, str]] = []  # (group, identity) of exited replicas not scanned for yet
        self.scan_at: float | None = None
        self.stuck_after_s = stuck_after_s
        self.next_stuck_check = 0.0

    def replica_exited(
        self,
        tg: TaskGroup,
        group: SupervisedGroup,
        identity: str,
        attempts: list[Attempt],
        status: ExitStatus,
        now: float,
    ) -> None:
        """A replica exited with `attempts` in flight (the loop took them off its record): hand them back."""
        if group.spec is None or not identity:
            return
        if not group.spec.hand_back:
            if attempts:
                log.info("handback.disabled", group=group.name, identity=identity, attempts=len(attempts))
            return
        if attempts:
            message = f"worker process {identity} died: {status.describe()}"
            tg.start_soon(self._hand_back, group.name, identity, attempts, message, status)
        self.dead.append((group.name, identity))
        self.scan_at = now + SCAN_DELAY_S

    def runs_exited(self, tg: TaskGroup, group: SupervisedGroup, identity: str, runs: set[tuple[str, str]]) -> None:
        """The workflow runs a replica held when it exited: moved off its sticky queue (a clean drain has evicted
        them all already, so this is a dead replica's)."""
        if runs and group.spec is not None and group.spec.hand_back:
            tg.start_soon(self._move_runs, group.name, identity, runs)

    async def _move_runs(self, group: str, dead: str, runs: set[tuple[str, str]]) -> None:
        try:
            outcomes = await move_runs(await self.client(), runs)
        except Exception as exc:  # a fault here must not end the supervisor: the sticky timeout is the fallback
            log.warning("handback.runs_failed", group=group, dead=dead, runs=len(runs), error=repr(exc))
            return
        moved, finished, failed = (outcomes.count(outcome) for outcome in ("moved", "finished", "failed"))
        log.info("handback.runs_moved", group=group, dead=dead, moved=moved, finished=finished, failed=failed)
        self.report(RunsHandedBack(group, moved, finished, failed))

    def scan_if_due(self, tg: TaskGroup, now: float) -> None:
        if self.scan_at is not None and now >= self.scan_at:
            tg.start_soon(self._scan, self.dead)
            self.dead, self.scan_at = [], None

    def check_stuck_if_due(
        self, tg: TaskGroup, now: float, groups: list[SupervisedGroup], info: dict[Any, ReplicaInfo]
    ) -> None:
        """Every `stuck_after / 2`: attempts Temporal says run on a live READY replica that does not know of them."""
        if self.stuck_after_s <= 0 or now < self.next_stuck_check:
            return
        self.next_stuck_check = now + max(self.stuck_after_s / 2, 1.0)
        running: dict[str, set[tuple[str, str, int]]] = {}
        owner: dict[str, str] = {}
        for group in groups:
            if group.spec is None or not group.spec.hand_back:
                continue
            for handle in group.all_handles():
                replica = info.get(handle)
                if replica is not None and replica.identity and handle.state is ProcState.READY:
                    running[replica.identity] = {
                        (a.workflow_id, a.activity_id, a.attempt) for a in replica.inflight.values()
                    }
                    owner[replica.identity] = group.name
        if running:
            tg.start_soon(self._check_stuck, running, owner)

    def postpone_stuck_check(self, now: float) -> None:
        """After the supervisor was away, what replicas reported meanwhile is not read yet: do not judge them on it."""
        self.next_stuck_check = max(self.next_stuck_check, now + max(self.stuck_after_s / 2, 5.0))

    async def _check_stuck(self, running: dict[str, set[tuple[str, str, int]]], owner: dict[str, str]) -> None:
        try:
            results = await scan_stuck(self.client, running, self.stuck_after_s, self.identity)
        except Exception as exc:  # Temporal unavailable: the start-to-close timeout remains the fallback
            log.warning("handback.stuck_check_failed", error=str(exc) or type(exc).__name__)
            return
        for group in sorted(set(owner.values())):
            outcomes = [outcome for item, outcome in results if owner.get(item.identity) == group]
            if outcomes:
                self.report(HandedBack(group, "stuck", *(outcomes.count(o) for o in OUTCOMES)))

    async def _hand_back(
        self, group: str, dead: str, attempts: list[Attempt], message: str, status: ExitStatus
    ) -> None:
        results = await hand_back(self.client, attempts, message, self.identity)
        for result in results:
            a = result.attempt
            level = log.warning if result.outcome == "failed" else log.info
            level(
                EVENTS[result.outcome],
                group=group,
                dead=dead,
                exit=status.describe(),
                workflow_id=a.workflow_id,
                activity_id=a.activity_id,
                activity_type=a.activity_type,
                attempt=a.attempt,
                detail=result.detail or None,
            )
        outcomes = [r.outcome for r in results]
        self.report(HandedBack(group, status.reason, *(outcomes.count(o) for o in OUTCOMES)))

    async def _scan(self, dead: list[tuple[str, str]]) -> None:
        try:
            results = await scan_and_hand_back(self.client, {identity for _, identity in dead}, self.identity)
        except Exception as exc:  # Temporal unavailable: the start-to-close timeout remains the fallback
            log.warning("handback.scan_failed", error=str(exc) or type(exc).__name__)
            return
        group_of = {identity: group for group, identity in dead}
        for group in sorted(set(group_of.values())):
            outcomes = [outcome for item, outcome in results if group_of.get(item.identity) == group]
            if outcomes:
                self.report(HandedBack(group, "lost_dispatch", *(outcomes.count(o) for o in OUTCOMES)))
