"""Benchmark: a heavy application, preloaded by the fork server or not, against supervisord, interleaved.

The app is `pipelex_pool.sim.heavy:packs`: the simulated packs behind an import that builds ~100 MB of Python
objects and burns ~1 s of CPU (a load model of a real Pipelex app's import, not real work). Set-ups: pipelex-pool
with `[pool] preload = true` (the fork server imports the app once, workers share it copy-on-write), pipelex-pool
with the shipped `preload = false` (each worker imports it), and supervisord running the same workers, side by side
against one local Temporal dev server, each in a namespace of its own. Measured: each llm worker's USS (memory only
it holds) and PSS, with 4 llm replicas; then rounds in which each set-up in turn (the order reversed every other
round) has an llm replica SIGKILLed, timed until its replacement polls (as restart_latency does), with the
replacement's CPU-seconds by then and its supervisor's, and the machine's load.

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
    interleaved,
    ready_pids,
    shipped_topology,
    spread,
    start_pool,
    start_supervisord,
    stop_group,
    supervisord_programs,
    write_result,
    write_topology,
)
from scripts.bench.footprint import memory, wait_polling
from scripts.bench.restart_latency import SetUp, one_kill

APP = "pipelex_pool.sim.heavy:packs"
LLM = 4
NAMES = ("on", "off", "sd")  # each set-up's pool name, namespace and directory


def per_worker(pids: list[int]) -> str:
    total = memory(pids)
    return f"{total['uss'] / len(pids) / 2**20:.0f} / {total['pss'] / len(pids) / 2**20:.0f}"


def under_pool(directory: Path, port: int, name: str, preload: bool) -> tuple[SetUp, ControlClient]:
    doc = shipped_topology(directory, port, name=name, replicas={"router": 1, "llm": LLM, "media": 0}, namespace=name)
    doc["pool"]["app"] = APP
    doc["pool"]["preload"] = preload
    sup = start_pool(write_topology(doc, directory))
    control = ControlClient(directory / "ctl.sock")

    def pid() -> int | None:
        ready = ready_pids(control, "llm")
        return ready[0] if ready else None

    label = "pipelex-pool, `preload = true`" if preload else "pipelex-pool, `preload = false` (shipped default)"
    return SetUp(label, sup, pid), control


def llm_workers(sup: psutil.Process) -> list[int]:
    return [p.pid for p in sup.children() if "llm_q" in " ".join(p.cmdline())]


def under_supervisord(directory: Path, port: int) -> SetUp:
    doc = shipped_topology(directory, port, name="sd", namespace="sd")
    doc["pool"]["app"] = APP
    topology = write_topology(doc, directory)
    sup, _, _ = start_supervisord(directory, supervisord_programs(topology, {"router": 1, "llm": LLM}))

    def pid() -> int | None:
        alive = llm_workers(psutil.Process(sup.pid))
        return alive[0] if len(alive) == LLM else None

    return SetUp("supervisord", sup, pid)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--write", type=Path, help="Append the result to this Markdown file.")
    args = parser.parse_args()
    loads: list[float] = []
    memories: dict[str, str] = {}
    async with dev_server(NAMES) as (_, port, directory):
        for name in NAMES:
            (directory / name).mkdir()
        setups: dict[str, SetUp] = {}
        try:
            setups["on"], on_control = under_pool(directory / "on", port, "on", preload=True)
            setups["off"], off_control = under_pool(directory / "off", port, "off", preload=False)
            setups["sd"] = under_supervisord(directory / "sd", port)
            clients = {name: await Client.connect(f"127.0.0.1:{port}", namespace=name) for name in NAMES}
            for name in NAMES:
                await wait_polling(clients[name], f"{name}/", 1 + LLM)
            await asyncio.sleep(3.0)
            memories["on"] = per_worker(ready_pids(on_control, "llm"))
            memories["off"] = per_worker(ready_pids(off_control, "llm"))
            memories["sd"] = per_worker(llm_workers(psutil.Process(setups["sd"].supervisor.pid)))
            for _, name in interleaved(args.rounds, NAMES):
                loads.append(os.getloadavg()[0])
                await one_kill(clients[name], setups[name], f"{name}/")
                print(setups[name].name, f"{setups[name].took[-1]:.2f} s", flush=True)
        finally:
            for setup in setups.values():
                stop_group(setup.supervisor)
    rows = "".join(
        f"| {setups[name].name} | {spread(setups[name].took)} | {spread(setups[name].worker_cpu, 3)} "
        f"| {spread(setups[name].supervisor_cpu, 3)} | {memories[name]} |\n"
        for name in NAMES
    )
    ratio = statistics.median(setups["off"].took) / statistics.median(setups["on"].took)
    text = (
        f"App `{APP}` (an import of ~100 MB of objects and ~1 s of CPU), {LLM} llm replicas; {args.rounds} "
        f"interleaved rounds, load {min(loads):.1f}-{max(loads):.1f}; median (p90, min-max).\n\n"
        "| set-up | SIGKILL -> replacement polling (s) | the replacement's CPU-s by then | its supervisor's CPU-s "
        "| per llm worker USS / PSS (MiB) |\n"
        f"| --- | --- | --- | --- | --- |\n{rows}\n"
        f"restart, preload off / on (median): **{ratio:.1f}x**\n"
    )
    write_result(args.write, text)
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown after using the Temporal client (see pipelex_pool.cli)


if __name__ == "__main__":
    asyncio.run(main())
