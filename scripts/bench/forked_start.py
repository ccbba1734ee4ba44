"""Benchmark: what a forked worker start costs, from fork to READY (Temporal lists it polling), in the child's own
CPU-seconds, and where they go.

It does what the fork server does (imports temporalio and the built-in worker once, then forks), and in each child
runs the worker as the fork server would (`worker/entry.py`) on the shipped topology's llm group, against a local
Temporal dev server. The parent reads the child's CPU time (its CPU clock, nanoseconds) when the child says READY=1 over
its notify socket: the worker says so once Temporal lists it among the queue's pollers, so the figure holds
everything a replacement burns before it serves. With `--profile`, each child runs under cProfile and the merged
profile's heaviest functions are printed (cumulative CPU, profile overhead included: compare rows, not totals).

    .venv/bin/python -m scripts.bench.forked_start --rounds 10 [--profile] [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from scripts.bench.common import cpu_s, dev_server, shipped_topology, write_result, write_topology

ARGS = ["--task-queue", "llm_q", "--scope", "runner-llm", "--profile", "llm-pool"]


def child(topology: Path, notify: Path, profile: Path | None) -> None:
    """In the forked child: be the worker, as the fork server's child is. Never returns."""
    os.environ["NOTIFY_SOCKET"] = str(notify)
    from pipelex_pool.worker import entry

    if profile is not None:
        profiler = cProfile.Profile()
        leave = getattr(entry, "exit_skipping_finalization")  # noqa: B009

        def dump_and_exit(code: int) -> None:
            profiler.disable()
            profiler.dump_stats(profile)
            leave(code)

        setattr(entry, "exit_skipping_finalization", dump_and_exit)  # noqa: B010
        profiler.enable()
    try:
        entry.run(["--config", str(topology), *ARGS])
    finally:
        os._exit(1)


def one_start(directory: Path, topology: Path, n: int, profile: bool) -> tuple[float, float, Path | None]:
    """Fork a worker, wait for its READY=1; (seconds to READY, its CPU-s then, its profile). It is then stopped."""
    notify = directory / f"notify-{n}.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    sock.settimeout(60)
    stats = directory / f"profile-{n}.prof" if profile else None
    forked = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        sock.close()
        child(topology, notify, stats)
    try:
        while True:
            fields = dict(line.split("=", 1) for line in sock.recv(65536).decode().splitlines() if "=" in line)
            if fields.get("READY") == "1":
                return time.perf_counter() - forked, cpu_s(pid), stats
    finally:
        os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)
        sock.close()


def forker(topology: Path, rounds: int, profile: bool) -> None:
    """The fork server's part, in a process of its own (no Temporal client may exist where one forks): import what
    it imports, then fork the workers one after the other; prints one JSON line per start."""
    from pipelex_pool.supervisor.spawning.fork_server import preload

    preload(None)
    for n in range(rounds):
        wall, cpu, stats = one_start(topology.parent, topology, n, profile)
        print(json.dumps({"wall": wall, "cpu": cpu, "profile": str(stats) if stats else None}), flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--profile", action="store_true", help="Profile each child; print where the CPU went.")
    parser.add_argument("--write", type=Path, help="Append the result to this Markdown file.")
    parser.add_argument("--forker", type=Path, help=argparse.SUPPRESS)  # (the forking process: a topology)
    args = parser.parse_args()
    if args.forker is not None:
        forker(args.forker, args.rounds, args.profile)
        return
    async with dev_server() as (_, port, directory):
        topology = write_topology(shipped_topology(directory, port, replicas={"llm": 1}), directory)
        load = os.getloadavg()[0]
        command = [sys.executable, "-m", "scripts.bench.forked_start", "--forker", str(topology)]
        command += ["--rounds", str(args.rounds), *(["--profile"] if args.profile else [])]
        done = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, check=True)
        results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        walls, cpus = [r["wall"] for r in results], [r["cpu"] for r in results]
        text = (
            f"| forked start, fork -> READY (listed polling), {args.rounds} rounds | median | p90 | max |\n"
            "| --- | --- | --- | --- |\n"
            f"| the child's own CPU-s | {statistics.median(cpus):.3f} | {sorted(cpus)[int(0.9 * len(cpus))]:.3f}"
            f" | {max(cpus):.3f} |\n"
            f"| wall seconds | {statistics.median(walls):.3f} | {sorted(walls)[int(0.9 * len(walls))]:.3f}"
            f" | {max(walls):.3f} |\n\n"
            f"Load average (1 min) at the start: {load:.2f}; {'with' if args.profile else 'without'} cProfile.\n"
        )
        if args.profile:
            merged = pstats.Stats(*[r["profile"] for r in results if r["profile"]])
            out = io.StringIO()
            merged.stream = out  # type: ignore[attr-defined]
            merged.sort_stats("cumulative").print_stats(45)
            print(out.getvalue())
        write_result(args.write, text)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    asyncio.run(main())
