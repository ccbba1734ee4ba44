"""Hand-back: a replica that dies with activity attempts open has them failed by task token at once, so Temporal
retries them on a live replica instead of waiting for the start-to-close timeout; a stale token changes nothing;
a paused supervisor blames no worker."""

from __future__ import annotations

import base64
import os
import signal
import time
import uuid
from datetime import timedelta

import anyio
import pytest
from temporalio.api.common.v1 import Payloads
from temporalio.api.enums.v1 import EventType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import PollActivityTaskQueueRequest, RespondActivityTaskCompletedRequest
from temporalio.client import Client, WorkflowHandle

from pipelex_pool.contract import HAND_BACK_FAILURE_TYPE as FAILURE_TYPE
from pipelex_pool.sim.model import PipeRunInput, PipeRunResult, SimStep, StepResult
from pipelex_pool.supervisor.handback.dead_replica import hand_back
from pipelex_pool.worker.inflight import Attempt
from tests import status_doc
from tests.conftest import TemporalServer
from tests.helpers import history, retried_failures
from tests.pool import Pool, alive

pytestmark = pytest.mark.slow

LONG_TIMEOUT = {"temporal.queue_options.llm_q.start_to_close_timeout": "0:02:00"}


async def start_runs(
    client: Client, n: int, latency_s: float, steps: int = 1
) -> list[WorkflowHandle[object, PipeRunResult]]:
    return [
        await client.start_workflow(
            "WfPipeRun",
            PipeRunInput(run_id=f"hb-{i}", steps=[SimStep("act_llm_gen_text", latency_s=latency_s)] * steps),
            id=f"hb-{uuid.uuid4().hex[:8]}-{i}",
            task_queue="temporal_task_queue",
            result_type=PipeRunResult,
        )
        for i in range(n)
    ]


async def test_a_killed_replicas_activities_are_handed_back_and_retried_at_once(
    pool: Pool, temporal_server: TemporalServer, namespace: str, client: Client
) -> None:
    pool.write(temporal_server, namespace, {**LONG_TIMEOUT, "workers.media.replicas": 0})
    pool.up()
    pool.wait_all_ready()
    runs = await start_runs(client, 8, latency_s=6.0)
    status = pool.wait(
        lambda s: sum(len(r["inflight"]) for r in s["replicas"] if r["group"] == "llm") == 8,
        30,
        "the 8 activities reported in flight",
    )
    victim = max((r for r in status["replicas"] if r["group"] == "llm"), key=lambda r: len(r["inflight"]))
    survivor = next(r for r in status["replicas"] if r["group"] == "llm" and r["pid"] != victim["pid"])
    on_victim = {a["workflow_id"] for a in victim["inflight"]}
    await anyio.sleep(max(0.0, 2.0 - min(a["age_s"] for a in victim["inflight"])))  # ~2 s into the activities
    os.kill(status_doc.pid(victim), signal.SIGKILL)
    killed_at = time.monotonic()
    for run in runs:
        result = await run.result(rpc_timeout=timedelta(seconds=30))
        assert time.monotonic() - killed_at < 6 + 5, f"{run.id} finished {time.monotonic() - killed_at:.1f}s after"
        step = result.steps[0]
        if run.id in on_victim:  # retried at once, on the live replica, resuming from its last heartbeat
            assert step.attempt == 2 and step.worker_identity == survivor["identity"], step
            assert step.resumed_from_s >= 1.0, step
            started = [
                e.activity_task_started_event_attributes
                for e in await history(client, run.id)
                if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
            ]
            failure = started[-1].last_failure
            assert failure.application_failure_info.type == FAILURE_TYPE
            assert f"worker process {victim['identity']} died: SIGKILL (possibly out of memory)" == failure.message
        else:
            assert step.attempt == 1
    status = pool.wait(lambda s: sum(s["groups"]["llm"]["handed_back"].values()) == len(on_victim), 10, "counted")
    assert status["groups"]["llm"]["handed_back"] == {"sigkill": len(on_victim)}
    assert "handback.handed_back" in pool.output()


async def test_a_stale_token_changes_nothing(
    pool: Pool, temporal_server: TemporalServer, namespace: str, client: Client
) -> None:
    # The pool runs the router; this test plays the llm worker itself, so it holds each attempt's task token.
    pool.write(temporal_server, namespace, {"workers.llm.replicas": 0, "workers.media.replicas": 0})
    pool.up()
    pool.wait_all_ready()
    run = (await start_runs(client, 1, latency_s=1.0))[0]

    async def poll() -> bytes:
        for _ in range(10):
            task = await client.workflow_service.poll_activity_task_queue(
                PollActivityTaskQueueRequest(namespace=namespace, task_queue=TaskQueue(name="llm_q"), identity="test")
            )
            if task.task_token:
                return bytes(task.task_token)
        raise AssertionError("no activity task")

    def attempt(token: bytes, number: int) -> Attempt:
        encoded = base64.b64encode(token).decode()
        return Attempt(encoded, run.id, "", "1", "act_llm_gen_text", number, "llm_q", time.time())

    async def connected() -> Client:
        return client

    first = await poll()
    [result] = await hand_back(connected, [attempt(first, 1)], "worker process test died: SIGKILL", "test")
    assert result.outcome == "handed_back"
    second = await poll()  # attempt 2, dispatched at once
    [stale] = await hand_back(connected, [attempt(first, 1)], "late hand-back", "test")
    assert stale.outcome == "refused", stale
    payloads = await client.data_converter.encode(
        [StepResult("act_llm_gen_text", "llm_q", attempt=2, worker_identity="test", duration_s=0.0)]
    )
    await client.workflow_service.respond_activity_task_completed(
        RespondActivityTaskCompletedRequest(
            namespace=namespace, task_token=second, result=Payloads(payloads=payloads), identity="test"
        )
    )
    done = await run.result(rpc_timeout=timedelta(seconds=30))
    assert done.steps[0].attempt == 2  # the stale hand-back did not fail attempt 2
    started = [e for e in await history(client, run.id) if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED]
    assert [e.activity_task_started_event_attributes.attempt for e in started] == [2]


async def test_a_paused_supervisor_kills_no_worker_and_no_activity_waits_for_a_timeout(
    pool: Pool, temporal_server: TemporalServer, namespace: str, client: Client
) -> None:
    pool.write(temporal_server, namespace, {"temporal.queue_options.llm_q.start_to_close_timeout": "30s"})
    supervisor = pool.up()
    before = {status_doc.pid(r) for r in pool.wait_all_ready()["replicas"]}
    runs = await start_runs(client, 6, latency_s=1.0, steps=90)  # ~90 s of work each, in 1 s activities
    await anyio.sleep(2)
    supervisor.send_signal(signal.SIGSTOP)
    try:
        await anyio.sleep(60)  # past the watchdog (15 s) and past a full notify queue (the old freeze came at ~27 s)
    finally:
        supervisor.send_signal(signal.SIGCONT)
    for run in runs:
        result = await run.result(rpc_timeout=timedelta(seconds=150))
        assert all(step.attempt == 1 for step in result.steps), "an activity waited for its timeout and was retried"
    status = pool.status()
    assert {r["pid"] for r in status["replicas"]} == before and all(r["restarts"] == 0 for r in status["replicas"])
    assert all(alive(pid) for pid in before)
    assert "supervisor.was_paused" in pool.output() and "worker.killed" not in pool.output()


async def test_ten_rolling_restarts_under_load_no_run_waits_for_a_timeout(
    pool: Pool, temporal_server: TemporalServer, namespace: str, client: Client
) -> None:
    pool.write(temporal_server, namespace, {**LONG_TIMEOUT, "workers.media.replicas": 0})
    pool.up()
    pool.wait_all_ready()
    started = time.monotonic()
    runs = await start_runs(client, 12, latency_s=0.3, steps=100)
    for roll in range(10):
        assert pool.cli("restart", "llm").returncode == 0, f"roll {roll}"
        pool.wait(lambda s: not s["pool"]["busy"] and s["groups"]["llm"]["ready"] == 2, 60, f"roll {roll} done")
    lost = 0
    for run in runs:
        await run.result(rpc_timeout=timedelta(seconds=120))
        failures = await retried_failures(client, run.id)
        assert not [f for f in failures if f.HasField("timeout_failure_info")], "an activity waited for its timeout"
        lost += sum("exited without running this attempt" in f.message for f in failures)
    took = time.monotonic() - started  # (no timeout_failure_info above: no attempt waited for its timeout)
    counted = pool.status()["groups"]["llm"]["handed_back"].get("lost_dispatch", 0)
    assert counted >= lost
    print(f"10 rolls under load: {lost} lost dispatch(es) found and handed back ({counted} counted), {took:.0f}s")


async def test_an_attempt_a_live_replica_never_received_is_handed_back_after_the_bound(
    pool: Pool, temporal_server: TemporalServer, namespace: str, client: Client
) -> None:
    # The test plays Temporal's side of the "stuck" case: it takes an attempt under the identity of a live llm
    # replica (on a queue of its own, so no real worker competes) and never runs it.
    route = "temporal.worker_config.activity_queues.act_llm_gen_text.by_handle.stuck"
    pool.write(
        temporal_server,
        namespace,
        {
            route: "stuck_q",
            "temporal.queue_options.stuck_q": {"start_to_close_timeout": "0:05:00"},
            "workers.spare": {"scope": "runner-llm", "task_queue": "stuck_q", "replicas": 0},
            "workers.media.replicas": 0,
            "pool.stuck_attempt_after": "4s",
        },
    )
    pool.up()
    status = pool.wait_all_ready()
    replica = next(r for r in status["replicas"] if r["group"] == "llm")
    run = await client.start_workflow(
        "WfPipeRun",
        PipeRunInput(run_id="stuck", steps=[SimStep("act_llm_gen_text", handle="stuck", latency_s=0.1)]),
        id=f"stuck-{uuid.uuid4().hex[:8]}",
        task_queue="temporal_task_queue",
        result_type=PipeRunResult,
    )

    async def poll(identity: str) -> bytes:
        for _ in range(10):
            task = await client.workflow_service.poll_activity_task_queue(
                PollActivityTaskQueueRequest(
                    namespace=namespace, task_queue=TaskQueue(name="stuck_q"), identity=identity
                )
            )
            if task.task_token:
                return bytes(task.task_token)
        raise AssertionError("no activity task")

    await poll(status_doc.text(replica["identity"]))  # attempt 1, recorded as started on the live replica, never run
    taken = time.monotonic()
    second = await poll("test")  # attempt 2 comes once the pool has handed attempt 1 back
    assert 4 <= time.monotonic() - taken < 20, time.monotonic() - taken
    payloads = await client.data_converter.encode(
        [StepResult("act_llm_gen_text", "stuck_q", attempt=2, worker_identity="test", duration_s=0.0)]
    )
    await client.workflow_service.respond_activity_task_completed(
        RespondActivityTaskCompletedRequest(
            namespace=namespace, task_token=second, result=Payloads(payloads=payloads), identity="test"
        )
    )
    await run.result(rpc_timeout=timedelta(seconds=30))
    [failure] = await retried_failures(client, run.id)
    assert f"worker process {replica['identity']} does not know of this attempt" in failure.message
    status = pool.wait(lambda s: s["groups"]["llm"]["handed_back"].get("stuck") == 1, 10, "counted as stuck")
    assert pool.status()["groups"]["llm"]["restarts_total"] == 0  # nothing was killed for it
