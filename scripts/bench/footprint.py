"""Benchmark: what a pool costs and how fast it answers, pipelex-pool against supervisord, interleaved.

Set-ups, one after the other against one local Temporal dev server (the order reversed every other round, each
set-up and size of each round in a namespace of its own), each supervising the same worker commands
(`pipelex-pool worker`, router / llm / media groups of the shipped topology, its defaults, the simulated packs):
pipelex-pool with its warm fork server (the default), pipelex-pool exec'ing each worker (`spawner = "exec"`), and
supervisord. For each:

- cold start of 8 and of 32 replicas: from launching the supervisor until Temporal lists every replica of the
  set-up among its queues' pollers (every partition described);
- at 32 replicas, idle (no workflow running): the CPU the supervisor burns over a window (percent of one core; for
  pipelex-pool its fork server included), and memory (RSS, PSS, USS) of the supervisor and of the 32 workers;
- status latency at 32 replicas: the CLI end to end (`pipelex-pool status -c TOPOLOGY` / `supervisorctl status`,
  a new process each call) and the raw request (pipelex-pool's control socket / supervisord's XML-RPC
  getAllProcessInfo), median of 30 calls.

Each figure is given as the median over the rounds (p90, min-max), with the machine's load during the run.

    python3 -m venv .venv && .venv/bin/pip install -e ".[test]" supervisor
    .venv/bin/python -m scripts.bench.footprint --rounds 2 --write BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import psutil
from supervisor.xmlrpc import SupervisorTransport
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from pipelex_pool.control.client import ControlClient
from pipelex_pool.temporal.pollers import QueueType, queue_pollers, side_by_side
from scripts.bench.common import (
    cpus,
    dev_server,
    interleaved,
    shipped_topology,
    spread,
    start_pool,
    start_supervisord,
    stop_group,
    supervisord_programs,
    write_result,
    write_topology,
)

SIZES = {8: {"router": 1, "llm": 4, "media": 3}, 32: {"router": 2, "llm": 20, "media": 10}}
WATCHED = [
    ("temporal_task_queue", QueueType.WORKFLOW),
    ("temporal_task_queue", QueueType.ACTIVITY),
    ("llm_q", QueueType.ACTIVITY),
    ("media_q", QueueType.ACTIVITY),
]
GROUP_QUEUES = {  # what each group of the shipped topology polls
    "router": [("temporal_task_queue", QueueType.WORKFLOW), ("temporal_task_queue", QueueType.ACTIVITY)],
    "llm": [("llm_q", QueueType.ACTIVITY)],
    "media": [("media_q", QueueType.ACTIVITY)],
}
CALLS = 30


@dataclass
class Result:
    cold_start: dict[int, float] = field(default_factory=dict)
    idle_cpu_percent: float = 0.0
    supervisor_mem: dict[str, int] = field(default_factory=dict)
    workers_mem: dict[str, int] = field(default_factory=dict)
    status_cli_ms: float = 0.0
    status_raw_ms: float = 0.0


@dataclass
class SetUp:
    """How to start one supervisor of `replicas` workers whose Temporal identities start with `prefix`."""

    name: str
    tag: str  # short, unique: the prefix of its workers' identities
    start: Callable[[Path, int, dict[str, int], str], tuple[subprocess.Popen[bytes], Path]]  # (.., name = namespace)
    status_cli: Callable[[Path], list[str]]
    status_raw: Callable[[Path], Callable[[], object]]
    workers: Callable[[Path, psutil.Process], set[int]]  # the worker pids, from the supervisor


async def wait_polling(
    client: Client, prefix: str, count: int, within: float = 300.0, replicas: dict[str, int] | None = None
) -> None:
    """Until `count` identities starting with `prefix` are listed (a describe the server refuses for its rate
    limit, when the measured set-up asks too much of it, is said and asked again). An identity once listed counts
    (Temporal lists a poller for minutes after its last poll). With `replicas` (per group of the shipped topology),
    a queue is no longer described once its group's replicas were all listed on it: the checks cost the server
    less as a start goes on, the same for every set-up."""
    deadline = time.monotonic() + within
    expected: dict[tuple[str, QueueType], int] = {}
    for group, n in (replicas or {}).items():
        for key in GROUP_QUEUES[group]:
            expected[key] = expected.get(key, 0) + n
    seen: dict[tuple[str, QueueType], set[str]] = {key: set() for key in WATCHED}

    async def describe(key: tuple[str, QueueType]) -> None:
        seen[key] |= {i for i in await queue_pollers(client, *key) if i.startswith(prefix)}

    while True:
        pending = [key for key in WATCHED if key not in expected or len(seen[key]) < expected[key]]
        try:
            await side_by_side(*(partial(describe, key) for key in pending))
            if len(set().union(*seen.values())) >= count:
                return
        except RPCError as exc:
            if exc.status is not RPCStatusCode.RESOURCE_EXHAUSTED:
                raise
            print(f"{prefix}: the server refused a describe ({exc.message}); asking again", file=sys.stderr)
        if time.monotonic() > deadline:
            raise SystemExit(f"{prefix}: fewer than {count} replicas polling after {within:g}s")
        await asyncio.sleep(0.1)


def memory(pids: list[int]) -> dict[str, int]:
    total = {"rss": 0, "pss": 0, "uss": 0}
    for pid in pids:
        try:
            info = psutil.Process(pid).memory_full_info()
        except psutil.Error:
            continue
        for key in total:
            total[key] += getattr(info, key)
    return total


def split(supervisor: psutil.Process, workers: set[int]) -> tuple[list[int], list[int]]:
    """(supervisor and its helpers, e.g. the fork server; the workers): the supervisor's process tree."""
    tree = [supervisor, *supervisor.children(recursive=True)]
    return [p.pid for p in tree if p.pid not in workers], [p.pid for p in tree if p.pid in workers]


def median_ms(call: Callable[[], object]) -> float:
    took = []
    for _ in range(CALLS):
        started = time.perf_counter()
        call()
        took.append(time.perf_counter() - started)
    return statistics.median(took) * 1000


def pool_setup(spawner: str) -> SetUp:
    cli = shutil.which("pipelex-pool", path=str(Path(sys.executable).parent)) or "pipelex-pool"

    def start(directory: Path, port: int, replicas: dict[str, int], name: str) -> tuple[subprocess.Popen[bytes], Path]:
        doc = shipped_topology(directory, port, name=name, replicas=replicas, namespace=name)
        doc["pool"]["spawner"] = spawner
        topology = write_topology(doc, directory)
        return start_pool(topology), topology

    def workers(topology: Path, _: psutil.Process) -> set[int]:
        return {r["pid"] for r in ControlClient(topology.parent / "ctl.sock").call("status")["replicas"]}

    return SetUp(
        name=f"pipelex-pool ({spawner})",
        tag=spawner,
        start=start,
        status_cli=lambda topology: [cli, "status", "-c", str(topology)],
        status_raw=lambda topology: lambda: ControlClient(topology.parent / "ctl.sock").call("status"),
        workers=workers,
    )


def supervisord_setup() -> SetUp:
    def start(directory: Path, port: int, replicas: dict[str, int], name: str) -> tuple[subprocess.Popen[bytes], Path]:
        topology = write_topology(shipped_topology(directory, port, name=name, namespace=name), directory)
        process, conf, _ = start_supervisord(directory, supervisord_programs(topology, replicas))
        return process, conf

    ctl = shutil.which("supervisorctl", path=str(Path(sys.executable).parent)) or "supervisorctl"

    def raw(conf: Path) -> Callable[[], object]:
        transport = SupervisorTransport(None, None, f"unix://{conf.parent}/supervisor.sock")
        proxy = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)
        return lambda: proxy.supervisor.getAllProcessInfo()

    return SetUp(
        name="supervisord",
        tag="sd",
        start=start,
        status_cli=lambda conf: [ctl, "-c", str(conf), "status"],
        status_raw=raw,
        workers=lambda _, supervisor: {p.pid for p in supervisor.children()},
    )


async def run_setup(setup: SetUp, directory: Path, port: int, idle_s: float, round_tag: str) -> Result:
    """Each size in a namespace of its own: the pollers of the set-up before (listed for 75 s after they exit)
    are not this one's, and would keep its Temporal watch busy warning about them."""
    result = Result()
    for size, replicas in SIZES.items():
        tag = f"{setup.tag}{size}{round_tag}"
        here = directory / tag
        here.mkdir()
        client = await Client.connect(f"127.0.0.1:{port}", namespace=tag)
        started = time.perf_counter()
        process, config = setup.start(here, port, replicas, tag)
        try:
            await wait_polling(client, f"{tag}/", size, replicas=replicas)
            result.cold_start[size] = time.perf_counter() - started
            if size != max(SIZES):
                continue
            await asyncio.sleep(10.0)  # settle: first samples, first descriptions, fork server idle
            supervisor = psutil.Process(process.pid)
            supervisor_side, worker_side = split(supervisor, setup.workers(config, supervisor))
            before = cpus(supervisor_side)
            await asyncio.sleep(idle_s)
            result.idle_cpu_percent = 100 * (cpus(supervisor_side) - before) / idle_s
            result.supervisor_mem = memory(supervisor_side)
            result.workers_mem = memory(worker_side)
            argv = setup.status_cli(config)
            result.status_cli_ms = median_ms(lambda argv=argv: subprocess.run(argv, capture_output=True, check=False))  # type: ignore[misc]
            result.status_raw_ms = median_ms(setup.status_raw(config))
        finally:
            stop_group(process)
    return result


def report(results: dict[str, list[Result]], idle_s: float, loads: list[float]) -> str:
    names = list(results)

    def row(label: str, values: Callable[[Result], float], digits: int) -> str:
        cells = (spread([values(r) for r in rounds], digits) for rounds in results.values())
        return f"| {label} | " + " | ".join(cells) + " |"

    def ratio(values: Callable[[Result], float]) -> float:
        """supervisord's median over pipelex-pool's (the first set-up)."""
        medians = [statistics.median(values(r) for r in results[name]) for name in ("supervisord", names[0])]
        return medians[0] / medians[1]

    rows = [
        f"{len(results[names[0]])} interleaved round(s), load {min(loads):.1f}-{max(loads):.1f}; "
        "median (p90, min-max).",
        "",
        "| | " + " | ".join(names) + " |",
        "| --- |" + " --- |" * len(names),
    ]
    for size in SIZES:
        rows.append(row(f"cold start, {size} replicas -> all polling (s)", partial(cold_start, size=size), 1))
    rows.append(row(f"supervisor idle CPU, 32 replicas, {idle_s:g} s (% of a core)", idle_cpu, 2))
    for key in ("rss", "pss", "uss"):
        rows.append(row(f"supervisor memory {key.upper()} (MiB)", partial(supervisor_mib, key=key), 0))
    for key in ("rss", "pss", "uss"):
        rows.append(row(f"32 workers' memory {key.upper()} (MiB, total)", partial(workers_mib, key=key), 0))
    rows.append(row(f"`status` from the CLI, 32 replicas (ms, median of {CALLS} calls)", status_cli, 0))
    rows.append(row(f"raw status request (control socket / XML-RPC; ms, median of {CALLS})", status_raw, 1))
    ratios = (
        f"\nsupervisorctl / pipelex-pool `status` (CLI, median): **{ratio(status_cli):.1f}x**; cold start of 32, "
        f"supervisord / pipelex-pool: **{ratio(partial(cold_start, size=32)):.1f}x**; workers' USS, supervisord / "
        f"pipelex-pool: **{ratio(partial(workers_mib, key='uss')):.2f}x**\n"
    )
    return "\n".join(rows) + "\n" + ratios


def cold_start(result: Result, size: int) -> float:
    return result.cold_start[size]


def idle_cpu(result: Result) -> float:
    return result.idle_cpu_percent


def supervisor_mib(result: Result, key: str) -> float:
    return result.supervisor_mem[key] / 2**20


def workers_mib(result: Result, key: str) -> float:
    return result.workers_mem[key] / 2**20


def status_cli(result: Result) -> float:
    return result.status_cli_ms


def status_raw(result: Result) -> float:
    return result.status_raw_ms


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--only", choices=["fork", "exec", "supervisord"], action="append")
    parser.add_argument("--write", type=Path, help="Append the result to this Markdown file.")
    args = parser.parse_args()
    setups = [pool_setup("fork"), pool_setup("exec"), supervisord_setup()]
    if args.only:
        setups = [s for s in setups if any(o in s.name for o in args.only)]
    results: dict[str, list[Result]] = {setup.name: [] for setup in setups}
    loads: list[float] = []
    namespaces = tuple(f"{setup.tag}{size}r{n}" for setup in setups for size in SIZES for n in range(args.rounds))
    async with dev_server(namespaces) as (_, port, directory):
        for n, setup in interleaved(args.rounds, setups):
            loads.append(os.getloadavg()[0])
            results[setup.name].append(await run_setup(setup, directory, port, args.idle_seconds, f"r{n}"))
            print(setup.name, results[setup.name][-1], flush=True)
    if "supervisord" in results and len(results) > 1:
        write_result(args.write, report(results, args.idle_seconds, loads))
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown after using the Temporal client (see pipelex_pool.cli)


if __name__ == "__main__":
    asyncio.run(main())
