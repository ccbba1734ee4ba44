"""Your own temporalio app under the pool, as a new user runs it: examples/hello from a copy of the repository's
files (no PYTHONPATH), a workflow executed with Temporal's own CLI, a plain temporalio script as a command group,
a worker that cannot be built, and `${VAR}` in any value."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import tomlkit

from pipelex_pool.temporal.devserver import temporal_cli
from tests import status_doc
from tests.conftest import TemporalServer
from tests.pool import Pool, cli_args
from tests.topologies import DELETE

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "hello"
APPS = Path(__file__).resolve().parent / "apps"


def example_copy(pool: Pool, server: TemporalServer, namespace: str, groups: dict[str, Any] | None = None) -> Path:
    """examples/hello copied beside the test's topology, on the test's server and private directories."""
    for name in ("hello_app.py", "plain_worker.py"):
        shutil.copy(EXAMPLE / name, pool.directory / name)
    doc = tomlkit.parse((EXAMPLE / "topology.toml").read_text())
    doc["pool"]["socket"] = str(pool.socket)
    doc["pool"]["state_dir"] = str(pool.directory / "state")
    doc["pool"]["log_dir"] = str(pool.directory / "logs")
    doc["dev_server"]["enabled"] = False
    if groups is not None:
        doc["workers"] = groups
    doc["temporal"]["temporal_config"] = {
        "temporal_server_configs": {"local": {"target_host": server.address, "namespace": namespace}}
    }
    pool.topology.write_text(tomlkit.dumps(doc))
    return pool.topology


def test_the_example_app_runs_a_workflow_with_a_sync_activity(
    pool: Pool, temporal_server: TemporalServer, namespace: str
) -> None:
    topology = example_copy(pool, temporal_server, namespace)
    validated = subprocess.run(cli_args("validate", str(topology)), capture_output=True, text=True, timeout=60)
    assert validated.returncode == 0, validated.stderr
    assert "count_letters" in validated.stdout and "Greet" in validated.stdout
    pool.up()
    pool.wait_all_ready()
    executed = subprocess.run(
        [temporal_cli(), "workflow", "execute", "--type", "Greet", "--task-queue", "hello", "--input", '"world"',
         "--address", temporal_server.address, "--namespace", namespace],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert executed.returncode == 0, executed.stdout + executed.stderr
    assert '"Hello, world! (10 letters)"' in executed.stdout  # count_letters is a plain `def`: it ran in a thread


def test_a_plain_temporalio_script_keeping_its_default_identity_is_seen_polling(
    pool: Pool, temporal_server: TemporalServer, namespace: str
) -> None:
    plain = {"command": ["{python}", "{config_dir}/plain_worker.py", "{task_queue}"], "task_queue": "hello"}
    example_copy(pool, temporal_server, namespace, {"plain": plain})
    pool.up()
    pool.wait_all_ready()
    status = pool.wait(
        lambda s: all(r["polling"] is True for r in s["replicas"]), 60, "the command worker shown polling"
    )
    (replica,) = status["replicas"]
    assert replica["state"] == "READY"
    pollers = status["queues"]["hello"]["activity"]
    assert pollers["pool_pollers"] == [f"{replica['pid']}@{pollers['pool_pollers'][0].split('@')[1]}"]
    assert pollers["foreign_pollers"] == []
    assert not [w for w in status.get("warnings") or [] if "stray" in w], status["warnings"]


def test_a_worker_that_cannot_be_built_is_fatal_at_once_with_its_error(
    pool: Pool, temporal_server: TemporalServer, namespace: str
) -> None:
    pool.write(
        temporal_server,
        namespace,
        {
            "pool.app": "broken_app:packs",
            "pool.app_path": str(APPS),
            "workers": {"wf": {"scope": "full", "task_queue": "temporal_task_queue"}},
            "temporal.worker_config.activity_queues": {},
            "temporal.queue_options": {},
            "temporal.worker_scopes": DELETE,  # the base file's scopes name the simulated packs
        },
    )
    pool.up()
    status = pool.wait(lambda s: s["replicas"][0]["state"] == "FATAL", 60, "the replica FATAL")
    replica = status["replicas"][0]
    assert replica["restarts"] == 0  # at once: no restart can fix the code
    last_exit = status_doc.text(replica["last_exit"])
    assert last_exit.startswith("exit 78 (configuration error): ")
    assert "NotAWorkflow" in last_exit and "@workflow.defn" in last_exit, replica
    shown = pool.cli("status")
    assert "NotAWorkflow" in shown.stdout  # the notes under the table carry the whole message
    log = (pool.directory / "logs" / "wf-0.log").read_text()
    assert "cannot build the worker" in log and "NotAWorkflow" in log


def test_build_id_from_the_environment_is_the_build_up_registers(
    pool: Pool, temporal_server: TemporalServer, namespace: str
) -> None:
    pool.write(
        temporal_server,
        namespace,
        {"pool.deployment": "sim", "pool.build_id": "${GIT_SHA}", "workers.llm.replicas": 1},
    )
    pool.up(env={"GIT_SHA": "c0ffee1"})
    pool.wait_all_ready()
    status = pool.wait(lambda s: status_doc.current(s) == "c0ffee1", 60, "build c0ffee1 made current")
    assert {r["build_id"] for r in status["replicas"] if r["queue"]} == {"c0ffee1"}
