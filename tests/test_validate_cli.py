"""`pipelex-pool validate`: the shipped configs pass; broken topologies exit 2 naming the key path and the fix."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pipelex_pool.cli import main
from tests.topologies import DELETE, write_topology

REPO = Path(__file__).resolve().parent.parent


def run_validate(*args: str) -> Any:
    return CliRunner().invoke(main, ["validate", *args], catch_exceptions=False)


@pytest.mark.parametrize("config", ["configs/topology.toml", "configs/production.toml"])
def test_shipped_configs_validate(config: str) -> None:
    result = run_validate(str(REPO / config))
    assert result.exit_code == 0, result.output
    assert "OK" in result.output
    assert "groups (" in result.output and "queues:" in result.output and "scopes:" in result.output


def test_default_topology_summary_shows_routing() -> None:
    result = run_validate(str(REPO / "configs/topology.toml"), "--json")
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["ok"] is True
    assert [g["name"] for g in data["groups"]] == ["router", "llm", "media"]
    assert data["queues"]["llm_q"]["polled_by"] == ["llm"]
    assert "act_llm_gen_text" in data["queues"]["llm_q"]["activities"]
    assert data["scopes"]["runner-llm"]["activities"] == [
        "act_llm_gen_object",
        "act_llm_gen_text",
        "act_llm_gen_object_list",
    ]


def test_production_summary_routes_by_handle() -> None:
    data = json.loads(run_validate(str(REPO / "configs/production.toml"), "--json").output)
    assert "act_llm_gen_text (handle anthropic-default)" in data["queues"]["anthropic_q"]["activities"]
    assert data["queues"]["anthropic_q"]["polled_by"] == ["anthropic"]
    assert {g["name"]: g["profile"] for g in data["groups"]}["anthropic"] == "anthropic-tier4"


T = "temporal"
WC = "temporal.worker_config"
AQ = "temporal.worker_config.activity_queues"
SC = "temporal.worker_scopes.scopes"
PR = "temporal.worker_runtime_profiles.profiles"

# (id, changes, expected key path, expected text in the message (the suggestion where one exists))
BROKEN: list[tuple[str, dict[str, Any], str, str]] = [
    ("unknown-group-key", {"workers.llm.profil": "llm-pool"}, "workers.llm.profil", "Did you mean 'profile'?"),
    ("unknown-profile", {"workers.llm.profile": "llm-pol"}, "workers.llm.profile", "Did you mean 'llm-pool'?"),
    ("unknown-scope", {"workers.llm.scope": "runner-lm"}, "workers.llm.scope", "Did you mean 'runner-llm'?"),
    ("unknown-queue", {"workers.llm.task_queue": "llm_qq"}, "workers.llm.task_queue", "Did you mean 'llm_q'?"),
    ("negative-replicas", {"workers.llm.replicas": -1}, "workers.llm.replicas", "greater than or equal to 0"),
    (
        "autoscale-min-over-max",
        {"workers.llm.autoscale": {"min": 5, "max": 2, "target_backlog_per_replica": 10}},
        "workers.llm.autoscale",
        "min (5) is greater than max (2)",
    ),
    (
        "resource-based",
        {f"{PR}.llm-pool.tuning_mode": "resource_based"},
        f"{PR}.llm-pool.tuning_mode",
        "tuning_mode='resource_based' is reserved but not implemented; use 'explicit'.",
    ),
    ("bad-duration", {"pool.restart.backoff_initial": "5 parsecs"}, "pool.restart.backoff_initial", "H:MM:SS"),
    ("bad-size", {"workers.llm.max_memory": "1GB!"}, "workers.llm.max_memory", "512MiB"),
    (
        "unset-env",
        {"workers.llm.env": {"API_KEY": "${PIPELEX_POOL_TEST_UNSET_VAR}"}},
        "workers.llm.env.API_KEY",
        "${PIPELEX_POOL_TEST_UNSET_VAR:-value}",
    ),
    ("unknown-section", {"poool": {"name": "x"}}, "poool", "Did you mean 'pool'?"),
    ("unknown-pool-key", {"pool.nmae": "x"}, "pool.nmae", "Did you mean 'name'?"),
    (
        "unknown-pack",
        {f"{SC}.custom": {"required_tasks_packs": ["crafing"]}},
        f"{SC}.custom.required_tasks_packs",
        "Did you mean 'crafting'?",
    ),
    (
        "unknown-activity-in-scope",
        {f"{SC}.custom": {"required_activities": ["act_llm_gen_txt"]}},
        f"{SC}.custom.required_activities",
        "Did you mean 'act_llm_gen_text'?",
    ),
    (
        "unknown-workflow-in-scope",
        {f"{SC}.custom": {"required_workflows": ["WfPipeRn"]}},
        f"{SC}.custom.required_workflows",
        "Did you mean 'WfPipeRun'?",
    ),
    (
        "scope-resolves-to-nothing",
        {
            f"{SC}.empty": {
                "required_tasks_packs": ["pipe"],
                "disable_all_workflows": True,
                "disable_all_activities": True,
            }
        },
        f"{SC}.empty",
        "resolves to nothing",
    ),
    (
        "routed-queue-without-poller",
        {f"{AQ}.act_img_gen_images.default": "img_q", "temporal.queue_options.img_q": {}},
        f"{AQ}.act_img_gen_images",
        "no worker group polls it",
    ),
    (
        "routed-queue-polled-by-wrong-scope",
        {f"{AQ}.act_jinja2_gen_text.default": "llm_q"},
        f"{AQ}.act_jinja2_gen_text",
        "group(s) llm poll it but their scope does not register act_jinja2_gen_text",
    ),
    (
        "queue-options-nothing-routes-to",
        {"temporal.queue_options.orphan_q": {}},
        "temporal.queue_options.orphan_q",
        "no activity routes to queue 'orphan_q'",
    ),
    (
        "routed-queue-typo",
        {f"{AQ}.act_llm_gen_object.default": "llm_qx"},
        f"{AQ}.act_llm_gen_object.default",
        "Did you mean 'llm_q'?",
    ),
    (
        "unknown-routed-activity",
        {f"{AQ}.act_llm_gen_txt": {"default": "llm_q"}},
        f"{AQ}.act_llm_gen_txt",
        "Did you mean 'act_llm_gen_text'?",
    ),
    (
        "unknown-server",
        {"temporal.temporal_config.selected_server": "locl"},
        "temporal.temporal_config.selected_server",
        "Did you mean 'local'?",
    ),
    (
        "unknown-default-profile",
        {"temporal.worker_runtime_profiles.default_profile": "defualt"},
        "temporal.worker_runtime_profiles.default_profile",
        "Did you mean 'default'?",
    ),
    (
        "unknown-default-scope",
        {"temporal.worker_scopes.default_scope": "ful"},
        "temporal.worker_scopes.default_scope",
        "Did you mean 'full'?",
    ),
    ("bad-restart-policy", {"workers.llm.restart": {"policy": "sometimes"}}, "workers.llm.restart.policy", "always"),
    ("bad-readiness", {"workers.llm.readiness": "ready"}, "workers.llm.readiness", "delay:<duration>"),
    (
        "unknown-command-placeholder",
        {"workers.llm.command": ["my-worker", "--queue", "{task_qeue}"]},
        "workers.llm.command[2]",
        "Did you mean 'task_queue'?",
    ),
    (
        "legacy-and-new-queue-differ",
        {f"{WC}.task_queue": "other_q"},
        f"{WC}.task_queue",
        "remove task_queue",
    ),
    (
        "backoff-initial-over-max",
        {"pool.restart.backoff_initial": "1m"},
        "pool.restart.backoff_initial",
        "greater than backoff_max",
    ),
    ("app-not-importable", {"pool.app": "no_such_module_xyz:packs"}, "pool.app", "cannot import module"),
    (
        "zero-max-attempts",
        {f"{WC}.retry_policy_config": {"maximum_attempts": 0}},
        f"{WC}.retry_policy_config",
        "maximum_attempts must be > 0",
    ),
    (
        "unknown-profile-key",
        {f"{PR}.llm-pool.max_concurent_activities": 5},
        f"{PR}.llm-pool.max_concurent_activities",
        "Did you mean 'max_concurrent_activities'?",
    ),
    (
        "missing-temporal-config-file",
        {"pool.temporal_config_file": "nowhere.toml", "temporal": DELETE},
        "pool.temporal_config_file",
        "file not found",
    ),
    (
        "unknown-queue-options-key",
        {"temporal.queue_options.llm_q.start_to_close": "1m"},
        "temporal.queue_options.llm_q.start_to_close",
        "Did you mean 'start_to_close_timeout'?",
    ),
    (
        "bad-api-key-method",
        {"temporal.temporal_config.temporal_server_configs.local.api_key_method": "env"},
        "temporal.temporal_config.temporal_server_configs.local.api_key_method",
        "'none', 'env_var' or 'secret_provider'",
    ),
    ("bad-metrics-address", {"pool.metrics": "localhost"}, "pool.metrics", '"127.0.0.1:9721" (host:port)'),
    ("bad-port-range", {"pool.worker_metrics": "127.0.0.1:9600-9500"}, "pool.worker_metrics", "first port is above"),
    (
        "port-range-too-small",  # replicas 1 + 2 + 1, plus one replacement per group
        {"pool.worker_metrics": "127.0.0.1:9500-9502"},
        "pool.worker_metrics",
        'widen the range to at least 7 ports, e.g. "127.0.0.1:9500-9506"',
    ),
    (
        "port-range-holds-the-metrics-port",
        {"pool.metrics": "127.0.0.1:9505", "pool.worker_metrics": "127.0.0.1:9500-9599"},
        "pool.worker_metrics",
        "distinct ports",
    ),
    ("group-name-with-a-slash", {"workers.im/g": {"scope": "runner-llm"}}, "workers.im/g", "[workers.im_g]"),
    ("group-named-like-the-dev-server", {"workers.temporal-dev-server": {}}, "workers.temporal-dev-server", "rename"),
    ("over-max-replicas", {"pool.max_replicas": 3}, "pool.max_replicas", "up to 4 replicas"),
]


@pytest.mark.parametrize(("changes", "path", "text"), [c[1:] for c in BROKEN], ids=[c[0] for c in BROKEN])
def test_broken_topology_exits_2_naming_path_and_fix(
    tmp_path: Path, changes: dict[str, Any], path: str, text: str
) -> None:
    file = write_topology(tmp_path, changes)
    result = run_validate(str(file))
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if f": {path}: error:" in line]
    assert lines, f"no error names {path!r}:\n{result.output}"
    assert any(text in line for line in lines), f"{text!r} not in:\n" + "\n".join(lines)
    assert all(line.startswith(str(file)) for line in lines)


def test_at_least_25_broken_topologies() -> None:
    assert len(BROKEN) >= 25


def test_every_error_is_reported_at_once(tmp_path: Path) -> None:
    file = write_topology(
        tmp_path,
        {
            "workers.llm.profile": "llm-pol",
            "workers.media.scope": "runner-medai",
            "pool.restart.window": "forever",
            f"{PR}.llm-pool.tuning_mode": "resource_based",
        },
    )
    result = run_validate(str(file), "--json")
    assert result.exit_code == 2
    paths = {issue["path"] for issue in json.loads(result.output)["issues"] if issue["severity"] == "error"}
    assert {"workers.llm.profile", "workers.media.scope", "pool.restart.window", f"{PR}.llm-pool.tuning_mode"} <= paths


def test_syntax_error_names_the_line(tmp_path: Path) -> None:
    file = tmp_path / "broken.toml"
    file.write_text('[pool]\nname = "x"\n[workers.llm\nscope = "runner-llm"\n')
    result = run_validate(str(file))
    assert result.exit_code == 2
    assert "line 3" in result.output and "TOML syntax error" in result.output


def test_a_duplicated_key_names_the_key_and_line(tmp_path: Path) -> None:
    file = tmp_path / "dup.toml"
    file.write_text('[pool]\nname = "x"\n[workers.llm]\nreplicas = 2\nreplicas = 3\n')
    result = run_validate(str(file))
    assert result.exit_code == 2
    assert "workers.llm.replicas (line 5, column" in result.output and "given twice" in result.output


def test_a_fifo_is_refused_instead_of_read(tmp_path: Path) -> None:
    fifo = tmp_path / "topology.toml"
    os.mkfifo(fifo)
    result = run_validate(str(fifo))  # (reading it would block forever)
    assert result.exit_code == 2 and "not a regular file" in result.output


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    result = run_validate(str(tmp_path / "nope.toml"))
    assert result.exit_code == 2
    assert "file not found" in result.output


def test_legacy_task_queue_is_accepted_with_a_deprecation_warning(tmp_path: Path) -> None:
    file = write_topology(tmp_path, {f"{WC}.default_task_queue": DELETE, f"{WC}.task_queue": "temporal_task_queue"})
    result = run_validate(str(file))
    assert result.exit_code == 0, result.output
    assert f"{WC}.task_queue: warning: task_queue is the legacy name of default_task_queue" in result.output


def test_docs_form_of_activity_queues_is_accepted_with_a_warning(tmp_path: Path) -> None:
    file = write_topology(tmp_path)
    text = file.read_text().replace("[temporal.worker_config.activity_queues.", "[temporal.activity_queues.")
    file.write_text(text)
    result = run_validate(str(file))
    assert result.exit_code == 0, result.output
    assert "temporal.activity_queues: warning:" in result.output


def test_env_defaults_expand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelex_pool.topology.load import load_topology

    monkeypatch.setenv("PIPELEX_POOL_TEST_SET", "from-env")
    file = write_topology(
        tmp_path,
        {
            "workers.llm.env": {
                "A": "${PIPELEX_POOL_TEST_SET}",
                "B": "${PIPELEX_POOL_TEST_UNSET:-fallback}",
                "C": "$$HOME",
            }
        },
    )
    assert load_topology(file).groups["llm"].env == {"A": "from-env", "B": "fallback", "C": "$HOME"}


def test_referenced_pipelex_toml_errors_name_that_file(tmp_path: Path) -> None:
    (tmp_path / "pipelex.toml").write_text(
        '[temporal.worker_config]\ndefault_task_queue = "q"\n[temporal.worker_runtime_profiles.profiles.p]\n'
        'tuning_mode = "resource_based"\n'
    )
    (tmp_path / "topology.toml").write_text(
        '[pool]\ntemporal_config_file = "pipelex.toml"\n[workers.all]\nscope = "full"\ntask_queue = "q"\n'
    )
    result = run_validate(str(tmp_path / "topology.toml"))
    assert result.exit_code == 2
    assert (
        f"{tmp_path / 'pipelex.toml'}: temporal.worker_runtime_profiles.profiles.p.tuning_mode: error" in result.output
    )


def test_schema_accepts_the_shipped_topologies_and_flags_what_validate_refuses() -> None:
    """`pipelex-pool schema` is a JSON Schema an editor can check a topology with as it is typed."""
    import tomllib

    import jsonschema

    result = CliRunner().invoke(main, ["schema"])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.output)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for config in ("topology.toml", "production.toml"):
        doc = tomllib.loads((REPO / "configs" / config).read_text())
        assert [e.message for e in validator.iter_errors(doc)] == [], config
    doc = tomllib.loads((REPO / "configs" / "topology.toml").read_text())
    doc["pool"]["restart"]["backoff_max"] = "30 seconds"  # not a duration
    doc["pool"]["restart"]["min_uptime"] = "1.5s"  # a duration
    doc["workers"]["llm"]["max_memory"] = "1 GiB"  # a size
    doc["workers"]["llm"]["replicaz"] = 3  # a typo
    doc["workers"]["bad name"] = {"task_queue": "llm_q"}
    messages = sorted(e.message for e in validator.iter_errors(doc))
    assert len(messages) == 3, messages
    assert "'30 seconds' is not valid under any of the given schemas" in messages
    assert any("'replicaz' was unexpected" in m for m in messages)
    assert any("'bad name' does not match" in m for m in messages)


def test_an_invalid_key_of_a_group_does_not_hide_its_other_errors(tmp_path: Path) -> None:
    """replicas = -1 and a misspelt profile in one group: both are reported, in one run."""
    file = write_topology(tmp_path, {"workers.llm.replicas": -1, "workers.llm.profile": "llm-pol"})
    result = run_validate(str(file), "--json")
    assert result.exit_code == 2
    paths = [issue["path"] for issue in json.loads(result.output)["issues"] if issue["severity"] == "error"]
    assert paths == ["workers.llm.replicas", "workers.llm.profile"]


def test_a_pool_holding_more_long_polls_than_a_server_accepts_is_warned(tmp_path: Path) -> None:
    """Pipelex's default profile (100 polls of each kind) times 40 llm replicas: over a server's default limit for
    activity-task polls (the limit is per poll API)."""
    file = write_topology(tmp_path, {"workers.llm.replicas": 40})
    result = run_validate(str(file))
    assert result.exit_code == 0, result.output
    warning = "temporal.worker_runtime_profiles: warning: the groups hold up to 2,200 activity-task long polls"
    assert warning in result.output
    assert "(router: 1 x 100, llm: 40 x 50, media: 1 x 100)" in result.output
    assert "frontend.namespaceCount" in result.output and "temporalio's default is 5" in result.output
    assert "workflow-task long polls" not in result.output  # (one router: 100, counted apart, within the limit)

    fewer = write_topology(
        tmp_path,
        {
            "workers.llm.replicas": 40,
            f"{PR}.default.max_concurrent_workflow_task_polls": 5,
            f"{PR}.default.max_concurrent_activity_task_polls": 5,
        },
        name="fewer.toml",
    )
    result = run_validate(str(fewer))
    assert result.exit_code == 0, result.output
    assert "long polls" not in result.output


def test_a_profile_temporalio_refuses_is_an_error_before_any_replica_starts(tmp_path: Path) -> None:
    """1 workflow-task poll with a workflow cache: temporalio's Worker refuses it (every replica of the profile
    would exit as a configuration error); validate says so, naming the profile, its groups and the fix."""
    file = write_topology(tmp_path, {f"{PR}.default.max_concurrent_workflow_task_polls": 1})
    result = run_validate(str(file), "--json")
    assert result.exit_code == 2, result.output
    default, llm = [i for i in json.loads(result.output)["issues"] if i["severity"] == "error"]
    assert default["path"] == f"{PR}.default.max_concurrent_workflow_task_polls"
    assert "runtime profile 'default' (groups: router, media) has 1 workflow-task poll with" in default["problem"]
    assert "max_cached_workflows = 10000" in default["problem"]
    assert "2 or more" in default["fix"] and "max_cached_workflows = 0" in default["fix"]
    assert llm["path"] == f"{PR}.llm-pool.max_concurrent_workflow_task_polls"  # (it sets no poll count of its own)
    assert "(groups: llm) has 1 workflow-task poll (taken from the default profile 'default')" in llm["problem"]

    no_cache = write_topology(
        tmp_path,
        {f"{PR}.default.max_concurrent_workflow_task_polls": 1, f"{PR}.default.max_cached_workflows": 0},
        name="no_cache.toml",
    )
    result = run_validate(str(no_cache))
    assert result.exit_code == 0, result.output
