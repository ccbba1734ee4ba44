"""`pipelex-pool loadtest`: submit simulated pipe runs (WfPipeRouter -> WfPipeRun) through a running pool and
report throughput, latency and retries per queue. The runs are the documented load model of pipelex_pool.sim,
not real LLM calls."""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from pipelex_pool.errors import PoolError
from pipelex_pool.routing import resolve_step
from pipelex_pool.sim.model import PipeRunInput, PipeRunResult, SimStep
from pipelex_pool.topology.load import Topology
from pipelex_pool.topology.toml import read_toml

COUNT_TIMEOUT_S = 15.0
OUTAGE_LIMIT_S = 300.0  # a run whose client cannot reach Temporal for this long is given up (reported unfinished)
RETRY_INITIAL_S, RETRY_MAX_S = 0.5, 5.0
TRANSIENT = {  # what an outage looks like from a client: the server is gone, restarting or overloaded
    RPCStatusCode.UNAVAILABLE,
    RPCStatusCode.DEADLINE_EXCEEDED,
    RPCStatusCode.CANCELLED,
    RPCStatusCode.UNKNOWN,
    RPCStatusCode.RESOURCE_EXHAUSTED,
    RPCStatusCode.INTERNAL,
}


class Outage:
    """How long and how often the load test's client could not reach Temporal (whatever each run was doing)."""

    def __init__(self) -> None:
        self.retries = 0
        self.first: float | None = None
        self.last: float | None = None
        self.errors: list[str] = []

    def seen(self, exc: RPCError) -> None:
        now = time.monotonic()
        self.retries += 1
        self.first = self.first if self.first is not None else now
        self.last = now
        if len(self.errors) < 3 and str(exc) not in self.errors:
            self.errors.append(str(exc))

    def as_dict(self) -> dict[str, Any]:
        seen_s = (self.last - self.first) if self.first is not None and self.last is not None else 0.0
        return {"retries": self.retries, "seen_for_s": round(seen_s, 1), "errors": self.errors}


@dataclass(frozen=True)
class Mix:
    """The steps of every run (a template) and whether they run in parallel."""

    steps: list[SimStep]
    parallel: bool = False


def default_mix(topology: Topology) -> Mix:
    """One step per activity that some group of this topology can run where routing sends it."""
    steps = []
    for activity in topology.catalog.activities:
        queue = resolve_step(topology.temporal, activity, None).task_queue
        if any(
            g.task_queue == queue and activity in topology.scopes[g.scope].activities for g in topology.groups.values()
        ):
            steps.append(SimStep(activity=activity, latency_s=0.05))
    if not steps:
        raise PoolError(f"{topology.file}: no group can run any activity: nothing to load-test")
    return Mix(steps)


def load_mix(path: Path) -> Mix:
    """A mix file: TOML with `parallel = bool` and [[steps]] tables of SimStep fields."""
    data = read_toml(path)
    try:
        return Mix([SimStep(**step) for step in data.get("steps", [])], bool(data.get("parallel", False)))
    except TypeError as exc:
        raise PoolError(
            f"{path}: a [[steps]] entry has an unknown field ({exc}); fields: {list(SimStep.__dataclass_fields__)}"
        ) from exc


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered) + 0.5) - 1))]


@dataclass
class Report:
    loadtest_id: str
    runs: int
    concurrency: int
    completed: int = 0
    failed: int = 0
    unfinished: int = 0  # runs whose outcome the client could not learn: Temporal out of reach too long
    failures: list[str] = field(default_factory=list)
    outage: Outage = field(default_factory=Outage)
    wall_s: float = 0.0
    run_latencies: list[float] = field(default_factory=list)
    steps: dict[str, list[tuple[float, int]]] = field(default_factory=dict)  # queue -> (duration, attempt)
    temporal_completed: int | None = None

    def as_dict(self) -> dict[str, Any]:
        queues = {}
        for queue, samples in sorted(self.steps.items()):
            durations = [d for d, _ in samples]
            queues[queue] = {
                "activities": len(samples),
                "per_second": round(len(samples) / self.wall_s, 2) if self.wall_s else 0.0,
                "p50_s": round(percentile(durations, 50), 4),
                "p95_s": round(percentile(durations, 95), 4),
                "p99_s": round(percentile(durations, 99), 4),
                "retries": sum(attempt - 1 for _, attempt in samples),
            }
        return {
            "loadtest_id": self.loadtest_id,
            "runs": self.runs,
            "concurrency": self.concurrency,
            "completed": self.completed,
            "failed": self.failed,
            "unfinished": self.unfinished,
            "failures": self.failures[:10],
            "temporal_unreachable": self.outage.as_dict(),
            "temporal_completed": self.temporal_completed,
            "wall_s": round(self.wall_s, 3),
            "runs_per_second": round(self.completed / self.wall_s, 2) if self.wall_s else 0.0,
            "activities": sum(q["activities"] for q in queues.values()),
            "run_latency": {
                "p50_s": round(percentile(self.run_latencies, 50), 4),
                "p95_s": round(percentile(self.run_latencies, 95), 4),
                "p99_s": round(percentile(self.run_latencies, 99), 4),
                "mean_s": round(statistics.fmean(self.run_latencies), 4) if self.run_latencies else 0.0,
            },
            "queues": queues,
        }


async def run_loadtest(
    client: Client, topology: Topology, runs: int, concurrency: int, mix: Mix, on_done: Callable[[], None]
) -> Report:
    report = Report(loadtest_id=f"loadtest-{uuid.uuid4().hex[:8]}", runs=runs, concurrency=concurrency)
    limiter = anyio.CapacityLimiter(concurrency)
    queue = topology.temporal.default_task_queue

    async def one(index: int) -> None:
        async with limiter:
            run_input = PipeRunInput(
                run_id=f"{report.loadtest_id}-{index}", steps=list(mix.steps), parallel=mix.parallel
            )
            started = time.monotonic()
            try:
                result = await run_through_outages(client, run_input, queue, report.outage)
            except WorkflowFailureError as exc:
                report.failed += 1
                report.failures.append(f"{run_input.run_id}: {exc.cause or exc}")
            except (RPCError, TimeoutError) as exc:
                report.unfinished += 1
                report.failures.append(f"{run_input.run_id}: outcome unknown, Temporal out of reach: {exc}")
            else:
                report.completed += 1
                report.run_latencies.append(time.monotonic() - started)
                for step in result.steps:
                    report.steps.setdefault(step.task_queue, []).append((step.duration_s, step.attempt))
            finally:
                on_done()

    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        for index in range(runs):
            tg.start_soon(one, index)
    report.wall_s = time.monotonic() - started
    try:
        report.temporal_completed = await count_completed(client, report.loadtest_id, report.completed)
    except RPCError as exc:  # the runs' own outcomes are known: report them without Temporal's count
        report.outage.seen(exc)
    return report


async def run_through_outages(
    client: Client, run_input: PipeRunInput, queue: str, outage: Outage, limit_s: float = OUTAGE_LIMIT_S
) -> PipeRunResult:
    """Start the run and wait for its result, retrying while Temporal is out of reach (a restart, a network cut):
    the start is idempotent by workflow id, and the result is asked for again. Gives up (RPCError) after `limit_s`
    without an answer; a failed run raises WorkflowFailureError as usual."""
    delay, unreachable_since = RETRY_INITIAL_S, None
    handle: WorkflowHandle[Any, PipeRunResult] | None = None
    while True:
        try:
            if handle is None:
                try:
                    handle = await client.start_workflow(
                        "WfPipeRouter", run_input, id=run_input.run_id, task_queue=queue, result_type=PipeRunResult
                    )
                except WorkflowAlreadyStartedError:  # an earlier attempt did start it: its answer was lost
                    handle = client.get_workflow_handle(run_input.run_id, result_type=PipeRunResult)
            result: PipeRunResult = await handle.result()
            return result
        except RPCError as exc:
            if exc.status not in TRANSIENT:
                raise
            outage.seen(exc)
            now = time.monotonic()
            unreachable_since = unreachable_since or now
            if now - unreachable_since > limit_s:
                raise
            await anyio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)


async def count_completed(client: Client, loadtest_id: str, expected: int) -> int:
    """Temporal's own count of completed runs of this load test (visibility is eventually consistent)."""
    query = (
        f'WorkflowType = "WfPipeRouter" AND ExecutionStatus = "Completed" AND WorkflowId STARTS_WITH "{loadtest_id}-"'
    )
    count = 0
    with anyio.move_on_after(COUNT_TIMEOUT_S):
        while True:
            count = (await client.count_workflows(query)).count
            if count >= expected:
                break
            await anyio.sleep(0.5)
    return count
