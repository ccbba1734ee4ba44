"""What replicas and observers report, recorded: a replica's sd_notify fields (its status, task counts, in-flight
attempts, cached runs, pause, wait for Temporal), the resource sampler's readings and the hand-back tasks' counts.
The loop calls these on its own task, at the one point of each iteration where what arrived is applied."""

from __future__ import annotations

from collections.abc import Mapping

import structlog

from pipelex_pool.contract import INFLIGHT_KEY, PAUSE_KEY, RUNS_KEY, SDK_METRICS_KEY, TASKS_KEY, WAITING_KEY
from pipelex_pool.supervisor.events import HandedBack, RunsHandedBack, Sampled
from pipelex_pool.supervisor.groups import SupervisedGroup
from pipelex_pool.supervisor.pool_state import ReplicaInfo
from pipelex_pool.supervisor.process.handle import ProcessHandle
from pipelex_pool.supervisor.process.state import ProcState
from pipelex_pool.worker.cached_runs import decode_runs
from pipelex_pool.worker.counts import TaskCounts
from pipelex_pool.worker.inflight import decode_report

log = structlog.get_logger("pipelex_pool.supervisor")
# notify keys that only report (recorded as they arrive; the loop has nothing to converge for them)
REPORT_ONLY = frozenset({"WATCHDOG", "STATUS", TASKS_KEY, INFLIGHT_KEY, RUNS_KEY, SDK_METRICS_KEY, PAUSE_KEY})


def mark_ready(handle: ProcessHandle, now: float) -> None:
    if handle.state is ProcState.STARTING:
        handle.ready(now)
        startup = now - (handle.started_at or now)
        log.info(
            "worker.ready", group=handle.group, replica=handle.replica, pid=handle.pid, startup_s=round(startup, 3)
        )


def record_notify(info: ReplicaInfo, handle: ProcessHandle, fields: dict[str, str], now: float) -> None:
    """Every field of a notify datagram but READY (whose meaning depends on the group's readiness check)."""
    if "STATUS" in fields:
        info.status_text = fields["STATUS"]
    if fields.get("WATCHDOG") == "1":
        handle.watchdog_ping(now)
    if TASKS_KEY in fields:
        info.tasks = TaskCounts.from_notify(fields[TASKS_KEY])
    if SDK_METRICS_KEY in fields:
        info.sdk_metrics = fields[SDK_METRICS_KEY]
    if INFLIGHT_KEY in fields:
        _record_inflight(info, handle, fields[INFLIGHT_KEY])
    if RUNS_KEY in fields:
        _record_cached_runs(info, handle, fields[RUNS_KEY])
    if WAITING_KEY in fields:
        _record_waiting(info, handle, fields[WAITING_KEY], now)
    if PAUSE_KEY in fields:
        info.pause = fields[PAUSE_KEY]
    if fields.get("STOPPING") == "1":
        log.info("worker.draining", group=handle.group, replica=handle.replica, pid=handle.pid)


def _record_inflight(info: ReplicaInfo, handle: ProcessHandle, value: str) -> None:
    try:
        reset, started, finished = decode_report(value)
    except (ValueError, TypeError) as exc:
        log.warning("worker.bad_inflight_report", group=handle.group, replica=handle.replica, error=str(exc))
        return
    if reset:
        info.inflight.clear()
    info.inflight.update(started)
    for key in finished:
        info.inflight.pop(key, None)


def _record_waiting(info: ReplicaInfo, handle: ProcessHandle, why: str, now: float) -> None:
    """A starting worker that cannot reach Temporal waits for it, without counting toward a failed start."""
    if why:
        if not handle.waiting_for_temporal:
            log.warning("worker.waiting_for_temporal", group=handle.group, replica=handle.replica, error=why)
        handle.waiting(now)
        info.status_text = f"waiting for Temporal: {why}"
    elif handle.waiting_for_temporal:
        log.info("worker.reached_temporal", group=handle.group, replica=handle.replica)
        handle.reached_temporal(now)
        info.status_text = "connected"


def _record_cached_runs(info: ReplicaInfo, handle: ProcessHandle, value: str) -> None:
    try:
        reset, cached, evicted = decode_runs(value)
    except (ValueError, TypeError) as exc:
        log.warning("worker.bad_runs_report", group=handle.group, replica=handle.replica, error=str(exc))
        return
    if reset:
        info.cached_runs.clear()
    info.cached_runs.update(cached)
    info.cached_runs.difference_update(evicted)


def record_sampled(infos: Mapping[ProcessHandle, ReplicaInfo], event: Sampled) -> None:
    for handle, pid, usage in event.readings:
        info = infos.get(handle)
        if info is not None and handle.pid == pid:  # (not a process that has been replaced since)
            info.usage = usage


def record_handed_back(groups: Mapping[str, SupervisedGroup], event: HandedBack | RunsHandedBack) -> None:
    group = groups.get(event.group)
    if group is None:
        return
    if isinstance(event, RunsHandedBack):
        group.runs_handed_back += event.moved
        return
    group.handed_back[event.reason] += event.handed_back
    group.hand_back_refused += event.refused
    group.hand_back_failed += event.failed
