"""The deploy controller: carries a `deploy` through Temporal's Worker Deployment Versioning.

The loop rolls every group onto the new build while the old build's processes keep serving (parked); this
controller then waits until Temporal sees the new version poll every queue the pool serves, ramps it if asked,
makes it current, and once the old version has drained (its pinned runs finished, as Temporal reports; at once
for auto-upgrade workflows) asks the loop to let the old processes go. Like the autoscaler it only reads the view
and Temporal, and changes the pool through requests (EndDeploy); the routing calls to Temporal are its own."""

from __future__ import annotations

import enum
import os
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio
import structlog
from temporalio.api.deployment.v1 import WorkerDeploymentInfo, WorkerDeploymentVersion
from temporalio.api.enums.v1 import (
    RoutingConfigUpdateState,
    TaskQueueType,
    VersionDrainageStatus,
    WorkerDeploymentVersionStatus,
)
from temporalio.api.workflowservice.v1 import (
    DeleteWorkerDeploymentVersionRequest,
    DescribeWorkerDeploymentRequest,
    DescribeWorkerDeploymentVersionRequest,
    SetWorkerDeploymentCurrentVersionRequest,
    SetWorkerDeploymentRampingVersionRequest,
)
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from pipelex_pool.supervisor.deploy.hygiene import VersionStatus, VersionSummary, near_limit, to_delete
from pipelex_pool.supervisor.deploy.record import Deployed, record_current
from pipelex_pool.supervisor.desired.requests import DeployPlan, EndDeploy, ReleaseParked, Request
from pipelex_pool.supervisor.pool_state import group_progress
from pipelex_pool.supervisor.watchers.queues import served_types
from pipelex_pool.ticks import sleep_on_grid

if TYPE_CHECKING:
    from pipelex_pool.supervisor.pool_state import PoolState

log = structlog.get_logger("pipelex_pool.deploy")
TICK_S = 1.0
ROLLBACK_CHECK_S = 0.1  # a rollback asked during a deploy is acted on within this
DESCRIBE_EVERY_S = 5.0
VERIFY_WITHIN_S = 120.0  # the new version must be seen on every queue within this, once its replicas are READY
RETRY_FOR_S = 60.0  # a routing change Temporal could not take now is tried again this long
REFUSED_RETRY_S = 15.0  # a version Temporal would not delete yet is asked again after this
TRANSIENT = (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.RESOURCE_EXHAUSTED)


class Phase(enum.Enum):
    ROLLING = "rolling"  # the new build's replicas start beside the old build's, which serve on
    VERIFYING = "verifying"  # waiting until Temporal lists the new version on every queue the pool serves
    FLEET = "waiting for the fleet"  # every live pool of the fleet must poll the new version before the switch
    RAMPING = "ramping"  # a share of new runs goes to the new version
    DRAINING = "draining"  # the new version is current; the old one's pinned runs finish
    DONE = "done"
    FAILED = "failed"
    ROLLING_BACK = "rolling back"  # `deploy --build-id <old>` during the deploy: the old build current again
    ROLLED_BACK = "rolled back"


class DeployFailed(Exception):
    pass


class MadeCurrentAgain(Exception):
    """While this pool waited for the old build to drain, another pool of the fleet rolled back to it."""


def _summary(raw: WorkerDeploymentInfo.WorkerDeploymentVersionSummary) -> VersionSummary:
    status = VersionStatus(
        WorkerDeploymentVersionStatus.Name(raw.status).removeprefix("WORKER_DEPLOYMENT_VERSION_STATUS_").lower()
    )
    created = raw.create_time.ToDatetime(tzinfo=UTC) if raw.HasField("create_time") else None
    since = None
    if status is VersionStatus.DRAINED:
        stamp = raw.drainage_info.last_changed_time if raw.drainage_info.HasField("last_changed_time") else None
        if stamp is None and raw.HasField("last_deactivation_time"):
            stamp = raw.last_deactivation_time
        since = stamp.ToDatetime(tzinfo=UTC) if stamp is not None else created
    elif status is VersionStatus.INACTIVE:
        since = created
    return VersionSummary(raw.deployment_version.build_id, status, created, since)


@dataclass
class Routing:
    """The deployment as Temporal last described it."""

    current: str | None = None  # build ID, None when unversioned
    ramping: str | None = None
    ramping_percentage: float = 0.0
    versions: dict[str, dict[str, Any]] = field(default_factory=dict)  # build ID -> status, drainage
    summaries: list[VersionSummary] = field(default_factory=list)  # what version hygiene reads
    error: str | None = None
    propagating: bool = False  # a routing change not yet applied on every task queue (new runs may still go back)


@dataclass
class DeployController:
    supervisor: PoolState
    client: Callable[[], Awaitable[Client]]
    submit: Callable[[Request], object]
    # the live pools of the fleet that do not yet run a version on one of the queues (watch.fleet_lagging)
    fleet_lagging: Callable[[str], list[str]] = lambda version: []
    phase: Phase | None = None
    detail: str = ""
    routing: Routing = field(default_factory=Routing)
    _handled: float | None = None  # the `started` of the last deploy carried out
    _described: float = 0.0
    deleted: deque[dict[str, str]] = field(default_factory=lambda: deque(maxlen=20))  # version hygiene, newest last
    # versions Temporal would not delete yet (a poller within its poller history): build ID -> why, and when asked
    refused: dict[str, tuple[str, float]] = field(default_factory=dict)

    @property
    def deployment(self) -> str | None:
        return self.supervisor.topology.pool.deployment

    @property
    def identity(self) -> str:
        return f"{self.supervisor.topology.pool.name}/deploy@{socket.gethostname()}:{os.getpid()}"

    async def run(self) -> None:
        if self.deployment is None:
            return
        while True:
            await sleep_on_grid(TICK_S)
            try:
                client = await self.client()
                fresh = time.monotonic() - self._described > DESCRIBE_EVERY_S
                if fresh:
                    await self._describe(client)
                plan = self.supervisor.deploy
                if plan is not None and plan.outcome is None and plan.started != self._handled:
                    self._handled = plan.started
                    try:
                        await self._carry_out_unless_rolled_back(client, plan)
                    except Exception:  # a fault (the fault boundary logs it and runs this again): the deploy is
                        self._handled = None  # taken up again from where the pool and Temporal stand (idempotent)
                        raise
                elif plan is None:
                    await self._first_current(client)
                if fresh and (plan is None or plan.outcome is not None):  # (none deleted while a deploy runs)
                    await self._tidy(client)
            except RPCError as exc:  # Temporal does not answer: the watch reports it; try again next tick
                self.routing.error = str(exc)

    async def _describe(self, client: Client) -> None:
        self._described = time.monotonic()
        assert self.deployment is not None
        try:
            response = await client.workflow_service.describe_worker_deployment(
                DescribeWorkerDeploymentRequest(namespace=client.namespace, deployment_name=self.deployment)
            )
        except RPCError as exc:
            if exc.status is RPCStatusCode.NOT_FOUND:  # no worker of it has polled yet
                self.routing = Routing()
                return
            raise
        info = response.worker_deployment_info
        routing = info.routing_config
        current = routing.current_deployment_version.build_id or None
        ramping = routing.ramping_deployment_version.build_id or None
        summaries = [_summary(s) for s in info.version_summaries]
        versions = {
            summary.build_id: {
                "status": summary.status.value,
                "drainage": VersionDrainageStatus.Name(raw.drainage_info.status)
                .removeprefix("VERSION_DRAINAGE_STATUS_")
                .lower(),
                "retired_since": summary.retired_since.isoformat() if summary.retired_since else None,
            }
            for summary, raw in zip(summaries, info.version_summaries, strict=True)
        }
        propagating = (
            info.routing_config_update_state == RoutingConfigUpdateState.ROUTING_CONFIG_UPDATE_STATE_IN_PROGRESS
        )
        self.routing = Routing(
            current, ramping, routing.ramping_version_percentage, versions, summaries, propagating=propagating
        )

    async def _first_current(self, client: Client) -> None:
        """A versioned pool whose deployment has no current version yet (its first start): once every replica is
        READY, make its build current, or new runs would wait for a version nobody routes to."""
        build = self.supervisor.build_id
        if build is None or self.routing.current is not None or self.routing.error:
            return
        if not self._all_on(build) or build not in self.routing.versions:
            return
        await self._set_current(client, build)
        log.info("deploy.first_current", deployment=self.deployment, build_id=build)
        await self._describe(client)

    def warnings(self) -> list[str]:
        """Before Temporal's limit of versions; a pool left on a build the deployment no longer routes to."""
        found: list[str] = []
        deployment, routing = self.deployment, self.routing
        if deployment is None or routing.error:
            return found
        retention = self.supervisor.topology.pool.versions
        limit = near_limit(deployment, len(routing.summaries), retention)
        if limit:
            found.append(limit)
        build, plan = self.supervisor.build_id, self.supervisor.deploy
        in_progress = plan is not None and plan.outcome is None
        if routing.current and build and build not in (routing.current, routing.ramping) and not in_progress:
            found.append(
                f"this pool runs build {build!r} of Worker Deployment {deployment!r}, which routes new runs to "
                f"{routing.current!r} (set by another pool of the fleet, or by hand): its replicas get only the runs "
                f"pinned to {build!r}. Fix: `pipelex-pool deploy --build-id {routing.current}` here once that build "
                "is installed"
            )
        return found

    def _running_builds(self) -> set[str]:
        builds = set()
        for group in self.supervisor.groups.values():
            handles = [*group.handles, *group.retiring, *group.parked]
            if group.replacement is not None:
                handles.append(group.replacement)
            for handle in handles:
                info = self.supervisor.info.get(handle)
                if info is not None and info.build_id and handle.pid is not None:
                    builds.add(info.build_id)
        if self.supervisor.build_id:
            builds.add(self.supervisor.build_id)
        return builds

    async def _tidy(self, client: Client) -> None:
        """Version hygiene (hygiene.py): delete the retired versions past retention; a refusal (a poller still in
        Temporal's poller history) is asked again after REFUSED_RETRY_S."""
        assert self.deployment is not None
        routing = self.routing
        if routing.error or not routing.summaries:
            return
        now, clock = datetime.now(UTC), time.monotonic()
        chosen = to_delete(
            routing.summaries,
            current=routing.current,
            ramping=routing.ramping,
            running_here=self._running_builds(),
            retention=self.supervisor.topology.pool.versions,
            now=now,
        )
        listed = {v.build_id for v in routing.summaries}
        self.refused = {b: r for b, r in self.refused.items() if b in listed}
        deleted_any = False
        for deletion in chosen:
            refused = self.refused.get(deletion.build_id)
            if refused is not None and clock - refused[1] < REFUSED_RETRY_S:
                continue
            try:
                await client.workflow_service.delete_worker_deployment_version(
                    DeleteWorkerDeploymentVersionRequest(
                        namespace=client.namespace,
                        deployment_version=WorkerDeploymentVersion(
                            deployment_name=self.deployment, build_id=deletion.build_id
                        ),
                        identity=self.identity,
                    )
                )
            except RPCError as exc:
                if exc.status is RPCStatusCode.NOT_FOUND:  # (another pool of the fleet deleted it)
                    continue
                if exc.status is not RPCStatusCode.FAILED_PRECONDITION:
                    raise
                self.refused[deletion.build_id] = (exc.message, clock)
                log.info("deploy.version_kept", build_id=deletion.build_id, because=exc.message,
                         retry_in_s=REFUSED_RETRY_S)  # fmt: skip
                continue
            self.refused.pop(deletion.build_id, None)
            self.deleted.append({"build_id": deletion.build_id, "because": deletion.because, "at": now.isoformat()})
            log.info("deploy.version_deleted", deployment=self.deployment, build_id=deletion.build_id,
                     because=deletion.because)  # fmt: skip
            deleted_any = True
        if deleted_any:
            await self._describe(client)

    def _all_on(self, build: str) -> bool:
        """Every wanted replica READY on `build`, and no roll left."""
        for group in self.supervisor.groups.values():
            progress = group_progress(group)
            if not progress.all_ready:
                return False
            for handle in progress.ready:
                info = self.supervisor.info.get(handle)
                if info is None or info.build_id != build:
                    return False
        return True

    async def _carry_out_unless_rolled_back(self, client: Client, plan: DeployPlan) -> None:
        """Carry the deploy out; a rollback asked meanwhile (`deploy --build-id <old>`) stops it where it is and
        makes the old build current again at once, its parked processes back in their slots."""
        async with anyio.create_task_group() as tg:

            async def cancel_on_rollback() -> None:
                while not plan.rollback_requested:  # noqa: ASYNC110 (desired state written by the loop: no event)
                    await anyio.sleep(ROLLBACK_CHECK_S)
                tg.cancel_scope.cancel()

            tg.start_soon(cancel_on_rollback)
            await self._carry_out(client, plan)
            tg.cancel_scope.cancel()
        if plan.rollback_requested:
            await self._roll_back(plan)

    async def _roll_back(self, plan: DeployPlan, *, switch: bool = True) -> None:
        """Back to the old build: made current again (unless another pool of the fleet did: `switch` False), its
        processes back in their slots, the new build's parked until its pinned runs have finished."""
        started = time.monotonic()
        self._enter(Phase.ROLLING_BACK, f"making {plan.from_build} current again")
        deadline = time.monotonic() + RETRY_FOR_S
        while switch:  # (Temporal not answering is waited out: the old processes serve meanwhile)
            try:
                client = await self.client()
                with anyio.move_on_after(RETRY_FOR_S):
                    await self._set_ramping(client, "", 0)
                if plan.from_build is not None:
                    await self._set_current(client, plan.from_build)
                break
            except RPCError as exc:
                if time.monotonic() > deadline:
                    log.error("deploy.rollback_failed", to_build=plan.from_build, error=str(exc))
                    break
                await anyio.sleep(TICK_S)
        took = round(time.monotonic() - started, 2)
        log.info("deploy.rolled_back", to_build=plan.from_build, from_build=plan.to_build, seconds=took,
                 by="this pool" if switch else "another pool of the fleet")  # fmt: skip
        self.submit(EndDeploy(rolled_back=True))  # A back in its slots, B's processes parked in turn
        how = f"in {took}s" if switch else "by another pool of the fleet"
        self._enter(Phase.ROLLED_BACK, f"{plan.from_build} current again {how}; {plan.to_build}'s pinned runs "
                    "finish on its parked processes")  # fmt: skip
        delay = TICK_S
        while True:  # B's pinned runs finish on B (as A's did in the deploy), then its processes go
            try:
                await self._describe(await self.client())
                await self._drained(await self.client(), plan.to_build)
                break
            except RPCError as exc:
                self.detail = f"{plan.from_build} current; Temporal did not answer ({exc}), asking again"
                await anyio.sleep(delay)
                delay = min(delay * 2, 10.0)
        self.submit(ReleaseParked())
        self._enter(Phase.ROLLED_BACK, f"{plan.from_build} current; {plan.to_build} drained, its processes go")

    async def _carry_out(self, client: Client, plan: DeployPlan) -> None:
        ramped = False
        try:
            self._enter(Phase.ROLLING, f"starting build {plan.to_build} beside {plan.from_build}")
            await self._rolled(plan)
            self._enter(Phase.VERIFYING, f"waiting until Temporal sees {plan.to_build} on every queue")
            await self._verified(client, plan.to_build)
            for percentage in [p for p in plan.ramp if 0 < p < 100]:
                await self._fleet_ready(client, plan)  # (before each step: a pool may join on the old build)
                if self.routing.current == plan.to_build:
                    break  # another pool of the fleet switched already
                await self._set_ramping(client, plan.to_build, percentage)  # (then said: status follows Temporal)
                ramped = True
                self._enter(Phase.RAMPING, f"{percentage}% of new runs on {plan.to_build} for {plan.pause_s:g}s")
                await anyio.sleep(plan.pause_s)
            await self._fleet_ready(client, plan)
            if self.routing.current != plan.to_build:  # (another pool of the fleet may have switched already)
                await self._set_current(client, plan.to_build)
            else:
                record_current(self.supervisor.paths.state_dir, Deployed(self.deployment or "", plan.to_build))
        except (DeployFailed, RPCError) as exc:
            reason = str(exc)
            if ramped:
                with anyio.move_on_after(RETRY_FOR_S):
                    await self._set_ramping(client, "", 0)
            self._enter(Phase.FAILED, reason)
            log.error("deploy.failed", to_build=plan.to_build, reason=reason)
            self.submit(EndDeploy(failed=reason))
            return
        # The new build is current: Temporal routes new runs to it (once the change reached every task queue:
        # `propagating` until then). From here nothing goes back to the old build; an error is waited out.
        self._enter(Phase.DRAINING, f"{plan.to_build} current; waiting for {plan.from_build}'s pinned runs")
        delay = TICK_S
        while True:
            try:
                await self._describe(await self.client())
                await self._drained(await self.client(), plan.from_build, watch_rollback=True)
                break
            except MadeCurrentAgain:  # the fleet moves as one: back with it
                await self._roll_back(plan, switch=False)
                return
            except RPCError as exc:
                self.detail = f"{plan.to_build} current; Temporal did not answer ({exc}), asking again"
                await anyio.sleep(delay)
                delay = min(delay * 2, 10.0)
        self._enter(Phase.DONE, f"{plan.to_build} current; {plan.from_build}'s processes drain")
        self.submit(EndDeploy())

    def _enter(self, phase: Phase, detail: str) -> None:
        self.phase, self.detail = phase, detail
        log.info("deploy.phase", phase=phase.value, detail=detail)

    async def _rolled(self, plan: DeployPlan) -> None:
        while not self._all_on(plan.to_build):
            for group in self.supervisor.groups.values():
                aborted = group.roll_aborted
                if aborted and aborted[1] >= plan.started:
                    raise DeployFailed(f"build {plan.to_build} could not start: {aborted[0]}")
            await anyio.sleep(TICK_S)

    async def _fleet_ready(self, client: Client, plan: DeployPlan) -> None:
        """Wait until every live pool of the fleet polls the new version on every queue it shares with this one:
        a switch before that would send the whole fleet's new runs to the pools that run it. Whichever pool
        completes the set switches; a pool that finds the version current already goes on (the switch is
        idempotent). A fleet of one goes on at once."""
        version = f"{self.deployment}.{plan.to_build}"
        started = time.monotonic()
        while True:
            lagging = self.fleet_lagging(version)
            if not lagging:
                return
            waited = time.monotonic() - started
            try:
                await self._describe(client)
            except RPCError as exc:  # a hiccup does not fail a deploy that may wait for the fleet for minutes
                self.detail = f"waiting for the fleet ({waited:.0f}s); Temporal did not answer ({exc}), asking again"
                if waited > plan.fleet_timeout_s:
                    raise
                await anyio.sleep(TICK_S)
                continue
            if self.routing.current == plan.to_build:
                log.info("deploy.fleet_switched", to_build=plan.to_build, by="another pool of the fleet")
                return
            if waited > plan.fleet_timeout_s:
                raise DeployFailed(
                    f"the fleet did not run build {plan.to_build} everywhere within {plan.fleet_timeout_s:g}s: "
                    + "; ".join(lagging)
                )
            detail = f"waiting for the fleet ({waited:.0f}s): " + "; ".join(lagging)
            if self.phase is not Phase.FLEET or self.detail.split(": ", 1)[-1] != detail.split(": ", 1)[-1]:
                self._enter(Phase.FLEET, detail)
            self.detail = detail
            await anyio.sleep(TICK_S)

    def _expected_queues(self) -> set[tuple[str, TaskQueueType.ValueType]]:
        expected: set[tuple[str, TaskQueueType.ValueType]] = set()
        for group in self.supervisor.groups.values():
            if group.spec is None or group.removed or group.stopped_by_operator or group.desired == 0:
                continue  # (a group of no replica polls nothing: no version of it to wait for)
            for queue_type in served_types(self.supervisor, group.spec.scope):
                expected.add((group.spec.task_queue, queue_type.value))
        return expected

    async def _verified(self, client: Client, build: str) -> None:
        assert self.deployment is not None
        expected = self._expected_queues()
        missing = expected
        with anyio.move_on_after(VERIFY_WITHIN_S):
            while True:
                try:
                    response = await client.workflow_service.describe_worker_deployment_version(
                        DescribeWorkerDeploymentVersionRequest(
                            namespace=client.namespace,
                            deployment_version=WorkerDeploymentVersion(deployment_name=self.deployment, build_id=build),
                        )
                    )
                except RPCError as exc:  # Temporal creates the version from its first poll, a moment later
                    if exc.status is not RPCStatusCode.NOT_FOUND:
                        raise
                    await anyio.sleep(TICK_S)
                    continue
                seen = {(tq.name, tq.type) for tq in response.worker_deployment_version_info.task_queue_infos}
                missing = expected - seen
                if not missing:
                    return
                await anyio.sleep(TICK_S)
        names = ", ".join(f"{q} ({TaskQueueType.Name(t).removeprefix('TASK_QUEUE_TYPE_').lower()})" for q, t in missing)
        raise DeployFailed(f"Temporal never saw build {build} poll {names} within {VERIFY_WITHIN_S:g}s")

    async def _drained(self, client: Client, build: str | None, *, watch_rollback: bool = False) -> None:
        """Pinned runs of the old version finish on it; auto-upgrade runs move at their next workflow task.
        `watch_rollback`: raise MadeCurrentAgain if the old version becomes current again meanwhile (another pool
        of the fleet rolled back)."""
        if build is None or self.supervisor.topology.pool.versioning_behavior == "auto_upgrade":
            return
        assert self.deployment is not None
        while True:
            response = await client.workflow_service.describe_worker_deployment_version(
                DescribeWorkerDeploymentVersionRequest(
                    namespace=client.namespace,
                    deployment_version=WorkerDeploymentVersion(deployment_name=self.deployment, build_id=build),
                )
            )
            info = response.worker_deployment_version_info
            if watch_rollback and info.status == WorkerDeploymentVersionStatus.WORKER_DEPLOYMENT_VERSION_STATUS_CURRENT:
                log.info("deploy.fleet_rolled_back", to_build=build, by="another pool of the fleet")
                raise MadeCurrentAgain(build)
            if info.drainage_info.status == VersionDrainageStatus.VERSION_DRAINAGE_STATUS_DRAINED:
                return
            self.detail = (
                f"waiting for build {build}'s pinned runs to finish (Temporal: "
                f"{VersionDrainageStatus.Name(info.drainage_info.status).removeprefix('VERSION_DRAINAGE_STATUS_')})"
            )
            await anyio.sleep(TICK_S)

    async def _set_current(self, client: Client, build: str) -> None:
        """Make `build` current (a moment of unavailability is retried for RETRY_FOR_S), then record it in the
        state directory: a restart starts the build Temporal routes to (deploy/record.py)."""
        assert self.deployment is not None
        deadline = time.monotonic() + RETRY_FOR_S
        while True:
            try:
                await client.workflow_service.set_worker_deployment_current_version(
                    SetWorkerDeploymentCurrentVersionRequest(
                        namespace=client.namespace,
                        deployment_name=self.deployment,
                        build_id=build,
                        identity=self.identity,
                    )
                )
                break
            except RPCError as exc:
                if exc.status not in TRANSIENT or time.monotonic() > deadline:
                    raise
                await anyio.sleep(TICK_S)
        # what status shows until the next describe: not the version it replaced, and not applied on every task
        # queue yet (Temporal applies a routing change after answering; the describe says when it has)
        self.routing.current, self.routing.propagating = build, True
        if self.routing.ramping == build:
            self.routing.ramping, self.routing.ramping_percentage = None, 0.0
        record_current(self.supervisor.paths.state_dir, Deployed(self.deployment, build))

    async def _set_ramping(self, client: Client, build: str, percentage: float) -> None:
        assert self.deployment is not None
        await client.workflow_service.set_worker_deployment_ramping_version(
            SetWorkerDeploymentRampingVersionRequest(
                namespace=client.namespace,
                deployment_name=self.deployment,
                build_id=build,
                percentage=percentage,
                identity=self.identity,
            )
        )
