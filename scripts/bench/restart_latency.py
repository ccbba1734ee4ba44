"""Benchmark: how fast a killed worker is back *polling Temporal*, pipelex-pool against supervisord.

All supervise the same worker (`pipelex-pool worker`, one replica on llm_q) against one local Temporal dev
server: pipelex-pool with its warm fork server (the default), pipelex-pool exec'ing each worker (`spawner =
"exec"`), and supervisord. Each round SIGKILLs the worker, then measures the time until Temporal lists a new poller
identity for the queue (all partitions described, as pipelex-pool's readiness does). They run one after the other
in the same run, so their numbers are comparable; BENCHMARKS.md records a run.

    python -m venv .venv && .venv/bin/pip install -e ".[test]" supervisor
    .venv/bin/python -m scripts.bench.restart_latency --rounds 10 --write BENCHMARKS.md

pipelex-pool runs with the shipped topology's defaults (a replica that had been READY for min_uptime is restarted at
once); supervisord with autorestart=true and startsecs=0 (it respawns on its own ~1 s tick).
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
from collections.abc import Callable
from pathlib import Path

from temporalio.client import Client

from pipelex_pool.control.client import ControlClient
from pipelex_pool.temporal.pollers import QueueType, queue_pollers
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

QUEUE = "llm_q"


def topology(directory: Path, port: int, spawner: str = "fork") -> Path:
    doc = shipped_topology(directory, port, replicas={"router": 1, "llm": 1, "media": 1})
    doc["pool"]["spawner"] = spawner
    return write_topology(doc, directory)


async def pollers(client: Client) -> set[str]:
    return set(await queue_pollers(client, QUEUE, QueueType.ACTIVITY))


async def measure(client: Client, current_pid: Callable[[], int | None], rounds: int) -> list[float]:
    """Kill the worker, time until Temporal lists a poller identity it had never listed before."""
    results = []
    for _ in range(rounds):
        pid = None
        while pid is None:
            pid = current_pid()
            await asyncio.sleep(0.1)
        await asyncio.sleep(3.0)  # let it settle (READY for longer than min_uptime: a run, not a young death)
        known = await pollers(client)
        os.kill(pid, signal.SIGKILL)
        killed = time.perf_counter()
        while True:
            now = await pollers(client)
            if now - known:
                results.append(time.perf_counter() - killed)
                break
            await asyncio.sleep(0.02)
    return results


async def bench_pipelex_pool(client: Client, directory: Path, port: int, rounds: int, spawner: str) -> list[float]:
    sup = start_pool(topology(directory, port, spawner))
    control = ControlClient(directory / "ctl.sock")

    def pid() -> int | None:
        ready = ready_pids(control, "llm")
        return ready[0] if ready else None

    try:
        return await measure(client, pid, rounds)
    finally:
        stop_group(sup)


async def bench_supervisord(client: Client, directory: Path, port: int, rounds: int) -> list[float]:
    topo = topology(directory, port)
    sup, conf, ctl = start_supervisord(
        directory,
        f"""[program:llm]
command={sys.executable} -m pipelex_pool worker --config {topo} --task-queue llm_q --scope runner-llm --profile llm-pool
autorestart=true
startsecs=0
stopsignal=TERM
""",
    )

    def pid() -> int | None:
        out = subprocess.run([ctl, "-c", str(conf), "pid", "llm"], capture_output=True, text=True).stdout.strip()
        return int(out) if out.isdigit() and out != "0" else None

    try:
        return await measure(client, pid, rounds)
    finally:
        stop_group(sup)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--write", type=Path, help="Append the result to this Markdown file.")
    args = parser.parse_args()
    async with dev_server() as (client, port, directory):
        for name in ("fork", "exec", "sd"):
            (directory / name).mkdir()
        pool = await bench_pipelex_pool(client, directory / "fork", port, args.rounds, "fork")
        cold = await bench_pipelex_pool(client, directory / "exec", port, args.rounds, "exec")
        sd = await bench_supervisord(client, directory / "sd", port, args.rounds)
    ratio = statistics.median(sd) / statistics.median(pool)
    text = (
        f"| supervisor | kill -> replacement polling ({args.rounds} rounds) |\n| --- | --- |\n"
        f"| pipelex-pool (fork server, default) | {summary(pool)} |\n"
        f'| pipelex-pool (`spawner = "exec"`) | {summary(cold)} |\n'
        f"| supervisord | {summary(sd)} |\n\n"
        f"supervisord / pipelex-pool (median): **{ratio:.2f}x**; "
        f"exec / fork server (median): {statistics.median(cold) / statistics.median(pool):.2f}x\n"
    )
    write_result(args.write, text)
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown after using the Temporal client (see pipelex_pool.cli)


if __name__ == "__main__":
    asyncio.run(main())
