"""Production service behaviour: the unit files, the supervisor's own sd_notify (a test plays systemd),
memory limits, /health and /metrics."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from temporalio.client import Client

from pipelex_pool.control.status_doc import Status
from pipelex_pool.sim.model import PipeRunInput, PipeRunResult, SimStep
from tests import status_doc
from tests.conftest import TemporalServer, free_port
from tests.helpers import NotifyListener, systemd_analyze
from tests.pool import PIPELEX_POOL, Pool, cli_args

REPO = Path(__file__).resolve().parent.parent


def test_unit_files_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = systemd_analyze()
    program = PIPELEX_POOL or shutil.which("pipelex-pool")
    assert program, "the pipelex-pool script must be installed to verify ExecStart"
    # As an installer would: point ExecStart at the installed program (units ship with /opt/pipelex-pool/bin).
    for unit, name in (
        ("pipelex-pool.service", "pipelex-pool.service"),
        ("pipelex-pool@.service", "pipelex-pool@demo.service"),
    ):
        text = (REPO / "systemd" / unit).read_text().replace("/opt/pipelex-pool/bin/pipelex-pool", program)
        (tmp_path / name).write_text(text)
    result = subprocess.run(
        [analyze, "verify", str(tmp_path / "pipelex-pool.service"), str(tmp_path / "pipelex-pool@demo.service")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    for unit in ("pipelex-pool.service", "pipelex-pool@.service"):
        text = (REPO / "systemd" / unit).read_text()
        for directive in (
            "Type=notify",
            "NotifyAccess=main",
            "KillMode=mixed",
            "WatchdogSec=",
            "ExecReload=/opt/pipelex-pool/bin/pipelex-pool reload -c /etc/pipelex-pool/",  # waits; fails if refused
            "RestartPreventExitStatus=2",  # a refused topology: restarting cannot fix it
            "SystemCallFilter=@system-service",
            "ProtectProc=invisible",
            "PrivateDevices=yes",
            "RemoveIPC=yes",
            "RuntimeDirectory=",
            "StateDirectory=",
            "LogsDirectory=",
            "User=pipelex-pool",
            "Restart=on-failure",
            "StartLimitBurst=",
            "OOMPolicy=continue",  # one replica's OOM kill must not stop every replica
        ):
            assert directive in text, f"{unit} lacks {directive}"
        assert "32min" in text  # above Pipelex's default 30-minute graceful_shutdown_timeout
    # systemd's own exposure score (0 best, 10 worst): 3.5 before the hardening of 2026-11-24, 1.7 since
    for name in ("pipelex-pool.service", "pipelex-pool@demo.service"):
        security = subprocess.run(
            [analyze, "security", "--offline=yes", "--threshold=20", str(tmp_path / name)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert security.returncode == 0, f"{name}: exposure above 2.0:\n{security.stdout[-400:]}"
    sysusers = (REPO / "systemd" / "pipelex-pool.sysusers").read_text()
    assert 'u pipelex-pool - "pipelex-pool supervisor" /var/lib/pipelex-pool' in sysusers


@pytest.mark.slow
async def test_supervisor_speaks_sd_notify_like_a_systemd_service(
    pool: Pool, temporal_server: TemporalServer, namespace: str, short_dir: Path
) -> None:
    pool.write(temporal_server, namespace)
    listener = NotifyListener(short_dir / "systemd.sock")
    try:
        supervisor = pool.processes.spawn(
            cli_args("up", str(pool.topology)),
            env={"NOTIFY_SOCKET": str(listener.path), "WATCHDOG_USEC": "1000000"},
            name="supervisor",
        )
        pool.proc = supervisor
        await listener.expect("READY=1", within=60)
        status = pool.status()
        assert [r["state"] for r in status["replicas"]] == ["READY"] * 4  # READY=1 only once all are READY
        ready_message = next(m for m in listener.messages if "READY=1" in m.splitlines())
        assert "STATUS=4/4 ready" in ready_message.splitlines()
        before = listener.count("WATCHDOG=1")
        await listener.expect("WATCHDOG=1", within=10, times=before + 4)  # every 0.5 s (half of WATCHDOG_USEC)
        supervisor.send_signal(signal.SIGHUP)
        await listener.expect("RELOADING=1", within=10)
        reloading = next(m for m in listener.messages if "RELOADING=1" in m.splitlines())
        assert any(line.startswith("MONOTONIC_USEC=") for line in reloading.splitlines())
        await listener.expect("READY=1", within=30, times=2)
        supervisor.send_signal(signal.SIGTERM)
        await listener.expect("STOPPING=1", within=10)
        assert supervisor.wait(timeout=60) == 0
        # the children never spoke to "systemd": only the supervisor's own messages arrived
        assert not [m for m in listener.messages if "STATUS=polling" in m]
    finally:
        listener.close()


@pytest.mark.slow
async def test_replica_over_max_memory_is_replaced_without_losing_its_activity(
    pool: Pool, temporal_server: TemporalServer, namespace: str, client: Client
) -> None:
    pool.write(temporal_server, namespace, {"workers.llm.replicas": 1, "workers.llm.max_memory": "250MiB"})
    pool.up()
    first = next(r for r in pool.wait_all_ready()["replicas"] if r["group"] == "llm")
    handle = await client.start_workflow(
        "WfPipeRun",
        PipeRunInput(run_id="mem", steps=[SimStep("act_llm_gen_text", latency_s=6.0, memory_mb=400)]),
        id=f"mem-{uuid.uuid4().hex[:6]}",
        task_queue="temporal_task_queue",
        result_type=PipeRunResult,
    )
    result = await handle.result()
    (step,) = result.steps
    assert step.attempt == 1 and step.worker_identity == first["identity"]  # it finished where it started
    status = pool.wait(
        lambda s: (
            any(r["group"] == "llm" and r["state"] == "READY" and r["pid"] != first["pid"] for r in s["replicas"])
            and not any(r["pid"] == first["pid"] for r in s["replicas"])
        ),
        30,
        "the replacement to take over",
    )
    assert len([r for r in status["replicas"] if r["group"] == "llm"]) == 1
    events = [json.loads(line) for line in pool.output().splitlines() if '"worker.memory_exceeded"' in line]
    assert events and events[0]["pid"] == first["pid"] and events[0]["rss_bytes"] > 250 * 2**20
    assert "MiB" in events[0]["rss"]


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _metric(text: str, name: str, **labels: Any) -> float:
    """The value of the sample `name` with exactly `labels`, as Prometheus' own parser reads the page."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == {k: str(v) for k, v in labels.items()}:
                return float(sample.value)
    raise AssertionError(f"{name}{labels} not in /metrics")


def _request(url: str, method: str, accept: str | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@pytest.mark.slow
def test_health_and_metrics_follow_the_pool(pool: Pool, temporal_server: TemporalServer, namespace: str) -> None:
    port = free_port()
    pool.write(
        temporal_server,
        namespace,
        {
            "pool.metrics": f"127.0.0.1:{port}",
            "workers.broken": {
                "command": ["{python}", "-c", "import sys; sys.exit(1)"],
                "scope": "full",
                "readiness": "delay:5s",
                "restart": {"backoff_initial": "0.2s", "max_restarts": 1},
            },
        },
    )
    pool.up()

    def settled(s: Status) -> bool:
        broken_fatal = any(r["group"] == "broken" and r["state"] == "FATAL" for r in s["replicas"])
        others_ready = all(g["ready"] == g["desired"] for name, g in s["groups"].items() if name != "broken")
        return broken_fatal and others_ready

    status = pool.wait(settled, 60, "broken FATAL, the rest READY")
    code, body = _get(f"http://127.0.0.1:{port}/health")
    assert code == 503
    problems = json.loads(body)["problems"]
    assert [p["group"] for p in problems if "group" in p] == ["broken"]
    text = _get(f"http://127.0.0.1:{port}/metrics")[1]
    for group, info in status["groups"].items():
        replicas = [r for r in status["replicas"] if r["group"] == group]
        assert _metric(text, "pipelex_pool_replicas", group=group, state="READY") == sum(
            r["state"] == "READY" for r in replicas
        )
        assert _metric(text, "pipelex_pool_replicas_desired", group=group) == info["desired"]
        assert _metric(text, "pipelex_pool_restarts_total", group=group) == sum(r["restarts"] for r in replicas)
    assert _metric(text, "pipelex_pool_exits_total", group="broken", code="1", signal="") == 2
    assert _metric(text, "pipelex_pool_temporal_reachable") == 1
    pool.wait(
        lambda s: len((status_doc.queue_of(s, "llm_q") or status_doc.queue())["pool_pollers"]) == 2,
        30,
        "llm_q watched",
    )
    text = _get(f"http://127.0.0.1:{port}/metrics")[1]
    assert _metric(text, "pipelex_pool_queue_pollers", queue="llm_q", type="activity", owner="pool") == 2
    assert _metric(text, "pipelex_pool_queue_pollers", queue="llm_q", type="activity", owner="foreign") == 0
    assert _metric(text, "pipelex_pool_queue_backlog", queue="llm_q", type="activity") == 0
    assert _metric(text, "pipelex_pool_queue_backlog_age_seconds", queue="llm_q", type="activity") == 0
    status = pool.wait(  # (RSS and CPU are sampled every 2 s: a replica READY just now has none yet)
        lambda s: all(r["rss_bytes"] for r in s["replicas"] if r["group"] == "llm"), 30, "llm replicas sampled"
    )
    _check_exposition(f"http://127.0.0.1:{port}/metrics", status)
    assert pool.cli("stop", "broken").returncode == 0
    deadline = time.monotonic() + 10
    while _get(f"http://127.0.0.1:{port}/health")[0] != 200:
        assert time.monotonic() < deadline, "/health did not turn 200 once the broken group was stopped"
        time.sleep(0.2)
    assert json.loads(_get(f"http://127.0.0.1:{port}/health")[1])["healthy"] is True


def _check_exposition(url: str, status: Status) -> None:
    """Names, types and labels by Prometheus' conventions, as its client library's parser reads them."""
    code, headers, body = _request(url, "GET")
    assert code == 200 and "charset=utf-8" in headers["Content-Type"]
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    expected_types = {
        "pipelex_pool_build_info": "gauge",  # an info metric, as the text format carries it
        "pipelex_pool_start_time_seconds": "gauge",
        "pipelex_pool_replicas": "gauge",
        "pipelex_pool_restarts": "counter",
        "pipelex_pool_exits": "counter",
        "pipelex_pool_handed_back": "counter",
        "pipelex_pool_replica_cpu_seconds": "counter",
        "pipelex_pool_replica_resident_memory_bytes": "gauge",
        "pipelex_pool_queue_backlog_age_seconds": "gauge",
        "process_cpu_seconds": "counter",  # the supervisor's own, from the library's process collector
    }
    assert {name: families[name].type for name in expected_types} == expected_types
    for family in families.values():
        for sample in family.samples:
            assert "pid" not in sample.labels, f"{sample.name} has a pid label"
    build = families["pipelex_pool_build_info"].samples[0]
    assert build.name == "pipelex_pool_build_info" and build.labels["pool"] == status["pool"]["name"]
    assert families["pipelex_pool_start_time_seconds"].samples[0].value == pytest.approx(status["pool"]["since"])
    llm = {
        s.labels["replica"]: s.value
        for s in families["pipelex_pool_replica_cpu_seconds"].samples
        if s.labels["group"] == "llm"
    }
    assert set(llm) == {"0", "1"} and all(v > 0 for v in llm.values())
    # HEAD: the headers of GET, no body; OpenMetrics when the scraper asks for it; other methods refused
    head_code, head_headers, head_body = _request(url, "HEAD")
    assert head_code == 200 and head_body == b"" and int(head_headers["Content-Length"]) > 0
    _, om_headers, om_body = _request(url, "GET", accept="application/openmetrics-text; version=1.0.0")
    assert om_headers["Content-Type"].startswith("application/openmetrics-text") and om_body.endswith(b"# EOF\n")
    assert _request(url, "POST")[0] == 405


@pytest.mark.slow
async def test_task_accounting_per_replica_survives_replacement_and_matches_metrics(
    pool: Pool, temporal_server: TemporalServer, namespace: str, client: Client
) -> None:
    port = free_port()
    pool.write(temporal_server, namespace, {"pool.metrics": f"127.0.0.1:{port}"})
    pool.up()
    pool.wait_all_ready()
    steps = [
        SimStep("act_llm_gen_text", latency_s=0.05),
        SimStep("act_img_gen_images", latency_s=0.05),
        SimStep("act_deliver", latency_s=0.05),
    ]
    for n in range(5):
        await client.execute_workflow(
            "WfPipeRun",
            PipeRunInput(run_id=str(n), steps=steps),
            id=f"acc-{uuid.uuid4().hex[:6]}",
            task_queue="temporal_task_queue",
            result_type=PipeRunResult,
        )
    expected = {"llm": 5, "media": 5, "router": 5}  # act_deliver is not routed: it runs on the router's queue
    status = pool.wait(
        lambda s: {g: i["tasks"]["activities_completed"] for g, i in s["groups"].items()} == expected, 20, "task counts"
    )
    assert status["pool"]["tasks"]["activities_completed"] == 15 and status["pool"]["tasks"]["activities_failed"] == 0
    router = status["groups"]["router"]["tasks"]
    assert router["workflow_runs_completed"] == 5
    # three sequential steps: the first workflow task schedules step 1, each result wakes the run once more
    assert router["workflow_tasks_completed"] == 5 * 4 and router["workflow_tasks_failed"] == 0
    per_replica = sum(
        r["tasks"]["activities_completed"] for r in status["replicas"] if r["group"] == "llm" and r["tasks"]
    )
    assert per_replica == 5
    assert pool.cli("restart", "llm").returncode == 0  # both llm replicas replaced: their counts go to history
    before = {r["pid"] for r in status["replicas"] if r["group"] == "llm"}
    status = pool.wait(
        lambda s: (
            not s["pool"]["busy"]
            and not ({r["pid"] for r in s["replicas"] if r["group"] == "llm"} & before)
            and s["groups"]["llm"]["ready"] == 2
        ),
        60,
        "llm rolled",
    )
    assert status["groups"]["llm"]["tasks"]["activities_completed"] == 5
    text = _get(f"http://127.0.0.1:{port}/metrics")[1]
    for group, count in expected.items():
        assert _metric(text, "pipelex_pool_activities_total", group=group, outcome="completed") == count
    assert _metric(text, "pipelex_pool_workflow_tasks_total", group="router", outcome="completed") == 20
    assert "tasks      15 activities completed, 0 failed (0.0%)" in pool.cli("status").stdout


@pytest.mark.slow
def test_each_replica_serves_its_temporal_sdk_metrics_on_its_own_port(
    pool: Pool, temporal_server: TemporalServer, namespace: str
) -> None:
    first = free_port()
    ports = range(first, first + 20)
    with socket.socket() as squatter:  # a port of the range held by something else: the pool skips it
        squatter.bind(("127.0.0.1", first))
        squatter.listen()
        pool.write(temporal_server, namespace, {"pool.worker_metrics": f"127.0.0.1:{ports.start}-{ports.stop - 1}"})
        pool.up()
        status = pool.wait_all_ready()  # a worker reports where it serves them before it says READY
        urls = [status_doc.text(r["sdk_metrics"]) for r in status["replicas"]]
        assert len(urls) == 4 and len(set(urls)) == 4
        for url in urls:
            port = int(url.removeprefix("http://127.0.0.1:").removesuffix("/metrics"))
            assert port in ports and port != first
            code, text = _get(url)
            assert code == 200 and "temporal_worker_task_slots_available" in text, text[:500]
        assert "Temporal SDK metrics:" in pool.cli("status").stdout
