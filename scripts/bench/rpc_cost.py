"""Benchmark: what one Temporal RPC costs the process that sends it, alone or with others in one wave.

An idle supervisor's CPU is mostly its questions to Temporal (the health check, the queue watch) and the wake-ups
their answers cause. This measures, in this process, a temporalio client's CPU (the Python thread and the SDK's
tokio threads apart, from /proc/self/task/*/schedstat) while it sends `GetSystemInfo` at a given rate, one at a
time or several side by side (their answers come back together), to a local Temporal dev server; the rates are
interleaved round by round. The baseline (no RPC, the same once-a-second sleep) is subtracted per round.

    python3 -m venv .venv && .venv/bin/pip install -e ".[test]"
    .venv/bin/python -m scripts.bench.rpc_cost --rounds 3 --window 20 --write BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.client import Client

from scripts.bench.common import dev_server, interleaved, spread, write_result

# (RPCs a second, how many side by side): 0 is the baseline
SETUPS = [(0, 1), (1, 1), (4, 1), (4, 4), (8, 8)]


def thread_cpu() -> tuple[float, float]:
    """CPU-seconds of this process's Python threads and of its tokio threads."""
    python = tokio = 0.0
    for tid in os.listdir("/proc/self/task"):
        try:
            name = Path(f"/proc/self/task/{tid}/comm").read_text().strip()
            ran = int(Path(f"/proc/self/task/{tid}/schedstat").read_text().split()[0]) / 1e9
        except OSError:  # (a thread that ended meanwhile)
            continue
        if name.startswith("tokio"):
            tokio += ran
        else:
            python += ran
    return python, tokio


async def window(client: Client, rate: int, together: int, seconds: float) -> tuple[float, float]:
    """(Python, tokio) CPU-seconds per second over `seconds` at `rate` RPCs a second, `together` at a time."""
    python, tokio = thread_cpu()
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if rate:
            request = GetSystemInfoRequest()
            await asyncio.gather(*(client.workflow_service.get_system_info(request) for _ in range(together)))
        await asyncio.sleep(together / rate if rate else 1.0)
    elapsed = time.monotonic() - started
    python_after, tokio_after = thread_cpu()
    return (python_after - python) / elapsed, (tokio_after - tokio) / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window", type=float, default=20.0)
    parser.add_argument("--write", type=Path, help="Append the result to this Markdown file.")
    args = parser.parse_args()
    per_rpc: dict[tuple[int, int], list[float]] = {s: [] for s in SETUPS[1:]}
    python_share: dict[tuple[int, int], list[float]] = {s: [] for s in SETUPS[1:]}
    async with dev_server() as (_client, port, _directory):
        client = await Client.connect(f"127.0.0.1:{port}")
        await client.workflow_service.get_system_info(GetSystemInfoRequest())  # (connected, warm)
        baseline: dict[int, tuple[float, float]] = {}
        for n, (rate, together) in interleaved(args.rounds, SETUPS):
            python, tokio = await window(client, rate, together, args.window)
            if rate == 0:
                baseline[n] = (python, tokio)
                continue
            base = baseline[n] if n in baseline else baseline[n - 1]  # (odd rounds run it last: the previous one's)
            extra_python, extra_tokio = python - base[0], tokio - base[1]
            per_rpc[(rate, together)].append(1e3 * (extra_python + extra_tokio) / rate)
            python_share[(rate, together)].append(1e3 * extra_python / rate)
    load = os.getloadavg()[0]
    text = (
        f"CPU per `GetSystemInfo` RPC, Python and tokio threads of the sending process, baseline subtracted "
        f"({args.rounds} interleaved round(s) of {args.window:.0f} s, load {load:.1f}; median (p90, min-max)):\n\n"
        "| RPCs a second | side by side | CPU per RPC, all threads (ms) | of which the Python thread (ms) |\n"
        "| --- | --- | --- | --- |\n"
    )
    for rate, together in SETUPS[1:]:
        text += (
            f"| {rate} | {together} | {spread(per_rpc[(rate, together)])} | "
            f"{spread(python_share[(rate, together)])} |\n"
        )
    write_result(args.write, text)
    sys.stdout.flush()
    os._exit(0)  # (the SDK's runtime threads need no orderly end)


if __name__ == "__main__":
    asyncio.run(main())
