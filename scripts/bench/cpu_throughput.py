"""Benchmark: CPU-bound activities, 1 replica against 2, under pipelex-pool and under supervisord, interleaved.

Each run is a pipe run of one `act_llm_gen_text` step that burns CPU_S seconds of its own thread's CPU (the
simulated load model, `pipelex_pool.sim`: no LLM is called). RUNS of them are started at once on the llm queue;
the figure is runs completed per second, from the first start to the last result. One worker process tops out at
one core (the GIL), so on an otherwise idle 2-core machine 2 replicas should do close to twice the work (minus
what the Temporal server, the router and the supervisor use). The four set-ups run side by side against one local
Temporal dev server, each in a namespace of its own; each round measures each in turn (the order reversed every
other round), with the machine's load and the CPU-seconds the set-up (supervisor and workers) burnt.

    python3 -m venv .venv && .venv/bin/pip install -e ".[test]" supervisor
    .venv/bin/python -m scripts.bench.cpu_throughput --rounds 3 --write BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from temporalio.client import Client

from pipelex_pool.control.client import ControlClient
from pipelex_pool.sim.model import PipeRunInput, PipeRunResult, SimStep
from scripts.bench.common import (
    dev_server,
    interleaved,
    ready_pids,
    shipped_topology,
    spread,
    start_pool,
    start_supervisord,
    stop_group,
    supervisord_programs,
    tree_cpu_s,
    write_result,
    write_topology,
)
from scripts.bench.footprint import wait_polling

RUNS = 24
CPU_S = 0.5
SETUPS = (("pipelex-pool", 1), ("pipelex-pool", 2), ("supervisord", 1), ("supervisord", 2))


@dataclass
class SetUp:
    who: str
    replicas: int
    supervisor: subprocess.Popen[bytes]
    client: Client  # on the set-up's own namespace
    directory: Path
    name: str  # its pool name and namespace
    rates: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # the set-up's CPU-s (supervisor and workers) in each round


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


async def start(who: str, replicas: int, name: str, directory: Path, port: int) -> SetUp:
    """Launch the set-up (not waited for: `serving` does, once the caller holds it and will stop it)."""
    client = await Client.connect(f"127.0.0.1:{port}", namespace=name)
    doc = shipped_topology(
        directory, port, name=name, replicas={"router": 1, "llm": replicas, "media": 0}, namespace=name
    )
    topology = write_topology(doc, directory)
    if who == "pipelex-pool":
        sup = start_pool(topology)
    else:
        sup, _, _ = start_supervisord(directory, supervisord_programs(topology, {"router": 1, "llm": replicas}))
    return SetUp(who, replicas, sup, client, directory, name)


async def serving(setup: SetUp) -> None:
    """Until the router and every llm replica of the set-up poll."""
    if setup.who == "pipelex-pool":
        control = ControlClient(setup.directory / "ctl.sock")
        while len(ready_pids(control, polling=True)) < 1 + setup.replicas:
            await asyncio.sleep(0.2)
    else:
        await wait_polling(setup.client, f"{setup.name}/", 1 + setup.replicas)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write", type=Path, help="Append the result to this Markdown file.")
    args = parser.parse_args()
    loads: list[float] = []
    names = tuple(f"{'pool' if who == 'pipelex-pool' else 'sd'}{replicas}" for who, replicas in SETUPS)
    async with dev_server(names) as (_, port, directory):
        setups: list[SetUp] = []
        try:
            for (who, replicas), name in zip(SETUPS, names, strict=True):
                (directory / name).mkdir()
                setups.append(await start(who, replicas, name, directory / name, port))
            for setup in setups:
                await serving(setup)
            await asyncio.sleep(2.0)
            for _, setup in interleaved(args.rounds, setups):
                loads.append(os.getloadavg()[0])
                before = tree_cpu_s(setup.supervisor.pid)
                setup.rates.append(await throughput(setup.client))
                setup.cpu.append(tree_cpu_s(setup.supervisor.pid) - before)
                print(setup.who, setup.replicas, f"{setup.rates[-1]:.2f} runs/s", flush=True)
        finally:
            for setup in setups:
                stop_group(setup.supervisor)
    rows = ""
    for who in ("pipelex-pool", "supervisord"):
        one, two = (next(s for s in setups if (s.who, s.replicas) == (who, r)) for r in (1, 2))
        ratio = statistics.median(two.rates) / statistics.median(one.rates)
        rows += (
            f"| {who} | {spread(one.rates)} | {spread(one.cpu, 1)} | {spread(two.rates)} | {spread(two.cpu, 1)} "
            f"| **{ratio:.2f}x** |\n"
        )
    text = (
        f"{RUNS} pipe runs started at once, each one step burning {CPU_S:g} CPU-seconds on its own thread "
        f"(`cpu_s`, the simulated load model), on the llm queue (llm-pool profile: 50 concurrent activities); "
        f"{args.rounds} interleaved rounds, load {min(loads):.1f}-{max(loads):.1f}; median (p90, min-max).\n\n"
        "| supervisor | 1 llm replica (runs/s) | its CPU-s per round | 2 llm replicas (runs/s) | their CPU-s per round "
        "| 2 vs 1 |\n| --- | --- | --- | --- | --- | --- |\n" + rows
    )
    write_result(args.write, text)
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown after using the Temporal client (see pipelex_pool.cli)


if __name__ == "__main__":
    asyncio.run(main())
