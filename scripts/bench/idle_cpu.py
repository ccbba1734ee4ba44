"""Benchmark: what an idle pool's supervisor burns, with and without an open warning, against supervisord.

32 replicas of the shipped topology (router 1, llm 30, media 1; its defaults, the simulated packs) on one local
Temporal dev server, no workflow running. For each set-up the supervisor's CPU (for pipelex-pool its fork server
included) over a window, as percent of one core:
- "quiet": every group running;
- "warning open": media scaled to 0 (`scale media 0`), so `status` warns that media_q has routed activities and no
  poller, for the whole window (measured once the warning is older than the watch's fast period, counted from
  when `status` first shows it).
Set-ups: this checkout; optionally an earlier revision (`--ref REV`, run from a git worktree, same venv) to show a
change's effect; supervisord (the same 32 workers; it has no notion of a warning: its one figure is shown in both
rows). Set-ups are interleaved round by round.

    python3 -m venv .venv && .venv/bin/pip install -e ".[test]" supervisor
    .venv/bin/python -m scripts.bench.idle_cpu --ref HEAD~1 --window 60 --write BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tomlkit

from pipelex_pool.control.client import ControlClient
from pipelex_pool.supervisor.watchers.queues import WARNING_FAST_S
from scripts.bench.common import (
    dev_server,
    ready_pids,
    shipped_topology,
    spread,
    start_supervisord,
    stop_group,
    supervisor_cpu_s,
    supervisord_programs,
    write_result,
)

REPLICAS = {"router": 1, "llm": 30, "media": 1}
SETTLE_S = 5.0  # past the watch's fast period for a new warning (WARNING_FAST_S after the warning is seen)


async def window_percent(pid: int, window: float) -> float:
    before, started = supervisor_cpu_s(pid), time.monotonic()
    await asyncio.sleep(window)
    return 100 * (supervisor_cpu_s(pid) - before) / (time.monotonic() - started)


async def wait_ready(control: ControlClient, count: int) -> None:
    deadline = time.monotonic() + 300
    while len(ready_pids(control, polling=True)) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} replicas not READY and polling within 300 s")
        await asyncio.sleep(0.5)


async def wait_warning(control: ControlClient, text: str) -> None:
    deadline = time.monotonic() + 120
    while not any(text in w for w in control.call("status")["warnings"]):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no warning about {text} within 120 s")
        await asyncio.sleep(0.5)


async def pool_round(directory: Path, port: int, source: Path | None, window: float) -> tuple[float, float]:
    doc = shipped_topology(directory, port, replicas=REPLICAS)
    doc["pool"]["max_replicas"] = 64
    (directory / "topology.toml").write_text(tomlkit.dumps(doc))
    env = {**os.environ, **({"PYTHONPATH": str(source)} if source else {})}
    sup = subprocess.Popen(
        [sys.executable, "-m", "pipelex_pool", "up", str(directory / "topology.toml")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env,
        cwd=source,  # (`python -m` puts the working directory first on sys.path: this checkout's, otherwise)
    )  # fmt: skip
    control = ControlClient(directory / "ctl.sock")
    try:
        await wait_ready(control, sum(REPLICAS.values()))
        await asyncio.sleep(10)  # the start's own work done
        quiet = await window_percent(sup.pid, window)
        control.call("scale", {"group": "media", "replicas": 0})
        await wait_warning(control, "media_q")
        await asyncio.sleep(WARNING_FAST_S + SETTLE_S)  # (its fast period counts from when the watch saw it)
        warnings = control.call("status")["warnings"]
        assert any("media_q" in w for w in warnings), warnings
        warned = await window_percent(sup.pid, window)
        return quiet, warned
    finally:
        stop_group(sup)


async def supervisord_round(directory: Path, port: int, window: float) -> float:
    doc = shipped_topology(directory, port, replicas=REPLICAS)
    (directory / "topology.toml").write_text(tomlkit.dumps(doc))
    sup, _conf, _ctl = start_supervisord(directory, supervisord_programs(directory / "topology.toml", REPLICAS))
    try:
        await asyncio.sleep(60)  # its 32 workers started (it does not know when they poll)
        return await window_percent(sup.pid, window)
    finally:
        stop_group(sup)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--ref", help="Also run this git revision (from a worktree), interleaved.")
    parser.add_argument("--write", type=Path, help="Append the result to this Markdown file.")
    args = parser.parse_args()
    worktree = None
    if args.ref:
        worktree = Path(tempfile.mkdtemp(prefix="pp-ref-"))
        subprocess.run(["git", "worktree", "add", "--detach", str(worktree), args.ref], check=True, capture_output=True)
    results: dict[str, list[tuple[float, float]]] = {"this": [], "ref": [], "sd": []}
    try:
        async with dev_server() as (_client, port, directory):
            for n in range(args.rounds):
                for name in ("this", "ref", "sd"):
                    if name == "ref" and worktree is None:
                        continue
                    where = directory / f"{name}-{n}"
                    where.mkdir()
                    if name == "sd":
                        figure = await supervisord_round(where, port, args.window)
                        results[name].append((figure, figure))
                    else:
                        results[name].append(await pool_round(where, port, worktree if name == "ref" else None,
                                                              args.window))  # fmt: skip
    finally:
        if worktree is not None:
            subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], capture_output=True)
    load = os.getloadavg()[0]
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    rows = [("this checkout (" + rev + ")", results["this"])]
    if worktree is not None:
        rows.append((f"`{args.ref}`", results["ref"]))
    rows.append(("supervisord", results["sd"]))
    text = (
        f"| supervisor CPU, idle, 32 replicas, % of a core ({args.window:.0f} s windows, {args.rounds} round(s), load "
        f"{load:.1f}; median (p90, min-max)) | quiet | a warning open (a group scaled to 0) |\n| --- | --- | --- |\n"
    )
    for label, values in rows:
        quiet, warned = spread([v[0] for v in values]), spread([v[1] for v in values])
        text += f"| {label} | {quiet} | {warned} |\n"
    write_result(args.write, text)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    asyncio.run(main())
