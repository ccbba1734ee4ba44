"""Benchmark: what one activity costs the worker process and the supervisor, against a bare temporalio worker.

One pool of the shipped topology (router 1, llm 1, media 1; its defaults, the simulated packs: no LLM is called) on
a local Temporal dev server. Rounds alternate two set-ups serving the llm queue:
- "pool": the pool's llm replica (its interceptor, in-flight ledger and reports to the supervisor);
- "bare": the llm group paused (`pause llm --wait`: its process stays, polls nothing) and a bare temporalio worker
  (scripts/bench/bare_worker.py: the same activities and runtime profile, so the same slots and the profile's
  20 activities/s cap, none of the pool's additions) serving instead.
Each round starts RUNS workflows of STEPS parallel `act_llm_gen_text` steps that each wait LATENCY_S (longer than
the worker's report batch, so every attempt is reported started and then finished, as an LLM call is) and waits for
all of them. Per round: the serving worker's CPU and the supervisor's (with its fork server) over the round, from
each process's CPU clock (nanoseconds, every thread), divided by the activities run. The
supervisor's cost per activity is its CPU in a pool round minus its idle rate over the same time, measured in the
IDLE_S just before the round with the pool in the same state (what remains is the activities' reports, and the
router's for their RUNS workflows).

    .venv/bin/python -m scripts.bench.per_activity --rounds 5 [--write BENCHMARKS.md]
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
from pathlib import Path

from temporalio.client import Client

from pipelex_pool.control.client import ControlClient
from pipelex_pool.sim.model import PipeRunInput, PipeRunResult, SimStep
from scripts.bench.common import (
    cpu_s,
    dev_server,
    ready_pids,
    shipped_topology,
    spread,
    start_pool,
    stop_group,
    supervisor_cpu_s,
    write_result,
    write_topology,
)

RUNS = 20
STEPS = 30
LATENCY_S = 0.2
SETTLE_S = 3.0  # after a set-up starts serving: its start's own work done
IDLE_S = 10.0


async def run_activities(client: Client) -> tuple[int, float]:
    """(activities run, seconds) for RUNS workflows of STEPS parallel llm steps."""
    step = SimStep("act_llm_gen_text", latency_s=LATENCY_S)
    started = time.perf_counter()
    handles = [
        await client.start_workflow(
            "WfPipeRun",
            PipeRunInput(run_id=f"act-{n}", steps=[step] * STEPS, parallel=True),
            id=f"act-{uuid.uuid4().hex[:8]}-{n}",
            task_queue="temporal_task_queue",
            result_type=PipeRunResult,
        )
        for n in range(RUNS)
    ]
    for handle in handles:
        await handle.result()
    return RUNS * STEPS, time.perf_counter() - started


def cli(topology: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "pipelex_pool", *args, "-c", str(topology)], check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip


async def measure(client: Client, supervisor: int, worker: int) -> dict[str, float]:
    await asyncio.sleep(SETTLE_S)
    idle0, started = supervisor_cpu_s(supervisor), time.perf_counter()
    await asyncio.sleep(IDLE_S)
    idle_rate = (supervisor_cpu_s(supervisor) - idle0) / (time.perf_counter() - started)
    sup0, work0, load0 = supervisor_cpu_s(supervisor), cpu_s(worker), os.getloadavg()[0]
    count, seconds = await run_activities(client)
    sup, work = supervisor_cpu_s(supervisor) - sup0, cpu_s(worker) - work0
    return {
        "count": count,
        "seconds": seconds,
        "sup": sup - idle_rate * seconds,
        "idle_rate": idle_rate,
        "worker": work,
        "load": max(load0, os.getloadavg()[0]),
    }


async def pool_round(
    client: Client, topology: Path, supervisor: int, control: ControlClient, paused: bool
) -> dict[str, float]:
    if paused:
        cli(topology, "resume", "llm", "--wait")
    (worker,) = ready_pids(control, "llm")
    return await measure(client, supervisor, worker)


async def bare_round(client: Client, topology: Path, supervisor: int) -> dict[str, float]:
    cli(topology, "pause", "llm", "--wait")
    bare = subprocess.Popen(
        [sys.executable, "-m", "scripts.bench.bare_worker", "--config", str(topology), "--task-queue", "llm_q",
         "--scope", "runner-llm", "--profile", "llm-pool"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert bare.stdout is not None
        await asyncio.to_thread(bare.stdout.readline)  # "polling"
        return await measure(client, supervisor, bare.pid)
    finally:
        bare.terminate()
        bare.wait(60)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--write", type=Path, help="Append the result to this Markdown file.")
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {"pool": [], "bare": []}
    async with dev_server() as (client, port, directory):
        doc = shipped_topology(directory, port, replicas={"router": 1, "llm": 1, "media": 1})
        topology = write_topology(doc, directory)
        sup = start_pool(topology)
        control = ControlClient(directory / "ctl.sock")
        try:
            while len(ready_pids(control, polling=True)) < 3:
                await asyncio.sleep(0.2)
            for n in range(args.rounds):
                order = ("pool", "bare") if n % 2 == 0 else ("bare", "pool")
                for name in order:
                    if name == "pool":
                        paused = bool(results["bare"])
                        results[name].append(await pool_round(client, topology, sup.pid, control, paused))
                    else:
                        results[name].append(await bare_round(client, topology, sup.pid))
                    print(name, results[name][-1], flush=True)
        finally:
            stop_group(sup)
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    pool = results["pool"]
    # the supervisor's own per-activity cost: a pool round's CPU minus its idle rate over the same time
    baseline = statistics.median(r["idle_rate"] for r in pool)
    sup_ms = [1000 * r["sup"] / r["count"] for r in pool]
    worker_ms = {name: [1000 * r["worker"] / r["count"] for r in rows] for name, rows in results.items()}
    rate = {name: [r["count"] / r["seconds"] for r in rows] for name, rows in results.items()}
    loads = [r["load"] for rows in results.values() for r in rows]
    ratio = statistics.median(worker_ms["pool"]) / statistics.median(worker_ms["bare"])
    # each round's two set-ups ran next to each other: their ratio leaves out how the machine drifts between rounds
    paired = [p / b for p, b in zip(worker_ms["pool"], worker_ms["bare"], strict=True)]
    totals = sum(r["worker"] for r in pool) / sum(r["worker"] for r in results["bare"])
    text = (
        f"Commit {rev}; {args.rounds} interleaved rounds of {RUNS * STEPS} `act_llm_gen_text` attempts "
        f"({LATENCY_S:g} s each, shipped llm-pool profile); load {min(loads):.1f}-{max(loads):.1f}. "
        "Median (p90, min-max).\n\n"
        "| set-up | worker CPU per activity (ms) | supervisor CPU per activity (ms) | activities/s |\n"
        "| --- | --- | --- | --- |\n"
        f"| the pool's llm replica | {spread(worker_ms['pool'], 3)} | {spread(sup_ms, 3)} "
        f"| {spread(rate['pool'], 1)} |\n"
        f"| bare temporalio worker | {spread(worker_ms['bare'], 3)} | (the pool idle: {1000 * baseline:.2f} ms/s) "
        f"| {spread(rate['bare'], 1)} |\n\n"
        f"Worker CPU per activity, pool / bare: **{spread(paired, 3)}**, the rounds' own ratios (each round's two "
        f"set-ups ran side by side); {totals:.3f} over every round's CPU; {ratio:.3f} the medians' ratio (the "
        "machine's drift between rounds in it).\n"
    )
    write_result(args.write, text)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    asyncio.run(main())
