"""What the benchmarks share: a free port, a Temporal dev server for the run, a summary line, the results file."""

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
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from temporalio.client import Client

from pipelex_pool.temporal.devserver import dev_server_command, wait_until_serving


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def dev_server() -> AsyncIterator[tuple[Client, int, Path]]:
    """A local Temporal dev server in a temporary directory: (client, port, directory), all removed after."""
    directory = Path(tempfile.mkdtemp(prefix="pp-bench-", dir="/tmp"))
    port = free_port()
    server = subprocess.Popen(
        dev_server_command(port, directory / "t.db", log_level="error"),
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


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return f"median {statistics.median(values):.2f} s, p90 {p90:.2f} s, min {ordered[0]:.2f} s, max {ordered[-1]:.2f} s"


def write_result(path: Path | None, text: str) -> None:
    print(text)
    if path is not None:
        with path.open("a") as out:
            out.write(f"\n### Run of {time.strftime('%Y-%m-%d %H:%M')} ({os.cpu_count()} cores)\n\n{text}")


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


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group of a supervisor the benchmark started, and wait for it."""
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(60)
