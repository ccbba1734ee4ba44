"""Supervision never stops silently: hostile or unlucky input (a deeply nested control frame, a topology nested
5,000 deep on SIGHUP, clients beyond the file-descriptor limit, a removed notify directory, a garbage state file)
is refused or survived, and afterwards the pool still does its job: a SIGKILLed worker is restarted and `status`
answers (each test kills one to prove it)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import time
from pathlib import Path

import psutil
import pytest

from tests import status_doc
from tests.conftest import TemporalServer
from tests.pool import Pool

pytestmark = pytest.mark.slow


def kill_one_worker_and_see_it_replaced(pool: Pool) -> None:
    """The proof that the pool still supervises: a SIGKILLed replica comes back READY with a new pid."""
    victim = next(r for r in pool.replicas() if r["group"] == "llm" and r["state"] == "READY")
    os.kill(status_doc.pid(victim), signal.SIGKILL)
    pool.wait(
        lambda s: any(
            r["group"] == "llm" and r["replica"] == victim["replica"] and r["state"] == "READY"
            and r["pid"] not in (None, victim["pid"])
            for r in s["replicas"]
        ),
        60,
        f"llm/{victim['replica']} restarted after SIGKILL",
    )  # fmt: skip


def request(path: Path, frame: bytes) -> dict[str, object]:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(30)
        sock.connect(str(path))
        sock.sendall(frame)
        answer = sock.makefile("rb").readline()
    parsed: dict[str, object] = json.loads(answer)
    return parsed


def limit_leaving(pid: int, free: int) -> int:
    """An RLIMIT_NOFILE for `pid` that leaves `free` descriptor numbers to allocate (the limit bounds the numbers,
    and new descriptors take the lowest free ones)."""
    used = {int(fd) for fd in os.listdir(f"/proc/{pid}/fd")}
    limit = 0
    while free > 0 or limit in used:
        free -= limit not in used
        limit += 1
    return limit


def started(pool: Pool, server: TemporalServer, namespace: str) -> None:
    pool.write(server, namespace, {"workers.media.replicas": 0})
    pool.up()
    pool.wait_all_ready()


def test_a_deeply_nested_control_frame_is_refused(pool: Pool, temporal_server: TemporalServer, namespace: str) -> None:
    started(pool, temporal_server, namespace)
    frame = b'{"cmd":"status","args":' + b"[" * 100_000 + b"\n"  # 100 KB, under the 1 MiB frame limit
    answer = request(pool.socket, frame)
    assert answer["ok"] is False and "nested deeper" in json.dumps(answer["error"])
    kill_one_worker_and_see_it_replaced(pool)


def test_a_topology_nested_5000_deep_on_sighup_changes_nothing(
    pool: Pool, temporal_server: TemporalServer, namespace: str
) -> None:
    started(pool, temporal_server, namespace)
    good = pool.topology.read_text()
    pool.topology.write_text(good + "\n[deep]\nx = " + "[" * 5000 + "]" * 5000 + "\n")
    assert pool.proc is not None
    os.kill(pool.proc.pid, signal.SIGHUP)
    events = pool.directory / "logs" / "supervisor.log"
    pool.wait(lambda s: "nested more than" in events.read_text(), 30, "the reload refused in the events")
    kill_one_worker_and_see_it_replaced(pool)
    assert pool.cli("status").returncode == 0


def test_clients_beyond_the_descriptor_limit_do_not_end_the_control_server(
    pool: Pool, temporal_server: TemporalServer, namespace: str
) -> None:
    started(pool, temporal_server, namespace)
    assert pool.proc is not None
    supervisor = psutil.Process(pool.proc.pid)
    original = supervisor.rlimit(psutil.RLIMIT_NOFILE)
    clients = []
    try:
        supervisor.rlimit(psutil.RLIMIT_NOFILE, (limit_leaving(supervisor.pid, 4), original[1]))
        for _ in range(40):
            client = socket.socket(socket.AF_UNIX)
            client.connect(str(pool.socket))  # (queued in the listen backlog when the server cannot accept)
            clients.append(client)
        events = pool.directory / "logs" / "supervisor.log"
        deadline = time.monotonic() + 30  # (status cannot answer now: it needs a descriptor too)
        while "control.accept_failed" not in events.read_text():
            assert time.monotonic() < deadline, "the control server never ran out of descriptors"
            time.sleep(0.1)
    finally:
        for client in clients:
            client.close()
        supervisor.rlimit(psutil.RLIMIT_NOFILE, original)
    pool.wait(lambda s: True, 30, "status answering again")
    kill_one_worker_and_see_it_replaced(pool)


def test_a_removed_notify_directory_is_recreated_by_the_next_spawn(
    pool: Pool, temporal_server: TemporalServer, namespace: str
) -> None:
    started(pool, temporal_server, namespace)
    notify_dir = pool.socket.parent / "notify"  # in the runtime directory, beside the socket
    assert list(notify_dir.glob("*.sock"))
    shutil.rmtree(notify_dir)  # a tmp cleaner, a logout
    kill_one_worker_and_see_it_replaced(pool)
    assert notify_dir.is_dir() and oct(notify_dir.stat().st_mode & 0o777) == "0o700"
    assert not [r for r in pool.replicas() if r["state"] == "FATAL"]


def test_a_garbage_state_file_is_moved_aside_and_up_starts(
    pool: Pool, temporal_server: TemporalServer, namespace: str
) -> None:
    pool.write(temporal_server, namespace, {"workers.media.replicas": 0})
    state = pool.directory / "state" / "children.json"
    state.parent.mkdir(mode=0o700, parents=True)
    state.write_bytes(b"\xff\xfe\x00garbage{")
    pool.up()
    pool.wait_all_ready()
    assert "state_file_corrupt" in pool.output()
    assert [p.name for p in state.parent.glob("children.json.corrupt-*")]
    kill_one_worker_and_see_it_replaced(pool)
