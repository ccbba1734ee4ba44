"""Benchmark: when a busy worker is SIGKILLed, how long until every activity it was running has completed elsewhere,
pipelex-pool (hand-back on) against supervisord running the same workers.

One local Temporal dev server; the shipped topology's router and two llm replicas, under pipelex-pool (shipped
defaults), then under supervisord (autorestart). Each round starts 6 pipe runs of one 5-second `act_llm_gen_text`,
waits until they run (1 s in), SIGKILLs the llm worker running the most of them, and times the kill until the last
of that worker's runs has completed. With pipelex-pool the supervisor fails the dead worker's attempts by task token
at once; under supervisord Temporal retries them when their start-to-close timeout (30 s here, set the same for
both) expires. The simulated activity resumes from its last heartbeat in both cases, so the retry runs only what
was left of its 5 s.

    python3 -m venv .venv && .venv/bin/pip install -q -e ".[test]" supervisor
    .venv/bin/python -m scripts.bench.handback --rounds 3 --write BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from temporalio.client import Client, WorkflowHandle

from pipelex_pool.control.client import ControlClient
from pipelex_pool.sim.model import PipeRunInput, PipeRunResult, SimStep
from scripts.bench.common import (
    dev_server,
    ready_pids,
    shipped_topology,
    start_pool,
    start_supervisord,
    stop_group,
    summary,
    write_result,
    write_topology,
)

RUNS = 6
LATENCY_S = 5.0
START_TO_CLOSE = "0:00:30"


def topology(directory: Path, port: int) -> Path:
    doc = shipped_topology(directory, port, replicas={"llm": 2, "media": 0})
    doc["temporal"]["queue_options"]["llm_q"]["start_to_close_timeout"] = START_TO_CLOSE
    return write_topology(doc, directory)


async def one_round(client: Client, llm_pids: Callable[[], Awaitable[list[int]]]) -> float:
    """Start the runs, kill the busiest llm worker 1 s in, time until its runs have all completed."""
    pids: list[int] = []
    while len(pids) < 2:
        pids = await llm_pids()
        await asyncio.sleep(0.2)
    await asyncio.sleep(2.0)
    runs: list[WorkflowHandle[object, PipeRunResult]] = [
        await client.start_workflow(
            "WfPipeRun",
            PipeRunInput(run_id=f"hb-{n}", steps=[SimStep("act_llm_gen_text", latency_s=LATENCY_S)]),
            id=f"hb-{uuid.uuid4().hex[:8]}-{n}",
            task_queue="temporal_task_queue",
            result_type=PipeRunResult,
        )
        for n in range(RUNS)
    ]
    on: dict[int, list[WorkflowHandle[object, PipeRunResult]]] = {}
    while sum(len(v) for v in on.values()) < RUNS:
        on.clear()
        for run in runs:
            pending = (await run.describe()).raw_description.pending_activities
            if pending and pending[0].state == 2:  # STARTED
                on.setdefault(int(pending[0].last_worker_identity.rpartition(":")[2]), []).append(run)
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)
    victim = max(on, key=lambda pid: len(on[pid]))
    os.kill(victim, signal.SIGKILL)
    killed = time.perf_counter()
    for run in on[victim]:
        await run.result()
    took = time.perf_counter() - killed
    for run in runs:
        await run.result()
    return took


async def bench_pipelex_pool(client: Client, directory: Path, port: int, rounds: int) -> list[float]:
    sup = start_pool(topology(directory, port))
    control = ControlClient(directory / "ctl.sock")

    async def llm_pids() -> list[int]:
        return ready_pids(control, "llm", polling=True)

    try:
        return [await one_round(client, llm_pids) for _ in range(rounds)]
    finally:
        stop_group(sup)


async def bench_supervisord(client: Client, directory: Path, port: int, rounds: int) -> list[float]:
    topo = topology(directory, port)
    worker = f"{sys.executable} -m pipelex_pool worker --config {topo}"
    sup, conf, ctl = start_supervisord(
        directory,
        f"""[program:router]
command={worker} --task-queue temporal_task_queue --scope orchestrator
autorestart=true
startsecs=0
[program:llm]
command={worker} --task-queue llm_q --scope runner-llm --profile llm-pool
process_name=%(program_name)s-%(process_num)d
numprocs=2
autorestart=true
startsecs=0
""",
    )

    async def llm_pids() -> list[int]:
        found = []
        for name in ("llm:llm-0", "llm:llm-1"):
            out = subprocess.run([ctl, "-c", str(conf), "pid", name], capture_output=True, text=True).stdout.strip()
            if out.isdigit() and out != "0":
                found.append(int(out))
        await asyncio.sleep(3.0 if len(found) == 2 else 0)  # started: give the new worker time to poll
        return found

    try:
        return [await one_round(client, llm_pids) for _ in range(rounds)]
    finally:
        stop_group(sup)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write", type=Path, help="Append the result to this Markdown file.")
    args = parser.parse_args()
    async with dev_server() as (client, port, directory):
        for name in ("pool", "sd"):
            (directory / name).mkdir()
        pool = await bench_pipelex_pool(client, directory / "pool", port, args.rounds)
        sd = await bench_supervisord(client, directory / "sd", port, args.rounds)
    ratio = statistics.median(sd) / statistics.median(pool)
    text = (
        f"| supervisor | SIGKILL of a busy llm worker -> all its runs completed ({args.rounds} rounds) |\n"
        "| --- | --- |\n"
        f"| pipelex-pool (shipped defaults: hand-back on) | {summary(pool)} |\n"
        f"| supervisord (Temporal retries at start-to-close, {START_TO_CLOSE}) | {summary(sd)} |\n\n"
        f"supervisord / pipelex-pool (median): **{ratio:.1f}x**. Each activity: {LATENCY_S:g} s, killed ~1 s in "
        "(the retry resumes from its last heartbeat, so ~4 s of it remain)\n"
    )
    write_result(args.write, text)
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown after using the Temporal client (see pipelex_pool.cli)


if __name__ == "__main__":
    asyncio.run(main())
