"""Benchmark: how fast a killed worker is back *polling Temporal*, pipelex-pool against supervisord, interleaved.

Three set-ups run side by side against one local Temporal dev server, each supervising the same worker
(`pipelex-pool worker`, one replica on llm_q; router and media too, as shipped): pipelex-pool with its warm fork
server (the default), pipelex-pool exec'ing each worker (`spawner = "exec"`), and supervisord. Each round SIGKILLs
one worker of each set-up in turn (the order reversed every other round), and measures the time until Temporal lists
a new poller identity of that set-up on the queue (all partitions described, as pipelex-pool's readiness does),
then the replacement's own CPU-seconds at that moment (from its pid, the end of its identity) and what its
supervisor burnt meanwhile. The machine's load is read before each kill.

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
from dataclasses import dataclass, field
from pathlib import Path

from temporalio.client import Client

from pipelex_pool.control.client import ControlClient
from pipelex_pool.temporal.pollers import QueueType, queue_pollers
from scripts.bench.common import (
    cpu_s,
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

QUEUE = "llm_q"
SETTLE_S = 3.0  # READY for longer than min_uptime before the kill: a run, not a young death


@dataclass
class SetUp:
    name: str
    supervisor: subprocess.Popen[bytes]
    pid: Callable[[], int | None]  # the current llm worker's pid, None while there is none
    took: list[float] = field(default_factory=list)
    worker_cpu: list[float] = field(default_factory=list)
    supervisor_cpu: list[float] = field(default_factory=list)


def topology(directory: Path, port: int, name: str, spawner: str = "fork") -> Path:
    doc = shipped_topology(directory, port, name=name, replicas={"router": 1, "llm": 1, "media": 1})
    doc["pool"]["spawner"] = spawner
    return write_topology(doc, directory)


def pool(directory: Path, port: int, spawner: str) -> SetUp:
    directory.mkdir()
    supervisor = start_pool(topology(directory, port, spawner, spawner))
    control = ControlClient(directory / "ctl.sock")

    def pid() -> int | None:
        ready = ready_pids(control, "llm")
        return ready[0] if ready else None

    label = "pipelex-pool (fork server, default)" if spawner == "fork" else 'pipelex-pool (`spawner = "exec"`)'
    return SetUp(label, supervisor, pid)


def supervisord(directory: Path, port: int) -> SetUp:
    directory.mkdir()
    topo = topology(directory, port, "sd")
    worker = f"{sys.executable} -m pipelex_pool worker --config {topo}"
    supervisor, conf, ctl = start_supervisord(
        directory,
        f"""[program:llm]
command={worker} --task-queue llm_q --scope runner-llm --profile llm-pool
autorestart=true
startsecs=0
stopsignal=TERM
[program:router]
command={worker} --task-queue temporal_task_queue --scope orchestrator
[program:media]
command={worker} --task-queue media_q --scope runner-media
""",
    )

    def pid() -> int | None:
        out = subprocess.run([ctl, "-c", str(conf), "pid", "llm"], capture_output=True, text=True).stdout.strip()
        return int(out) if out.isdigit() and out != "0" else None

    return SetUp("supervisord", supervisor, pid)


async def kill_and_wait(
    client: Client, current_pid: Callable[[], int | None], prefix: str = "", on_kill: Callable[[], object] = int
) -> tuple[float, str]:
    """Kill the worker once it has run SETTLE_S (calling `on_kill` just before); (seconds until Temporal lists a new
    poller identity starting with `prefix` on the queue, that identity)."""
    pid = None
    while pid is None:
        pid = current_pid()
        await asyncio.sleep(0.1)
    await asyncio.sleep(SETTLE_S)
    known = set(await queue_pollers(client, QUEUE, QueueType.ACTIVITY))
    on_kill()
    os.kill(pid, signal.SIGKILL)
    killed = time.perf_counter()
    while True:
        new = [i for i in await queue_pollers(client, QUEUE, QueueType.ACTIVITY) if i not in known]
        new = [i for i in new if i.startswith(prefix)]
        if new:
            return time.perf_counter() - killed, new[0]
        await asyncio.sleep(0.02)


async def one_kill(client: Client, setup: SetUp, prefix: str) -> None:
    """Kill the set-up's llm worker; its replacement's time to poll, CPU-s by then, and its supervisor's CPU-s."""
    before: list[float] = []
    took, identity = await kill_and_wait(
        client, setup.pid, prefix, lambda: before.append(supervisor_cpu_s(setup.supervisor.pid))
    )
    setup.took.append(took)
    setup.worker_cpu.append(cpu_s(int(identity.rpartition(":")[2])))
    setup.supervisor_cpu.append(supervisor_cpu_s(setup.supervisor.pid) - before[0])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--write", type=Path, help="Append the result to this Markdown file.")
    args = parser.parse_args()
    loads: list[float] = []
    async with dev_server() as (client, port, directory):
        setups = {"fork/": pool(directory / "fork", port, "fork"), "exec/": pool(directory / "exec", port, "exec"),
                  "sd/": supervisord(directory / "sd", port)}  # fmt: skip
        try:
            for _, (prefix, setup) in interleaved(args.rounds, list(setups.items())):
                loads.append(os.getloadavg()[0])
                await one_kill(client, setup, prefix)
                print(setup.name, f"{setup.took[-1]:.2f} s", flush=True)
        finally:
            for setup in setups.values():
                stop_group(setup.supervisor)
    fork, sd = setups["fork/"], setups["sd/"]
    rows = "".join(
        f"| {s.name} | {spread(s.took)} | {spread(s.worker_cpu, 3)} | {spread(s.supervisor_cpu, 3)} |\n"
        for s in setups.values()
    )
    text = (
        f"{args.rounds} interleaved rounds, load {min(loads):.1f}-{max(loads):.1f}; median (p90, min-max).\n\n"
        "| supervisor | kill -> replacement polling (s) | the replacement's CPU-s by then | its supervisor's CPU-s |\n"
        f"| --- | --- | --- | --- |\n{rows}\n"
        f"supervisord / pipelex-pool (median): **{statistics.median(sd.took) / statistics.median(fork.took):.2f}x**\n"
    )
    write_result(args.write, text)
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown after using the Temporal client (see pipelex_pool.cli)


if __name__ == "__main__":
    asyncio.run(main())
