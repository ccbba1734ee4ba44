"""Benchmark: how fast a paused group takes work again (`resume`), against bringing it back by a restart.

One pool (the shipped topology's defaults, one llm replica) on a local Temporal dev server. Rounds interleave:
- resume: `pause llm` (waited until the replica reports PAUSED), then `resume llm`, timed until Temporal lists the
  replica's identity polling llm_q again (a poll newer than the command; all partitions described);
- restart: `restart llm` (the rolling restart a user would otherwise do, a new process), timed until Temporal lists
  a poller identity it had never listed.
The supervisor's and the replicas' CPU-seconds over each kind of round are reported beside the times.

    python -m venv .venv && .venv/bin/pip install -e ".[test]"
    .venv/bin/python -m scripts.bench.pause_resume --rounds 10 --write BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from temporalio.client import Client

from pipelex_pool.control.client import ControlClient
from pipelex_pool.temporal.pollers import QueueType, queue_pollers
from scripts.bench.common import (
    cpus,
    dev_server,
    interleaved,
    ready_pids,
    shipped_topology,
    spread,
    start_pool,
    stop_group,
    write_result,
)

QUEUE = "llm_q"


def llm_row(control: ControlClient) -> dict[str, object] | None:
    rows = [r for r in control.call("status")["replicas"] if r["group"] == "llm" and r["role"] == "replica"]
    return rows[0] if rows else None


async def until(predicate, what: str, within: float = 120.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within
    while not await predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {within:.0f}s")
        await asyncio.sleep(0.01)


async def resume_round(client: Client, control: ControlClient) -> tuple[float, float]:
    control.call("pause", {"group": "llm"})

    async def paused() -> bool:
        row = llm_row(control)
        return row is not None and row.get("pause") == "paused"

    await until(paused, "PAUSED replica")
    row = llm_row(control)
    assert row is not None
    identity, pid = str(row["identity"]), int(str(row["pid"]))
    cpu_before, sent = cpus([pid]), datetime.now(UTC)
    started = time.perf_counter()
    control.call("resume", {"group": "llm"})

    async def polling_again() -> bool:
        poller = (await queue_pollers(client, QUEUE, QueueType.ACTIVITY)).get(identity)
        return poller is not None and poller.last_access > sent

    await until(polling_again, "poll after resume")
    return time.perf_counter() - started, cpus([pid]) - cpu_before


async def restart_round(client: Client, control: ControlClient) -> tuple[float, float]:
    known = set(await queue_pollers(client, QUEUE, QueueType.ACTIVITY))
    started = time.perf_counter()
    control.call("restart", {"groups": ["llm"]})

    async def new_poller() -> bool:
        return bool(set(await queue_pollers(client, QUEUE, QueueType.ACTIVITY)) - known)

    await until(new_poller, "new poller after restart")
    elapsed = time.perf_counter() - started
    await until(lambda: _settled(control), "restart settled")
    return elapsed, cpus(ready_pids(control, "llm"))  # the new process's CPU since its start


async def _settled(control: ControlClient) -> bool:
    status = control.call("status")
    return not status["pool"]["busy"] and len(ready_pids(control, "llm")) == 1


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--write", type=Path, help="Append the result to this Markdown file.")
    args = parser.parse_args()
    async with dev_server() as (client, port, directory):
        doc = shipped_topology(directory, port, replicas={"router": 1, "llm": 1, "media": 1})
        (directory / "topology.toml").write_text(__import__("tomlkit").dumps(doc))
        sup = start_pool(directory / "topology.toml")
        control = ControlClient(directory / "ctl.sock")
        try:
            await until(lambda: _ready(control), "pool READY")
            rounds = {"resume": resume_round, "restart": restart_round}
            took: dict[str, list[float]] = {kind: [] for kind in rounds}
            cpu: dict[str, list[float]] = {kind: [] for kind in rounds}
            loads: list[float] = []
            for _, kind in interleaved(args.rounds, list(rounds)):
                loads.append(os.getloadavg()[0])
                seconds, burnt = await rounds[kind](client, control)
                took[kind].append(seconds)
                cpu[kind].append(burnt)
        finally:
            stop_group(sup)
    ratio = statistics.median(took["restart"]) / statistics.median(took["resume"])
    text = (
        f"{args.rounds} interleaved rounds, load {min(loads):.1f}-{max(loads):.1f}; median (p90, min-max).\n\n"
        "| llm back to polling | time (s) | CPU-s of the replica (to polling; the new process's since its start) |\n"
        "| --- | --- | --- |\n"
        f"| `resume llm` (same process) | {spread(took['resume'])} | {spread(cpu['resume'], 3)} |\n"
        f"| `restart llm` (a new process) | {spread(took['restart'])} | {spread(cpu['restart'], 3)} |\n\n"
        f"restart / resume (median): **{ratio:.1f}x**\n"
    )
    write_result(args.write, text)
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown after using the Temporal client (see pipelex_pool.cli)


async def _ready(control: ControlClient) -> bool:
    try:
        return len(ready_pids(control)) == 3
    except Exception:
        return False


if __name__ == "__main__":
    asyncio.run(main())
