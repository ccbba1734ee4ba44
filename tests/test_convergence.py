"""Convergence with real processes: a mass spawn obeys the latest command, `down` stops a mass spawn promptly, a
killed supervisor leaves no untracked worker, and limits and broken files are refused before anything starts."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from pathlib import Path

import anyio
import pytest

from pipelex_pool.control.client import ControlClient
from pipelex_pool.supervisor.spawning.budget import default_spawn_batch, default_spawn_rate
from pipelex_pool.temporal.devserver import dev_server_command, wait_until_serving
from tests import status_doc
from tests.conftest import Processes, TemporalServer, free_port
from tests.pool import Pool, cli_args

pytestmark = pytest.mark.slow

ONLY_LLM = {"workers.router.replicas": 0, "workers.media.replicas": 0}


def wait_for(predicate: object, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {within}s: {what}")


def test_scale_down_during_a_mass_spawn_stops_it_within_one_batch(
    pool: Pool, temporal_server: TemporalServer, namespace: str
) -> None:
    pool.write(temporal_server, namespace, ONLY_LLM)
    pool.up()
    pool.wait_all_ready()
    client = ControlClient(pool.socket)
    started = time.monotonic()
    client.call("scale", {"group": "llm", "replicas": 40})
    time.sleep(0.3)
    client.call("scale", {"group": "llm", "replicas": 2})
    elapsed = time.monotonic() - started
    most = 0
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        most = max(most, len(pool.worker_pids()))
        time.sleep(0.02)
    # What may start between the two requests: one batch, plus what the budget refills meanwhile.
    bound = 2 + default_spawn_batch() + int(default_spawn_rate("fork") * elapsed) + 1
    assert most <= bound, f"{most} llm workers alive at once after scale 40 -> 2 in {elapsed:.2f}s (bound {bound})"
    print(f"scale 40 then 2 after {elapsed:.2f}s: at most {most} llm workers alive (bound {bound})")
    status = pool.wait(lambda s: s["groups"]["llm"]["ready"] == 2 and len(s["replicas"]) == 2, 60, "back to 2")
    assert status["groups"]["llm"]["desired"] == 2


def test_down_during_a_40_replica_spawn_starts_nothing_more_and_leaves_nothing(
    pool: Pool, temporal_server: TemporalServer, namespace: str
) -> None:
    """`down` in the middle of a mass spawn is applied at the loop's next look at its stream: no worker is spawned
    after the supervisor logs that it stops, the spawn is cut short, and every process is gone when `down` returns
    (each drained within its stop timeout, not after 40 spawns). The spawn is slowed to 4 a second, so that `down`
    comes in its middle however busy the machine is."""
    pool.write(temporal_server, namespace, {**ONLY_LLM, "pool.spawn_rate": 4})
    supervisor = pool.up()
    pool.wait_all_ready()
    assert pool.cli("scale", "llm", "40").returncode == 0
    pool.wait(lambda s: sum(1 for r in s["replicas"] if r["pid"]) >= 6, 60, "the mass spawn under way")
    started = time.monotonic()
    down = pool.cli("down", timeout=180)  # (a hang guard: the figure is printed)
    took = time.monotonic() - started
    assert down.returncode == 0, down.stderr
    assert supervisor.wait(timeout=60) == 0
    assert not pool.worker_pids(), "workers left after down"
    events = [json.loads(line)["event"] for line in pool.output().splitlines() if line.startswith("{")]
    stopping = events.index("supervisor.stopping")
    spawned_before = events[:stopping].count("worker.spawned")
    assert events[stopping:].count("worker.spawned") == 0, "a worker was spawned after `down` was applied"
    assert spawned_before < 40, spawned_before  # the 2 of `up`, then the spawn cut short
    print(f"down during a 40-replica spawn: {spawned_before} of 40 spawned, none after; returned in {took:.1f}s")


def test_scale_over_max_replicas_is_refused_with_exit_2(
    pool: Pool, temporal_server: TemporalServer, namespace: str
) -> None:
    pool.write(temporal_server, namespace, {**ONLY_LLM, "pool.max_replicas": 8})
    pool.up()
    pool.wait_all_ready()
    refused = pool.cli("scale", "llm", "1000")
    assert refused.returncode == 2
    assert "max_replicas" in refused.stderr and "1000" in refused.stderr
    assert pool.status()["groups"]["llm"]["desired"] == 2


def test_20_trials_of_a_supervisor_killed_during_a_spawn_burst_leave_no_worker(
    pool: Pool, temporal_server: TemporalServer, namespace: str
) -> None:
    pool.write(temporal_server, namespace, ONLY_LLM)
    rng = random.Random(20)
    reported = 0
    for trial in range(20):
        supervisor = pool.up()
        pool.wait_all_ready()
        leftovers = pool.output().count("supervisor.leftover_stopped")
        reported += leftovers
        ControlClient(pool.socket).call("scale", {"group": "llm", "replicas": 16})
        time.sleep(rng.uniform(0.3, 1.0))
        supervisor.send_signal(signal.SIGKILL)
        supervisor.wait(timeout=10)
        try:
            wait_for(lambda: not pool.worker_pids(), 10, "no worker alive 10 s after the supervisor was killed")
        except AssertionError:
            survivors = pool.worker_pids()
            pytest.fail(f"trial {trial}: {len(survivors)} worker(s) survived the supervisor: {sorted(survivors)}")
    print(f"20 trials: leftovers reported by the next `up`: {reported}")


@pytest.mark.parametrize(
    "broken, key",
    [
        ('[workers."im/g"]\nscope = "runner-llm"\ntask_queue = "llm_q"\n', "workers.im/g"),
        ("", "workers.llm.replicas (line"),
    ],
    ids=["group name with a slash", "duplicated key"],
)
def test_up_refuses_a_broken_topology_with_exit_2_naming_the_key_and_starts_nothing(
    pool: Pool, temporal_server: TemporalServer, namespace: str, broken: str, key: str
) -> None:
    path = pool.write(temporal_server, namespace, ONLY_LLM)
    text = path.read_text()
    text = text + "\n" + broken if broken else text.replace("replicas = 2", "replicas = 2\nreplicas = 3", 1)
    path.write_text(text)
    result = subprocess.run(cli_args("up", str(path)), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert key in result.stderr and "Traceback" not in result.stderr
    assert not pool.worker_pids()
    assert not Path(pool.directory / "state" / "children.json").exists()


def test_a_namespace_that_refuses_polls_is_shown_in_status(pool: Pool, processes: Processes, tmp_path: Path) -> None:
    port = free_port()
    command = dev_server_command(port, tmp_path / "limited.db", log_level="error", poll_limit=2)
    server = processes.spawn(command, name="limited-server")
    address = f"127.0.0.1:{port}"
    anyio.run(lambda: wait_until_serving(address, "default", within=60))
    pool.write(TemporalServer(address=address, pid=server.pid), "default", ONLY_LLM)
    pool.up()
    status = pool.wait(lambda s: bool(s["poller_limit"]), 60, "the poller limit reported")
    assert "namespace concurrent poller limit exceeded" in status_doc.text(status["poller_limit"])
    assert any("refuses new polls" in w for w in status["warnings"])
    text = pool.cli("status")
    assert "frontend.namespaceCount" in text.stdout
