"""Benchmark: when a busy worker is SIGKILLed, how long until every activity it was running has completed elsewhere,
pipelex-pool (hand-back on) against supervisord running the same workers.

One local Temporal dev server; the shipped topology's router and two llm replicas, under pipelex-pool (shipped
defaults) and under supervisord (autorestart), side by side, each in a namespace of its own, interleaved round by
round (the order reversed every other round). Each round starts 6 pipe runs of one 5-second `act_llm_gen_text`,
waits until they run (1 s in), SIGKILLs the llm worker running the most of them, and times the kill until the last
of that worker's runs has completed. With pipelex-pool the supervisor fails the dead worker's attempts by task token
at once; under supervisord Temporal retries them when their start-to-close timeout (30 s here, set the same for
both) expires. The simulated activity resumes from its last heartbeat in both cases, so the retry runs only what
was left of its 5 s. Beside each round: the machine's load when it started and the CPU-seconds the supervisor
(with its fork server) burnt during it.

    python3 -m venv .venv && .venv/bin/pip install -q -e ".[test]" supervisor
    .venv/bin/python -m scripts.bench.handback --rounds 5 --write BENCHMARKS.md
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
from dataclasses import dataclass, field
from pathlib import Path

from temporalio.client import Client, WorkflowHandle

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
    supervisor_cpu_s,
    write_result,
    write_topology,
)

RUNS = 6
LATENCY_S = 5.0
START_TO_CLOSE = "0:00:30"


def topology(directory: Path, port: int, namespace: str) -> Path:
    directory.mkdir()
    doc = shipped_topology(directory, port, name=namespace, replicas={"llm": 2, "media": 0}, namespace=namespace)
    doc["temporal"]["queue_options"]["llm_q"]["start_to_close_timeout"] = START_TO_CLOSE
    return write_topology(doc, directory)


@dataclass
class SetUp:
    name: str
    supervisor: subprocess.Popen[bytes]
    client: Client  # on the set-up's own namespace
    llm_pids: Callable[[], Awaitable[list[int]]]
    took: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # the supervisor's CPU-s during each round


async def settled(llm_pids: Callable[[], Awaitable[list[int]]]) -> None:
    """Both llm replicas up (the one killed last round replaced), for a while."""
    pids: list[int] = []
    while len(pids) < 2:
        pids = await llm_pids()
        await asyncio.sleep(0.2)
    await asyncio.sleep(2.0)


async def one_round(client: Client) -> float:
    """Start the runs, kill the busiest llm worker 1 s in, time until its runs have all completed."""
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


async def pipelex_pool(directory: Path, port: int) -> SetUp:
    client = await Client.connect(f"127.0.0.1:{port}", namespace="pool")  # (first: nothing is left running if not)
    sup = start_pool(topology(directory, port, "pool"))
    control = ControlClient(directory / "ctl.sock")

    async def llm_pids() -> list[int]:
        return ready_pids(control, "llm", polling=True)

    return SetUp("pipelex-pool (shipped defaults: hand-back on)", sup, client, llm_pids)


async def supervisord(directory: Path, port: int) -> SetUp:
    client = await Client.connect(f"127.0.0.1:{port}", namespace="sd")
    topo = topology(directory, port, "sd")
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

    label = f"supervisord (Temporal retries at start-to-close, {START_TO_CLOSE})"
    return SetUp(label, sup, client, llm_pids)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--write", type=Path, help="Append the result to this Markdown file.")
    args = parser.parse_args()
    loads: list[float] = []
    async with dev_server(("pool", "sd")) as (_, port, directory):
        setups: list[SetUp] = []
        try:
            setups.append(await pipelex_pool(directory / "pool", port))
            setups.append(await supervisord(directory / "sd", port))
            for _, setup in interleaved(args.rounds, setups):
                loads.append(os.getloadavg()[0])
                await settled(setup.llm_pids)  # (its start, or the replacement of the last round, not counted)
                before = supervisor_cpu_s(setup.supervisor.pid)
                setup.took.append(await one_round(setup.client))
                setup.cpu.append(supervisor_cpu_s(setup.supervisor.pid) - before)
                print(setup.name, f"{setup.took[-1]:.2f} s", flush=True)
        finally:
            for setup in setups:
                stop_group(setup.supervisor)
    pool, sd = setups
    rows = "".join(f"| {s.name} | {spread(s.took)} | {spread(s.cpu, 3)} |\n" for s in setups)
    text = (
        f"{args.rounds} interleaved rounds, load {min(loads):.1f}-{max(loads):.1f}; median (p90, min-max).\n\n"
        "| supervisor | SIGKILL of a busy llm worker -> all its runs completed (s) "
        "| the supervisor's CPU-s in the round |\n"
        f"| --- | --- | --- |\n{rows}\n"
        f"supervisord / pipelex-pool (median): **{statistics.median(sd.took) / statistics.median(pool.took):.1f}x**. "
        f"Each activity: {LATENCY_S:g} s, killed ~1 s in (the retry resumes from its last heartbeat, so ~4 s of it "
        "remain)\n"
    )
    write_result(args.write, text)
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown after using the Temporal client (see pipelex_pool.cli)


if __name__ == "__main__":
    asyncio.run(main())
