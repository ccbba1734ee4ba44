"""`pipelex-pool worker` against a real Temporal dev server: scopes, strict queue check, readiness, drain,
parent death and Pipelex routing."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
from temporalio.api.enums.v1 import EventType, PendingActivityState
from temporalio.client import Client

from pipelex_pool.sim.model import PipeRunInput, PipeRunResult, SimStep
from pipelex_pool.temporal.pollers import QueueType, queue_pollers
from tests.conftest import Processes, TemporalServer
from tests.helpers import PYTHON, NotifyListener, completed_activity_types, history, wait_for, worker_args
from tests.topologies import server_changes, write_topology

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def topology(tmp_path: Path, server: TemporalServer, namespace: str, changes: dict[str, Any] | None = None) -> Path:
    return write_topology(tmp_path, {**server_changes(server.address, namespace), **(changes or {})})


async def start_worker(
    processes: Processes,
    short_dir: Path,
    config: Path,
    queue: str,
    scope: str,
    name: str,
    profile: str | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    """Start a worker with its own notify socket and wait for READY=1; returns the process and its identity."""
    identity = f"test/{name}/{uuid.uuid4().hex[:6]}"
    listener = NotifyListener(short_dir / f"{name}.sock")
    try:
        proc = processes.spawn(
            worker_args(config, queue, scope, profile, identity),
            env={"NOTIFY_SOCKET": str(listener.path)},
            name=name,
        )
        try:
            await listener.expect("READY=1", within=30)
        except TimeoutError:
            raise AssertionError(f"{name} never sent READY=1:\n{processes.output(proc)}") from None
    finally:
        listener.close()
    return proc, identity


async def pending_state(client: Client, workflow_id: str, activity: str) -> PendingActivityState.ValueType | None:
    description = await client.get_workflow_handle(workflow_id).describe()
    for pending in description.raw_description.pending_activities:
        if pending.activity_type.name == activity:
            return pending.state
    return None


def run_input(*steps: SimStep, parallel: bool = False) -> PipeRunInput:
    return PipeRunInput(run_id=uuid.uuid4().hex, steps=list(steps), parallel=parallel)


async def test_runner_llm_registers_exactly_the_llm_activities(
    tmp_path: Path,
    temporal_server: TemporalServer,
    namespace: str,
    client: Client,
    processes: Processes,
    short_dir: Path,
) -> None:
    # Route image generation to the LLM pool's queue (validate would refuse this topology; a worker alone does
    # not check pool coverage). Temporal hands every task on a queue to any of its pollers, so the LLM worker
    # receives the image task, but it has no such activity: each attempt fails with the SDK's "not registered"
    # error and the simulated image work never runs, while the LLM steps complete.
    config = topology(
        tmp_path,
        temporal_server,
        namespace,
        {
            "temporal.worker_config.activity_queues.act_img_gen_images.default": "llm_q",
            "temporal.worker_config.retry_policy_config": {"maximum_attempts": 100, "maximum_interval": "2s"},
        },
    )
    await start_worker(processes, short_dir, config, "temporal_task_queue", "orchestrator", "router")
    await start_worker(processes, short_dir, config, "llm_q", "runner-llm", "llm", "llm-pool")
    workflow_id = f"scope-{uuid.uuid4().hex[:8]}"
    handle = await client.start_workflow(
        "WfPipeRun",
        run_input(
            SimStep("act_llm_gen_text"), SimStep("act_llm_gen_object"), SimStep("act_img_gen_images"), parallel=True
        ),
        id=workflow_id,
        task_queue="temporal_task_queue",
    )
    try:

        async def llm_steps_done() -> bool:
            return sorted(await completed_activity_types(client, workflow_id)) == [
                "act_llm_gen_object",
                "act_llm_gen_text",
            ]

        await wait_for(llm_steps_done, 20, "both LLM steps to complete")

        async def image_step_refused() -> bool:
            description = await client.get_workflow_handle(workflow_id).describe()
            for pending in description.raw_description.pending_activities:
                if pending.activity_type.name == "act_img_gen_images" and pending.attempt >= 2:
                    return "not registered on this worker" in pending.last_failure.message
            return False

        await wait_for(image_step_refused, 20, "the image step to be refused by the LLM worker")
        assert await pending_state(client, workflow_id, "act_img_gen_images") is not None  # never completed
        assert sorted(await completed_activity_types(client, workflow_id)) == ["act_llm_gen_object", "act_llm_gen_text"]
    finally:
        await handle.terminate("test over")


def test_unknown_task_queue_exits_78_without_contacting_temporal() -> None:
    # A listening socket standing in for the server: the worker must fail before connecting to it.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        started = time.monotonic()
        result = subprocess.run(
            [
                PYTHON,
                "-m",
                "pipelex_pool",
                "worker",
                "--config",
                str(REPO / "configs/production.toml"),
                "--task-queue",
                "anthrpic_q",
                "--scope",
                "runner-llm",
                "--profile",
                "anthropic-tier4",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        elapsed = time.monotonic() - started
        with pytest.raises(BlockingIOError):
            server.accept()
    assert result.returncode == 78, result.stderr
    assert "Did you mean 'anthropic_q'?" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    print(f"worker exited 78 after {elapsed:.2f}s")


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--scope", "runner-lm", "Unknown worker scope '--scope' 'runner-lm'"),
        ("--profile", "anthropic-tier5", "Did you mean 'anthropic-tier4'?"),
    ],
)
def test_unknown_scope_or_profile_exits_78(flag: str, value: str, expected: str) -> None:
    args = [
        PYTHON,
        "-m",
        "pipelex_pool",
        "worker",
        "--config",
        str(REPO / "configs/production.toml"),
        "--task-queue",
        "anthropic_q",
        flag,
        value,
    ]
    result = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert result.returncode == 78
    assert expected.split("'")[0] in result.stderr and "Did you mean" in result.stderr or expected in result.stderr


async def test_ready_only_once_identity_is_polling_then_watchdog_and_stopping(
    tmp_path: Path,
    temporal_server: TemporalServer,
    namespace: str,
    client: Client,
    processes: Processes,
    short_dir: Path,
) -> None:
    config = topology(tmp_path, temporal_server, namespace)
    listener = NotifyListener(short_dir / "notify.sock")
    identity = f"test/ready/{uuid.uuid4().hex[:6]}"
    try:
        proc = processes.spawn(
            worker_args(config, "llm_q", "runner-llm", "llm-pool", identity),
            env={"NOTIFY_SOCKET": str(listener.path), "WATCHDOG_USEC": "400000"},
            name="ready",
        )
        await listener.expect("READY=1", within=30)
        pollers = await queue_pollers(client, "llm_q", QueueType.ACTIVITY)
        assert identity in pollers, f"READY=1 arrived but Temporal lists only {list(pollers)}"
        # WATCHDOG_USEC=400000: a keep-alive every 0.2 s; three of them arrive well within 5 s
        await listener.expect("WATCHDOG=1", within=5, times=listener.count("WATCHDOG=1") + 3)
        proc.send_signal(signal.SIGTERM)
        await listener.expect("STOPPING=1", within=10)
        assert proc.wait(timeout=20) == 0
    finally:
        listener.close()


async def sigterm_during_activity(
    tmp_path: Path,
    server: TemporalServer,
    namespace: str,
    client: Client,
    processes: Processes,
    short_dir: Path,
    grace: str,
) -> tuple[PipeRunResult, int, str, str | None]:
    config = topology(
        tmp_path,
        server,
        namespace,
        {"temporal.worker_runtime_profiles.profiles.llm-pool.graceful_shutdown_timeout": grace},
    )
    await start_worker(processes, short_dir, config, "temporal_task_queue", "orchestrator", "router")
    first, first_identity = await start_worker(processes, short_dir, config, "llm_q", "runner-llm", "llm-a", "llm-pool")
    workflow_id = f"drain-{uuid.uuid4().hex[:8]}"
    handle = await client.start_workflow(
        "WfPipeRun",
        # with a short grace, long enough to still run once the second worker is READY (seconds on a busy machine)
        run_input(SimStep("act_llm_gen_text", latency_s=3.0 if grace != "1s" else 15.0)),
        id=workflow_id,
        task_queue="temporal_task_queue",
        result_type=PipeRunResult,
    )

    async def started() -> bool:
        return (
            await pending_state(client, workflow_id, "act_llm_gen_text")
            == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
        )

    await wait_for(started, 20, "the activity to start")
    second_identity = None
    if grace == "1s":  # somewhere for the retry to go
        _, second_identity = await start_worker(
            processes, short_dir, config, "llm_q", "runner-llm", "llm-b", "llm-pool"
        )
    first.send_signal(signal.SIGTERM)
    await anyio.sleep(0.3)
    first.send_signal(signal.SIGTERM)  # a second SIGTERM must not cut the drain short
    result = await handle.result(rpc_timeout=timedelta(seconds=60))
    return result, first.wait(timeout=30), first_identity, second_identity


async def test_sigterm_lets_an_inflight_activity_finish_within_the_grace(
    tmp_path: Path,
    temporal_server: TemporalServer,
    namespace: str,
    client: Client,
    processes: Processes,
    short_dir: Path,
) -> None:
    result, exit_code, first, _ = await sigterm_during_activity(
        tmp_path, temporal_server, namespace, client, processes, short_dir, "10s"
    )
    assert exit_code == 0
    (step,) = result.steps
    assert step.attempt == 1 and step.worker_identity == first


async def test_sigterm_with_a_short_grace_retries_the_activity_elsewhere(
    tmp_path: Path,
    temporal_server: TemporalServer,
    namespace: str,
    client: Client,
    processes: Processes,
    short_dir: Path,
) -> None:
    result, exit_code, first, second = await sigterm_during_activity(
        tmp_path, temporal_server, namespace, client, processes, short_dir, "1s"
    )
    assert exit_code == 0
    (step,) = result.steps
    assert step.attempt == 2 and step.worker_identity == second != first


async def test_worker_drains_and_exits_when_its_parent_is_killed(
    tmp_path: Path,
    temporal_server: TemporalServer,
    namespace: str,
    processes: Processes,
    short_dir: Path,
) -> None:
    config = topology(tmp_path, temporal_server, namespace)
    listener = NotifyListener(short_dir / "orphan.sock")
    parent_code = (
        "import subprocess, sys\n"
        f"child = subprocess.Popen({worker_args(config, 'llm_q', 'runner-llm', 'llm-pool')!r})\n"
        "print(child.pid, flush=True)\n"
        "child.wait()\n"
    )
    try:
        parent = processes.spawn([PYTHON, "-c", parent_code], env={"NOTIFY_SOCKET": str(listener.path)}, name="parent")
        await listener.expect("READY=1", within=30)
        worker_pid = int(processes.output(parent).split()[0])
        worker = psutil.Process(worker_pid)
        assert worker.ppid() == parent.pid
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)

        async def worker_gone() -> bool:
            try:
                return bool(worker.status() == psutil.STATUS_ZOMBIE)  # exited, not yet reaped by init
            except psutil.NoSuchProcess:
                return True

        await wait_for(worker_gone, 5, "the orphaned worker to exit", interval=0.1)
    finally:
        listener.close()


ROUTING = {
    "temporal.worker_config.retry_policy_config": {
        "initial_interval": "1s",
        "backoff_coefficient": 2.0,
        "maximum_interval": "1m",
        "maximum_attempts": 5,
        "non_retryable_error_types": ["PipelexConfigError"],
    },
    "temporal.worker_config.activity_queues.act_llm_gen_text.by_handle.anthropic-default": "anthropic_q",
    "temporal.worker_config.activity_queues.act_llm_gen_text.handle_options.anthropic-default": {
        "start_to_close_timeout": "0:04:00",
        "retry_policy_config": {"maximum_attempts": 8, "non_retryable_error_types_extra": ["AnthropicBadRequest"]},
    },
    "temporal.queue_options.anthropic_q": {
        "start_to_close_timeout": "0:05:00",
        "retry_policy_config": {
            "initial_interval": "0:00:05",
            "non_retryable_error_types_extra": ["AnthropicAuthError"],
        },
    },
}


async def test_handle_routes_to_its_queue_with_layered_timeouts_and_retry_policy(
    tmp_path: Path,
    temporal_server: TemporalServer,
    namespace: str,
    client: Client,
    processes: Processes,
    short_dir: Path,
) -> None:
    config = topology(tmp_path, temporal_server, namespace, ROUTING)
    await start_worker(processes, short_dir, config, "temporal_task_queue", "orchestrator", "router")
    await start_worker(processes, short_dir, config, "anthropic_q", "runner-llm", "anthropic")
    await start_worker(processes, short_dir, config, "llm_q", "runner-llm", "llm")
    workflow_id = f"route-{uuid.uuid4().hex[:8]}"
    result = await client.execute_workflow(
        "WfPipeRun",
        run_input(SimStep("act_llm_gen_text", handle="anthropic-default"), SimStep("act_llm_gen_text")),
        id=workflow_id,
        task_queue="temporal_task_queue",
        result_type=PipeRunResult,
    )
    assert [step.task_queue for step in result.steps] == ["anthropic_q", "llm_q"]
    scheduled = [
        e.activity_task_scheduled_event_attributes
        for e in await history(client, workflow_id)
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    by_handle, default = scheduled
    assert by_handle.task_queue.name == "anthropic_q"
    assert by_handle.start_to_close_timeout.ToTimedelta() == timedelta(minutes=4)  # handle over queue over base
    retry = by_handle.retry_policy
    assert retry.initial_interval.ToTimedelta() == timedelta(seconds=5)  # from queue_options.anthropic_q
    assert retry.maximum_attempts == 8  # from handle_options
    assert retry.backoff_coefficient == 2.0 and retry.maximum_interval.ToTimedelta() == timedelta(minutes=1)
    assert list(retry.non_retryable_error_types) == ["PipelexConfigError", "AnthropicAuthError", "AnthropicBadRequest"]
    assert default.task_queue.name == "llm_q"
    assert default.start_to_close_timeout.ToTimedelta() == timedelta(minutes=2)  # queue_options.llm_q
    assert default.retry_policy.maximum_attempts == 5
    assert list(default.retry_policy.non_retryable_error_types) == ["PipelexConfigError"]
