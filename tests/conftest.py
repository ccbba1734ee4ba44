"""Shared fixtures: a real Temporal dev server on a free loopback port, and child processes stopped by pid."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import pytest
from temporalio.client import Client

from pipelex_pool.temporal.devserver import dev_server_command, wait_until_serving

if TYPE_CHECKING:
    from tests.pool import Pool

NAMESPACES = tuple(f"ns{n:03d}" for n in range(140))  # one per test that takes `namespace` (about 90 now)


@pytest.fixture(autouse=True)
def private_state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pool that keeps its state and logs in the default place ($XDG_STATE_HOME) writes them in this test's
    temporary directory, never in the home directory of whoever runs the tests."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state-home"))
    # Temporal's own connection settings of whoever runs the tests (TEMPORAL_ADDRESS, a temporal.toml in their
    # home) must not reach a test's pool: none of the variables, and a config file that does not exist
    for name in [name for name in os.environ if name.startswith("TEMPORAL_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(tmp_path / "no-temporal.toml"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM the process group (children start their own session), then SIGKILL it after `grace`."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # leftovers of the group, if any
    except (ProcessLookupError, PermissionError):
        pass
    if proc.poll() is None:
        proc.wait(timeout=10)


@dataclass
class TemporalServer:
    address: str
    pid: int
    free_namespaces: list[str] = field(default_factory=lambda: list(NAMESPACES))


@pytest.fixture(scope="session")
def temporal_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TemporalServer]:
    """One `temporal server start-dev` for the session, with namespaces that tests take one each."""
    directory = tmp_path_factory.mktemp("temporal")
    port = free_port()
    command = dev_server_command(port, directory / "temporal.db", namespaces=NAMESPACES, log_level="error")
    log = (directory / "server.log").open("wb")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        address = f"127.0.0.1:{port}"
        anyio.run(lambda: wait_until_serving(address, NAMESPACES[-1], within=60))
        yield TemporalServer(address=address, pid=proc.pid)
    finally:
        stop_process(proc)
        log.close()


@pytest.fixture
def namespace(temporal_server: TemporalServer) -> str:
    """A namespace no other test uses: queues, pollers and backlogs start empty."""
    if not temporal_server.free_namespaces:
        pytest.fail("out of pre-created namespaces: raise NAMESPACES in tests/conftest.py")
    return temporal_server.free_namespaces.pop(0)


@pytest.fixture
def anyio_backend() -> str:
    """One async stack for the tests: anyio's pytest plugin (`anyio_mode = "auto"` runs every async test and
    fixture) on asyncio, which temporalio's client and workers need."""
    return "asyncio"


@pytest.fixture
async def client(temporal_server: TemporalServer, namespace: str) -> AsyncIterator[Client]:
    yield await Client.connect(temporal_server.address, namespace=namespace)


class Processes:
    """Starts child processes in their own sessions and stops every one of them, by pid, at teardown."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[subprocess.Popen[bytes]] = []

    def spawn(self, args: list[str], env: dict[str, str] | None = None, name: str = "proc") -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{name}-{len(self.started)}.log").open("wb")
        proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, start_new_session=True
        )
        log.close()
        proc.log_path = log.name  # type: ignore[attr-defined]
        self.started.append(proc)
        return proc

    def output(self, proc: subprocess.Popen[bytes]) -> str:
        return Path(proc.log_path).read_text(errors="replace")  # type: ignore[attr-defined]

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            stop_process(proc, grace=2.0)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    try:
        yield procs
    finally:
        procs.stop_all()


@pytest.fixture
def pool(processes: Processes, tmp_path: Path, short_dir: Path) -> Iterator[Pool]:
    """A pool (`pipelex-pool up`) that the test configures and starts; everything it ran is stopped after."""
    from tests.pool import Pool  # tests.pool imports this module

    running = Pool(processes, tmp_path, short_dir)
    try:
        yield running
    finally:
        processes.stop_all()
        running.cleanup()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory for AF_UNIX sockets (paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="pp-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


PYTHON = sys.executable


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The scenarios against a real Temporal server first (they are the long ones), then the rest in file order:
    spread over workers (pytest-xdist), the suite's last minutes are then short tests filling in, not one worker
    running a two-minute scenario alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
