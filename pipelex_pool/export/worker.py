"""One group's worker outside a pool: the command line and environment the pool would give each replica, for a
runner that has no supervisor (a Kubernetes pod, a systemd unit per replica)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

from pipelex_pool.contract import CONFIG_ENV, GROUP_ENV
from pipelex_pool.errors import PoolError
from pipelex_pool.topology.load import Topology
from pipelex_pool.topology.schema import ResolvedGroup
from pipelex_pool.worker_command import stop_timeout, worker_argv


@dataclass(frozen=True)
class WorkerRun:
    """How to run one replica of a group by hand."""

    argv: list[str]
    env: dict[str, str]  # besides the API key, which is referenced where it is kept, never copied
    env_files: list[str]  # the group's env_file paths: referenced (EnvironmentFile=, a Secret), never copied
    stop_timeout: timedelta  # graceful_shutdown_timeout plus the pool's margin: SIGKILL only after this
    watchdog: timedelta | None  # the longest silence allowed before the worker is taken as hung


def worker_run(
    topology: Topology, group: ResolvedGroup, *, program: str, config: str, python: str, replica: str, identity: str
) -> WorkerRun:
    """`program` runs pipelex-pool, `config` is where the runner puts the topology file, `replica` and
    `identity` what the runner can say of one replica (systemd's %i, a pod's name)."""
    argv = worker_argv(
        topology.pool.name, group, program=[program], python=python, config=config, replica=replica, identity=identity
    )
    env = {**group.env_table, CONFIG_ENV: config, GROUP_ENV: group.name, "PYTHONUNBUFFERED": "1"}
    watchdog = group.watchdog if group.watchdog and group.readiness == "notify" else None
    return WorkerRun(argv=argv, env=env, env_files=group.env_file, stop_timeout=stop_timeout(group), watchdog=watchdog)


def api_key_env(topology: Topology) -> str | None:
    """The variable the selected server's API key is read from, if it needs one (api_key_method = env_var)."""
    server = topology.temporal.selected_server()
    if server is None or server.api_key_method == "none":
        return None
    if server.api_key_method == "secret_provider":
        raise PoolError(
            f'{topology.file}: the selected server reads its API key with api_key_method = "secret_provider", which '
            'pipelex-pool cannot export; use api_key_method = "env_var" (with api_key_id naming the variable)'
        )
    return server.api_key_id or "TEMPORAL_API_KEY"


def dns_name(*parts: str) -> str:
    """A Kubernetes / systemd friendly name: lower case, [a-z0-9-], at most 63 characters."""
    name = re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")
    if len(name) > 63:
        raise PoolError(f"the name {name!r} is longer than 63 characters: shorten [pool] name or the group name")
    return name
