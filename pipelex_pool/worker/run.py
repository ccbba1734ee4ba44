"""Run one worker: connect, poll, announce readiness over sd_notify, drain on SIGTERM or parent death."""

from __future__ import annotations

import inspect
import os
import signal
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import structlog
import temporalio.activity
from temporalio.client import Client
from temporalio.common import VersioningBehavior, WorkerDeploymentVersion
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import UnsandboxedWorkflowRunner, Worker, WorkerDeploymentConfig
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from pipelex_pool import routing
from pipelex_pool.contract import (
    HEALTH_FILE_ENV,
    HEALTH_TOUCH_S,
    IDENTITY_ENV,
    LISTED_BY_POOL_ENV,
    PAUSE_KEY,
    PAUSE_SIGNAL,
    POLLING_KEY,
    RESUME_SIGNAL,
    SDK_METRICS_KEY,
    START_PAUSED_ENV,
    WAITING_KEY,
    WATCHDOG_USEC_ENV,
)
from pipelex_pool.errors import PoolError, WorkerBootError
from pipelex_pool.notify import Notifier
from pipelex_pool.packs import Catalog
from pipelex_pool.parent_death import expected_parent, set_parent_death_signal
from pipelex_pool.temporal.codec import data_converter
from pipelex_pool.temporal.connect import connect, follow_key, named_problem
from pipelex_pool.temporal.connection import Connection
from pipelex_pool.temporal.pollers import queue_pollers, queue_types
from pipelex_pool.worker import accounting, cached_runs, counts, inflight
from pipelex_pool.worker.config import WorkerSettings

log = structlog.get_logger("pipelex_pool.worker")

READINESS_POLL_S = 0.25  # the readiness check's first interval, doubled after each miss up to READINESS_POLL_MAX_S
READINESS_POLL_MAX_S = 2.0  # (64 workers starting at once do not describe every partition 4 times a second each)
DEFAULT_HEARTBEAT = timedelta(seconds=60)  # temporalio's worker heartbeat interval
CONNECT_RETRY_FIRST_S = 0.25
CONNECT_RETRY_MAX_S = 2.0  # an outage's end is seen within this
COUNTS_INTERVAL_S = 5.0  # task counts reach status within this, when they changed
REPORT_BATCH_S = 0.25  # in-flight attempts reach the supervisor within this (its loop takes them within a second)
RETRY_SEND_S = 0.05  # a datagram the supervisor's full queue refused is sent again this soon
FINAL_REPORT_S = 1.0


def worker_kwargs(settings: WorkerSettings) -> dict[str, Any]:
    """The runtime profile's fields 1:1 as `temporalio.worker.Worker` arguments."""
    profile = settings.profile
    return {
        "max_cached_workflows": profile.max_cached_workflows,
        "max_concurrent_workflow_tasks": profile.max_concurrent_workflow_tasks,
        "max_concurrent_activities": profile.max_concurrent_activities,
        "max_concurrent_local_activities": profile.max_concurrent_local_activities,
        "max_concurrent_workflow_task_polls": profile.max_concurrent_workflow_task_polls,
        "max_concurrent_activity_task_polls": profile.max_concurrent_activity_task_polls,
        "max_activities_per_second": profile.max_activities_per_second,
        "sticky_queue_schedule_to_start_timeout": profile.sticky_queue_schedule_to_start_timeout,
        "max_heartbeat_throttle_interval": profile.max_heartbeat_throttle_interval,
        "default_heartbeat_throttle_interval": profile.default_heartbeat_throttle_interval,
        "graceful_shutdown_timeout": profile.graceful_shutdown_timeout,
        "max_task_queue_activities_per_second": settings.max_task_queue_activities_per_second,
    }


def sandboxed_runner() -> SandboxedWorkflowRunner:
    """Temporal's sandbox, with the routing table module shared with the host (it holds the worker's config)."""
    restrictions = SandboxRestrictions.default.with_passthrough_modules(
        routing.__name__, accounting.__name__, counts.__name__
    )
    return SandboxedWorkflowRunner(restrictions=restrictions)


def activity_executor(settings: WorkerSettings) -> ThreadPoolExecutor | None:
    """Threads for plain `def` activities (none when every activity is `async def`): one per activity slot of the
    profile (`max_concurrent_activities`), as temporalio asks; threads are only created as activities run."""
    sync = [name for name in settings.scope.activities if not is_async_activity(settings.catalog.activities[name])]
    if not sync:
        return None
    slots = settings.profile.max_concurrent_activities or 1
    return ThreadPoolExecutor(max_workers=max(1, slots), thread_name_prefix="activity")


def is_async_activity(fn: Callable[..., Any]) -> bool:
    definition = temporalio.activity._Definition.from_callable(fn)
    return definition.is_async if definition is not None else inspect.iscoroutinefunction(fn)


def build_worker(client: Client, settings: WorkerSettings) -> Worker:
    """The temporalio Worker for the settings; anything it refuses (a bad workflow or activity definition) is a
    WorkerBootError naming the scope, since no restart can fix the code."""
    catalog = settings.catalog
    try:
        return _worker(client, settings, catalog)
    except Exception as exc:  # the app's definitions, as temporalio checks them
        raise WorkerBootError(
            f"cannot build the worker for scope {settings.scope_name!r} on {settings.task_queue!r} "
            f"(app workflows {list(settings.scope.workflows)}, activities {list(settings.scope.activities)}): "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def _worker(client: Client, settings: WorkerSettings, catalog: Catalog) -> Worker:
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[catalog.workflows[name] for name in settings.scope.workflows],
        activities=[catalog.activities[name] for name in settings.scope.activities],
        activity_executor=activity_executor(settings),
        identity=settings.identity,
        interceptors=[accounting.AccountingInterceptor()],
        workflow_runner=accounting.CountingWorkflowRunner(
            sandboxed_runner() if settings.sandbox else UnsandboxedWorkflowRunner()
        ),
        deployment_config=deployment_config(settings),
        **{key: value for key, value in worker_kwargs(settings).items() if value is not None},
    )


def deployment_config(settings: WorkerSettings) -> WorkerDeploymentConfig | None:
    """With [pool] deployment: register as Worker Deployment Version <deployment>.<build_id>, and give workflows
    that declare no versioning behavior the pool's (pinned: a run finishes on the build it started on)."""
    if settings.deployment is None or settings.build_id is None:
        return None
    behavior = {"pinned": VersioningBehavior.PINNED, "auto_upgrade": VersioningBehavior.AUTO_UPGRADE}
    return WorkerDeploymentConfig(
        version=WorkerDeploymentVersion(settings.deployment, settings.build_id),
        use_worker_versioning=True,
        default_versioning_behavior=behavior[settings.versioning_behavior],
    )


async def wait_until_polling(client: Client, settings: WorkerSettings, notifier: Notifier) -> None:
    """Return once Temporal lists our identity among the pollers of every queue type we serve. While Temporal does
    not answer, the supervisor is told we wait for it (an outage is not a failed start)."""
    pending = queue_types(settings.scope)
    waiting = False
    delay = READINESS_POLL_S
    while pending:
        try:
            for queue_type in list(pending):
                if settings.identity in await queue_pollers(client, settings.task_queue, queue_type):
                    pending.remove(queue_type)
        except Exception as exc:  # RPC errors: Temporal may be restarting; readiness just waits
            log.warning("worker.describe_failed", error=str(exc))
            waiting = notifier.send(f"{WAITING_KEY}={one_line(exc)}") or waiting
        else:
            if waiting and notifier.send(f"{WAITING_KEY}="):
                waiting = False
        if pending:
            await anyio.sleep(delay)
            delay = min(delay * 2, READINESS_POLL_MAX_S)


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def permanent_problem(connection: Connection, exc: BaseException) -> str | None:
    """A connection error that no retry can fix (credentials, certificates), named with what to fix; None for
    an outage."""
    named = named_problem(connection, exc)
    if named is not None:
        return named
    if isinstance(exc, RPCError) and exc.status in (
        RPCStatusCode.UNAUTHENTICATED,
        RPCStatusCode.PERMISSION_DENIED,
        RPCStatusCode.INVALID_ARGUMENT,
    ):
        return one_line(exc)
    return None


async def connect_waiting(settings: WorkerSettings, runtime: Runtime | None, notifier: Notifier) -> Client:
    """Connect, and while Temporal does not answer keep trying (every CONNECT_RETRY_MAX_S at most), telling the
    supervisor why: an outage of any length is waited out, never an exit that would count toward FATAL. An error
    no retry can fix (credentials, certificates) is a WorkerBootError naming it."""
    connection = settings.connection
    where = f"{connection.address} (namespace {connection.namespace})"
    delay, waiting = CONNECT_RETRY_FIRST_S, False
    try:
        converter = data_converter(settings.temporal.payload_codec_config)
    except PoolError as exc:  # the codec's storage cannot be used (a missing extra): no retry fixes that
        raise WorkerBootError(f"payload_codec_config: {exc}") from exc
    while True:
        try:
            client = await connect(connection, settings.identity, runtime, converter)
        except Exception as exc:
            problem = await anyio.to_thread.run_sync(permanent_problem, connection, exc)
            if problem is not None:
                raise WorkerBootError(f"cannot connect to Temporal at {where}: {problem}") from exc
            if not waiting:
                log.warning("worker.waiting_for_temporal", target=where, error=one_line(exc))
            waiting = True
            notifier.send(f"{WAITING_KEY}=cannot reach {where}: {one_line(exc)}")
            await anyio.sleep(delay)
            delay = min(delay * 2, CONNECT_RETRY_MAX_S)
            continue
        if waiting:
            log.info("worker.reached_temporal", target=where)
            notifier.send(f"{WAITING_KEY}=")
        return client


class WorkerProcess:
    """The life of one worker process; `drain()` is idempotent, so a second SIGTERM cannot cut it short."""

    def __init__(self, settings: WorkerSettings, notifier: Notifier) -> None:
        self.settings = settings
        self.notifier = notifier
        self.drain_requested = anyio.Event()
        self.drain_reason = ""
        self.failed: BaseException | None = None
        self.outbox = inflight.Outbox(inflight.LEDGER, cached_runs.RUNS)
        # pause: the operator's wish (signals), and the event that wakes the run loop when it changes
        self.pause_wanted = os.environ.get(START_PAUSED_ENV) == "1"
        self.listed_by_pool = os.environ.get(LISTED_BY_POOL_ENV) == "1"  # the supervisor looks for us in Temporal
        self.changed = anyio.Event()  # set (and replaced) when a pause, a resume or a drain is asked
        self.worker: Worker | None = None  # the Worker that runs now (or last ran)
        self.paused_worker: Worker | None = None  # the last Worker shut down for a pause
        health = os.environ.get(HEALTH_FILE_ENV)
        self.health_file = Path(health) if health else None

    def drain(self, reason: str) -> None:
        if self.drain_requested.is_set():
            log.info("worker.drain_already_in_progress", reason=reason)
            return
        self.drain_reason = reason
        self.drain_requested.set()
        self._wake()

    def _wake(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()

    async def _signals(self) -> None:
        pause, resume = signal.Signals[PAUSE_SIGNAL], signal.Signals[RESUME_SIGNAL]
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, pause, resume) as signals:
            async for signum in signals:
                if signum in (pause, resume):
                    self._want_paused(signum == pause)
                else:
                    self.drain(signal.Signals(signum).name)

    def _want_paused(self, paused: bool) -> None:
        if paused == self.pause_wanted:
            return
        self.pause_wanted = paused
        self._wake()
        log.info("worker.pause_requested" if paused else "worker.resume_requested")

    async def _parent_watch(self, parent: int) -> None:
        # backstop for PDEATHSIG (which a thread-exit race can miss): there is no event to wait on
        while os.getppid() == parent:  # noqa: ASYNC110
            await anyio.sleep(1.0)
        self.drain("parent exited")

    async def _announce(self, client: Client, worker: Worker) -> None:
        polling = f"STATUS=polling {self.settings.task_queue}"
        if self.pause_wanted:  # started paused: ready to resume, polling nothing
            ready: tuple[str, ...] = ("READY=1", "STATUS=paused", f"{PAUSE_KEY}=paused", f"MAINPID={os.getpid()}")
        elif self.listed_by_pool:  # READY once the supervisor sees us listed (with every replica starting now)
            ready = (f"{POLLING_KEY}=1", polling, f"MAINPID={os.getpid()}")
        else:
            await wait_until_polling(client, self.settings, self.notifier)
            ready = ("READY=1", polling, f"MAINPID={os.getpid()}")
        # a full queue (the supervisor is paused) has no event to wait on: try again shortly
        while not self.notifier.send(*ready) and self.notifier.enabled:  # noqa: ASYNC110
            await anyio.sleep(RETRY_SEND_S)
        log.info(
            "worker.polling" if ready[0].startswith(POLLING_KEY) else "worker.ready",
            task_queue=self.settings.task_queue,
            types=[t.name for t in queue_types(self.settings.scope)],
        )
        usec = os.environ.get(WATCHDOG_USEC_ENV, "")
        async with anyio.create_task_group() as tg:
            if usec.isdigit():
                tg.start_soon(self._ping_watchdog, worker, int(usec) / 2e6)
            if self.health_file is not None:
                tg.start_soon(self._keep_health_file, worker)
            tg.start_soon(self._report_counts, worker)

    def _write_health(self, state: str) -> None:
        """Replace the health file atomically (a probe never reads half of it); a failure is logged, not fatal."""
        if self.health_file is None:
            return
        try:
            tmp = self.health_file.with_name(f".{self.health_file.name}.tmp")
            tmp.write_text(f"{state} {os.getpid()}\n")
            tmp.replace(self.health_file)
        except OSError as exc:
            log.warning("worker.health_file_failed", path=str(self.health_file), error=str(exc))

    async def _keep_health_file(self, worker: Worker) -> None:
        """ "ready" (then "draining") in the health file, rewritten every HEALTH_TOUCH_S while the process serves,
        paused or draining: its age is the liveness a probe reads, as WATCHDOG=1 is systemd's."""
        while True:  # (a keep-alive is periodic: there is no event to wait on; cancelled as the process ends)
            self._write_health("draining" if self.drain_requested.is_set() else "ready")
            await anyio.sleep(HEALTH_TOUCH_S)

    async def _ping_watchdog(self, worker: Worker, every: float) -> None:
        """WATCHDOG=1 every half of WATCHDOG_USEC (sd_notify's rule); a ping a full queue refused is sent again soon."""
        while True:  # noqa: ASYNC110 (a keep-alive is periodic, paused too; cancelled as the process ends)
            await anyio.sleep(every if self.notifier.send("WATCHDOG=1") else RETRY_SEND_S)

    async def _report_counts(self, worker: Worker) -> None:
        """The task counts every COUNTS_INTERVAL_S, when they changed: an idle worker keeps the supervisor quiet."""
        sent = None
        while True:
            counts = accounting.COUNTS.to_notify()
            if counts != sent and self.notifier.send(counts):
                sent = counts
            await anyio.sleep(COUNTS_INTERVAL_S)

    async def _report_inflight(self) -> None:
        """Send the supervisor what activity attempts started and finished and which workflow runs it holds: woken
        by the first change after a report, the changes of the next REPORT_BATCH_S in one batch, never blocking.
        An idle worker sends nothing and is not woken."""
        while self.notifier.enabled:
            if self.outbox.queued:  # the supervisor's queue was full: try again soon
                await anyio.sleep(RETRY_SEND_S)
            else:
                await self.outbox.wakeup.wait()
                await anyio.sleep(REPORT_BATCH_S)
            self.outbox.flush(self.notifier.send)

    async def _final_reports(self) -> None:
        """After the drain: the last counts and in-flight changes, retried briefly if the supervisor is busy."""
        with anyio.move_on_after(FINAL_REPORT_S):
            while self.notifier.enabled and not self.notifier.send(accounting.COUNTS.to_notify()):  # noqa: ASYNC110
                await anyio.sleep(RETRY_SEND_S)
            while self.notifier.enabled:
                self.outbox.flush(self.notifier.send)
                if not self.outbox.queued:
                    break
                await anyio.sleep(RETRY_SEND_S)

    async def _run(self, client: Client, worker: Worker) -> None:
        """Run the temporalio Worker; while a pause is wanted, none runs (the process, its client and its imported
        code stay); after a pause a new Worker runs on the same client. Returns once a drain is asked, or the
        Worker ended on its own (a failure)."""
        running: Worker | None = worker
        async with anyio.create_task_group() as tg:
            while not self.drain_requested.is_set():
                if self.pause_wanted:
                    await self._sit_paused()
                    if self.drain_requested.is_set():
                        break
                if running is None:  # resumed: a new Worker (a shut-down one cannot run again)
                    try:
                        running = build_worker(client, self.settings)
                    except Exception as exc:  # (it was built once already: not expected, but not silent)
                        self.failed = exc
                        log.error("worker.failed", error=repr(exc))
                        break
                    self.notifier.send(f"{PAUSE_KEY}=", f"STATUS=polling {self.settings.task_queue}")
                    log.info("worker.resumed", task_queue=self.settings.task_queue)
                self.worker = running
                tg.start_soon(self._pause_when_asked, running)
                try:
                    await running.run()
                except Exception as exc:  # a worker that fails on its own is reported and the process exits 1
                    self.failed = exc
                    log.error("worker.failed", error=repr(exc))
                    break
                if self.paused_worker is not running:  # it ended on its own, or for the drain
                    break
                running = None  # shut down for a pause (a resume may already have come: then a new one at once)
            tg.cancel_scope.cancel()  # a pause's shutdown still under way: the drain shuts the Worker down itself
        if not self.drain_requested.is_set():
            self.drain("worker stopped")

    async def _pause_when_asked(self, worker: Worker) -> None:
        """Shut `worker` down once a pause is wanted: it stops polling at once, its in-flight tasks finish (within
        the profile's graceful_shutdown_timeout, as in a drain)."""
        while not self.pause_wanted:
            await self.changed.wait()
            if self.drain_requested.is_set():
                return
        if not self.drain_requested.is_set():  # (a Worker not running yet stops as soon as `_run` runs it)
            self.paused_worker = worker
            self.notifier.send(f"{PAUSE_KEY}=pausing", "STATUS=pausing: in-flight tasks finishing")
            log.info("worker.pausing")
            await worker.shutdown()

    async def _sit_paused(self) -> None:
        """Idle and warm until resumed or drained."""
        self.notifier.send(f"{PAUSE_KEY}=paused", "STATUS=paused")
        log.info("worker.paused")
        while self.pause_wanted and not self.drain_requested.is_set():
            await self.changed.wait()

    async def serve(self, client: Client, worker: Worker, parent: int) -> int:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._signals)
            tg.start_soon(self._parent_watch, parent)
            tg.start_soon(self._run, client, worker)
            tg.start_soon(self._announce, client, worker)
            tg.start_soon(self._report_inflight)
            tg.start_soon(follow_key, self.settings.connection, client, "worker.api_key_rotated")
            await self.drain_requested.wait()
            grace = self.settings.profile.graceful_shutdown_timeout
            log.info("worker.draining", reason=self.drain_reason, grace_s=grace.total_seconds() if grace else 0)
            self.notifier.send("STOPPING=1", f"STATUS=draining ({self.drain_reason})")
            self._write_health("draining")
            running = self.worker or worker
            if running.is_running:
                with anyio.CancelScope(shield=True):
                    await running.shutdown()
            tg.cancel_scope.cancel()
        with anyio.CancelScope(shield=True):
            await self._final_reports()
        log.info("worker.exited", failed=self.failed is not None)
        if self.failed is not None:  # the last line, which the pool shows as the replica's LAST EXIT
            failure = f"{type(self.failed).__name__}: {self.failed}"
            print(f"pipelex-pool worker: the worker failed: {failure}", file=sys.stderr)
            return 1
        return 0


def worker_runtime(address: str | None, heartbeat: timedelta) -> Runtime | None:
    """A runtime serving the SDK's Prometheus metrics on `address` (when asked for) and heartbeating every
    `heartbeat`; None (the default runtime) when neither differs from the default. A metrics port that cannot be
    bound is logged, not fatal: metrics are not worth losing a worker over."""
    if address is None and heartbeat == DEFAULT_HEARTBEAT:
        return None
    if address is not None:
        try:
            runtime = Runtime(
                telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=address)),
                worker_heartbeat_interval=heartbeat,
            )
        except ValueError as exc:
            log.warning("worker.sdk_metrics_unavailable", address=address, error=str(exc))
        else:
            log.info("worker.sdk_metrics", url=f"http://{address}/metrics")
            return runtime
    return Runtime(telemetry=TelemetryConfig(), worker_heartbeat_interval=heartbeat)


async def run_worker(settings: WorkerSettings) -> int:
    parent = expected_parent()
    set_parent_death_signal()
    if os.getppid() != parent:  # the supervisor died before the signal was armed: do not run untracked
        log.warning("worker.parent_gone", expected_parent=parent, parent=os.getppid())
        return 1
    os.environ[IDENTITY_ENV] = settings.identity
    if settings.unit_testing:
        os.environ["PIPELEX_RUN_MODE"] = "unit_test"
    routing.install(routing.RoutingTable(settings.temporal))
    notifier = Notifier()
    log.info(
        "worker.starting",
        task_queue=settings.task_queue,
        scope=settings.scope_name,
        profile=settings.profile_name,
        workflows=list(settings.scope.workflows),
        activities=list(settings.scope.activities),
        server=settings.connection.summary(),
        sandbox=settings.sandbox,
        version=f"{settings.deployment}.{settings.build_id}" if settings.deployment else None,
    )
    runtime = worker_runtime(settings.sdk_metrics, settings.heartbeat)
    try:
        client = await connect_waiting(settings, runtime, notifier)
        if runtime is not None:
            notifier.send(f"{SDK_METRICS_KEY}={settings.sdk_metrics}")
        worker = build_worker(client, settings)
        return await WorkerProcess(settings, notifier).serve(client, worker, parent)
    finally:
        notifier.close()
