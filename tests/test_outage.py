"""An outage is not a failure: a pool started while Temporal is down waits for it (no replica FATAL, none
restarted) and polls within seconds of Temporal answering; a server killed and restarted under load loses no run."""

from __future__ import annotations

import subprocess
import time
import uuid
from datetime import timedelta
from pathlib import Path

import anyio
import pytest
from temporalio.client import Client

from pipelex_pool.sim.model import PipeRunInput, PipeRunResult, SimStep
from pipelex_pool.temporal.devserver import dev_server_command, wait_until_serving
from tests.conftest import Processes, TemporalServer, free_port
from tests.pool import Pool, cli_args

pytestmark = pytest.mark.slow

# Without waiting for Temporal, these would make every replica FATAL within ~10 s of a down server.
IMPATIENT = {
    "workers.router.start_timeout": "4s",
    "workers.llm.start_timeout": "4s",
    "workers.media.start_timeout": "4s",
    "pool.restart.max_restarts": 1,
    "pool.restart.backoff_max": "1s",
}
OUTAGE_S = 15.0  # the scenario: how long Temporal is down (longer than any start timeout and backoff above)


def start_server(processes: Processes, port: int, db: Path) -> subprocess.Popen[bytes]:
    return processes.spawn(dev_server_command(port, db, namespaces=("ns",), log_level="error"), name="temporal")


async def test_up_while_temporal_is_down_waits_and_polls_once_it_answers(
    pool: Pool, processes: Processes, tmp_path: Path
) -> None:
    port = free_port()
    pool.write(TemporalServer(f"127.0.0.1:{port}", 0), "ns", IMPATIENT)
    pool.up()
    waiting = pool.wait(
        lambda s: (
            len(s["replicas"]) == 4 and all("waiting for Temporal" in (r["status_text"] or "") for r in s["replicas"])
        ),
        60,
        "every replica waiting for Temporal",
    )
    assert {r["state"] for r in waiting["replicas"]} == {"STARTING"}
    assert "waiting for Temporal" in pool.cli("status").stdout
    # a load test started now, before Temporal ever answered, waits for it too (and then runs)
    load = processes.spawn(cli_args("loadtest", str(pool.topology), "--runs", "5", "--json"), name="loadtest")
    await anyio.sleep(OUTAGE_S)  # the outage goes on, past every start timeout and backoff
    assert not [r for r in pool.replicas() if r["state"] == "FATAL" or r["restarts"]]
    assert load.poll() is None, processes.output(load)  # still waiting, not given up
    start_server(processes, port, tmp_path / "temporal.db")
    await wait_until_serving(f"127.0.0.1:{port}", "ns", within=60)
    answered = time.monotonic()
    status = pool.wait_all_ready(within=60)
    took = time.monotonic() - answered
    print(f"every replica READY {took:.1f}s after Temporal answered")
    assert took < 15  # (target: 5 s; the bound keeps a busy machine from failing it)
    assert all(r["restarts"] == 0 for r in status["replicas"])
    assert load.wait(timeout=300) == 0, processes.output(load)
    assert "does not answer yet; waiting up to 300s" in processes.output(load)


async def test_a_server_killed_and_restarted_mid_run_loses_no_run(
    pool: Pool, processes: Processes, tmp_path: Path
) -> None:
    port = free_port()
    db = tmp_path / "temporal.db"
    server = start_server(processes, port, db)
    address = f"127.0.0.1:{port}"
    await wait_until_serving(address, "ns", within=60)
    pool.write(TemporalServer(address, server.pid), "ns", {"workers.media.replicas": 0})
    pool.up()
    pool.wait_all_ready()
    client = await Client.connect(address, namespace="ns")
    steps = [SimStep("act_llm_gen_text", latency_s=0.5)] * 4
    runs = [
        await client.start_workflow(
            "WfPipeRun",
            PipeRunInput(run_id=f"outage-{n}", steps=steps),
            id=f"outage-{uuid.uuid4().hex[:8]}-{n}",
            task_queue="temporal_task_queue",
            result_type=PipeRunResult,
        )
        for n in range(8)
    ]
    server.kill()
    server.wait()
    await anyio.sleep(OUTAGE_S / 3)
    start_server(processes, port, db)
    await wait_until_serving(address, "ns", within=60)
    client = await Client.connect(address, namespace="ns")
    with anyio.fail_after(180):
        for run in runs:
            await client.get_workflow_handle(run.id).result(rpc_timeout=timedelta(seconds=180))
    status = pool.wait_all_ready(within=60)
    assert not [r for r in status["replicas"] if r["state"] == "FATAL"]
