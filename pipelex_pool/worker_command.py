"""What a replica runs, in the pool or exported to another runner (systemd units, Kubernetes): its command line,
and how long a stop may take before the process is killed."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pipelex_pool.topology.schema import ResolvedGroup

STOP_MARGIN_S = 5.0  # beyond the profile's graceful_shutdown_timeout: the worker's own shutdown after its drain


def stop_timeout(group: ResolvedGroup) -> timedelta:
    """SIGTERM -> SIGKILL: the drain (graceful_shutdown_timeout) and the margin."""
    return group.graceful_shutdown_timeout + timedelta(seconds=STOP_MARGIN_S)


def worker_argv(
    pool: str,
    group: ResolvedGroup,
    *,
    program: list[str],
    python: str,
    config: str,
    replica: str,
    identity: str,
    config_dir: str | None = None,
) -> list[str]:
    """The built-in worker's command line (`program` runs pipelex-pool), or the group's command template with its
    placeholders filled: what a replica runs, in the pool or exported to another runner."""
    if group.command is None:
        return [*program, "worker", "--config", config, "--task-queue", group.task_queue, "--scope", group.scope,
                "--profile", group.profile]  # fmt: skip
    values = {
        "task_queue": group.task_queue,
        "scope": group.scope,
        "profile": group.profile,
        "group": group.name,
        "replica": replica,
        "identity": identity,
        "pool": pool,
        "python": python,
        "config": config,
        "config_dir": config_dir or str(Path(config).parent),
    }
    return [part.format(**values) for part in group.command]
