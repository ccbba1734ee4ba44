"""Running a real pool (`pipelex-pool up`) in a test, and talking to it through the installed command."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from pipelex_pool.control.status_doc import Replica, Status
from tests.conftest import Processes, TemporalServer
from tests.topologies import server_changes, write_topology

PIPELEX_POOL = str(Path(sys.executable).with_name("pipelex-pool"))
if not Path(PIPELEX_POOL).exists():  # not installed as a script: fall back to the module
    PIPELEX_POOL = ""


def cli_args(*args: str) -> list[str]:
    return [PIPELEX_POOL, *args] if PIPELEX_POOL else [sys.executable, "-m", "pipelex_pool", *args]


class Pool:
    """A supervisor started by a test; every pid it ever reported is killed at teardown if still alive."""

    def __init__(self, processes: Processes, directory: Path, short_dir: Path) -> None:
        self.processes = processes
        self.directory = directory
        self.socket = short_dir / "ctl.sock"
        self.topology = directory / "topology.toml"
        self.proc: subprocess.Popen[bytes] | None = None
        self.seen_pids: set[int] = set()
        self.server: TemporalServer | None = None
        self.namespace: str | None = None

    def write(
        self, server: TemporalServer | None, namespace: str | None, changes: dict[str, Any] | None = None
    ) -> Path:
        base = {
            "pool.socket": str(self.socket),
            "pool.state_dir": str(self.directory / "state"),
            "pool.log_dir": str(self.directory / "logs"),
            "dev_server.enabled": False,
        }
        if server is not None and namespace is not None:
            self.server, self.namespace = server, namespace
            base.update(server_changes(server.address, namespace))
        return write_topology(self.directory, {**base, **(changes or {})})

    def rewrite(self, changes: dict[str, Any]) -> Path:
        """The base topology on the same server and namespace, with `changes`."""
        return self.write(self.server, self.namespace, changes)

    def up(self, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        self.proc = self.processes.spawn(cli_args("up", str(self.topology)), env=env, name="supervisor")
        return self.proc

    def output(self) -> str:
        assert self.proc is not None
        return self.processes.output(self.proc)

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            cli_args(*args, "--socket", str(self.socket)), capture_output=True, text=True, timeout=timeout
        )

    def status(self) -> Status:
        result = self.cli("status", "--json")
        assert result.returncode in (0, 3) and result.stdout, result.stderr  # 3: a replica is not READY
        data: Status = json.loads(result.stdout)
        self.seen_pids |= {r["pid"] for r in data["replicas"] if r["pid"]}
        return data

    def replicas(self, group: str | None = None) -> list[Replica]:
        return [r for r in self.status()["replicas"] if group is None or r["group"] == group]

    def wait(self, predicate: Callable[[Status], bool], within: float, what: str) -> Status:
        deadline = time.monotonic() + within
        last: Status | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"the supervisor exited ({self.proc.returncode}) while waiting for {what}:\n{self.output()}"
                )
            try:
                last = self.status()
            except AssertionError:
                time.sleep(0.2)
                continue
            if predicate(last):
                return last
            time.sleep(0.2)
        raise AssertionError(
            f"timed out after {within}s waiting for {what}; last status:\n{json.dumps(last, indent=1)}"
        )

    def wait_all_ready(self, within: float = 60) -> Status:
        def ready(status: Status) -> bool:  # the pool's own judgement (pool_state.group_progress)
            return all(g["progress"]["all_ready"] for g in status["groups"].values()) and bool(status["replicas"])

        return self.wait(ready, within, "every replica READY")

    def worker_pids(self) -> set[int]:
        """Every live process but the supervisor with this pool's directory on its command line (the topology,
        or the validated copy of it that every worker is given under the state directory), tracked by the pool or
        not: what a user would find with `ps`."""
        directory = f"{self.directory}{os.sep}"
        found = set()
        for proc in psutil.process_iter(["cmdline", "status"]):
            cmdline = proc.info["cmdline"] or []
            if proc.info["status"] != psutil.STATUS_ZOMBIE and any(arg.startswith(directory) for arg in cmdline):
                if proc.pid != (self.proc.pid if self.proc else None):
                    found.add(proc.pid)
        return found

    def cleanup(self) -> None:
        for pid in self.seen_pids | self.worker_pids():
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def copy_shipped_topology(directory: Path, port: int) -> Path:
    """configs/topology.toml as shipped, moved to a free port and private directories."""
    import tomlkit

    source = Path(__file__).resolve().parent.parent / "configs" / "topology.toml"
    doc = tomlkit.parse(source.read_text())
    doc["pool"]["state_dir"] = str(directory / "state")
    doc["pool"]["log_dir"] = str(directory / "logs")
    local = doc["temporal"]["temporal_config"]["temporal_server_configs"]["local"]
    local["target_host"] = f"127.0.0.1:{port}"
    target = directory / "topology.toml"
    target.write_text(tomlkit.dumps(doc))
    shutil.copy(source.parent / "pipelex.toml", directory / "pipelex.toml")
    return target
