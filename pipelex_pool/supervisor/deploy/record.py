"""The build a deploy made current, kept in the state directory so that a restart (a supervisor crash, a systemd
restart, a reboot) starts the build Temporal routes to, not the topology file's older `build_id`.

Written when the pool makes a build current (a deploy's switch, or the first start's); read by `up`, which starts
the recorded build when Temporal's current version for the deployment is that build (or when Temporal cannot be
asked: the record is then the best knowledge there is), and says so."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import anyio
import structlog
from temporalio.api.workflowservice.v1 import DescribeWorkerDeploymentRequest
from temporalio.client import Client

from pipelex_pool.paths import open_private_file

log = structlog.get_logger("pipelex_pool.deploy")
RECORD = "deployed.json"
ASK_WITHIN_S = 5.0


@dataclass(frozen=True)
class Deployed:
    deployment: str
    build_id: str


def record_current(state_dir: Path, deployed: Deployed) -> None:
    """Remember that `deployed.build_id` is current (atomically: a crash leaves the old record or the new one)."""
    path = state_dir / RECORD
    tmp = path.with_name(f".{RECORD}.tmp")
    try:
        with open_private_file(tmp, truncate=True) as file:
            file.write(json.dumps({"deployment": deployed.deployment, "build_id": deployed.build_id}).encode())
        tmp.replace(path)
    except Exception as exc:  # the deploy itself succeeded: a restart would then start the file's build
        log.warning("deploy.not_recorded", path=str(path), error=str(exc))


def recorded_current(state_dir: Path) -> Deployed | None:
    path = state_dir / RECORD
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Deployed(str(data["deployment"]), str(data["build_id"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("deploy.record_unreadable", path=str(path), error=str(exc), effect="the file's build_id is started")
        return None


async def temporal_current(client: Client, deployment: str) -> str | None:
    """The build Temporal routes new runs of `deployment` to (None: unversioned, or no such deployment)."""
    with anyio.fail_after(ASK_WITHIN_S):
        response = await client.workflow_service.describe_worker_deployment(
            DescribeWorkerDeploymentRequest(namespace=client.namespace, deployment_name=deployment)
        )
    return response.worker_deployment_info.routing_config.current_deployment_version.build_id or None
