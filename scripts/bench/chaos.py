"""Benchmark: a chaos run. A random runner replica is SIGKILLed every 1-3 s for a while; how long after the last
kill is the pool back at full strength, and did anything give up? pipelex-pool (shipped defaults: a replica that
had been READY for min_uptime restarts at once and never counts toward FATAL) against supervisord
(autorestart=true, startsecs=1), side by side against one local Temporal dev server (each in a namespace of its
own), interleaved: each round is a burst of kills on one set-up, then on the other (the order reversed every other
round, the same seed for both), with the machine's load and the CPU-seconds the supervisor burnt in the burst.

Full strength: every runner slot has a live process that Temporal lists among its queue's pollers (the identity
holds the pid). The runners are the shipped topology's llm (4 replicas here) and media (2) groups.

    python3 -m venv .venv && .venv/bin/pip install -e ".[test]" supervisor
    .venv/bin/python -m scripts.bench.chaos --rounds 4 --seconds 30 --write BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from supervisor.xmlrpc import SupervisorTransport
from temporalio.client import Client

from pipelex_pool.control.client import ControlClient
from pipelex_pool.temporal.pollers import QueueType, queue_pollers
from scripts.bench.common import (
    dev_server,
    interleaved,
    shipped_topology,
    spread,
    start_pool,
    start_supervisord,
    stop_group,
    supervisor_cpu_s,
    supervisord_programs,
    write_result,
    write_topology,
)

RUNNERS = {"llm": 4, "media": 2}
QUEUES = ("llm_q", "media_q")


@dataclass
class SetUp:
    name: str
    supervisor: subprocess.Popen[bytes]
    client: Client  # on the set-up's own namespace
    runner_pids: Callable[[], dict[str, int | None]]
    fatal: Callable[[], list[str]]  # the replicas the supervisor gives up on (FATAL) now
    kills: list[int] = field(default_factory=list)
    back_after_s: list[float | None] = field(default_factory=list)  # None: not back at full strength within 60 s
    cpu: list[float] = field(default_factory=list)  # the supervisor's CPU-s in each burst, until full strength
    gave_up: list[str] = field(default_factory=list)  # FATAL after the last burst


async def polling_pids(client: Client) -> set[int]:
    pids = set()
    for queue in QUEUES:
        for identity in await queue_pollers(client, queue, QueueType.ACTIVITY):
            tail = identity.rpartition(":")[2]
            if tail.isdigit():
                pids.add(int(tail))
    return pids


async def full_strength(
    client: Client, runner_pids: Callable[[], dict[str, int | None]], killed: set[int] | None = None
) -> bool:
    """Every runner slot has a live process (none of `killed`) that Temporal lists among its queue's pollers."""
    pids = runner_pids()
    if not all(pids.values()) or (killed or set()) & set(pids.values()):  # a slot empty, or a death not noticed yet
        return False
    return {p for p in pids.values() if p} <= await polling_pids(client)


async def chaos(
    client: Client, runner_pids: Callable[[], dict[str, int | None]], seconds: float, seed: int
) -> tuple[int, float | None]:
    """Kill random runners for `seconds`; returns (kills, seconds from the last kill until full strength)."""
    rng = random.Random(seed)
    killed: set[int] = set()
    while not await full_strength(client, runner_pids):
        await asyncio.sleep(0.2)
    kills, last_kill, end = 0, time.perf_counter(), time.perf_counter() + seconds
    while True:
        alive = [pid for pid in runner_pids().values() if pid and pid not in killed]
        if alive:
            victim = rng.choice(alive)
            try:
                os.kill(victim, signal.SIGKILL)
            except ProcessLookupError:
                pass
            killed.add(victim)
            kills += 1
            last_kill = time.perf_counter()
        pause = rng.uniform(1.0, 3.0)
        if time.perf_counter() + pause > end:
            break  # that was the last kill: measure from it
        await asyncio.sleep(pause)
    while time.perf_counter() < last_kill + 60.0:
        if await full_strength(client, runner_pids, killed):
            return kills, time.perf_counter() - last_kill
        await asyncio.sleep(0.05)
    return kills, None


async def pool_setup(directory: Path, port: int) -> SetUp:
    client = await Client.connect(f"127.0.0.1:{port}", namespace="pool")  # (first: nothing is left running if not)
    doc = shipped_topology(directory, port, name="pool", replicas={"router": 1, **RUNNERS}, namespace="pool")
    sup = start_pool(write_topology(doc, directory))
    control = ControlClient(directory / "ctl.sock")

    def replicas() -> list[dict[str, Any]]:
        try:
            return list(control.call("status")["replicas"])
        except Exception:
            return []

    def runner_pids() -> dict[str, int | None]:
        found = {f"{r['group']}/{r['replica']}": r["pid"] for r in replicas() if r["group"] in RUNNERS}
        return found if len(found) == sum(RUNNERS.values()) else {"pool": None}

    def fatal() -> list[str]:
        return [f"{r['group']}/{r['replica']}" for r in replicas() if r["state"] == "FATAL"]

    return SetUp("pipelex-pool (shipped defaults)", sup, client, runner_pids, fatal)


async def supervisord_setup(directory: Path, port: int) -> SetUp:
    client = await Client.connect(f"127.0.0.1:{port}", namespace="sd")
    topology = write_topology(shipped_topology(directory, port, name="sd", namespace="sd"), directory)
    sup, _, _ = start_supervisord(directory, supervisord_programs(topology, {"router": 1, **RUNNERS}))

    def processes() -> list[dict[str, Any]]:
        # a new transport per call: one that failed once (supervisord still starting) keeps failing
        transport = SupervisorTransport(None, None, f"unix://{directory}/supervisor.sock")
        proxy = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)
        try:
            return list(proxy.supervisor.getAllProcessInfo())  # type: ignore[arg-type]
        except Exception:
            return []

    def runner_pids() -> dict[str, int | None]:
        found = {str(p["name"]): int(p["pid"]) or None for p in processes() if p["group"] in RUNNERS}
        return found if len(found) == sum(RUNNERS.values()) else {"supervisord": None}

    def fatal() -> list[str]:
        return [str(p["name"]) for p in processes() if p["statename"] == "FATAL"]

    return SetUp("supervisord (startsecs=1)", sup, client, runner_pids, fatal)


def row(setup: SetUp) -> str:
    back = [b for b in setup.back_after_s if b is not None]
    late = len(setup.back_after_s) - len(back)
    shown = (spread(back) if back else "-") + (f"; {late} burst(s) not back within 60 s" if late else "")
    return (
        f"| {setup.name} | {sum(setup.kills)} | {shown} | {spread(setup.cpu)} | {', '.join(setup.gave_up) or 'none'} |"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4, help="Bursts per set-up, interleaved.")
    parser.add_argument("--seconds", type=float, default=30.0, help="How long each burst keeps killing runners.")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--write", type=Path, help="Append the result to this Markdown file.")
    args = parser.parse_args()
    loads: list[float] = []
    async with dev_server(("pool", "sd")) as (_, port, directory):
        (directory / "pool").mkdir()
        (directory / "sd").mkdir()
        setups: list[SetUp] = []
        try:
            setups.append(await pool_setup(directory / "pool", port))
            setups.append(await supervisord_setup(directory / "sd", port))
            for n, setup in interleaved(args.rounds, setups):
                while not await full_strength(setup.client, setup.runner_pids):  # (its start not counted)
                    await asyncio.sleep(0.2)
                loads.append(os.getloadavg()[0])
                before = supervisor_cpu_s(setup.supervisor.pid)
                kills, back = await chaos(setup.client, setup.runner_pids, args.seconds, args.seed + n)
                setup.cpu.append(supervisor_cpu_s(setup.supervisor.pid) - before)
                setup.kills.append(kills)
                setup.back_after_s.append(back)
                print(setup.name, kills, back, flush=True)
            for setup in setups:
                setup.gave_up = setup.fatal()
        finally:
            for setup in setups:
                stop_group(setup.supervisor)
    text = (
        f"{args.rounds} interleaved bursts per set-up: a random runner (of {sum(RUNNERS.values())}: llm "
        f"x{RUNNERS['llm']}, media x{RUNNERS['media']}) SIGKILLed every 1-3 s for {args.seconds:g} s (seeds "
        f"{args.seed}-{args.seed + args.rounds - 1}, the same for both), load {min(loads):.1f}-{max(loads):.1f}; "
        "median (p90, min-max).\n\n"
        "| supervisor | kills | last kill -> every runner polling again (s) | the supervisor's CPU-s per burst "
        "| gave up on (FATAL) |\n"
        "| --- | --- | --- | --- | --- |\n" + "".join(row(setup) + "\n" for setup in setups)
    )
    write_result(args.write, text)
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown after using the Temporal client (see pipelex_pool.cli)


if __name__ == "__main__":
    asyncio.run(main())
