"""Temporal's own view of the pool's workers: their heartbeats (`ListWorkers`, `temporal worker list`).

Each built-in worker's SDK heartbeats every `[pool] worker_heartbeat` with its status, its slots used and available
and its deployment version; the server keeps the last one per worker (on by default since server 1.30). A server
without the list answers UNIMPLEMENTED (or refuses it): the pool then says it has no such view."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from temporalio.api.enums.v1 import WorkerStatus
from temporalio.api.workflowservice.v1 import ListWorkersRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from pipelex_pool.contract import pool_of

PAGE = 500
MAX_PAGES = 10
NOT_OFFERED = (RPCStatusCode.UNIMPLEMENTED, RPCStatusCode.FAILED_PRECONDITION, RPCStatusCode.PERMISSION_DENIED)


@dataclass(frozen=True)
class WorkerBeat:
    """One worker's last heartbeat, as Temporal keeps it."""

    identity: str
    status: str  # RUNNING, SHUTTING_DOWN, SHUTDOWN
    heartbeat_at: datetime
    activity_slots_used: int
    activity_slots_available: int
    workflow_slots_used: int
    workflow_slots_available: int
    build_id: str | None
    pid: str


class NoWorkerList(Exception):
    """The server keeps no worker heartbeats (older than 1.30, or turned off)."""


async def list_workers(client: Client, pools: set[str]) -> dict[str, WorkerBeat]:
    """The last heartbeat of each worker of `pools` (by identity); raises NoWorkerList when the server has none."""
    found: dict[str, WorkerBeat] = {}
    token = b""
    for _ in range(MAX_PAGES):
        try:
            response = await client.workflow_service.list_workers(
                ListWorkersRequest(namespace=client.namespace, page_size=PAGE, next_page_token=token)
            )
        except RPCError as exc:
            if exc.status in NOT_OFFERED:
                raise NoWorkerList(exc.message) from exc
            raise
        for info in response.workers_info:
            beat = info.worker_heartbeat
            if pool_of(beat.worker_identity) not in pools:
                continue
            at = beat.heartbeat_time.ToDatetime(tzinfo=UTC)
            previous = found.get(beat.worker_identity)
            if previous is not None and previous.heartbeat_at >= at:
                continue  # (a resumed worker has a new Worker, hence a new entry: the latest one counts)
            found[beat.worker_identity] = WorkerBeat(
                identity=beat.worker_identity,
                status=WorkerStatus.Name(beat.status).removeprefix("WORKER_STATUS_"),
                heartbeat_at=at,
                activity_slots_used=beat.activity_task_slots_info.current_used_slots,
                activity_slots_available=beat.activity_task_slots_info.current_available_slots,
                workflow_slots_used=beat.workflow_task_slots_info.current_used_slots,
                workflow_slots_available=beat.workflow_task_slots_info.current_available_slots,
                build_id=beat.deployment_version.build_id or None,
                pid=beat.host_info.process_id,
            )
        token = response.next_page_token
        if not token:
            break
    return found
