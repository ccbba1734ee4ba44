"""Benchmark: a chaos run. A random runner replica is SIGKILLed every 1-3 s for a while; how long after the last
kill is the pool back at full strength, and did anything give up? pipelex-pool (shipped defaults: a replica that
had been READY for min_uptime restarts at once and never counts toward FATAL) against supervisord
(autorestart=true, startsecs=1), in the same run, against one local Temporal dev server.

Full strength: every runner slot has a live process that Temporal lists among its queue's pollers (the identity
holds the pid). The runners are the shipped topology's llm (4 replicas here) and media (2) groups.

    python3 -m venv .venv && .venv/bin/pip install -e ".[test]" supervisor
    .venv/bin/python -m scripts.bench.chaos --seconds 120 --write BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import sys
import time
import xmlrpc.client
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supervisor.xmlrpc import SupervisorTransport
from temporalio.client import Client

from pipelex_pool.control.client import ControlClient
from pipelex_pool.temporal.pollers import QueueType, queue_pollers
from scripts.bench.common import (
    dev_server,
    shipped_topology,
    start_pool,
    start_supervisord,
    stop_group,
    supervisord_programs,
    write_result,
    write_topology,
)

RUNNERS = {"llm": 4, "media": 2}
QUEUES = ("llm_q", "media_q")


@dataclass
class Outcome:
    kills: int
    back_after_s: float | None  # None: not back at full strength within the wait
    gave_up: list[str]  # replicas the supervisor gave up on (FATAL)


async def polling_pids(client: Client) -> set[int]:
    pids = set()
    for queue in QUEUES:
        for identity in await queue_pollers(client, queue, QueueType.ACTIVITY):
            tail = identity.rpartition(":")[2]
            if tail.isdigit():
                pids.add(int(tail))
    return pids


async def chaos(
    client: Client, runner_pids: Callable[[], dict[str, int | None]], seconds: float, seed: int
) -> tuple[int, float | None]:
    """Kill random runners for `seconds`; returns (kills, seconds from the last kill until full strength)."""
    rng = random.Random(seed)
    killed: set[int] = set()

    async def full_strength() -> bool:
        pids = runner_pids()
        if not all(pids.values()) or killed & set(pids.values()):  # a slot empty, or a death not noticed yet
            return False
        return {p for p in pids.values() if p} <= await polling_pids(client)

    while not await full_strength():
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
        if await full_strength():
            return kills, time.perf_counter() - last_kill
        await asyncio.sleep(0.05)
    return kills, None


async def bench_pool(client: Client, directory: Path, port: int, seconds: float, seed: int) -> Outcome:
    doc = shipped_topology(directory, port, name="chaos-pool", replicas={"router": 1, **RUNNERS})
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

    try:
        kills, back = await chaos(client, runner_pids, seconds, seed)
        fatal = [f"{r['group']}/{r['replica']}" for r in replicas() if r["state"] == "FATAL"]
        return Outcome(kills, back, fatal)
    finally:
        stop_group(sup)


async def bench_supervisord(client: Client, directory: Path, port: int, seconds: float, seed: int) -> Outcome:
    topology = write_topology(shipped_topology(directory, port, name="chaos-sd"), directory)
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

    try:
        kills, back = await chaos(client, runner_pids, seconds, seed)
        fatal = [str(p["name"]) for p in processes() if p["statename"] == "FATAL"]
        return Outcome(kills, back, fatal)
    finally:
        stop_group(sup)


def row(name: str, outcome: Outcome) -> str:
    back = f"{outcome.back_after_s:.2f} s" if outcome.back_after_s is not None else "not within 60 s"
    return f"| {name} | {outcome.kills} | {back} | {', '.join(outcome.gave_up) or 'none'} |"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="How long to keep killing runners.")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--write", type=Path, help="Append the result to this Markdown file.")
    args = parser.parse_args()
    async with dev_server() as (client, port, directory):
        (directory / "pool").mkdir()
        (directory / "sd").mkdir()
        pool = await bench_pool(client, directory / "pool", port, args.seconds, args.seed)
        print("pipelex-pool", pool, flush=True)
        sd = await bench_supervisord(client, directory / "sd", port, args.seconds, args.seed)
        print("supervisord", sd, flush=True)
    text = (
        f"A random runner (of {sum(RUNNERS.values())}: llm x{RUNNERS['llm']}, media x{RUNNERS['media']}) SIGKILLed "
        f"every 1-3 s for {args.seconds:g} s (seed {args.seed}).\n\n"
        "| supervisor | kills | last kill -> every runner polling again | gave up on (FATAL) |\n"
        "| --- | --- | --- | --- |\n"
        f"{row('pipelex-pool (shipped defaults)', pool)}\n{row('supervisord (startsecs=1)', sd)}\n"
    )
    write_result(args.write, text)
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown after using the Temporal client (see pipelex_pool.cli)


if __name__ == "__main__":
    asyncio.run(main())
