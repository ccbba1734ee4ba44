"""`pipelex-pool up` with real children and a real Temporal server: start, restart, crash loops, drain, crash
of the supervisor itself, single instance."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from datetime import timedelta
from pathlib import Path

import psutil
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from pipelex_pool.control.status_doc import Status
from pipelex_pool.sim import HEAVY_IMPORTED_MARK as IMPORTED_MARK
from pipelex_pool.sim.model import PipeRunInput, PipeRunResult, SimStep
from tests import status_doc
from tests.conftest import Processes, TemporalServer, free_port, stop_process
from tests.helpers import history, wait_for
from tests.pool import Pool, alive, cli_args, copy_shipped_topology

pytestmark = pytest.mark.slow


def test_shipped_topology_starts_dev_server_and_every_replica_polls(
    processes: Processes, tmp_path: Path, short_dir: Path
) -> None:
    port = free_port()
    topology = copy_shipped_topology(tmp_path, port)
    env = {"XDG_RUNTIME_DIR": str(short_dir)}
    supervisor = processes.spawn(cli_args("up", str(topology)), env=env, name="supervisor")
    seen: set[int] = set()
    try:
        deadline = time.monotonic() + 90  # (a hang guard)
        missing: dict[str, list[str]] = {}
        while time.monotonic() < deadline:
            status = subprocess.run(
                cli_args("status", "--json"), capture_output=True, text=True, env={**os.environ, **env}
            )
            if status.returncode in (0, 3) and status.stdout:  # 3: not every replica READY yet
                data = json.loads(status.stdout)
                seen |= {r["pid"] for r in data["replicas"] if r["pid"]}
                assert data["pool"]["dev_server"]["managed"] is True
                missing = {}
                workers = [r for r in data["replicas"] if r["queue"]]
                for queue in {r["queue"] for r in workers}:
                    described = subprocess.run(
                        [
                            str(Path(cli_args()[0]).with_name("temporal"))
                            if cli_args()[0].endswith("pipelex-pool")
                            else "temporal",
                            "task-queue",
                            "describe",
                            "--task-queue",
                            queue,
                            "--address",
                            f"127.0.0.1:{port}",
                            "-o",
                            "json",
                        ],
                        capture_output=True,
                        text=True,
                    )
                    text = described.stdout
                    absent = [  # (a replica waiting for the dev server has no process, hence no identity, yet)
                        r["identity"] or f"{r['group']}/{r['replica']} (not spawned yet)"
                        for r in workers
                        if r["queue"] == queue and not (r["identity"] and r["identity"] in text)
                    ]
                    if absent or described.returncode != 0:
                        missing[queue] = absent or ["(describe failed)"]
                if workers and len(workers) == 4 and not missing:
                    break
            time.sleep(0.5)
        else:
            raise AssertionError(f"not every replica polled within 90s: {missing}\n{processes.output(supervisor)}")
    finally:  # a clean drain (SIGTERM), given a hang guard's time: on a busy machine it takes seconds
        stop_process(supervisor, grace=60)
        processes.stop_all()
        for pid in seen:
            if alive(pid):
                os.killpg(pid, signal.SIGKILL)
    assert supervisor.returncode == 0
    assert not [pid for pid in seen if alive(pid)]


def test_a_frozen_replica_is_killed_by_its_watchdog_and_the_others_pings_keep_them_alive(
    pool: Pool, temporal_server: TemporalServer, namespace: str
) -> None:
    """READY replicas' pings are read in batches (watchers/notify_batch.py), never judged unread: with a 2 s
    watchdog (a ping a second) only the replica that stopped pinging is killed."""
    pool.write(temporal_server, namespace, {"workers.llm.watchdog": "2s"})
    pool.up()
    before = {(r["group"], r["replica"]): status_doc.pid(r) for r in pool.wait_all_ready()["replicas"]}
    victim = before[("llm", 1)]
    os.kill(victim, signal.SIGSTOP)  # (the pool kills it; the Pool fixture kills every pid it saw, at worst)

    def replaced(status: Status) -> bool:
        r = next(r for r in status["replicas"] if (r["group"], r["replica"]) == ("llm", 1))
        return bool(r["state"] == "READY" and r["pid"] != victim)

    status = pool.wait(replaced, 60, "llm/1 killed by its watchdog and back READY")
    after = {(r["group"], r["replica"]): r for r in status["replicas"]}
    assert after[("llm", 1)]["last_exit"] == "killed by the pool: no WATCHDOG=1 for 2s"
    for key, pid in before.items():
        if key != ("llm", 1):
            assert (status_doc.pid(after[key]), after[key]["restarts"]) == (pid, 0), key


@pytest.mark.parametrize("spawner", ["fork", "exec"])
def test_sigkilled_replica_is_replaced_and_nothing_else_moves(
    pool: Pool, temporal_server: TemporalServer, namespace: str, spawner: str
) -> None:
    pool.write(temporal_server, namespace, {"pool.spawner": spawner})
    pool.up()
    before = {(r["group"], r["replica"]): status_doc.pid(r) for r in pool.wait_all_ready()["replicas"]}
    victim = before[("llm", 1)]
    os.kill(victim, signal.SIGKILL)

    def replaced(status: Status) -> bool:
        r = next(r for r in status["replicas"] if (r["group"], r["replica"]) == ("llm", 1))
        return bool(r["state"] == "READY" and r["pid"] != victim)

    status = pool.wait(replaced, 30, "llm/1 to come back READY")
    after = {(r["group"], r["replica"]): r for r in status["replicas"]}
    assert after[("llm", 1)]["restarts"] == 1
    assert after[("llm", 1)]["last_exit"] == "SIGKILL (possibly out of memory)"
    assert {k: r["pid"] for k, r in after.items() if k != ("llm", 1)} == {
        k: p for k, p in before.items() if k != ("llm", 1)
    }


def fork_servers(supervisor_pid: int) -> list[int]:
    return [
        child.pid
        for child in psutil.Process(supervisor_pid).children()
        if "pipelex_pool.supervisor.spawning.fork_server" in " ".join(child.cmdline())
    ]


def test_fork_server_children_are_the_supervisors_own_and_restart_refreshes_it(
    pool: Pool, temporal_server: TemporalServer, namespace: str
) -> None:
    pool.write(temporal_server, namespace)  # spawner = "fork" is the default
    supervisor = pool.up()
    status = pool.wait_all_ready()
    # double-forked by the fork server, adopted by the supervisor: it waits for them and reads their exit status;
    # ps shows each one's command line as if it had been exec'd
    for replica in status["replicas"]:
        worker = psutil.Process(replica["pid"])
        assert worker.ppid() == supervisor.pid
        assert " -m pipelex_pool worker " in " ".join(worker.cmdline())
    (server,) = fork_servers(supervisor.pid)
    victim = next(r for r in status["replicas"] if r["group"] == "media")
    os.kill(status_doc.pid(victim), signal.SIGKILL)
    status = pool.wait(
        lambda s: any(r["group"] == "media" and r["state"] == "READY" and r["restarts"] == 1 for r in s["replicas"]),
        30,
        "media back READY",
    )
    media = next(r for r in status["replicas"] if r["group"] == "media")
    assert media["last_exit"] == "SIGKILL (possibly out of memory)" and media["pid"] != victim["pid"]
    assert fork_servers(supervisor.pid) == [server]  # the crash restart used the warm fork server
    # the fork server itself dies: the next restart still happens (forked by a new fork server, or exec'd)
    os.kill(server, signal.SIGKILL)
    media_pid = status_doc.pid(media)
    os.kill(media_pid, signal.SIGKILL)
    status = pool.wait(
        lambda s: any(r["group"] == "media" and r["state"] == "READY" and r["pid"] != media_pid for r in s["replicas"]),
        30,
        "media back READY after the fork server died",
    )
    # a rolling restart is how new code gets deployed: it retires the fork server, replacements import afresh
    assert pool.cli("restart", "llm").returncode == 0
    old = {r["pid"] for r in status["replicas"] if r["group"] == "llm"}
    pool.wait(
        lambda s: not s["pool"]["busy"] and not {r["pid"] for r in s["replicas"] if r["group"] == "llm"} & old,
        60,
        "llm rolled",
    )
    servers = fork_servers(supervisor.pid)
    assert len(servers) == 1 and servers != [server]


def test_preload_imports_the_task_packs_once_in_the_fork_server(
    pool: Pool, temporal_server: TemporalServer, namespace: str
) -> None:
    """With [pool] preload = true the heavy app is imported by the fork server, not by any worker, nor by a
    restarted one; turned off (reload), a restarted worker imports it itself again."""
    heavy = {"pool.app": "pipelex_pool.sim.heavy:packs", "pool.preload": True, "workers.llm.replicas": 1}
    pool.write(temporal_server, namespace, heavy)
    supervisor = pool.up()
    status = pool.wait_all_ready(within=90)
    logs = pool.directory / "logs"

    def imports_in(name: str) -> int:
        return (logs / f"{name}.log").read_text().count(IMPORTED_MARK)

    assert [imports_in(n) for n in ("router-0", "llm-0", "media-0")] == [0, 0, 0]
    (server,) = fork_servers(supervisor.pid)
    assert "pipelex_pool.sim.heavy:packs" in psutil.Process(server).cmdline()
    victim = next(r for r in status["replicas"] if r["group"] == "media")
    os.kill(status_doc.pid(victim), signal.SIGKILL)
    pool.wait(
        lambda s: any(
            r["group"] == "media" and r["state"] == "READY" and r["pid"] != victim["pid"] for r in s["replicas"]
        ),
        30,
        "media back READY",
    )
    assert imports_in("media-0") == 0  # the replacement inherited the import too
    pool.rewrite({**heavy, "pool.preload": False})
    assert pool.cli("reload").returncode == 0
    assert pool.cli("restart", "media").returncode == 0
    pool.wait(lambda s: not s["pool"]["busy"] and all(r["state"] == "READY" for r in s["replicas"]), 90, "media rolled")
    assert imports_in("media-0") == 1  # no preload: the new worker paid for its own import
    assert "pipelex_pool.sim.heavy:packs" not in " ".join(
        " ".join(psutil.Process(pid).cmdline()) for pid in fork_servers(supervisor.pid)
    )


def test_crash_loop_backs_off_then_goes_fatal_without_touching_other_groups(
    pool: Pool, temporal_server: TemporalServer, namespace: str
) -> None:
    pool.write(
        temporal_server,
        namespace,
        {
            "workers.broken": {
                "command": ["{python}", "-c", "import sys; sys.exit(1)"],
                "scope": "full",
                "readiness": "delay:2s",
                "restart": {"backoff_initial": "0.2s", "backoff_max": "1.6s", "max_restarts": 4, "window": "60s"},
            }
        },
    )
    supervisor = pool.up()
    healthy = {
        r["pid"]
        for r in pool.wait(
            lambda s: s["groups"]["llm"]["ready"] == 2 and s["groups"]["router"]["ready"] == 1, 60, "healthy groups"
        )["replicas"]
        if r["group"] != "broken"
    }
    cpu_before = psutil.Process(supervisor.pid).cpu_times()
    started = time.monotonic()
    status = pool.wait(
        lambda s: any(r["state"] == "FATAL" for r in s["replicas"] if r["group"] == "broken"), 30, "broken to go FATAL"
    )
    elapsed = time.monotonic() - started
    cpu_after = psutil.Process(supervisor.pid).cpu_times()
    broken = next(r for r in status["replicas"] if r["group"] == "broken")
    assert broken["restarts"] == 4 and "max_restarts=4" in status_doc.text(broken["reason"])
    delays = [json.loads(line)["delay_s"] for line in pool.output().splitlines() if '"next": "backoff"' in line]
    assert len(delays) == 4 and all(b > a for a, b in zip(delays, delays[1:], strict=False)), delays
    # The supervisor sleeps between deadlines: a busy loop would burn a whole core while the group crash-loops.
    busy = (cpu_after.user + cpu_after.system - cpu_before.user - cpu_before.system) / elapsed
    assert busy < 0.5, f"supervisor used {busy:.0%} of a core during the crash loop"
    others = [r for r in pool.status()["replicas"] if r["group"] != "broken"]
    assert all(r["state"] == "READY" for r in others) and {r["pid"] for r in others} == healthy


async def test_sigterm_drains_running_activities_then_exits_0(
    pool: Pool, temporal_server: TemporalServer, namespace: str, client: Client
) -> None:
    pool.write(temporal_server, namespace)
    supervisor = pool.up()
    pool.wait_all_ready()
    ids = [f"drain-{uuid.uuid4().hex[:6]}-{n}" for n in range(4)]
    handles = [
        await client.start_workflow(
            "WfPipeRun",
            PipeRunInput(run_id=wid, steps=[SimStep("act_llm_gen_text", latency_s=3.0)]),
            id=wid,
            task_queue="temporal_task_queue",
            result_type=PipeRunResult,
        )
        for wid in ids
    ]

    async def all_started() -> bool:
        for handle in handles:
            pending = (await handle.describe()).raw_description.pending_activities
            if not pending or pending[0].state != 2:  # PENDING_ACTIVITY_STATE_STARTED
                return False
        return True

    await wait_for(all_started, 20, "the 3-second activities to start")
    children = [status_doc.pid(r) for r in pool.replicas()]
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(timeout=60) == 0, pool.output()
    assert not [pid for pid in children if alive(pid)]
    for wid in ids:  # every activity completed, on its first attempt, before its worker exited
        events = await history(client, wid)
        completed = [e for e in events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED]
        started = [e for e in events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED]
        assert len(completed) == 1 and started[0].activity_task_started_event_attributes.attempt == 1
    # The workflows finish once a router polls again: the next `up` starts cleanly and completes them.
    pool.up()
    pool.wait_all_ready()
    for handle in handles:
        result = await handle.result(rpc_timeout=timedelta(seconds=30))
        assert [step.attempt for step in result.steps] == [1]


def test_sigkilled_supervisor_leaves_no_worker_and_next_up_is_clean(
    pool: Pool, temporal_server: TemporalServer, namespace: str
) -> None:
    pool.write(
        temporal_server,
        namespace,
        {  # a program that ignores SIGTERM, so parent death alone cannot stop it: the next `up` must
            "workers.stubborn": {
                "command": [
                    "{python}",
                    "-c",
                    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)",
                ],
                "scope": "full",
                "readiness": "delay:0.5s",
            }
        },
    )
    supervisor = pool.up()
    status = pool.wait_all_ready()
    workers = {r["group"]: status_doc.pid(r) for r in status["replicas"]}
    supervisor.send_signal(signal.SIGKILL)
    supervisor.wait(timeout=10)
    time.sleep(10)
    survivors = [group for group, pid in workers.items() if alive(pid)]
    assert survivors == ["stubborn"], f"still running 10 s after the supervisor died: {survivors}"
    pool.up()
    status = pool.wait_all_ready()
    assert not alive(workers["stubborn"]), "the next `up` did not stop the leftover of the crashed supervisor"
    output = pool.output()
    assert "supervisor.leftover_stopped" in output
    found = [json.loads(line) for line in output.splitlines() if '"supervisor.leftover_found"' in line]
    # each leftover gets its profile's full grace (10 s in the test topology) + the stop margin, not a fixed 10 s
    assert {f["name"]: f["grace_s"] for f in found}["stubborn/0"] == 15.0
    assert all(r["state"] == "READY" for r in status["replicas"])


def test_second_up_for_the_same_pool_exits_2_naming_the_pid(
    pool: Pool, temporal_server: TemporalServer, namespace: str
) -> None:
    pool.write(temporal_server, namespace)
    first = pool.up()
    pool.wait_all_ready()
    second = subprocess.run(cli_args("up", str(pool.topology)), capture_output=True, text=True, timeout=60)
    assert second.returncode == 2
    assert f"supervisor pid {first.pid}" in second.stderr
    assert "fork server" not in second.stderr  # the one it started before refusing is gone, silently
    assert first.poll() is None


def test_up_refuses_a_broken_topology_and_starts_nothing(tmp_path: Path, processes: Processes, short_dir: Path) -> None:
    pool = Pool(processes, tmp_path, short_dir)
    pool.write(None, None, {"workers.llm.profile": "llm-pol"})
    result = subprocess.run(cli_args("up", str(pool.topology)), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "workers.llm.profile" in result.stderr and "Did you mean 'llm-pool'?" in result.stderr
    assert not pool.socket.exists() and not (tmp_path / "logs").exists()
    # (run() returns once every holder of the stderr pipe is gone: the fork server `up` started before it
    # validated the file too, killed when it refused, without a word)
    assert "fork server" not in result.stderr


def test_command_group_ready_when_temporal_lists_its_identity(
    pool: Pool, temporal_server: TemporalServer, namespace: str
) -> None:
    # Any worker program, its placeholders filled per replica; READY once Temporal lists its identity polling.
    command = [
        "{python}", "-m", "pipelex_pool", "worker", "--config", "{config}", "--task-queue", "{task_queue}",
        "--scope", "{scope}", "--profile", "{profile}", "--identity", "{identity}",
    ]  # fmt: skip
    pool.write(temporal_server, namespace, {"workers.llm.command": command, "workers.llm.readiness": "temporal"})
    pool.up()
    status = pool.wait_all_ready()
    llm = [r for r in status["replicas"] if r["group"] == "llm"]
    assert len(llm) == 2
    for replica in llm:  # the identity the program was given carries its real pid (filled in at exec)
        identity = status_doc.text(replica["identity"])
        assert identity.startswith(f"testpool/llm/{replica['replica']}@") and identity.endswith(f":{replica['pid']}")
    pool.wait(lambda s: all(r["polling"] for r in s["replicas"] if r["group"] == "llm"), 30, "llm polling")
