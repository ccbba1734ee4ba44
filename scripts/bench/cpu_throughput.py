"""Benchmark: CPU-bound activities, 1 replica against 2, under pipelex-pool and under supervisord, same run.

Each run is a pipe run of one `act_llm_gen_text` step that burns CPU_S seconds of its own thread's CPU (the
simulated load model, `pipelex_pool.sim`: no LLM is called). RUNS of them are started at once on the llm queue;
the figure is runs completed per second, from the first start to the last result. One worker process tops out at
one core (the GIL), so on an otherwise idle 2-core machine 2 replicas should do close to twice the work (minus
what the Temporal server, the router and the supervisor use).

    python3 -m venv .venv && .venv/bin/pip install -e ".[test]" supervisor
    .venv/bin/python -m scripts.bench.cpu_throughput --write BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from pathlib import Path

from temporalio.client import Client

from pipelex_pool.control.client import ControlClient
from pipelex_pool.sim.model import PipeRunInput, PipeRunResult, SimStep
from scripts.bench.common import (
    dev_server,
    ready_pids,
    shipped_topology,
    start_pool,
    start_supervisord,
    stop_group,
    supervisord_programs,
    write_result,
    write_topology,
)
from scripts.bench.footprint import wait_polling

RUNS = 24
CPU_S = 0.5


async def throughput(client: Client) -> float:
    started = time.perf_counter()
    handles = [
        await client.start_workflow(
            "WfPipeRun",
            PipeRunInput(run_id=f"cpu-{n}", steps=[SimStep("act_llm_gen_text", latency_s=0.0, cpu_s=CPU_S)]),
            id=f"cpu-{uuid.uuid4().hex[:8]}-{n}",
            task_queue="temporal_task_queue",
            result_type=PipeRunResult,
        )
        for n in range(RUNS)
    ]
    for handle in handles:
        await handle.result()
    return RUNS / (time.perf_counter() - started)


async def under_pool(client: Client, directory: Path, port: int, replicas: int) -> float:
    name = f"cpu-pool-{replicas}"
    doc = shipped_topology(directory, port, name=name, replicas={"router": 1, "llm": replicas, "media": 0})
    sup = start_pool(write_topology(doc, directory))
    try:
        while len(ready_pids(ControlClient(directory / "ctl.sock"), polling=True)) < 1 + replicas:
            await asyncio.sleep(0.2)
        await asyncio.sleep(2.0)
        return await throughput(client)
    finally:
        stop_group(sup)


async def under_supervisord(client: Client, directory: Path, port: int, replicas: int) -> float:
    name = f"cpu-sd-{replicas}"
    topology = write_topology(shipped_topology(directory, port, name=name), directory)
    sup, _, _ = start_supervisord(directory, supervisord_programs(topology, {"router": 1, "llm": replicas}))
    try:
        await wait_polling(client, f"{name}/", 1 + replicas)
        await asyncio.sleep(2.0)
        return await throughput(client)
    finally:
        stop_group(sup)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", type=Path, help="Append the result to this Markdown file.")
    args = parser.parse_args()
    found: dict[tuple[str, int], float] = {}
    async with dev_server() as (client, port, directory):
        for who, run in (("pipelex-pool", under_pool), ("supervisord", under_supervisord)):
            for replicas in (1, 2):
                here = directory / f"{who}-{replicas}"
                here.mkdir()
                found[who, replicas] = await run(client, here, port, replicas)
                print(who, replicas, f"{found[who, replicas]:.2f} runs/s", flush=True)
    rows = "".join(
        f"| {who} | {one:.2f} runs/s | {two:.2f} runs/s | **{two / one:.2f}x** |\n"
        for who, one, two in ((w, found[w, 1], found[w, 2]) for w in ("pipelex-pool", "supervisord"))
    )
    text = (
        f"{RUNS} pipe runs started at once, each one step burning {CPU_S:g} CPU-seconds on its own thread "
        f"(`cpu_s`, the simulated load model), on the llm queue (llm-pool profile: 50 concurrent activities).\n\n"
        "| supervisor | 1 llm replica | 2 llm replicas | 2 vs 1 |\n| --- | --- | --- | --- |\n" + rows
    )
    write_result(args.write, text)
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown after using the Temporal client (see pipelex_pool.cli)


if __name__ == "__main__":
    asyncio.run(main())
