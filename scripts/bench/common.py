"""What the benchmarks share: a free port, a Temporal dev server for the run, the interleaved order, the spread of a
figure (median, p90, min-max), the results file."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import psutil
import tomlkit
from temporalio.client import Client
from tomlkit import TOMLDocument

from pipelex_pool.control.client import ControlClient
from pipelex_pool.temporal.devserver import dev_server_command, wait_until_serving

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def dev_server(namespaces: tuple[str, ...] = ()) -> AsyncIterator[tuple[Client, int, Path]]:
    """A local Temporal dev server in a temporary directory: (client, port, directory), all removed after; it also
    serves `namespaces` (one per set-up keeps a set-up's pollers out of the next one's view)."""
    directory = Path(tempfile.mkdtemp(prefix="pp-bench-", dir="/tmp"))
    port = free_port()
    server = subprocess.Popen(
        dev_server_command(port, directory / "t.db", log_level="error", namespaces=namespaces),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield await wait_until_serving(f"127.0.0.1:{port}", within=60), port, directory
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
        shutil.rmtree(directory, ignore_errors=True)


def shipped_topology(
    directory: Path,
    port: int,
    name: str = "bench",
    replicas: dict[str, int] | None = None,
    namespace: str = "default",
) -> TOMLDocument:
    """configs/topology.toml as shipped (its defaults), with its socket, state and logs in `directory`, pointed at
    the benchmark's dev server and `namespace` (the pool does not start its own), and the replicas given per group."""
    doc = tomlkit.parse((REPO / "configs" / "topology.toml").read_text())
    doc["pool"]["name"] = name
    doc["pool"]["socket"] = str(directory / "ctl.sock")
    doc["pool"]["state_dir"] = str(directory / "state")
    doc["pool"]["log_dir"] = str(directory / "logs")
    doc["dev_server"]["enabled"] = False
    for group, count in (replicas or {}).items():
        doc["workers"][group]["replicas"] = count
    local = doc["temporal"]["temporal_config"]["temporal_server_configs"]["local"]
    local["target_host"] = f"127.0.0.1:{port}"
    local["namespace"] = namespace
    return doc


def write_topology(doc: TOMLDocument, directory: Path) -> Path:
    path = directory / "topology.toml"
    path.write_text(tomlkit.dumps(doc))
    return path


def start_pool(topology: Path) -> subprocess.Popen[bytes]:
    """`pipelex-pool up TOPOLOGY` in its own session (stop it with `stop_group`)."""
    return subprocess.Popen(
        [sys.executable, "-m", "pipelex_pool", "up", str(topology)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def ready_pids(control: ControlClient, group: str | None = None, *, polling: bool = False) -> list[int]:
    """The pids of the pool's READY replicas (of `group`, or all; also seen polling by the pool's Temporal watch
    if `polling`); [] while the pool does not answer."""
    try:
        replicas = control.call("status")["replicas"]
    except Exception:
        return []
    return [
        r["pid"]
        for r in replicas
        if r["state"] == "READY" and group in (None, r["group"]) and (r["polling"] or not polling)
    ]


def interleaved(rounds: int, setups: Sequence[T]) -> Iterator[tuple[int, T]]:
    """(round, set-up): each round every set-up in turn, the order reversed every other round, so that neither side
    always runs first (or right after the other's load)."""
    for n in range(rounds):
        for setup in setups if n % 2 == 0 else reversed(setups):
            yield n, setup


def spread(values: list[float], digits: int = 2, unit: str = "") -> str:
    """Median (p90, min-max) of `values`."""
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    median = statistics.median(values)
    return f"{median:.{digits}f}{unit} (p90 {p90:.{digits}f}, {ordered[0]:.{digits}f}-{ordered[-1]:.{digits}f})"


def write_result(path: Path | None, text: str) -> None:
    print(text)
    if path is not None:
        with path.open("a") as out:
            out.write(f"\n### Run of {time.strftime('%Y-%m-%d %H:%M')} ({os.cpu_count()} cores)\n\n{text}")


WORKER_ARGS = {  # the shipped topology's groups, as `pipelex-pool worker` flags
    "router": "--task-queue temporal_task_queue --scope orchestrator",
    "llm": "--task-queue llm_q --scope runner-llm --profile llm-pool",
    "media": "--task-queue media_q --scope runner-media",
}


def supervisord_programs(topology: Path, replicas: dict[str, int]) -> str:
    """[program:x] sections running the shipped topology's groups as supervisord programs (autorestart,
    startsecs=1, its defaults otherwise); their Temporal identities start with the topology's pool name."""
    worker = f"{sys.executable} -m pipelex_pool worker --config {topology}"
    return "".join(
        f"""[program:{group}]
command={worker} {WORKER_ARGS[group]}
process_name=%(program_name)s-%(process_num)d
numprocs={count}
autorestart=true
startsecs=1
"""
        for group, count in replicas.items()
    )


def start_supervisord(directory: Path, programs: str) -> tuple[subprocess.Popen[bytes], Path, str]:
    """supervisord (from the `supervisor` package) in the foreground with `programs` ([program:x] sections);
    returns the process, its config file and the supervisorctl command. Stop it with `stop_group`."""
    supervisord = shutil.which("supervisord", path=str(Path(sys.executable).parent)) or shutil.which("supervisord")
    if supervisord is None:
        raise SystemExit("supervisord is not installed: pip install supervisor")
    conf = directory / "supervisord.conf"
    conf.write_text(
        f"""[supervisord]
nodaemon=true
logfile={directory}/supervisord.log
pidfile={directory}/supervisord.pid
[unix_http_server]
file={directory}/supervisor.sock
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
[supervisorctl]
serverurl=unix://{directory}/supervisor.sock
{programs}"""
    )
    process = subprocess.Popen(
        [supervisord, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    ctl = shutil.which("supervisorctl", path=str(Path(sys.executable).parent)) or "supervisorctl"
    return process, conf, ctl


def cpu_s(pid: int) -> float:
    """CPU-seconds a process has run so far, every thread of it (exited ones too), read from the kernel's
    nanosecond counter (the process's CPU clock; any process may read another's). Not /proc/PID/stat's utime and
    stime: each is truncated to a 10 ms tick, which under-counts every process by ~10 ms on average (0.6 CPU-s
    over the 64 new workers of a cold start). 0.0 for a process that is gone."""
    try:
        return time.clock_gettime((~pid << 3) | 2)  # CPUCLOCK_SCHED of process `pid` (Linux's clock id encoding)
    except OSError:
        return 0.0


def cpus(pids: list[int]) -> float:
    """CPU-seconds of these processes (0 for one that is gone)."""
    return sum(cpu_s(pid) for pid in pids)


def supervisor_cpu_s(pid: int) -> float:
    """CPU-seconds of a supervisor and of its fork server (pipelex-pool's; supervisord has none), not its workers."""
    total = cpu_s(pid)
    try:
        children = psutil.Process(pid).children()
    except psutil.Error:
        return total
    for child in children:
        try:
            if "fork_server" in " ".join(child.cmdline()):
                total += cpu_s(child.pid)
        except psutil.Error:
            continue
    return total


def tree_cpu_s(pid: int) -> float:
    """CPU-seconds of a process and of every descendant alive now, and of the children they reaped (the kernel
    adds a reaped child's exact time to its parent's; truncated once, not once per child)."""
    total = 0.0
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return total
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += cpu_s(process.pid) + times.children_user + times.children_system
    return total


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group of a supervisor the benchmark started, and wait for it."""
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(60)
