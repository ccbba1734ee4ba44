"""Topologies as users write them: `${VAR}` in any value, a Pipelex project's own pipelex.toml, an app of their own
beside the topology, and codec providers the pool cannot share (fast: no server, no process)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pipelex_pool.cli import main
from pipelex_pool.errors import TopologyError
from pipelex_pool.topology.load import load_topology
from tests.topologies import DELETE, write_topology

REPO = Path(__file__).resolve().parent.parent
PROJECT = Path(__file__).resolve().parent / "fixtures" / "pipelex_project"


def validate(path: Path, env: dict[str, str] | None = None) -> Any:
    return CliRunner(env=env).invoke(main, ["validate", str(path), "--json"], catch_exceptions=False)


def errors(result: Any) -> list[dict[str, str]]:
    return [issue for issue in json.loads(result.output)["issues"] if issue["severity"] == "error"]


def test_a_pipelex_projects_own_pipelex_toml_validates_with_its_codec() -> None:
    result = validate(PROJECT / "topology.toml", {"PAYLOAD_STORE": "/srv/payloads"})
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["payload_codec"] == {
        "method": "local",
        "where": "/srv/payloads",
        "size_threshold": 1_048_576,
        "prefix": "temporal-payloads/",
    }
    topology = load_topology(PROJECT / "topology.toml", {})
    assert topology.temporal.temporal_config.temporal_log_config.managed_loggers[0] == "temporalio.activity"
    assert topology.temporal.search_attributes.attributes[-1] == "DomainCode"
    # the `testing` server entry keeps its ${...}: this machine does not use it and does not define its variables
    testing = topology.temporal.temporal_config.temporal_server_configs["testing"]
    assert testing.target_host == "${TESTING_TEMPORAL_TARGET_HOST}"


def test_every_string_value_takes_environment_references(tmp_path: Path) -> None:
    path = write_topology(
        tmp_path,
        {
            "pool.deployment": "sim",
            "pool.build_id": "${GIT_SHA}",
            "pool.log_dir": "${LOGS:-/var/log/fallback}/pool",
            "workers.llm.command": ["${PYTHON_BIN}", "-c", "print('$$HOME stays literal')", "{task_queue}"],
        },
    )
    topology = load_topology(path, {"GIT_SHA": "abc123", "PYTHON_BIN": "/usr/bin/python3"})
    assert topology.pool.build_id == "abc123"
    assert topology.pool.log_dir == "/var/log/fallback/pool"
    assert topology.groups["llm"].command == ["/usr/bin/python3", "-c", "print('$HOME stays literal')", "{task_queue}"]


def test_an_unset_variable_is_an_error_naming_its_key(tmp_path: Path) -> None:
    path = write_topology(tmp_path, {"pool.deployment": "sim", "pool.build_id": "${GIT_SHA}"})
    with pytest.raises(TopologyError) as raised:
        load_topology(path, {})
    (issue,) = [i for i in raised.value.issues if "GIT_SHA" in i.problem]
    assert issue.path == "pool.build_id"
    assert "export GIT_SHA" in issue.fix


def test_the_app_is_found_beside_the_topology_and_full_takes_all_of_it(tmp_path: Path) -> None:
    (tmp_path / "myapp.py").write_text((REPO / "examples" / "hello" / "hello_app.py").read_text())
    path = write_topology(
        tmp_path,
        {
            "pool.app": "myapp:packs",
            "workers": {"all": {"scope": "full", "task_queue": "temporal_task_queue"}},
            "temporal.worker_config.activity_queues": {},
            "temporal.queue_options": {},
            "temporal.worker_scopes": DELETE,
        },
    )
    topology = load_topology(path, {})
    assert topology.scopes["full"].workflows == ("Greet",)
    assert topology.scopes["full"].activities == ("compose_greeting", "count_letters")


def test_a_group_whose_scope_registers_nothing_from_the_app_is_refused(tmp_path: Path) -> None:
    (tmp_path / "myapp.py").write_text((REPO / "examples" / "hello" / "hello_app.py").read_text())
    path = write_topology(
        tmp_path,
        {
            "pool.app": "myapp:packs",
            "workers": {"llm": {"scope": "runner-llm", "task_queue": "temporal_task_queue"}},
            "temporal.worker_config.activity_queues": {},
            "temporal.queue_options": {},
            "temporal.worker_scopes": DELETE,
        },
    )
    result = validate(path)
    assert result.exit_code == 2
    (issue,) = errors(result)
    assert issue["path"] == "workers.llm.scope"
    assert "registers nothing" in issue["problem"] and "compose_greeting" in issue["problem"]


def test_an_app_that_cannot_be_imported_says_where_it_looked(tmp_path: Path) -> None:
    path = write_topology(tmp_path, {"pool.app": "nowhere_app:packs"})
    result = validate(path)
    assert result.exit_code == 2
    (issue,) = [i for i in errors(result) if i["path"] == "pool.app"]
    assert str(tmp_path) in issue["problem"] and "app_path" in issue["problem"]


@pytest.mark.parametrize(
    ("method", "table", "expected"),
    [
        ("in_memory", {"uri_format": "{hash}"}, "in_memory storage lives in one process"),
        ("gcp", {"bucket_name": "b", "project_id": "p"}, "gcp storage provider is not supported"),
    ],
)
def test_codec_providers_processes_cannot_share_are_refused(
    tmp_path: Path, method: str, table: dict[str, Any], expected: str
) -> None:
    codec = "temporal.payload_codec_config"
    path = write_topology(
        tmp_path,
        {
            f"{codec}.is_enabled": True,
            f"{codec}.storage_provider_config.method": method,
            f"{codec}.storage_provider_config.{method}": table,
        },
    )
    result = validate(path)
    assert result.exit_code == 2
    (issue,) = errors(result)
    assert issue["path"] == f"{codec}.storage_provider_config.method" and expected in issue["problem"]


def test_uri_format_without_hash_is_refused(tmp_path: Path) -> None:
    codec = "temporal.payload_codec_config.storage_provider_config"
    path = write_topology(tmp_path, {f"{codec}.local": {"uri_format": "x", "local_storage_path": "/tmp/x"}})
    result = validate(path)
    assert result.exit_code == 2
    assert "{hash}" in result.output


def test_two_groups_on_one_queue_registering_different_tasks_are_refused(tmp_path: Path) -> None:
    path = write_topology(tmp_path, {"workers.imgs": {"scope": "runner-media", "task_queue": "llm_q"}})
    result = validate(path)
    assert result.exit_code == 2
    (issue,) = errors(result)
    assert "llm, imgs" in issue["problem"] or "imgs, llm" in issue["problem"]
    assert "group llm lacks act_extract_gen_extract_pages" in issue["problem"]
    assert "group imgs lacks act_llm_gen_object" in issue["problem"]


@pytest.mark.parametrize(("key", "words"), [("window", "never be given up on"), ("stable_after", "forgets every")])
def test_restart_durations_that_switch_a_guarantee_off_are_refused(tmp_path: Path, key: str, words: str) -> None:
    result = validate(write_topology(tmp_path, {f"workers.llm.restart.{key}": "0s"}))
    assert result.exit_code == 2
    (issue,) = errors(result)
    assert issue["path"] == f"workers.llm.restart.{key}" and words in issue["problem"]


def test_a_low_retry_budget_on_a_routed_queue_is_warned_with_the_number(tmp_path: Path) -> None:
    overlay = "temporal.queue_options.llm_q.retry_policy_config"
    result = validate(write_topology(tmp_path, {overlay: {"maximum_attempts": 2}}))
    assert result.exit_code == 0
    (warning,) = [i for i in json.loads(result.output)["issues"] if i["path"] == f"{overlay}.maximum_attempts"]
    assert warning["severity"] == "warning" and "2 deaths" in warning["problem"] and "llm_q" in warning["problem"]


def test_the_copy_workers_read_gives_them_the_values_the_pool_validated(tmp_path: Path) -> None:
    """A literal `$` (written `$$`) and an expanded variable reach the worker as the supervisor saw them."""
    from pipelex_pool.topology.snapshot import write_validated
    from pipelex_pool.worker.config import load_worker_settings

    local = "temporal.temporal_config.temporal_server_configs.local"
    path = write_topology(
        tmp_path, {"pool.deployment": "sim", "pool.build_id": "${SHA}", f"{local}.description": "costs $${SHA}"}
    )
    topology = load_topology(path, {"SHA": "abc"})
    copy = write_validated(topology, tmp_path / "state")
    settings = load_worker_settings(copy, "llm_q", "runner-llm", None, None)
    assert (settings.build_id, settings.server.description) == ("abc", "costs ${SHA}")
