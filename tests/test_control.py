"""The control socket and CLI against a running pool (real supervisor, real workers, real Temporal), every
command through the installed `pipelex-pool` command."""

from __future__ import annotations

import json
import os
import random
import re
import socket
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest
from temporalio.client import Client

from pipelex_pool.control.client import ControlClient
from pipelex_pool.sim.model import PipeRunInput, PipeRunResult, SimStep
from pipelex_pool.temporal.pollers import QueueType, queue_pollers
from pipelex_pool.temporal.watch import LIVE_WITHIN
from tests import status_doc
from tests.conftest import Processes, TemporalServer
from tests.helpers import retried_failures
from tests.pool import Pool, alive, cli_args

pytestmark = pytest.mark.slow


@pytest.fixture
def pool(
    processes: Processes, tmp_path: Path, short_dir: Path, temporal_server: TemporalServer, namespace: str
) -> Iterator[Pool]:
    running = Pool(processes, tmp_path, short_dir)
    running.write(temporal_server, namespace)
    try:
        yield running
    finally:
        processes.stop_all()
        running.cleanup()


def pids(pool: Pool, group: str) -> list[int]:
    return [status_doc.pid(r) for r in pool.replicas(group) if r["role"] == "replica"]


def test_status_shows_every_replica_and_the_pool(pool: Pool) -> None:
    pool.up()
    pool.wait_all_ready()
    human = pool.cli("status")
    assert human.returncode == 0
    header = human.stdout.splitlines()
    assert header[0].startswith("pool testpool (supervisor pid")
    table = [line for line in header if line.startswith("GROUP")]
    assert table and all(
        col in table[0]
        for col in ("PID", "STATE", "SCOPE", "PROFILE", "QUEUE", "UPTIME", "RESTARTS", "LAST EXIT", "RSS", "CPU%")
    )
    table_start = header.index(table[0])
    rows = header[table_start + 1 : header.index("", table_start)]  # the replica table ends at a blank line
    assert len(rows) == 4 and all("READY" in row for row in rows)
    data = pool.status()  # a look reads every replica's resources as of now: no sampler period to wait for
    assert data["protocol"] == 1
    assert data["pool"]["topology"] == str(pool.topology)
    assert all(r["rss_bytes"] and r["rss_bytes"] > 10 * 2**20 for r in data["replicas"])
    # filters and exit codes as supervisorctl's: a group, one replica, a name that matches nothing
    llm = pool.cli("status", "llm", "--json")
    assert llm.returncode == 0 and {r["group"] for r in json.loads(llm.stdout)["replicas"]} == {"llm"}
    one = pool.cli("status", "llm/1", "--json")
    assert one.returncode == 0 and [(r["group"], r["replica"]) for r in json.loads(one.stdout)["replicas"]] == [
        ("llm", 1)
    ]
    nosuch = pool.cli("status", "nosuch")
    assert nosuch.returncode == 4 and "nosuch: no such group or replica" in nosuch.stderr
    assert pool.cli("status", "llm/7").returncode == 4


def test_status_with_no_pool_exits_3_and_names_the_socket(
    tmp_path: Path, processes: Processes, short_dir: Path
) -> None:
    pool = Pool(processes, tmp_path, short_dir)
    result = pool.cli("status")
    assert result.returncode == 3
    assert str(pool.socket) in result.stderr


def test_restart_failed_revives_a_fatal_replica_once_fixed(pool: Pool, tmp_path: Path) -> None:
    flag = tmp_path / "configured"
    changes = {
        "workers.picky": {
            "command": [
                "{python}",
                "-c",
                f"import os, sys, time; os.path.exists({str(flag)!r}) or sys.exit(78); time.sleep(600)",
            ],
            "scope": "full",
            "readiness": "delay:0.5s",
        }
    }
    pool.rewrite(changes)
    pool.up()
    status = pool.wait(
        lambda s: any(r["group"] == "picky" and r["state"] == "FATAL" for r in s["replicas"]), 30, "picky FATAL"
    )
    picky = next(r for r in status["replicas"] if r["group"] == "picky")
    assert picky["last_exit"] == "exit 78 (configuration error)" and picky["restarts"] == 0  # fatal at once
    pool.wait(
        lambda s: all(r["state"] == "READY" for r in s["replicas"] if r["group"] != "picky"), 60, "the rest READY"
    )
    assert pool.cli("status").returncode == 3  # a FATAL replica: not everything wanted runs
    assert pool.cli("status", "picky", "--json").returncode == 3
    assert pool.cli("status", "llm", "router").returncode == 0  # what it asked about is READY
    flag.touch()
    result = pool.cli("restart-failed")
    assert result.returncode == 0 and "picky/0" in result.stdout
    pool.wait(lambda s: any(r["group"] == "picky" and r["state"] == "READY" for r in s["replicas"]), 30, "picky READY")


async def test_rolling_restart_under_load_keeps_pollers_and_loses_no_activity(pool: Pool, client: Client) -> None:
    # a lost dispatch (see below) is retried after start_to_close: keep that short so the test does not wait 2 min
    pool.rewrite({"temporal.queue_options.llm_q.start_to_close_timeout": "15s"})
    pool.up()
    pool.wait_all_ready()
    before = set(pids(pool, "llm"))
    runs = [
        await client.start_workflow(
            "WfPipeRun",
            PipeRunInput(run_id=f"roll-{n}", steps=[SimStep("act_llm_gen_text", latency_s=0.4) for _ in range(12)]),
            id=f"roll-{uuid.uuid4().hex[:6]}-{n}",
            task_queue="temporal_task_queue",
            result_type=PipeRunResult,
        )
        for n in range(12)
    ]
    assert pool.cli("restart", "llm").returncode == 0
    samples = 0
    deadline = time.monotonic() + 90
    control = ControlClient(pool.socket)  # in-process client: samples every ~0.1 s, not every CLI start-up
    while time.monotonic() < deadline:
        status = control.call("status")
        ready = {r["identity"] for r in status["replicas"] if r["group"] == "llm" and r["state"] == "READY"}
        pollers = await queue_pollers(client, "llm_q", QueueType.ACTIVITY)
        # (an idle poller's last poll can be up to a long poll old: once the runs are done, a busy machine may
        # still be rolling; a READY replica's poll within LIVE_WITHIN is a live one)
        recent = {i for i, p in pollers.items() if datetime.now(UTC) - p.last_access < LIVE_WITHIN}
        assert ready & recent, f"no live llm poller: READY {ready}, recently polling {recent}"
        samples += bool(status["pool"]["busy"])  # (a sample taken while the roll was under way)
        current = {r["pid"] for r in status["replicas"] if r["group"] == "llm" and r["role"] == "replica"}
        if not status["pool"]["busy"] and not (current & before) and len(ready) == 2:
            break
        await anyio.sleep(0.05)
    else:
        raise AssertionError("the rolling restart did not finish within 90 s")
    assert samples >= 3  # the roll was watched while under way, not only once it was over
    lost_dispatches = 0
    for run in runs:
        await run.result(rpc_timeout=timedelta(seconds=60))  # every run succeeds
        failures = await retried_failures(client, run.id)
        # No activity was cut short or cancelled by a drain, and none waited for its start-to-close timeout: the
        # only retries are dispatches Temporal lost while a worker shut down (README "Known limitations"), which
        # the pool found and handed back at once.
        lost = [f for f in failures if "exited without running this attempt" in f.message]
        assert len(lost) == len(failures), [f for f in failures if f not in lost]
        lost_dispatches += len(lost)
    print(f"rolling restart under load: {lost_dispatches} dispatch(es) lost by Temporal, found and handed back")


def test_stop_survives_reload_and_start_brings_the_group_back(pool: Pool) -> None:
    pool.up()
    pool.wait_all_ready()
    assert pool.cli("stop", "media").returncode == 0
    pool.wait(lambda s: not [r for r in s["replicas"] if r["group"] == "media"], 30, "media drained")
    assert pool.cli("reload").returncode == 0  # answered once applied: what status shows now is the outcome
    status = pool.status()
    assert status["groups"]["media"]["stopped_by_operator"] and not [
        r for r in status["replicas"] if r["group"] == "media"
    ]
    # the stopped group is still a group: `status media` shows it STOPPED, as supervisorctl does (exit 0: no
    # replica of it is wanted, so none is missing)
    shown = pool.cli("status", "media")
    assert shown.returncode == 0 and "no such group" not in shown.stderr, shown.stderr
    assert any(line.split()[:4] == ["media", "-", "-", "STOPPED"] for line in shown.stdout.splitlines()), shown.stdout
    assert pool.cli("status").stdout.count("STOPPED") == 1
    assert pool.cli("start", "media").returncode == 0
    pool.wait(lambda s: s["groups"]["media"]["ready"] == 1, 30, "media READY again")


def test_reload_refuses_a_broken_file_and_scales_without_restarting(pool: Pool) -> None:
    pool.up()
    before = {(r["group"], r["replica"]): r["pid"] for r in pool.wait_all_ready()["replicas"]}
    pool.rewrite({"workers.llm.profile": "llm-pol"})
    refused = pool.cli("reload")
    assert refused.returncode == 2
    assert "workers.llm.profile" in refused.stderr and "Did you mean 'llm-pool'?" in refused.stderr
    assert {(r["group"], r["replica"]): r["pid"] for r in pool.status()["replicas"]} == before
    pool.rewrite({"workers.llm.replicas": 3})
    applied = pool.cli("reload", "--json")
    assert applied.returncode == 0 and json.loads(applied.stdout)["scaled"] == {"llm": 3}
    status = pool.wait(lambda s: s["groups"]["llm"]["ready"] == 3, 30, "a third llm replica")
    after = {(r["group"], r["replica"]): r["pid"] for r in status["replicas"]}
    assert {k: v for k, v in after.items() if k != ("llm", 2)} == before


def test_scale_save_writes_replicas_back_keeping_comments(pool: Pool) -> None:
    text = pool.topology.read_text().replace("[workers.llm]", "# the LLM pool: keep this comment\n[workers.llm]")
    pool.topology.write_text(text)
    pool.up()
    pool.wait_all_ready()
    result = pool.cli("scale", "llm", "1", "--save")
    assert result.returncode == 0, result.stderr
    pool.wait(lambda s: len([r for r in s["replicas"] if r["group"] == "llm"]) == 1, 30, "llm scaled to 1")
    saved = pool.topology.read_text()
    assert "# the LLM pool: keep this comment" in saved
    assert "replicas = 1" in saved.split("[workers.llm]")[1].split("[")[0]
    assert pool.cli("scale", "nope", "1").returncode == 2


def test_logs_and_down(pool: Pool) -> None:
    supervisor = pool.up()
    pool.wait_all_ready()
    children = [status_doc.pid(r) for r in pool.replicas()]
    logs = pool.cli("logs", "llm/1", "-n", "5")
    # the worker says it polls; its READY is the supervisor's, once Temporal lists it (supervisor/watchers/listing.py)
    assert logs.returncode == 0 and "worker.polling" in logs.stdout and len(logs.stdout.splitlines()) <= 5
    assert pool.cli("logs", "nope").returncode == 2
    group = pool.cli("logs", "llm", "-n", "2")  # a group of two: both replicas, each line prefixed with its name
    assert group.returncode == 0
    assert {line.split(" |")[0].strip() for line in group.stdout.splitlines()} == {"llm/0", "llm/1"}
    merged = pool.cli("logs", "--all", "-n", "2")
    assert merged.returncode == 0
    assert {line.split(" |")[0].strip() for line in merged.stdout.splitlines()} == {
        f"{r['group']}/{r['replica']}" for r in pool.replicas()
    }
    # following: every replica merged, one added by `scale` included; the supervisor's events as they happen
    socket_args = ["--socket", str(pool.socket)]
    follow_logs = pool.processes.spawn(cli_args("logs", "--all", "-f", "-n", "1", *socket_args), name="logs-f")
    follow_events = pool.processes.spawn(cli_args("events", "-f", "-n", "1", *socket_args), name="events-f")

    def followed(proc: subprocess.Popen[bytes], pattern: str) -> bool:
        return re.search(pattern, pool.processes.output(proc), re.MULTILINE) is not None

    deadline = time.monotonic() + 60  # (hang guards: each follower shows its last line once it follows)
    while not (followed(follow_logs, r"^llm/1 +\| ") and followed(follow_events, r"\S")):
        assert time.monotonic() < deadline, (pool.processes.output(follow_logs), pool.processes.output(follow_events))
        time.sleep(0.1)
    assert pool.cli("scale", "llm", "3", "--wait").returncode == 0
    deadline = time.monotonic() + 60
    while not (followed(follow_logs, r"^llm/2 +\| ") and followed(follow_events, r"worker\.ready .*replica=2")):
        assert time.monotonic() < deadline, (pool.processes.output(follow_logs), pool.processes.output(follow_events))
        time.sleep(0.2)
    for proc in (follow_logs, follow_events):
        proc.terminate()
        proc.wait(timeout=10)
    down = pool.cli("down")
    assert down.returncode == 0, down.stderr
    assert supervisor.wait(timeout=30) == 0
    assert not [pid for pid in children if alive(pid)]
    assert pool.cli("status").returncode == 3
    # the pool is down: its logs are still there to read, found from the topology
    after = pool.cli("logs", "llm/1", "-n", "5", "-c", str(pool.topology))
    assert after.returncode == 0 and "worker.exited" in after.stdout, after.stderr
    assert pool.cli("logs", "llm/1").returncode == 3  # down, and no topology named: says how to name it
    events = pool.cli("events", "-n", "1000", "--json", "-c", str(pool.topology))
    names = [json.loads(line)["event"] for line in events.stdout.splitlines()]
    assert events.returncode == 0 and "worker.ready" in names and names[-1] == "supervisor.exit"


def test_socket_is_private_and_other_uids_are_refused(pool: Pool) -> None:
    pool.up()
    pool.wait_all_ready()
    assert stat.S_IMODE(pool.socket.stat().st_mode) == 0o600
    runtime = pool.socket.parent
    if os.geteuid() != 0:
        pytest.skip("needs root to run a client under another uid")
    client = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n"
        f"    s.connect({str(pool.socket)!r})\n"
        "except PermissionError:\n"
        "    print('EACCES'); sys.exit(0)\n"
        "s.settimeout(10)\n"
        "print(s.recv(65536).decode())\n"  # the daemon answers a refused peer at once, before any request
    )
    # the venv's interpreter may live under /root: run the foreign client on the system one when there is one
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    denied = subprocess.run([python, "-c", client], user=65534, capture_output=True, text=True, timeout=30)
    assert denied.stdout.strip() == "EACCES"  # the socket file itself is 0600
    # Even with the file opened up (a misconfiguration), SO_PEERCRED refuses a foreign uid.
    runtime.chmod(0o755)
    pool.socket.chmod(0o666)
    try:
        refused = subprocess.run([python, "-c", client], user=65534, capture_output=True, text=True, timeout=30)
    finally:
        runtime.chmod(0o700)
        pool.socket.chmod(0o600)
    assert refused.stdout.strip().startswith("{"), (refused.stdout, refused.stderr)
    answer = json.loads(refused.stdout)
    assert answer["ok"] is False and answer["error"]["code"] == "forbidden"


def _fuzz_frames(rng: random.Random) -> Iterator[bytes]:
    kinds: list[Callable[[], bytes]] = [
        lambda: bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))) + b"\n",
        lambda: b'{"id": 1, "cmd": "status"' + b"\n",
        lambda: json.dumps(rng.choice([[], 5, "status", None, True])).encode() + b"\n",
        lambda: json.dumps({"id": rng.random(), "cmd": f"no-such-{rng.randrange(99)}"}).encode() + b"\n",
        lambda: json.dumps({"id": 1, "cmd": rng.choice([5, None, ["status"]])}).encode() + b"\n",
        lambda: (
            json.dumps(
                {"id": 1, "cmd": "scale", "args": {"group": rng.choice([5, None, "nope"]), "replicas": "x"}}
            ).encode()
            + b"\n"
        ),
        lambda: (
            json.dumps(
                {"id": 1, "cmd": "scale", "args": {"group": "llm", "replicas": rng.choice([-1, 2.5, True, "3"])}}
            ).encode()
            + b"\n"
        ),
        lambda: (
            json.dumps(
                {"id": 1, "cmd": rng.choice(["stop", "start", "restart"]), "args": rng.choice([[], "x", {"group": 7}])}
            ).encode()
            + b"\n"
        ),
        lambda: b"\xff\xfe\x00\x00" * rng.randrange(1, 50) + b"\n",
        lambda: b"\n",
    ]
    for _ in range(1000):
        yield rng.choice(kinds)()


def test_fuzzed_frames_leave_the_daemon_answering(pool: Pool) -> None:
    supervisor = pool.up()
    before = {r["pid"] for r in pool.wait_all_ready()["replicas"]}
    staller = socket.socket(socket.AF_UNIX)
    staller.connect(str(pool.socket))
    staller.sendall(b'{"id": 1, "cmd": "sta')  # half a line, then silence
    huge = socket.socket(socket.AF_UNIX)
    huge.connect(str(pool.socket))
    try:
        huge.sendall(b"x" * (10 * 2**20) + b"\n")  # 10 MiB line
    except (BrokenPipeError, ConnectionResetError):
        pass  # the daemon answered "frame_too_large" and closed before reading it all
    huge.close()
    rng = random.Random(1234)
    answered = 0
    for frame in _fuzz_frames(rng):
        conn = socket.socket(socket.AF_UNIX)
        conn.settimeout(10)
        conn.connect(str(pool.socket))
        conn.sendall(frame)
        reply = conn.recv(65536)
        conn.close()
        if reply:
            answer = json.loads(reply.splitlines()[0])
            assert answer["ok"] is False and answer["error"]["code"]
            answered += 1
    assert answered >= 990
    timings = []
    for _ in range(5):
        conn = socket.socket(socket.AF_UNIX)
        started = time.perf_counter()
        conn.connect(str(pool.socket))
        conn.sendall(b'{"id": 9, "cmd": "status"}\n')
        data = b""
        while not data.endswith(b"\n"):
            data += conn.recv(65536)
        timings.append(time.perf_counter() - started)
        conn.close()
        assert json.loads(data)["ok"] is True
    staller.close()
    assert min(timings) < 0.1, f"status took {min(timings) * 1000:.0f} ms at best after the fuzzing"
    assert supervisor.poll() is None
    assert {r["pid"] for r in pool.replicas()} == before  # nothing was changed by the garbage


def test_reload_after_an_unsaved_scale_prints_the_change_it_makes(pool: Pool) -> None:
    pool.up()
    pool.wait_all_ready()
    assert pool.cli("scale", "llm", "3").returncode == 0  # not saved: the file still says 2
    pool.wait(lambda s: s["groups"]["llm"]["ready"] == 3, 30, "a third llm replica")
    result = pool.cli("reload")
    assert result.returncode == 0, result.stderr
    assert "scaled: llm=2" in result.stdout and "llm: 3 -> 2 replica(s)" in result.stdout, result.stdout
    pool.wait(
        lambda s: s["groups"]["llm"]["desired"] == 2 and len([r for r in s["replicas"] if r["group"] == "llm"]) == 2,
        30,
        "llm back to the file's 2 replicas",
    )


def test_wait_shows_each_replica_and_fails_naming_a_replacement_that_cannot_start(pool: Pool, tmp_path: Path) -> None:
    broken = tmp_path / "broken"  # while it exists, a new llm process exits at once (a bad deploy)
    command = [
        "/bin/sh", "-c", f'[ -e {broken} ] && exit 1; exec "$@"', "sh",
        "{python}", "-m", "pipelex_pool", "worker", "--config", "{config}", "--task-queue", "{task_queue}",
        "--scope", "{scope}", "--profile", "{profile}", "--identity", "{identity}",
    ]  # fmt: skip
    pool.rewrite({"workers.llm.command": command})
    pool.up()
    pool.wait_all_ready()
    # not on a terminal: no wait unless asked (as systemctl --no-block)
    result = pool.cli("restart", "llm")
    assert result.returncode == 0 and "started (see `status`)" in result.stdout
    pool.wait(lambda s: not s["pool"]["busy"] and s["groups"]["llm"]["ready"] == 2, 60, "the first roll done")
    before = pids(pool, "llm")
    result = pool.cli("restart", "llm", "--wait")
    assert result.returncode == 0, result.stderr
    assert "llm/0: READY (pid" in result.stdout and "llm/1: READY (pid" in result.stdout
    assert "done in" in result.stdout
    after = pids(pool, "llm")
    assert not set(after) & set(before) and all(r["state"] == "READY" for r in pool.replicas("llm"))

    broken.touch()
    result = pool.cli("restart", "llm", "--wait", "--timeout", "6")
    assert result.returncode == 1
    assert "llm/0 (replacement)" in result.stderr and (
        "timed out after 6s" in result.stderr or "failed" in result.stderr
    )
    assert pids(pool, "llm") == after  # the old processes serve on
    status = pool.wait(lambda s: not s["pool"]["busy"], 60, "the roll given up once the replacement is FATAL")
    assert (
        "llm/0: the replacement never became READY"
        in (status["groups"]["llm"]["roll_aborted"] or {"reason": ""})["reason"]
    )
    assert pids(pool, "llm") == after
    broken.unlink()

    result = pool.cli("stop", "llm", "--wait")
    assert result.returncode == 0 and "done in" in result.stdout
    assert all(r["state"] not in ("STARTING", "READY", "STOPPING") for r in pool.replicas("llm"))
    result = pool.cli("start", "llm", "--wait")
    assert result.returncode == 0 and result.stdout.count(": READY (pid") == 2
    result = pool.cli("scale", "llm", "3", "--wait", "--json")
    assert result.returncode == 0 and json.loads(result.stdout)["wait"]["done"] is True
    assert [r["state"] for r in pool.replicas("llm")] == ["READY"] * 3
    result = pool.cli("down")
    assert result.returncode == 0 and "llm/2: STOPPING" in result.stdout and "pool stopped" in result.stdout
