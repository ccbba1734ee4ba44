"""The pool as Temporal sees it: polling per replica, queue warnings, autoscaling, namespace set-up, load tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import anyio
import pytest
from temporalio.client import Client

from pipelex_pool.control.status_doc import Queue, Replica, Status
from pipelex_pool.sim.model import PipeRunInput, PipeRunResult, SimStep
from pipelex_pool.temporal.devserver import dev_server_command, wait_until_serving
from pipelex_pool.temporal.pollers import QueueType, queue_pollers
from tests import status_doc
from tests.conftest import Processes, TemporalServer, free_port
from tests.helpers import worker_args
from tests.pool import Pool, cli_args

pytestmark = pytest.mark.slow


def workers(status: Status) -> list[Replica]:
    return [r for r in status["replicas"] if r["queue"]]


def test_status_shows_polling_and_notices_a_stopped_replica(
    pool: Pool, temporal_server: TemporalServer, namespace: str
) -> None:
    # watchdog off for llm: a SIGSTOPped worker would otherwise be killed and replaced after 15 s
    pool.write(temporal_server, namespace, {"workers.llm.watchdog": "0s"})
    pool.up()
    pool.wait_all_ready()
    status = pool.wait(lambda s: all(r["polling"] is True for r in workers(s)), 30, "every READY replica polling")
    frozen = next(r for r in status["replicas"] if r["group"] == "llm")
    os.kill(status_doc.pid(frozen), signal.SIGSTOP)
    try:
        started = time.monotonic()

        def frozen_not_polling(s: Status) -> bool:
            replica = next(r for r in s["replicas"] if r["pid"] == frozen["pid"])
            return replica["polling"] is False

        status = pool.wait(frozen_not_polling, 90, "the SIGSTOPped replica to show as not polling")
        print(f"SIGSTOPped replica shown not polling after {time.monotonic() - started:.0f}s")
        others = [r for r in workers(status) if r["pid"] != frozen["pid"]]
        assert all(r["polling"] is True for r in others)
        assert "NO" in pool.cli("status").stdout
    finally:
        os.kill(status_doc.pid(frozen), signal.SIGCONT)
    pool.wait(lambda s: all(r["polling"] is True for r in workers(s)), 90, "the resumed replica polling again")


def test_status_warns_about_a_routed_queue_that_nobody_polls(
    pool: Pool, temporal_server: TemporalServer, namespace: str
) -> None:
    # media's program registers its scope on paper but never polls: media_q's routed activities would wait
    pool.write(
        temporal_server,
        namespace,
        {
            "workers.media.command": ["{python}", "-c", "import time; time.sleep(600)"],
            "workers.media.readiness": "delay:0.5s",
        },
    )
    pool.up()
    pool.wait_all_ready()
    status = pool.wait(lambda s: bool(s["warnings"]), 30, "a warning")
    assert any(
        "queue 'media_q'" in w and "act_img_gen_images" in w and "no live poller" in w for w in status["warnings"]
    )
    assert not any("llm_q" in w for w in status["warnings"])
    assert "warnings:" in pool.cli("status").stdout


def test_pollers_are_the_pool_s_live_replicas_and_the_rest_is_flagged(
    pool: Pool, temporal_server: TemporalServer, namespace: str, processes: Processes
) -> None:
    """POLLERS counts the pool's live replicas; replicas that exited are not counted (Temporal lists them ~75 s
    more), so stopping a whole group warns at once; a poller with a pool-like identity started by hand is flagged."""
    pool.write(temporal_server, namespace)
    pool.up()
    pool.wait_all_ready()

    def llm_q(status: Status) -> Queue:
        return status_doc.queue_of(status, "llm_q") or status_doc.queue()

    status = pool.wait(lambda s: len(llm_q(s).get("pool_pollers", [])) == 2, 30, "both llm replicas polling")
    gone = llm_q(status)["pool_pollers"]
    assert llm_q(status)["foreign_pollers"] == [] and not status["warnings"]
    assert pool.cli("stop", "llm").returncode == 0
    status = pool.wait(
        lambda s: any("queue 'llm_q'" in w and "no live poller" in w for w in s["warnings"]),
        30,  # not the ~75 s Temporal keeps listing the stopped replicas' last polls
        "the no-live-poller warning for llm_q",
    )
    assert llm_q(status)["pool_pollers"] == [] and llm_q(status)["foreign_pollers"] == []
    assert not any(identity in w for identity in gone for w in status["warnings"])  # exited, not strays
    assert pool.cli("start", "llm").returncode == 0
    pool.wait(lambda s: len(llm_q(s).get("pool_pollers", [])) == 2, 60, "llm back")
    stray_identity = f"testpool/llm/7@{os.uname().nodename}:1"  # looks like the pool's, is not one of its replicas
    stray = processes.spawn(
        worker_args(pool.topology, "llm_q", "runner-llm", identity=stray_identity), name="stray-worker"
    )
    status = pool.wait(lambda s: stray_identity in llm_q(s).get("foreign_pollers", []), 60, "the stray seen")
    assert any(stray_identity in w and "not one of this pool's live replicas" in w for w in status["warnings"])
    assert len(llm_q(status)["pool_pollers"]) == 2
    assert "2 + 1 other" in pool.cli("status").stdout
    stray.terminate()
    stray.wait(timeout=60)


async def test_autoscale_follows_the_backlog_up_and_back_down(
    pool: Pool, temporal_server: TemporalServer, namespace: str, client: Client
) -> None:
    pool.write(
        temporal_server,
        namespace,
        {
            "workers.llm.replicas": 1,
            "workers.llm.autoscale": {"min": 1, "max": 4, "target_backlog_per_replica": 10, "cooldown": "5s"},
            "temporal.worker_runtime_profiles.profiles.llm-pool.max_concurrent_activities": 5,
        },
    )
    pool.up()
    pool.wait_all_ready()
    handle = await client.start_workflow(
        "WfPipeRun",
        PipeRunInput(
            run_id="burst", steps=[SimStep("act_llm_gen_text", latency_s=1.0) for _ in range(200)], parallel=True
        ),
        id=f"burst-{uuid.uuid4().hex[:6]}",
        task_queue="temporal_task_queue",
        result_type=PipeRunResult,
    )
    started = time.monotonic()
    pool.wait(lambda s: s["groups"]["llm"]["ready"] == 4, 15, "4 llm replicas for a backlog of 200")
    print(f"4 replicas READY {time.monotonic() - started:.1f}s after the burst")
    result = await handle.result()
    assert len(result.steps) == 200 and all(step.attempt == 1 for step in result.steps)  # nothing failed
    status = pool.wait(lambda s: len([r for r in s["replicas"] if r["group"] == "llm"]) == 1, 60, "back to 1 replica")
    assert (status["groups"]["llm"]["autoscale"] or {})["desired"] == 1
    decisions = [json.loads(line) for line in pool.output().splitlines() if '"autoscale.decision"' in line]
    assert decisions[0]["replicas_to"] == 4 and decisions[0]["backlog"] > 30
    assert decisions[-1]["replicas_to"] == 1 and "cooldown" in decisions[-1]["reason"]


def test_setup_namespace_is_idempotent_and_dry_run_changes_nothing(
    processes: Processes, tmp_path: Path, short_dir: Path
) -> None:
    port = free_port()
    # A server without the attributes (the pool's own dev server registers them at start).
    server = processes.spawn(
        dev_server_command(port, tmp_path / "t.db", search_attributes=(), log_level="error"), name="bare"
    )
    anyio.run(lambda: wait_until_serving(f"127.0.0.1:{port}"))
    pool = Pool(processes, tmp_path, short_dir)
    pool.write(None, None, {"temporal.temporal_config.temporal_server_configs.local.target_host": f"127.0.0.1:{port}"})

    def setup(*flags: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            cli_args("setup-namespace", "-c", str(pool.topology), *flags), capture_output=True, text=True, timeout=60
        )

    dry = setup("--dry-run")
    assert dry.returncode == 0
    assert len(dry.stdout.splitlines()) == 5 and all(
        "temporal operator search-attribute create" in line for line in dry.stdout.splitlines()
    )
    assert "--name PipeCode --type Keyword" in dry.stdout
    assert "created" not in setup("--dry-run").stdout  # still all missing: the dry run changed nothing
    pool.write(
        None, None, {"temporal.temporal_config.temporal_server_configs.local.target_host": f"127.0.0.1:{free_port()}"}
    )
    offline = setup("--dry-run")  # from the file alone: no server needs to answer
    assert offline.returncode == 0 and offline.stdout.count("temporal operator search-attribute create") == 5
    pool.write(None, None, {"temporal.temporal_config.temporal_server_configs.local.target_host": f"127.0.0.1:{port}"})
    first = setup()
    assert first.returncode == 0 and "created PipeCode, PipelineRunId, SessionId, UserId, DomainCode" in first.stdout
    second = setup()
    assert second.returncode == 0 and "nothing to do" in second.stdout
    assert server.poll() is None


MIX = """
parallel = false
[[steps]]
activity = "act_llm_gen_text"
latency_s = 0.02
[[steps]]
activity = "act_img_gen_images"
latency_s = 0.02
[[steps]]
activity = "act_deliver"
latency_s = 0.01
"""


def test_loadtest_counts_match_temporal_and_the_pool(
    pool: Pool, temporal_server: TemporalServer, namespace: str, tmp_path: Path
) -> None:
    pool.write(temporal_server, namespace)
    pool.up()
    pool.wait_all_ready()
    mix = tmp_path / "mix.toml"
    mix.write_text(MIX)
    result = subprocess.run(
        cli_args("loadtest", str(pool.topology), "--runs", "200", "--concurrency", "20", "--mix", str(mix), "--json"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["completed"] == 200 and report["failed"] == 0
    assert report["temporal_completed"] == 200  # Temporal's own count of completed executions of this load test
    assert {q: v["activities"] for q, v in report["queues"].items()} == {
        "llm_q": 200,
        "media_q": 200,
        "temporal_task_queue": 200,
    }
    assert all(v["p50_s"] <= v["p95_s"] <= v["p99_s"] for v in report["queues"].values())
    # the pool's task accounting agrees: every activity those runs executed, counted once
    pool.wait(
        lambda s: s["pool"]["tasks"]["activities_completed"] == report["activities"] == 600, 20, "pool task totals"
    )


HUNG_S = 20.0


def test_status_says_when_temporal_stops_answering_and_since_when(
    pool: Pool, processes: Processes, tmp_path: Path
) -> None:
    """A Temporal server that stops answering (SIGSTOP: connections open, nothing answers): the header says so and
    since when, within seconds; POLLING is unknown rather than the last list; it answers again: both come back,
    and the events give the outage its length."""
    port = free_port()
    server = processes.spawn(dev_server_command(port, tmp_path / "t.db", log_level="error"), name="frozen-server")
    address = f"127.0.0.1:{port}"
    anyio.run(lambda: wait_until_serving(address, "default", within=60))
    pool.write(TemporalServer(address=address, pid=server.pid), "default", {"workers.media.replicas": 0})
    pool.up()
    pool.wait(lambda s: all(r["polling"] for r in s["replicas"] if r["queue"]), 60, "every replica seen polling")
    os.kill(server.pid, signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        status = pool.wait(lambda s: not s["pool"]["temporal"]["answering"], 90, "the outage seen")
        seen_after = time.monotonic() - stopped
        print(f"a hung server reported {seen_after:.1f}s after SIGSTOP")
        assert seen_after < 15  # (target: 5 s; the bound keeps a busy machine from failing it)
        assert status["pool"]["temporal"]["not_answering_since"] is not None
        assert all(r["polling"] is None for r in status["replicas"] if r["queue"])
        assert "NOT ANSWERING since" in pool.cli("status").stdout
        assert all(r["state"] == "READY" for r in status["replicas"])  # an outage is no worker failure
        time.sleep(max(0.0, HUNG_S - (time.monotonic() - stopped)))  # the scenario: hung for HUNG_S
    finally:
        os.kill(server.pid, signal.SIGCONT)
    status = pool.wait(
        lambda s: s["pool"]["temporal"]["answering"] and all(r["polling"] for r in s["replicas"] if r["queue"]),
        90,
        "Temporal answering again and every replica polling",
    )
    assert "NOT ANSWERING" not in pool.cli("status").stdout
    assert status["pool"]["temporal"]["outages"] == 1
    logged = [json.loads(line) for line in (pool.directory / "logs" / "supervisor.log").read_text().splitlines()]
    (recovered,) = [e for e in logged if e["event"] == "temporal.available"]
    print(f"hung {HUNG_S}s, outage logged as {recovered['down_s']}s")
    assert HUNG_S - 5 <= recovered["down_s"] <= HUNG_S + 5, recovered


def test_loadtest_rides_out_a_temporal_restart_and_reports_it(pool: Pool, processes: Processes, tmp_path: Path) -> None:
    """The server goes away mid-run (and stays away longer than the SDK's own retries) then comes back on the
    same database: the load test retries, every run completes, and the report says Temporal was out of reach."""
    port = free_port()
    database = tmp_path / "t.db"
    address = f"127.0.0.1:{port}"
    server = processes.spawn(dev_server_command(port, database, log_level="error"), name="server")
    anyio.run(lambda: wait_until_serving(address, "default", within=60))
    changes = {
        # an activity whose completion is lost in the outage is retried after this, not after 10 minutes
        "temporal.worker_config.default_activity_start_to_close_timeout": "10s",
    }
    pool.write(TemporalServer(address=address, pid=server.pid), "default", changes)
    pool.up()
    pool.wait_all_ready()
    mix = tmp_path / "mix.toml"
    mix.write_text(MIX.replace("latency_s = 0.01", "latency_s = 0.2"))
    args = cli_args("loadtest", str(pool.topology), "--runs", "40", "--concurrency", "4", "--mix", str(mix), "--json")
    loadtest = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:  # the outage starts mid-run: once the pool has completed some of the load test's activities
        pool.wait(lambda s: s["pool"]["tasks"]["activities_completed"] >= 5, 90, "the load test under way")
        server.terminate()
        server.wait(timeout=30)
        time.sleep(12)  # past the SDK client's own retries (~10 s): the load test must hold on by itself
        processes.spawn(dev_server_command(port, database, log_level="error"), name="server-again")
        out, err = loadtest.communicate(timeout=150)
    finally:
        if loadtest.poll() is None:
            os.killpg(loadtest.pid, signal.SIGKILL)
            loadtest.communicate()
    assert loadtest.returncode == 0, err.decode()[-2000:]
    report = json.loads(out)
    assert report["completed"] == 40 and report["failed"] == 0 and report["unfinished"] == 0
    assert report["temporal_unreachable"]["retries"] > 0
    assert report["temporal_completed"] == 40


async def test_down_then_up_the_previous_processes_are_not_called_strays(
    pool: Pool, temporal_server: TemporalServer, namespace: str, client: Client
) -> None:
    """Temporal lists the last polls of a pool's previous processes for ~75 s after `down`; the next `up` knows them
    for what they are (this pool's, on this host, their process gone), not strays."""
    pool.write(temporal_server, namespace)
    pool.up()
    before = {r["identity"] for r in pool.wait_all_ready()["replicas"] if r["identity"]}
    assert pool.cli("down").returncode == 0
    assert pool.proc is not None and pool.proc.wait(timeout=60) == 0
    pool.up()
    status = pool.wait(
        lambda s: all(r["polling"] for r in s["replicas"]) and len(s["replicas"]) == 4, 60, "every new replica polling"
    )
    listed = set()
    for queue, kind in (("llm_q", QueueType.ACTIVITY), ("media_q", QueueType.ACTIVITY)):
        listed |= set(await queue_pollers(client, queue, kind))
    assert before & listed, "Temporal still lists the previous processes (else this test shows nothing)"
    status = pool.wait(lambda s: s["temporal_watch_error"] is None, 30, "a full watch round")
    assert not [w for w in status["warnings"] if "not one of this pool's live replicas" in w], status["warnings"]
    assert all(q["foreign_pollers"] == [] for types in status["queues"].values() for q in types.values())


async def test_temporal_s_worker_heartbeats_show_slots_used_and_a_stopped_worker_is_flagged(
    pool: Pool, temporal_server: TemporalServer, namespace: str, client: Client
) -> None:
    """Temporal's own view of each replica (`ListWorkers`): N activities running on a replica show as N activity
    slots used; a worker whose process is SIGSTOPped stops heartbeating and is flagged while its process exists."""
    pool.write(
        temporal_server,
        namespace,
        {"pool.worker_heartbeat": "1s", "workers.llm.watchdog": "0s", "workers.media.replicas": 0},
    )
    pool.up()
    pool.wait_all_ready()
    runs = [
        await client.start_workflow(
            "WfPipeRun",
            PipeRunInput(run_id=f"hb-{i}", steps=[SimStep("act_llm_gen_text", latency_s=25.0)]),
            id=f"hb-{uuid.uuid4().hex[:8]}-{i}",
            task_queue="temporal_task_queue",
            result_type=PipeRunResult,
        )
        for i in range(3)
    ]

    def llm(status: Status) -> list[Replica]:
        return [r for r in status["replicas"] if r["group"] == "llm"]

    status = pool.wait(
        lambda s: sum(w["activity_slots_used"] for r in llm(s) if (w := r["temporal_worker"])) == 3,
        40,
        "Temporal's heartbeats showing the 3 activity slots used",
    )
    assert status["pool"]["worker_heartbeats"] == "read"
    for row in llm(status):  # Temporal's count and the pool's own agree, replica by replica
        worker = row["temporal_worker"]
        assert worker is not None and worker["activity_slots_used"] == len(row["inflight"])
        assert worker["status"] == "RUNNING" and not row["heartbeat_stale"]
    victim = llm(status)[0]
    os.kill(status_doc.pid(victim), signal.SIGSTOP)
    try:
        status = pool.wait(
            lambda s: any(r["pid"] == victim["pid"] and r["heartbeat_stale"] for r in llm(s)),
            60,
            "the stopped worker flagged by its stale heartbeat",
        )
        assert "no recent heartbeat from it while its process runs" in pool.cli("status").stdout
        assert not any(r["heartbeat_stale"] for r in llm(status) if r["pid"] != victim["pid"])
    finally:
        os.kill(status_doc.pid(victim), signal.SIGCONT)
    for run in runs:
        await run.result()
