"""Work-aware lifecycle: a scale-down retires the replicas that lose the least work (idle first), the autoscaler
lets busy replicas finish, `after` orders starts and stops, env files reach the workers.

Pure parts with fake handles and a fake clock; then real pools on a real Temporal dev server."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle

from pipelex_pool.control.status_doc import Status
from pipelex_pool.sim.model import PipeRunInput, PipeRunResult, SimStep
from pipelex_pool.supervisor import scale_down, start_order
from pipelex_pool.supervisor.process.state import ExitStatus, ProcState
from pipelex_pool.supervisor.watchers.autoscale import AutoscaleState, decide, retire_idle_only
from pipelex_pool.temporal.pollers import QueueType, queue_pollers
from pipelex_pool.topology.schema import Autoscale
from pipelex_pool.topology.validate import start_order_cycle
from tests import status_doc
from tests.conftest import TemporalServer
from tests.helpers import history
from tests.pool import Pool, cli_args
from tests.test_rolling import make_group
from tests.topologies import write_topology

# -- which replicas a scale-down retires (pure) ------------------------------------------------------------------


def test_a_scale_down_retires_idle_replicas_first_then_the_youngest() -> None:
    group = make_group(5)
    for n, handle in enumerate(group.handles):
        handle.started_at = float(n)  # replica 4 is the youngest
    inflight = {0: 2, 1: 0, 2: 1, 3: 0, 4: 1}
    chosen = scale_down.retire_first(group.handles, 3, lambda h: inflight[h.replica])
    assert [h.replica for h in chosen] == [3, 1, 4]  # the idle ones (youngest first), then the youngest of the 1s


def test_a_slot_with_no_process_goes_before_any_serving_one() -> None:
    group = make_group(3)
    group.handles[0].exited(ExitStatus.from_returncode(1, "boom"), 5.0)  # replica 0 waits out a backoff
    chosen = scale_down.retire_first(group.handles, 1, lambda h: 0)
    assert [h.replica for h in chosen] == [0]


def test_a_new_slot_takes_the_lowest_free_replica_number() -> None:
    group = make_group(4)
    group.handles = [h for h in group.handles if h.replica not in (1, 2)]  # a scale-down retired 1 and 2
    assert [group.new_handle().replica, group.new_handle().replica, group.new_handle().replica] == [1, 2, 4]
    assert [h.replica for h in group.handles] == [0, 1, 2, 3, 4]
    assert group.slot_of(3) == 3


def test_the_autoscaler_retires_idle_replicas_and_lets_busy_ones_finish_within_busy_wait() -> None:
    config = Autoscale(min=1, max=4, target_backlog_per_replica=10, cooldown=timedelta(seconds=5))
    state = AutoscaleState(desired=4)
    assert decide(state, 0, 4, config, now=0.0) == 4  # the cooldown starts
    assert decide(state, 0, 4, config, now=5.0) == 1  # decided: 1
    assert retire_idle_only(state, 4, idle=2, busy_wait=60.0, now=5.0) == 2  # the 2 idle go now
    assert "1 busy replica(s) finish their attempts first" in state.reason
    assert decide(state, 0, 2, config, now=6.0) == 1  # no second cooldown: the decision stands
    assert retire_idle_only(state, 2, idle=1, busy_wait=60.0, now=6.0) == 1  # one of them finished
    state = AutoscaleState(desired=1, busy_since=None)
    assert retire_idle_only(state, 3, idle=0, busy_wait=60.0, now=10.0) == 3
    assert retire_idle_only(state, 3, idle=0, busy_wait=60.0, now=70.0) == 1  # the bound: drained anyway
    assert "after waiting 60s (busy_wait)" in state.reason


# -- start order (pure) ------------------------------------------------------------------------------------------


def test_a_cycle_of_after_is_found_in_its_order() -> None:
    assert start_order_cycle({"router": ["llm"], "llm": ["media"], "media": []}) is None
    cycle = start_order_cycle({"router": ["llm"], "llm": ["media"], "media": ["router"]})
    assert cycle is not None and sorted(cycle) == ["llm", "media", "router"]
    first = cycle[0]
    assert {"router": "llm", "llm": "media", "media": "router"}[first] == cycle[1]  # each waits for the next


def test_a_group_waits_for_its_after_groups_to_be_ready_and_stops_before_them() -> None:
    llm, router = make_group(2), make_group(1)
    llm.name, router.name = "llm", "router"
    router.spec = type("Spec", (), {"after": ["llm"]})()
    groups = {"llm": llm, "router": router}
    llm.handles[1].state = ProcState.STARTING
    assert start_order.waiting_for(router, groups) == ["llm"]
    llm.handles[1].state = ProcState.READY
    assert start_order.waiting_for(router, groups) == []
    llm.desired, llm.handles[1].state = 3, ProcState.READY  # a third replica asked for, not there yet
    assert start_order.waiting_for(router, groups) == ["llm"]
    llm.stopped_by_operator = True  # a stopped group holds nothing
    assert start_order.waiting_for(router, groups) == []
    assert start_order.held_by(llm, groups) == ["router"]  # the router is alive: llm stops after it
    for handle in router.handles:
        handle.state = ProcState.EXITED
    assert start_order.held_by(llm, groups) == []


def test_validate_refuses_a_cycle_and_an_unknown_name(tmp_path: Path) -> None:
    path = write_topology(
        tmp_path,
        {"workers.router.after": ["llm", "medai"], "workers.llm.after": ["media"], "workers.media.after": ["router"]},
    )
    result = subprocess.run(cli_args("validate", str(path)), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "workers.router.after[1]: error: no group 'medai' in this file. Fix: Did you mean 'media'?" in result.stderr
    assert "the start order has a cycle: " in result.stderr
    assert "(each would wait for the next)" in result.stderr


# -- real pools ---------------------------------------------------------------------------------------------------

slow = pytest.mark.slow
ONE_SLOT = {"temporal.worker_runtime_profiles.profiles.llm-pool.max_concurrent_activities": 1}


async def start_runs(client: Client, n: int, latency_s: float) -> list[WorkflowHandle[object, PipeRunResult]]:
    return [
        await client.start_workflow(
            "WfPipeRun",
            PipeRunInput(run_id=f"wa-{i}", steps=[SimStep("act_llm_gen_text", latency_s=latency_s)]),
            id=f"wa-{uuid.uuid4().hex[:8]}-{i}",
            task_queue="temporal_task_queue",
            result_type=PipeRunResult,
        )
        for i in range(n)
    ]


def events(pool: Pool, name: str) -> list[dict[str, Any]]:
    """The supervisor's log events of that name, in order."""
    return [json.loads(line) for line in pool.output().splitlines() if f'"{name}"' in line]


def busy(status: Status) -> dict[int, int]:
    """llm replica number -> attempts in flight, for the llm replicas in their slots."""
    return {
        r["replica"]: len(r["inflight"]) for r in status["replicas"] if r["group"] == "llm" and r["role"] == "replica"
    }


@slow
async def test_scale_down_under_load_retires_the_idle_replicas_and_loses_no_attempt(
    pool: Pool, temporal_server: TemporalServer, namespace: str, client: Client
) -> None:
    pool.write(temporal_server, namespace, {**ONE_SLOT, "workers.media.replicas": 0, "workers.llm.replicas": 2})
    pool.up()
    pool.wait_all_ready()
    assert pool.cli("scale", "llm", "4", "--wait").returncode == 0
    runs = await start_runs(client, 2, latency_s=6.0)
    status = pool.wait(lambda s: sorted(busy(s).values()) == [0, 0, 1, 1], 30, "two llm replicas busy, two idle")
    busy_before = {n for n, count in busy(status).items() if count}
    result = pool.cli("scale", "llm", "1")
    assert result.returncode == 0, result.stderr
    status = pool.status()
    kept = [r for r in status["replicas"] if r["group"] == "llm" and r["role"] == "replica"]
    assert len(kept) == 1 and kept[0]["replica"] in busy_before, kept  # a busy one stays
    retired = {e["replica"]: e["reason"] for e in events(pool, "worker.retiring")}
    assert sorted(retired) == sorted(set(range(4)) - {kept[0]["replica"]})
    idle = [n for n in retired if n not in busy_before]
    assert len(idle) == 2 and all("idle" in retired[n] for n in idle), retired
    (other_busy,) = busy_before - {kept[0]["replica"]}
    assert "1 attempt(s) in flight, the fewest" in retired[other_busy]
    draining = [r for r in status["replicas"] if r["role"] == "retiring" and r["replica"] == other_busy]
    assert draining and draining[0]["retiring_because"] == retired[other_busy]  # status says why
    for run in runs:  # the busy one retired finishes its attempt within its drain: nothing handed back, no retry
        outcome = await run.result(rpc_timeout=timedelta(seconds=60))
        assert outcome.steps[0].attempt == 1, outcome
    status = pool.wait(lambda s: not [r for r in s["replicas"] if r["role"] == "retiring"], 30, "the drains done")
    assert status["groups"]["llm"]["handed_back"] == {}
    assert [r["replica"] for r in status["replicas"] if r["group"] == "llm"] == [kept[0]["replica"]]


@slow
async def test_the_autoscaler_drains_idle_replicas_only_and_lets_busy_ones_finish(
    pool: Pool, temporal_server: TemporalServer, namespace: str, client: Client
) -> None:
    autoscale = {"min": 1, "max": 4, "target_backlog_per_replica": 10, "cooldown": "10s", "busy_wait": "5m"}
    pool.write(
        temporal_server,
        namespace,
        {**ONE_SLOT, "workers.media.replicas": 0, "workers.llm.replicas": 4, "workers.llm.autoscale": autoscale},
    )
    runs = await start_runs(client, 2, latency_s=15.0)  # waiting for the pool: two replicas busy once it polls
    pool.up()
    pool.wait(lambda s: sorted(busy(s).values()) == [0, 0, 1, 1], 60, "two llm replicas busy, two idle")
    status = pool.wait(lambda s: s["groups"]["llm"]["desired"] == 2, 60, "the autoscaler retiring the idle two")
    assert "busy replica(s) finish their attempts first" in (status["groups"]["llm"]["autoscale"] or {})["decision"]
    for run in runs:
        outcome = await run.result(rpc_timeout=timedelta(seconds=60))
        assert outcome.steps[0].attempt == 1, outcome
    status = pool.wait(
        lambda s: s["groups"]["llm"]["desired"] == 1 and not [r for r in s["replicas"] if r["role"] == "retiring"],
        60,
        "down to 1 once the busy ones finished",
    )
    assert status["groups"]["llm"]["handed_back"] == {}
    retired = events(pool, "worker.retiring")
    assert len(retired) == 3 and all("idle" in event["reason"] for event in retired), retired


@slow
async def test_a_group_starts_after_the_groups_it_names_are_polling_and_stops_before_them(
    pool: Pool, temporal_server: TemporalServer, namespace: str, client: Client
) -> None:
    pool.write(temporal_server, namespace, {"workers.router.after": ["llm", "media"]})
    pool.up()
    router_seen: set[str] = set()
    with anyio.fail_after(90):  # a hang guard: the pool starts in a few seconds
        while not router_seen:
            router_seen = {
                i for i in await queue_pollers(client, "temporal_task_queue", QueueType.WORKFLOW) if "/router/" in i
            }
            if not router_seen:
                await anyio.sleep(0.1)
    # the router polls: every llm and media replica was already listed polling by Temporal
    status = pool.status()
    runners = {r["identity"] for r in status["replicas"] if r["group"] in ("llm", "media")}
    polling = set(await queue_pollers(client, "llm_q", QueueType.ACTIVITY)) | set(
        await queue_pollers(client, "media_q", QueueType.ACTIVITY)
    )
    assert len(runners) == 3 and runners <= polling, (runners, polling)
    out = pool.output()
    assert '"group.start_waits"' in out and '"group.start_released"' in out
    pool.wait_all_ready()
    assert pool.cli("down").returncode == 0
    assert pool.proc is not None and pool.proc.wait(timeout=60) == 0
    exits = events(pool, "worker.exited")
    order = [event["group"] for event in exits]
    assert order.index("router") < min(order.index("llm"), order.index("media")), order


SHOW_ENV = (  # a program of the user's: it writes what it got to seen-<pid> beside the topology, then waits
    "import os, signal, sys, time; "
    "open(os.path.join(sys.argv[1], 'seen-%d' % os.getpid()), 'w').write(os.environ['LLM_TOKEN'] + '|' + "
    "os.environ['LLM_HOME']); signal.signal(signal.SIGTERM, lambda *a: sys.exit(0)); time.sleep(3600)"
)


def seen(directory: Path, pid: int) -> str:
    return (directory / f"seen-{pid}").read_text()


@slow
async def test_env_file_reaches_the_workers_and_a_change_rolls_the_group_on_reload(
    pool: Pool, temporal_server: TemporalServer, namespace: str
) -> None:
    secrets = pool.directory / "secrets.env"
    secrets.write_text('# the llm provider\nexport LLM_TOKEN="first token"\nLLM_HOME=${HOME_FOR_TEST}/llm\n')
    changes = {
        "workers.media.replicas": 0,
        "workers.router.replicas": 0,
        "workers.llm.env_file": ["secrets.env"],
        "workers.llm.command": ["{python}", "-c", SHOW_ENV, "{config_dir}"],
        "workers.llm.readiness": "delay:0.2s",
    }
    pool.write(temporal_server, namespace, changes)
    pool.up(env={**os.environ, "HOME_FOR_TEST": "/srv"})
    status = pool.wait_all_ready()
    pids = {status_doc.pid(r) for r in status["replicas"] if r["group"] == "llm"}
    assert len(pids) == 2
    with anyio.fail_after(30):  # a hang guard: each writes its file as it starts
        while not all((pool.directory / f"seen-{pid}").exists() for pid in pids):
            await anyio.sleep(0.05)
    assert {seen(pool.directory, pid) for pid in pids} == {"first token|/srv/llm"}
    secrets.write_text('LLM_TOKEN="second token"\nLLM_HOME=/elsewhere\n')
    result = pool.cli("reload", "--wait")
    assert result.returncode == 0, result.stderr
    assert "llm" in json.loads(pool.cli("status", "--json").stdout)["groups"]
    status = pool.wait(
        lambda s: (
            {r["pid"] for r in s["replicas"] if r["group"] == "llm" and r["role"] == "replica"}.isdisjoint(pids)
            and s["groups"]["llm"]["ready"] == 2
        ),
        60,
        "the llm group rolled onto the new file",
    )
    new = {status_doc.pid(r) for r in status["replicas"] if r["group"] == "llm" and r["role"] == "replica"}
    with anyio.fail_after(30):
        while not all((pool.directory / f"seen-{pid}").exists() for pid in new):
            await anyio.sleep(0.05)
    assert {seen(pool.directory, pid) for pid in new} == {"second token|/elsewhere"}


async def scheduled_not_started(client: Client, run: WorkflowHandle[object, PipeRunResult]) -> bool:
    events = [e.event_type for e in await history(client, run.id)]
    return EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED in events and (
        EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED not in events
    )


async def started_at(client: Client, run: WorkflowHandle[object, PipeRunResult]) -> float:
    started = [e for e in await history(client, run.id) if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED]
    return started[0].event_time.ToDatetime(tzinfo=UTC).timestamp()


@slow
async def test_pause_lets_in_flight_attempts_finish_takes_no_new_one_and_resume_polls_with_the_same_processes(
    pool: Pool, temporal_server: TemporalServer, namespace: str, client: Client
) -> None:
    pool.write(temporal_server, namespace, {"workers.media.replicas": 0})
    pool.up()
    status = pool.wait_all_ready()
    pids = {status_doc.pid(r) for r in status["replicas"] if r["group"] == "llm"}
    first = await start_runs(client, 4, latency_s=4.0)
    pool.wait(lambda s: sum(busy(s).values()) == 4, 30, "the 4 attempts in flight on llm")
    result = pool.cli("pause", "llm", "--wait")  # returns once every llm replica is PAUSED: their attempts done
    assert result.returncode == 0, result.stderr + result.stdout
    for run in first:  # they finished on the paused replicas: attempt 1, nothing handed back
        outcome = await run.result(rpc_timeout=timedelta(seconds=30))
        assert outcome.steps[0].attempt == 1 and outcome.steps[0].worker_identity.startswith("testpool/llm/")
    status = pool.status()
    llm = [r for r in status["replicas"] if r["group"] == "llm"]
    assert {r["pid"] for r in llm} == pids and {r["pause"] for r in llm} == {"paused"}
    assert status["groups"]["llm"]["paused_by_operator"] is True
    assert pool.cli("reload", "--wait").returncode == 0  # remembered across a reload, as `stop` is
    assert pool.status()["groups"]["llm"]["paused_by_operator"] is True
    text = pool.cli("status").stdout
    assert "PAUSED" in text and "paused by operator: llm" in text
    second = await start_runs(client, 2, latency_s=0.5)
    with anyio.fail_after(30):  # a hang guard: the router schedules them on llm_q, where nobody polls
        while not all([await scheduled_not_started(client, run) for run in second]):
            await anyio.sleep(0.1)
    resumed_at = time.time()
    result = pool.cli("resume", "llm", "--wait")
    assert result.returncode == 0, result.stderr + result.stdout
    for run in second:
        outcome = await run.result(rpc_timeout=timedelta(seconds=30))
        assert outcome.steps[0].attempt == 1
        assert await started_at(client, run) >= resumed_at - 0.5  # (the server's clock is this machine's)
    status = pool.status()
    assert {r["pid"] for r in status["replicas"] if r["group"] == "llm"} == pids  # the same processes
    assert status["groups"]["llm"]["handed_back"] == {}
    assert not [r for r in status["replicas"] if r.get("pause")]
    for _ in range(3):  # a pause crossed by a resume at once: the same processes end up polling, none exits
        assert pool.cli("pause", "llm", "--no-wait").returncode == 0
        assert pool.cli("resume", "llm", "--no-wait").returncode == 0
    status = pool.wait(
        lambda s: all(r["pause"] is None and r["polling"] for r in s["replicas"] if r["group"] == "llm"),
        60,
        "llm polling again after crossed pauses and resumes",
    )
    assert {r["pid"] for r in status["replicas"] if r["group"] == "llm"} == pids
    assert all(r["restarts"] == 0 for r in status["replicas"])


def test_a_command_group_cannot_be_paused_and_says_what_to_do_instead() -> None:
    from pipelex_pool.errors import RequestRefused
    from pipelex_pool.supervisor.desired.requests import SetPaused, apply

    group = make_group(1)
    group.spec = type("Spec", (), {"command": ["my-worker"], "after": []})()
    state = type("State", (), {"groups": {"llm": group}, "shutting_down": False})()
    with pytest.raises(RequestRefused) as refused:
        apply(state, SetPaused("llm", paused=True))
    assert "only built-in workers pause; use `pipelex-pool stop llm`" in refused.value.message
    assert group.paused_by_operator is False
