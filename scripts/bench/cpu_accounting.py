"""Benchmark check: what reading a process's CPU from /proc/PID/stat loses against the kernel's nanosecond counter.

/proc/PID/stat gives utime and stime in clock ticks (10 ms), each truncated: a process that ran 25 ms reads 20 ms
on average. Over the 64 new workers of a cold start that is most of a core-second the tick-based figure does not
see, and that a comparison with the whole machine's /proc/stat then finds "unattributed". This starts pipelex-pool
with the shipped topology at 64 replicas (as scripts.bench.cold_start does), and once Temporal lists them all reads
every process of its tree both ways: the ticks (user + system) and the process's CPU clock (scripts.bench.common's
cpu_s), a few starts one after the other on one dev server.

    python3 -m venv .venv && .venv/bin/pip install -e ".[test]"
    .venv/bin/python -m scripts.bench.cpu_accounting --starts 3 [--write FILE]
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import psutil
from temporalio.client import Client

from scripts.bench.cold_start import SIZES, pool
from scripts.bench.common import cpu_s, dev_server, stop_group, write_result
from scripts.bench.footprint import wait_polling

REPLICAS = 64


def both_ways(pid: int) -> tuple[int, float, float]:
    """(processes, CPU-s from their ticks, CPU-s from their CPU clocks) of `pid` and its descendants alive now."""
    root = psutil.Process(pid)
    processes, ticks, precise = 0, 0.0, 0.0
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        processes += 1
        ticks += times.user + times.system
        precise += cpu_s(process.pid)
    return processes, ticks, precise


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--write", type=Path, help="Append the result to this Markdown file.")
    args = parser.parse_args()
    tags = tuple(f"acct{n}" for n in range(args.starts))
    text = (
        f"pipelex-pool, shipped topology, {REPLICAS} replicas, read once Temporal lists them all; one dev server, "
        "starts one after the other (the first on a fresh server).\n\n"
        "| start | processes | CPU-s from /proc/PID/stat ticks | CPU-s from the CPU clock | lost to the ticks |\n"
        "| --- | --- | --- | --- | --- |\n"
    )
    async with dev_server(tags) as (_, port, directory):
        for n, tag in enumerate(tags):
            (directory / tag).mkdir()
            client = await Client.connect(f"127.0.0.1:{port}", namespace=tag)
            process = pool(directory / tag, port, SIZES[REPLICAS], tag)
            try:
                await wait_polling(client, f"{tag}/", REPLICAS, replicas=SIZES[REPLICAS])
                count, ticks, precise = both_ways(process.pid)
            finally:
                stop_group(process)
            text += f"| {n + 1} | {count} | {ticks:.2f} | {precise:.2f} | {precise - ticks:.2f} |\n"
            print(text.splitlines()[-1], flush=True)
            await asyncio.sleep(3.0)
    write_result(args.write, text)


if __name__ == "__main__":
    asyncio.run(main())
