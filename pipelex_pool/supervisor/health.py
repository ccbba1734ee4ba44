"""Watchers beside the reconcile loop: resource use per replica (with max_memory) and whether Temporal answers.
They only record what they see and change desired state (a queued rolling restart), then wake the loop."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import psutil
import structlog
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest

from pipelex_pool.supervisor.forkspawn import ForkSpawner, reap_adopted_orphans
from pipelex_pool.supervisor.resources import SAMPLE_INTERVAL_S, ResourceProbe
from pipelex_pool.supervisor.state import ProcState
from pipelex_pool.units import format_size

if TYPE_CHECKING:
    from pipelex_pool.supervisor.loop import Supervisor

log = structlog.get_logger("pipelex_pool.supervisor")
TEMPORAL_CHECK_S = 5.0


async def check_temporal(supervisor: Supervisor) -> None:
    """Whether the Temporal server answers, for /health; it never blocks the loop or fails a worker."""
    server = supervisor.topology.temporal.selected_server()
    assert server is not None
    while True:
        try:
            with anyio.fail_after(5):
                client = await supervisor.temporal_client(retry=False)
                await client.workflow_service.get_system_info(GetSystemInfoRequest())
            supervisor.temporal_error = None
        except Exception as exc:  # any failure to answer counts as unreachable, and is reported as such
            supervisor.temporal_error = f"{server.target_host}: {exc or type(exc).__name__}"
        await anyio.sleep(TEMPORAL_CHECK_S)


async def watch_resources(supervisor: Supervisor) -> None:
    """Sample every replica's usage; a replica over its group's max_memory is queued for a rolling restart
    (replacement READY first, so its in-flight work drains instead of being killed)."""
    while True:
        await anyio.sleep(SAMPLE_INTERVAL_S)
        if isinstance(supervisor.spawner, ForkSpawner):
            known = {h.pid for h in supervisor.handles() if h.pid is not None} | supervisor.spawner.own_pids()
            for pid in reap_adopted_orphans(known):
                log.info("supervisor.orphan_reaped", pid=pid)
        for group in supervisor.all_groups():
            for handle in group.all_handles():
                if handle.pid is None:
                    continue
                info = supervisor.replica_info(handle)
                if info.probe is None or info.probe.pid != handle.pid:
                    try:
                        info.probe = ResourceProbe(handle.pid)
                    except psutil.Error:
                        continue
                info.usage = info.probe.sample()
                limit = group.spec.max_memory if group.spec else None
                if (
                    limit
                    and info.usage is not None
                    and info.usage.rss_bytes > limit
                    and handle.state is ProcState.READY
                    and handle in group.handles
                    and handle.replica not in group.roll_queue
                ):
                    log.warning(
                        "worker.memory_exceeded",
                        group=group.name,
                        replica=handle.replica,
                        pid=handle.pid,
                        rss_bytes=info.usage.rss_bytes,
                        rss=format_size(info.usage.rss_bytes),
                        max_memory=format_size(limit),
                        action="rolling restart",
                    )
                    group.roll_queue.append(handle.replica)
                    supervisor.wake("max_memory")
