"""Benchmark: a cold start of 8, 32 and 64 replicas against the machine's floor, pipelex-pool (shipped defaults:
the fork server) beside supervisord and a by-hand loop, interleaved round by round.

Each set-up starts the same worker commands (`pipelex-pool worker`, router / llm / media groups of the shipped
topology, its defaults, the simulated packs) against one local Temporal dev server, each size in a namespace of its
own:
- pipelex-pool: `pipelex-pool up` with the shipped topology (its fork server, its spawn budget);
- supervisord: the same groups as programs (autorestart, startsecs=1);
- by hand: `sh -c 'pipelex-pool worker ... & ... wait'`, every worker at once, nothing supervising them.
Measured per start: the wall time from launching the set-up until Temporal lists every replica among its queues'
pollers (every partition of each queue still missing a replica described, every 0.1 s); the CPU-seconds the set-up's
processes burnt meanwhile (the supervisor, its helpers and the workers; read from each process's CPU clock, not its
10 ms ticks); the Temporal server's (answering the new workers' connections, polls and readiness checks); this
benchmark's own (its checks); and the whole machine's (/proc/stat: the set-up, the server, the checks). Two floors,
each CPU-seconds spread over every core: the machine's (the start could not be faster on this machine: the server
shares its cores) and the set-up's own (what it would be if the server cost nothing). With `--split-cores`, each
set-up runs on the first CPU alone and the server and the checks on the others, and the set-up's floor is its
CPU-seconds over its one core. The by-hand loop's CPU-seconds per replica are a worker's full exec'd start, the
pool's are a forked one's.

    python3 -m venv .venv && .venv/bin/pip install -e ".[test]" supervisor
    .venv/bin/python -m scripts.bench.cold_start --rounds 3 [--ref REV] [--polls N] [--only-pool] [--split-cores]
        [--write FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
from temporalio.client import Client

from scripts.bench.common import (
    WORKER_ARGS,
    cpu_s,
    dev_server,
    shipped_topology,
    spread,
    start_pool,
    start_supervisord,
    stop_group,
    supervisord_programs,
    tree_cpu_s,
    write_result,
    write_topology,
)
from scripts.bench.footprint import wait_polling

SIZES = {8: {"router": 1, "llm": 4, "media": 3}, 32: {"router": 2, "llm": 20, "media": 10},
         64: {"router": 4, "llm": 40, "media": 20}}  # fmt: skip
CORES = os.cpu_count() or 1
SETUP_CPUS: set[int] | None = None  # --split-cores: the CPUs the set-ups run on (the server and the checks: the rest)
Starter = Callable[[Path, int, dict[str, int], str], subprocess.Popen[bytes]]


def pool(directory: Path, port: int, replicas: dict[str, int], name: str) -> subprocess.Popen[bytes]:
    doc = shipped_topology(directory, port, name=name, replicas=replicas, namespace=name)
    doc["pool"]["max_replicas"] = 128
    return start_pool(write_topology(doc, directory))


def pool_polling(polls: int) -> Starter:
    """`pool` with `polls` long polls of each kind per replica in every runtime profile (the shipped topology's
    default profile sets 5; Pipelex's default profile sets 100)."""

    def start(directory: Path, port: int, replicas: dict[str, int], name: str) -> subprocess.Popen[bytes]:
        doc = shipped_topology(directory, port, name=name, replicas=replicas, namespace=name)
        doc["pool"]["max_replicas"] = 128
        for profile in doc["temporal"]["worker_runtime_profiles"]["profiles"].values():
            profile["max_concurrent_workflow_task_polls"] = polls
            profile["max_concurrent_activity_task_polls"] = polls
        return start_pool(write_topology(doc, directory))

    return start


def pool_from(source: Path) -> Starter:
    """`pool` run from another checkout of the code (a git worktree of `--ref`), the same venv."""

    def start(directory: Path, port: int, replicas: dict[str, int], name: str) -> subprocess.Popen[bytes]:
        doc = shipped_topology(directory, port, name=name, replicas=replicas, namespace=name)
        doc["pool"]["max_replicas"] = 128
        return subprocess.Popen(
            [sys.executable, "-m", "pipelex_pool", "up", str(write_topology(doc, directory))],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(source)},
            cwd=source,  # (`python -m` puts the working directory first on sys.path: this checkout's, otherwise)
        )

    return start


def supervisord(directory: Path, port: int, replicas: dict[str, int], name: str) -> subprocess.Popen[bytes]:
    topology = write_topology(shipped_topology(directory, port, name=name, namespace=name), directory)
    process, _conf, _ctl = start_supervisord(directory, supervisord_programs(topology, replicas))
    return process


def by_hand(directory: Path, port: int, replicas: dict[str, int], name: str) -> subprocess.Popen[bytes]:
    topology = write_topology(shipped_topology(directory, port, name=name, namespace=name), directory)
    worker = f"{sys.executable} -m pipelex_pool worker --config {topology}"
    lines = [f"{worker} {WORKER_ARGS[group]} &" for group, count in replicas.items() for _ in range(count)]
    return subprocess.Popen(
        ["sh", "-c", "\n".join([*lines, "wait"])],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


SETUPS: dict[str, Starter] = {"pipelex-pool": pool, "supervisord": supervisord, "by hand": by_hand}


def machine_busy() -> float:
    """CPU-seconds every core spent not idle since boot (/proc/stat)."""
    with open("/proc/stat") as stat:
        ticks = [int(v) for v in stat.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # (minus idle and iowait)


def server_cpu(port: int) -> float:
    """CPU-seconds of the Temporal dev server serving `port` (user + system)."""
    total = 0.0
    for process in psutil.process_iter(["cmdline"]):
        command = process.info["cmdline"] or []
        if "start-dev" in command and str(port) in command:
            total += cpu_s(process.pid)
    return total


def own_cpu() -> float:
    """CPU-seconds of this benchmark's process (its checks: the describes, their answers)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@contextlib.contextmanager
def starting_on(cpus: set[int] | None) -> Iterator[None]:
    """Processes started meanwhile (by this thread) run on `cpus` (None: where this benchmark runs)."""
    if cpus is None:
        yield
        return
    own = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, own)


async def one_start(starter: Starter, directory: Path, port: int, size: int, tag: str) -> dict[str, float]:
    directory.mkdir()  # noqa: ASYNC240 (a benchmark's set-up, before anything is timed)
    client = await Client.connect(f"127.0.0.1:{port}", namespace=tag)
    load = os.getloadavg()[0]
    server, machine, checks = server_cpu(port), machine_busy(), own_cpu()
    started = time.perf_counter()
    with starting_on(SETUP_CPUS):
        process = starter(directory, port, SIZES[size], tag)
    try:
        await wait_polling(client, f"{tag}/", size, replicas=SIZES[size])
        wall = time.perf_counter() - started
        cpu, checks = tree_cpu_s(process.pid), own_cpu() - checks
        server, machine = server_cpu(port) - server, machine_busy() - machine
    finally:
        stop_group(process)
    return {"wall": wall, "cpu": cpu, "server": server, "checks": checks, "machine": machine, "load": load}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", default="8,32,64")
    parser.add_argument("--ref", help="Also run pipelex-pool at this git revision (from a worktree), interleaved.")
    parser.add_argument("--polls", type=int, help="Also run pipelex-pool with this many polls per replica.")
    parser.add_argument("--only-pool", action="store_true", help="Leave supervisord and the by-hand loop out.")
    parser.add_argument(
        "--split-cores",
        action="store_true",
        help="The set-ups on the first CPU, the Temporal server and this benchmark's checks on the others.",
    )
    parser.add_argument("--write", type=Path, help="Append the result to this Markdown file.")
    args = parser.parse_args()
    if args.split_cores:
        global SETUP_CPUS
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            raise SystemExit("--split-cores needs 2 CPUs or more")
        SETUP_CPUS = {cpus[0]}
        os.sched_setaffinity(0, set(cpus[1:]))  # before the server starts and before any thread: all inherit it
    if args.only_pool:
        del SETUPS["supervisord"], SETUPS["by hand"]
    if args.polls:
        SETUPS[f"pipelex-pool, {args.polls} polls per replica"] = pool_polling(args.polls)
    sizes = [int(s) for s in args.sizes.split(",")]
    worktree = None
    if args.ref:
        worktree = Path(tempfile.mkdtemp(prefix="pp-ref-"))
        subprocess.run(["git", "worktree", "add", "--detach", str(worktree), args.ref], check=True, capture_output=True)
        SETUPS[f"pipelex-pool {args.ref}"] = pool_from(worktree)
    try:
        await run_rounds(args, sizes)
    finally:
        if worktree is not None:
            subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], capture_output=True)


async def run_rounds(args: argparse.Namespace, sizes: list[int]) -> None:
    short = {name: f"s{i}" for i, name in enumerate(SETUPS)}
    tags = {
        (name, size, n): f"{short[name]}x{size}r{n}" for name in SETUPS for size in sizes for n in range(args.rounds)
    }
    results: dict[tuple[str, int], list[dict[str, float]]] = {(name, size): [] for name in SETUPS for size in sizes}
    async with dev_server(tuple(tags.values())) as (_, port, directory):
        for n in range(args.rounds):
            for size in sizes:
                names = list(SETUPS) if n % 2 == 0 else list(reversed(SETUPS))
                for name in names:
                    tag = tags[(name, size, n)]
                    result = await one_start(SETUPS[name], directory / tag, port, size, tag)
                    results[(name, size)].append(result)
                    print(name, size, result, flush=True)
                    await asyncio.sleep(5.0)  # the last set-up's processes gone, the server quiet again
    loads = [r["load"] for rows in results.values() for r in rows]
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    own_cores = CORES if SETUP_CPUS is None else len(SETUP_CPUS)
    split = (
        ""
        if SETUP_CPUS is None
        else f" Split cores: each set-up on CPU {min(SETUP_CPUS)} alone, the Temporal server and this benchmark's "
        f"checks on the other {CORES - own_cores}; the set-up's floor is its CPU-s over its {own_cores} core."
    )
    text = (
        f"Commit {rev}, {CORES} cores, {args.rounds} interleaved rounds, load at each start "
        f"{min(loads):.1f}-{max(loads):.1f}. Median (p90, min-max). Floors: CPU-s / cores, the machine's "
        "(everything busy during the start: the set-up, the Temporal server, this benchmark's checks, over every "
        f"core) and the set-up's own (over the cores it runs on).{split}\n\n"
        "| replicas | set-up | cold start -> all polling | set-up CPU-s | Temporal CPU-s | checks CPU-s "
        "| machine CPU-s | wall / machine floor | wall / set-up floor |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
    )
    for size in sizes:
        for name in SETUPS:
            rows = results[(name, size)]
            keys = ("wall", "cpu", "server", "checks", "machine")
            med = {key: statistics.median(r[key] for r in rows) for key in keys}
            text += (
                f"| {size} | {name} | {spread([r['wall'] for r in rows], 1, ' s')} | {med['cpu']:.1f} "
                f"| {med['server']:.1f} | {med['checks']:.1f} | {med['machine']:.1f} "
                f"| {med['wall'] / (med['machine'] / CORES):.2f} "
                f"| {med['wall'] / (med['cpu'] / own_cores):.2f} |\n"
            )
    write_result(args.write, text)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    asyncio.run(main())
