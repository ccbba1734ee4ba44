"""Two pools of one fleet on one Temporal namespace (as two machines would be): each sees the other's workers as
its fleet's, not as strays, still flags a real stray, and their autoscalers share the backlog instead of each
scaling to all of it."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle

from pipelex_pool.control.status_doc import Queue, Status
from pipelex_pool.sim.model import PipeRunInput, PipeRunResult, SimStep
from tests import status_doc
from tests.conftest import Processes, TemporalServer
from tests.helpers import worker_args
from tests.pool import Pool
from tests.test_deploy import build_of, temporal_describe

pytestmark = pytest.mark.slow

MAX = 6
AUTOSCALE = {"min": 1, "max": MAX, "target_backlog_per_replica": 10, "cooldown": "60s"}


@pytest.fixture
def fleet(
    processes: Processes, tmp_path: Path, short_dir: Path, temporal_server: TemporalServer, namespace: str
) -> Iterator[tuple[Pool, Pool]]:
    pools = []
    for name in ("fleeta", "fleetb"):
        (tmp_path / name).mkdir()
        (short_dir / name).mkdir()
        pool = Pool(processes, tmp_path / name, short_dir / name)
        pool.write(
            temporal_server,
            namespace,
            {
                "pool.name": name,
                "pool.fleet": "shared",
                "pool.worker_heartbeat": "2s",
                "workers.llm.replicas": 1,
                "workers.llm.autoscale": AUTOSCALE,
                "temporal.worker_runtime_profiles.profiles.llm-pool.max_concurrent_activities": 5,
            },
        )
        pools.append(pool)
    try:
        yield pools[0], pools[1]
    finally:
        processes.stop_all()
        for pool in pools:
            pool.cleanup()


def llm_q(status: Status) -> Queue:
    return status_doc.queue_of(status, "llm_q") or status_doc.queue()


async def test_two_pools_of_one_fleet_see_each_other_and_share_the_backlog(
    fleet: tuple[Pool, Pool], processes: Processes, client: Client
) -> None:
    a, b = fleet
    a.up()
    a.wait_all_ready()
    b.up()
    b.wait_all_ready()
    for pool, other in ((a, "fleetb"), (b, "fleeta")):

        def knows(s: Status, other: str = other) -> bool:
            return (
                sorted(s["fleet"]["pools"] or {}) == ["fleeta", "fleetb"]
                and any(i.startswith(f"{other}/llm/") for i in llm_q(s).get("fleet_pollers", []))
                and not s["warnings"]
            )

        status = pool.wait(knows, 90, f"{other} known as the fleet's, no warning")
        assert llm_q(status)["foreign_pollers"] == []
        text = pool.cli("status", "--fleet").stdout
        assert "fleet shared: 2 live pool(s)" in text and "fleeta" in text and "fleetb" in text

        # every replica of every pool of the fleet, from Temporal's heartbeats (no channel between the pools)
        # (each worker heartbeats on its own schedule: wait for the one the text is checked for, not any of its pool)
        def both_listed(s: Status, other: str = other) -> bool:
            workers = s["fleet"]["workers"]
            return {w["pool"] for w in workers} == {"fleeta", "fleetb"} and any(
                w["identity"].startswith(f"{other}/llm/0@") for w in workers
            )

        status = pool.wait(both_listed, 60, f"{other}'s workers in the fleet's heartbeats")
        assert {w["status"] for w in status["fleet"]["workers"]} == {"RUNNING"}
        text = pool.cli("status", "--fleet").stdout
        assert "workers of the fleet, from Temporal's heartbeats:" in text and f"{other}/llm/0@" in text

    strays = [
        f"fleetc/llm/0@{os.uname().nodename}:1",  # a pool of no fleet of theirs
        "fleetb/llm/9@elsewhere:1",  # a fleet pool's name, on a host its beacon does not list
    ]
    started = [
        processes.spawn(worker_args(a.topology, "llm_q", "runner-llm", identity=identity), name="stray")
        for identity in strays
    ]
    for pool in (a, b):
        status = pool.wait(
            lambda s: set(strays) <= set(llm_q(s).get("foreign_pollers", [])), 60, "both strays seen as strays"
        )
        assert all(any(identity in w for w in status["warnings"]) for identity in strays)
    for stray in started:
        stray.terminate()
        stray.wait(timeout=60)

    # 200 activity tasks of 1 s on llm_q: one pool alone would run max (6) replicas; together they must not run 12
    handle = await client.start_workflow(
        "WfPipeRun",
        PipeRunInput(
            run_id="burst", steps=[SimStep("act_llm_gen_text", latency_s=1.0) for _ in range(200)], parallel=True
        ),  # fmt: skip
        id=f"burst-{uuid.uuid4().hex[:6]}",
        task_queue="temporal_task_queue",
        result_type=PipeRunResult,
    )
    peak = {"fleeta": 0, "fleetb": 0}
    while (await handle.describe()).status is WorkflowExecutionStatus.RUNNING:
        for pool in (a, b):
            status = pool.status()
            name = status["pool"]["name"]
            peak[name] = max(peak[name], status["groups"]["llm"]["desired"])
        await anyio.sleep(0.5)
    result = await handle.result()
    assert len(result.steps) == 200
    assert peak["fleeta"] >= 2 and peak["fleetb"] >= 2, peak  # both scaled up with the backlog
    print(f"peak llm replicas per pool during the burst: {peak}")
    assert peak["fleeta"] + peak["fleetb"] <= MAX + 1, peak  # one pool's max, within one replica
    decisions = [line for line in a.output().splitlines() if '"autoscale.decision"' in line]
    assert decisions and all('"fleet_pools": 2' in line for line in decisions)


def test_a_killed_pool_leaves_the_fleet_within_the_bound(fleet: tuple[Pool, Pool]) -> None:
    """A fleet pool SIGKILLed (its machine gone): the survivor stops counting it within ~30 s (the README's
    bound: the beacon's liveness window, 20 s, plus one refresh, 10 s), so it runs the whole share again."""
    a, b = fleet
    a.up()
    b.up()
    a.wait_all_ready()
    b.wait_all_ready()
    a.wait(lambda s: sorted(s["fleet"]["pools"] or {}) == ["fleeta", "fleetb"], 60, "both pools in the fleet")
    assert b.proc is not None
    os.kill(b.proc.pid, signal.SIGKILL)
    killed = time.monotonic()
    a.wait(lambda s: sorted(s["fleet"]["pools"] or {}) == ["fleeta"], 90, "the killed pool gone from the fleet")
    took = time.monotonic() - killed
    print(f"a SIGKILLed fleet pool left the survivor's fleet after {took:.1f}s")
    assert took < 45  # (the bound is 30 s; the margin keeps a busy machine from failing it)


@pytest.fixture
def versioned_fleet(
    processes: Processes, tmp_path: Path, short_dir: Path, temporal_server: TemporalServer, namespace: str
) -> Iterator[tuple[Pool, Pool]]:
    pools = []
    for name in ("hosta", "hostb"):
        (tmp_path / name).mkdir()
        (short_dir / name).mkdir()
        pool = Pool(processes, tmp_path / name, short_dir / name)
        pool.write(
            temporal_server,
            namespace,
            {"pool.name": name, "pool.fleet": "shared", "pool.deployment": "sim", "pool.build_id": "A",
             "workers.media.replicas": 0},
        )  # fmt: skip
        pools.append(pool)
    try:
        yield pools[0], pools[1]
    finally:
        processes.stop_all()
        for pool in pools:
            pool.cleanup()


def start_on_a(a: Pool, b: Pool) -> None:
    """Both pools up, every replica READY, build A current and both pools in the fleet."""
    for pool in (a, b):
        pool.up()
    for pool in (a, b):
        pool.wait_all_ready()
        pool.wait(
            lambda s: status_doc.current(s) == "A" and sorted(s["fleet"]["pools"] or {}) == [
                "hosta", "hostb"],
            90,
            "build A current, both pools in the fleet",
        )  # fmt: skip


def runs_build(status: Status, build: str) -> bool:
    """Every queue group of the pool has a READY replica (or parked process) on `build`."""
    groups = {r["group"] for r in status["replicas"] if r["queue"]}
    return all(
        any(r["group"] == g and r["build_id"] == build and r["state"] == "READY" for r in status["replicas"])
        for g in groups
    )


async def pinned_run(client: Client, prefix: str, latency: float) -> WorkflowHandle[Any, PipeRunResult]:
    """A run of one LLM step of `latency` seconds, pinned to the version that takes its first workflow task."""
    handle = await client.start_workflow(
        "WfPipeRun", PipeRunInput(run_id=prefix, steps=[SimStep("act_llm_gen_text", latency_s=latency)]),
        id=f"{prefix}-{uuid.uuid4().hex[:6]}", task_queue="temporal_task_queue", result_type=PipeRunResult,
    )  # fmt: skip
    while not await build_of(handle):
        await anyio.sleep(0.1)
    return handle


async def test_a_fleet_switches_to_a_new_build_only_once_every_pool_runs_it_and_rolls_back_as_one(
    versioned_fleet: tuple[Pool, Pool], temporal_server: TemporalServer, namespace: str, client: Client
) -> None:
    """The switch waits for every pool of the fleet; then `deploy --build-id A` on one pool while A still drains
    (a run pinned to A in flight) makes A current within 2 s, and the other pool rolls back with it: A's processes
    back in their slots on both, every run finishes on its build with no retry."""
    a, b = versioned_fleet
    start_on_a(a, b)
    assert a.cli("deploy", "--build-id", "B", "--no-wait").returncode == 0
    status = a.wait(
        lambda s: status_doc.phase(s) == "waiting for the fleet",
        90,
        "hosta's deploy waiting for the fleet",
    )
    detail = deploy_of(status)["detail"]
    assert "hostb (" in detail and "runs only A on llm_q (activity)" in detail, detail
    assert temporal_describe(temporal_server, namespace, "sim")["routingConfig"]["currentVersionBuildID"] == "A"
    text = a.cli("status", "--fleet").stdout
    assert "deploy of build B: waiting for the fleet" in text and "hostb" in text, text

    samples: list[tuple[str | None, bool, bool]] = []

    def take_sample() -> None:
        sa, sb = a.status(), b.status()
        samples.append((status_doc.current(sa), runs_build(sa, "B"), runs_build(sb, "B")))

    async def sample() -> None:  # every second: B current only while both pools run B
        while True:
            await anyio.to_thread.run_sync(take_sample)
            await anyio.sleep(1.0)

    on_a = await pinned_run(client, "on-a", 60.0)  # keeps A draining after the switch (a busy machine included)
    async with anyio.create_task_group() as tg:
        tg.start_soon(sample)
        assert b.cli("deploy", "--build-id", "B", "--no-wait").returncode == 0

        def draining(s: Status) -> bool:  # B current, A's pinned run still going
            return status_doc.phase(s) == "draining"

        for pool in (a, b):
            await anyio.to_thread.run_sync(pool.wait, draining, 120, "B current, A draining")
        tg.cancel_scope.cancel()
    take_sample()
    assert temporal_describe(temporal_server, namespace, "sim")["routingConfig"]["currentVersionBuildID"] == "B"
    assert samples and any(current == "B" for current, _, _ in samples)
    wrong = [s for s in samples if s[0] == "B" and not (s[1] and s[2])]
    assert not wrong, wrong  # B was never current while a pool of the fleet ran no B replica

    on_b = await pinned_run(client, "on-b", 5.0)  # on B (unless Temporal still applies the switch): it ends there
    on_b_build = await build_of(on_b)
    a_pids = {p.directory.name: {(r["group"], r["replica"]): r["pid"] for r in p.replicas() if r["role"] == "parked"}
              for p in (a, b)}  # fmt: skip
    result = await anyio.to_thread.run_sync(lambda: a.cli("deploy", "--build-id", "A", "--wait", timeout=120))
    assert result.returncode == 0, result.stderr + result.stdout
    took = [json.loads(line)["seconds"] for line in a.output().splitlines() if '"deploy.rolled_back"' in line]
    assert took and took[0] < 30.0, took  # (a hang guard: the figure is printed, and in the README)
    print(f"fleet rollback: A current again {took[0]}s after it was asked")
    assert temporal_describe(temporal_server, namespace, "sim")["routingConfig"]["currentVersionBuildID"] == "A"

    def rolled_back(s: Status) -> bool:
        return bool(deploy_of(s).get("outcome") == "rolled back to A")

    for pool in (a, b):
        status = await anyio.to_thread.run_sync(pool.wait, rolled_back, 60, "the pool rolled back to A")
        in_slots = {(r["group"], r["replica"]): r["pid"] for r in status["replicas"] if r["role"] == "replica"
                    and r["queue"]}  # fmt: skip
        assert in_slots == a_pids[pool.directory.name]  # A's very processes, back in their slots
    assert '"deploy.fleet_rolled_back"' in b.output()
    after = await pinned_run(client, "after", 0.2)
    for handle, build in ((on_a, "A"), (on_b, on_b_build), (after, "A")):
        outcome = await handle.result()
        assert all(step.attempt == 1 for step in outcome.steps), (handle.id, outcome)
        assert await build_of(handle) == build, handle.id


def deploy_of(status: Status) -> dict[str, Any]:
    """The deploy as a dict (empty: none yet), for `.get` on a field that may not be there yet."""
    return dict(status_doc.deploy(status) or {})


def only_build(status: Status, build: str) -> bool:
    """Every process of the pool runs `build` and sits in its slot (nothing parked, retiring or replacing)."""
    replicas = [r for r in status["replicas"] if r["queue"]]
    return bool(replicas) and all(
        r["role"] == "replica" and r["state"] == "READY" and r["build_id"] == build for r in replicas
    )


def test_a_fleet_deploy_fails_cleanly_at_its_timeout_waits_for_a_pool_that_joins_and_tells_a_late_one(
    versioned_fleet: tuple[Pool, Pool], temporal_server: TemporalServer, namespace: str
) -> None:
    """(1) hosta deploys B while hostb runs A: at --fleet-timeout the deploy fails, A's processes take their slots
    back, Temporal still routes to A. (2) hostb leaves (`down`): hosta's fleet is hosta alone within the bound.
    (3) hosta deploys B with a ramp; hostb joins on A during the ramp's pause: the switch waits for it, naming it;
    hostb's deploy of B completes the set. (4) A new machine joins on A after the switch: its status says it runs a
    build the deployment no longer routes to, and how to fix it; its deploy of B is then an ordinary one."""
    a, b = versioned_fleet
    start_on_a(a, b)

    # 1. the fleet's timeout passes: a clean failure
    result = a.cli("deploy", "--build-id", "B", "--fleet-timeout", "10s", "--wait", timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "did not run build B everywhere within 10s" in result.stderr and "hostb (" in result.stderr, result.stderr
    status = a.wait(lambda s: only_build(s, "A"), 90, "hosta's A processes back in their slots, B's gone")
    assert deploy_of(status)["outcome"].startswith("failed")
    routing = temporal_describe(temporal_server, namespace, "sim")["routingConfig"]
    assert routing["currentVersionBuildID"] == "A" and not routing.get("rampingVersionBuildID")
    assert only_build(b.status(), "A")

    # 2. a pool leaves
    assert b.cli("down", timeout=120).returncode == 0
    left = time.monotonic()
    a.wait(lambda s: sorted(s["fleet"]["pools"] or {}) == ["hosta"], 90, "hostb gone from hosta's fleet")
    print(f"hostb left hosta's fleet {time.monotonic() - left:.1f}s after its `down`")

    # 3. a pool joins on the old build mid-deploy (during a ramp step): the switch waits for it
    assert a.cli("deploy", "--build-id", "B", "--ramp", "50", "--pause", "20s", "--no-wait").returncode == 0
    a.wait(lambda s: deploy_of(s).get("phase") == "ramping", 120, "hosta ramping B (a fleet of one)")
    b.up()
    b.wait_all_ready()
    status = a.wait(lambda s: deploy_of(s).get("phase") == "waiting for the fleet", 90, "the switch held for hostb")
    assert "hostb (" in deploy_of(status)["detail"], deploy_of(status)
    routing = temporal_describe(temporal_server, namespace, "sim")["routingConfig"]
    assert routing["currentVersionBuildID"] == "A" and routing["rampingVersionBuildID"] == "B"
    result = b.cli("deploy", "--build-id", "B", "--wait", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    a.wait(lambda s: deploy_of(s).get("outcome") == "done", 120, "hosta's deploy done too")
    assert temporal_describe(temporal_server, namespace, "sim")["routingConfig"]["currentVersionBuildID"] == "B"

    # 4. a new machine joins on A after the switch (hostb again, its state gone: it starts the file's build A)
    assert b.cli("down", timeout=120).returncode == 0
    (b.directory / "state" / "deployed.json").unlink()
    b.up()
    b.wait_all_ready()
    behind = "this pool runs build 'A' of Worker Deployment 'sim', which routes new runs to 'B'"
    status = b.wait(lambda s: any(behind in w for w in s["warnings"]), 60, "hostb told it runs a build left behind")
    assert "pipelex-pool deploy --build-id B" in next(w for w in status["warnings"] if behind in w)
    result = b.cli("deploy", "--build-id", "B", "--wait", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    b.wait(
        lambda s: only_build(s, "B") and not any(behind in w for w in s["warnings"]), 120, "hostb on B, told no more"
    )
