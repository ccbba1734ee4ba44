"""A small valid topology that tests copy and break or extend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tomlkit

BASE = """
[pool]
name = "testpool"
app = "pipelex_pool.sim:packs"

[pool.restart]
backoff_initial = "0.5s"
backoff_max = "30s"

[dev_server]
enabled = false

[workers.router]
scope = "orchestrator"
task_queue = "temporal_task_queue"
replicas = 1

[workers.llm]
scope = "runner-llm"
task_queue = "llm_q"
profile = "llm-pool"
replicas = 2

[workers.media]
scope = "runner-media"
task_queue = "media_q"
replicas = 1

[temporal.worker_config]
default_task_queue = "temporal_task_queue"

[temporal.worker_config.activity_queues.act_llm_gen_text]
default = "llm_q"
by_handle.anthropic-default = "llm_q"
[temporal.worker_config.activity_queues.act_llm_gen_object]
default = "llm_q"
[temporal.worker_config.activity_queues.act_llm_gen_object_list]
default = "llm_q"
[temporal.worker_config.activity_queues.act_img_gen_images]
default = "media_q"
[temporal.worker_config.activity_queues.act_render_page_views]
default = "media_q"
[temporal.worker_config.activity_queues.act_extract_gen_extract_pages]
default = "media_q"
[temporal.worker_config.activity_queues.act_jinja2_gen_text]
default = "media_q"

[temporal.queue_options.llm_q]
start_to_close_timeout = "0:02:00"
[temporal.queue_options.media_q]

[temporal.worker_scopes.scopes.orchestrator]
required_tasks_packs = ["pipe"]
[temporal.worker_scopes.scopes.runner-media]
required_activities = ["act_img_gen_images", "act_render_page_views", "act_extract_gen_extract_pages",
                       "act_jinja2_gen_text"]
disable_all_workflows = true

[temporal.worker_runtime_profiles.profiles.default]
graceful_shutdown_timeout = "10s"
[temporal.worker_runtime_profiles.profiles.llm-pool]
max_concurrent_activities = 50

[temporal.temporal_config]
selected_server = "local"
[temporal.temporal_config.temporal_server_configs.local]
target_host = "127.0.0.1:7233"
namespace = "default"
api_key_method = "none"
"""

DELETE = object()


def base_doc() -> tomlkit.TOMLDocument:
    return tomlkit.parse(BASE)


def apply(doc: Any, changes: dict[str, Any]) -> Any:
    """Set (or delete, with DELETE) dotted keys; a key part in [brackets] may contain dots."""
    for dotted, value in changes.items():
        parts = dotted.split(".")
        node = doc
        for part in parts[:-1]:
            if part not in node:
                node[part] = tomlkit.table()
            node = node[part]
        if value is DELETE:
            del node[parts[-1]]
        else:
            node[parts[-1]] = value
    return doc


def write_topology(directory: Path, changes: dict[str, Any] | None = None, name: str = "topology.toml") -> Path:
    path = directory / name
    path.write_text(tomlkit.dumps(apply(base_doc(), changes or {})))
    return path


def server_changes(address: str, namespace: str) -> dict[str, Any]:
    """Point the topology's local server at the test's Temporal server and namespace."""
    local = "temporal.temporal_config.temporal_server_configs.local"
    return {f"{local}.target_host": address, f"{local}.namespace": namespace}
