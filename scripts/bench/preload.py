"""Benchmark: a heavy application, preloaded by the fork server or not, against supervisord, same run.

The app is `pipelex_pool.sim.heavy:packs`: the simulated packs behind an import that builds ~100 MB of Python
objects and burns ~1 s of CPU (a load model of a real Pipelex app's import, not real work). Set-ups: pipelex-pool
with `[pool] preload = true` (the fork server imports the app once, workers share it copy-on-write), pipelex-pool
with the shipped `preload = false` (each worker imports it), and supervisord running the same workers. Measured:
SIGKILL of an llm replica -> its replacement polling (as restart_latency does), and each llm worker's USS (memory
only it holds) and PSS, with 4 llm replicas.

    python3 -m venv .venv && .venv/bin/pip install -e ".[test]" supervisor
    .venv/bin/python -m scripts.bench.preload --rounds 5 --write BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
from pathlib import Path

import psutil
from temporalio.client import Client

from pipelex_pool.control.client import ControlClient
from scripts.bench.common import (
    dev_server,
    ready_pids,
    shipped_topology,
    start_pool,
    start_supervisord,
    stop_group,
    summary,
    supervisord_programs,
    write_result,
    write_topology,
)
from scripts.bench.footprint import memory, wait_polling
from scripts.bench.restart_latency import measure

APP = "pipelex_pool.sim.heavy:packs"
LLM = 4


def per_worker(pids: list[int]) -> str:
    total = memory(pids)
    return f"{total['uss'] / len(pids) / 2**20:.0f} / {total['pss'] / len(pids) / 2**20:.0f}"


async def under_pool(client: Client, directory: Path, port: int, rounds: int, preload: bool) -> tuple[list[float], str]:
    name = f"preload-{'on' if preload else 'off'}"
    doc = shipped_topology(directory, port, name=name, replicas={"router": 1, "llm": LLM, "media": 0})
    doc["pool"]["app"] = APP
    doc["pool"]["preload"] = preload
    sup = start_pool(write_topology(doc, directory))
    control = ControlClient(directory / "ctl.sock")
    try:
        await wait_polling(client, f"{name}/", 1 + LLM)
        await asyncio.sleep(3.0)
        mem = per_worker(ready_pids(control, "llm"))

        def pid() -> int | None:
            ready = ready_pids(control, "llm")
            return ready[0] if ready else None

        return await measure(client, pid, rounds), mem
    finally:
        stop_group(sup)


async def under_supervisord(client: Client, directory: Path, port: int, rounds: int) -> tuple[list[float], str]:
    name = "preload-sd"
    doc = shipped_topology(directory, port, name=name)
    doc["pool"]["app"] = APP
    topology = write_topology(doc, directory)
    sup, _, _ = start_supervisord(directory, supervisord_programs(topology, {"router": 1, "llm": LLM}))
    try:
        await wait_polling(client, f"{name}/", 1 + LLM)
        await asyncio.sleep(3.0)
        llm = [p.pid for p in psutil.Process(sup.pid).children() if "llm_q" in " ".join(p.cmdline())]
        mem = per_worker(llm)

        def pid() -> int | None:
            alive = [p.pid for p in psutil.Process(sup.pid).children() if "llm_q" in " ".join(p.cmdline())]
            return alive[0] if len(alive) == LLM else None

        return await measure(client, pid, rounds), mem
    finally:
        stop_group(sup)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--write", type=Path, help="Append the result to this Markdown file.")
    args = parser.parse_args()
    async with dev_server() as (client, port, directory):
        for name in ("on", "off", "sd"):
            (directory / name).mkdir()
        on = await under_pool(client, directory / "on", port, args.rounds, preload=True)
        print("preload on", on, flush=True)
        off = await under_pool(client, directory / "off", port, args.rounds, preload=False)
        print("preload off", off, flush=True)
        sd = await under_supervisord(client, directory / "sd", port, args.rounds)
        print("supervisord", sd, flush=True)
    text = (
        f"App `{APP}` (an import of ~100 MB of objects and ~1 s of CPU), {LLM} llm replicas.\n\n"
        f"| set-up | SIGKILL -> replacement polling ({args.rounds} rounds) | per llm worker USS / PSS (MiB) |\n"
        "| --- | --- | --- |\n"
        f"| pipelex-pool, `preload = true` | {summary(on[0])} | {on[1]} |\n"
        f"| pipelex-pool, `preload = false` (shipped default) | {summary(off[0])} | {off[1]} |\n"
        f"| supervisord | {summary(sd[0])} | {sd[1]} |\n\n"
        f"restart, preload off / on (median): **{statistics.median(off[0]) / statistics.median(on[0]):.1f}x**\n"
    )
    write_result(args.write, text)
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown after using the Temporal client (see pipelex_pool.cli)


if __name__ == "__main__":
    asyncio.run(main())
