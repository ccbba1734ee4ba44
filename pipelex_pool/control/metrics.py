"""/metrics: a prometheus-client collector over the pool's read-only view.

Every scrape reads the view as it is (nothing is counted twice or kept apart from the pool's own state). Labels
name what an operator aggregates by: `group` and `replica` (the slot number, stable across restarts), never a pid,
which would start a new series at every restart. A counter that belongs to one process (a replica's CPU seconds)
restarts from zero with the process, as `process_cpu_seconds_total` does; Prometheus' rate() handles that."""

from __future__ import annotations

import platform
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from pipelex_pool import __version__
from pipelex_pool.control.status import group_tasks
from pipelex_pool.supervisor.fault import FAULTS
from pipelex_pool.supervisor.process.state import ProcState
from pipelex_pool.supervisor.view import PoolView
from pipelex_pool.supervisor.watchers.queues import pollers_by_owner
from pipelex_pool.temporal.certs import inspect
from pipelex_pool.worker.counts import ACTIVITY_BUCKETS


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


class PoolCollector(Collector):
    """The pool's metrics, read from `view` at each scrape."""

    def __init__(self, view: PoolView) -> None:
        self.view = view

    def collect(self) -> Iterator[Metric]:
        yield from self._pool()
        yield from self._groups()
        yield from self._replicas()
        yield from self._queues()
        yield from self._builds()

    def _builds(self) -> Iterator[Metric]:
        """Which build each live replica runs (a deploy shows both), and the deploy under way, if any."""
        view = self.view
        builds = GaugeMetricFamily(
            "pipelex_pool_replicas_by_build",
            "Live worker processes by build ID (replacements and parked processes of a deploy included).",
            labels=["group", "build_id"],
        )
        for group in view.groups.values():
            counted: dict[str, int] = {}
            for handle in group.all_handles():
                info = view.info.get(handle)
                if handle.state.alive and info is not None:
                    build = info.build_id or ""
                    counted[build] = counted.get(build, 0) + 1
            for build, count in sorted(counted.items()):
                builds.add_metric([group.name, build], count)
        deploy = GaugeMetricFamily(
            "pipelex_pool_deploy_phase",
            "1 for the phase of the deploy under way (from_build -> to_build); absent when none is.",
            labels=["from_build", "to_build", "phase"],
        )
        plan, phase = view.deploy, view.deployer.phase
        if plan is not None and plan.outcome is None and phase is not None:
            deploy.add_metric([plan.from_build or "", plan.to_build, phase.value], 1)
        yield from (builds, deploy)

    def _pool(self) -> Iterator[Metric]:
        view = self.view
        build = InfoMetricFamily("pipelex_pool_build", "Versions of pipelex-pool, temporalio and Python.")
        build.add_metric(
            [],
            {
                "version": __version__,
                "temporalio": _package_version("temporalio"),
                "python": platform.python_version(),
                "pool": view.topology.pool.name,
            },
        )
        yield build
        yield GaugeMetricFamily(
            "pipelex_pool_start_time_seconds",
            "When the supervisor started, in seconds since the epoch.",
            value=view.started_wall,
        )
        yield GaugeMetricFamily(
            "pipelex_pool_temporal_reachable",
            "1 when the Temporal server answered the pool's last request, 0 when it did not.",
            value=0 if view.health.error or view.watch.error else 1,
        )
        yield CounterMetricFamily(
            "pipelex_pool_temporal_outages",
            "Times the Temporal server stopped answering the pool (a hung server included), since it started.",
            value=view.health.outages,
        )
        yield GaugeMetricFamily(
            "pipelex_pool_temporal_last_outage_seconds",
            "How long the last finished outage of the Temporal server lasted.",
            value=view.health.last_outage_s,
        )
        yield GaugeMetricFamily(
            "pipelex_pool_shutting_down", "1 while the pool drains its replicas to stop.", value=int(view.shutting_down)
        )
        expiry = GaugeMetricFamily(
            "pipelex_pool_tls_cert_expiry_timestamp_seconds",
            "When each certificate the pool connects with expires, in seconds since the epoch.",
            labels=["role", "file", "subject"],
        )
        for cert in inspect(view.topology.connection).certificates:
            expiry.add_metric([cert.role, cert.where, cert.subject], cert.not_after.timestamp())
        yield expiry
        faults = CounterMetricFamily(
            "pipelex_pool_internal_faults",
            "Faults the supervisor caught in one of its tasks (logged, and the task started again).",
            labels=["task"],
        )
        for task, count in sorted(FAULTS.items()):
            faults.add_metric([task], count)
        yield faults

    def _groups(self) -> Iterator[Metric]:
        view = self.view
        replicas = GaugeMetricFamily("pipelex_pool_replicas", "Replicas by group and state.", labels=["group", "state"])
        desired = GaugeMetricFamily(
            "pipelex_pool_replicas_desired", "Replicas each group should have (0 once stopped).", labels=["group"]
        )
        restarts = CounterMetricFamily(
            "pipelex_pool_restarts", "Automatic restarts of the group's replicas.", labels=["group"]
        )
        exits = CounterMetricFamily(
            "pipelex_pool_exits",
            "Replica exits, by exit code or by the signal that ended the process (the other label empty).",
            labels=["group", "code", "signal"],
        )
        activities = CounterMetricFamily(
            "pipelex_pool_activities", "Activities finished by the group's replicas.", labels=["group", "outcome"]
        )
        activity_seconds = CounterMetricFamily(
            "pipelex_pool_activity_seconds", "Time spent in finished activities.", labels=["group"]
        )
        durations = HistogramMetricFamily(
            "pipelex_pool_activity_duration_seconds",
            "Finished activities (completed or failed) by how long they ran, for latency quantiles.",
            labels=["group"],
        )
        workflow_tasks = CounterMetricFamily(
            "pipelex_pool_workflow_tasks", "Workflow tasks run by the group's replicas.", labels=["group", "outcome"]
        )
        handed_back = CounterMetricFamily(
            "pipelex_pool_handed_back",
            "In-flight activity attempts of dead replicas handed back to Temporal, by the replica's exit reason.",
            labels=["group", "reason"],
        )
        refused = CounterMetricFamily(
            "pipelex_pool_hand_back_refused",
            "Hand-backs Temporal refused (the attempt had finished, timed out, or its workflow was gone).",
            labels=["group"],
        )
        runs_moved = CounterMetricFamily(
            "pipelex_pool_workflow_runs_handed_back",
            "Cached workflow runs of dead replicas moved off their sticky queues (ResetStickyTaskQueue).",
            labels=["group"],
        )
        autoscale = GaugeMetricFamily(
            "pipelex_pool_autoscale_desired",
            "Replicas the autoscaler asks for (actual: pipelex_pool_replicas).",
            labels=["group"],
        )
        for group in view.all_groups():
            states = [h.state for h in group.handles]
            for state in ProcState:
                replicas.add_metric([group.name, state.value], states.count(state))
            desired.add_metric([group.name], 0 if group.stopped_by_operator else group.desired)
            restarts.add_metric([group.name], group.restarts_total)
            for (code, signal), count in sorted(group.exits_total.items()):
                exits.add_metric([group.name, code, signal], count)
            if group.spec is None:
                continue  # the dev server runs no tasks
            tasks = group_tasks(view, group)
            activities.add_metric([group.name, "completed"], tasks.activities_completed)
            activities.add_metric([group.name, "failed"], tasks.activities_failed)
            activity_seconds.add_metric([group.name], tasks.activity_seconds)
            buckets, running = [], 0
            for bound, count in zip(ACTIVITY_BUCKETS, tasks.activity_buckets, strict=True):
                running += count
                buckets.append((str(bound), running))
            finished = tasks.activities_completed + tasks.activities_failed
            buckets.append(("+Inf", max(finished, running)))
            durations.add_metric([group.name], buckets, tasks.activity_seconds)
            workflow_tasks.add_metric([group.name, "completed"], tasks.workflow_tasks_completed)
            workflow_tasks.add_metric([group.name, "failed"], tasks.workflow_tasks_failed)
            for reason, count in sorted(group.handed_back.items()):
                handed_back.add_metric([group.name, reason], count)
            refused.add_metric([group.name], group.hand_back_refused)
            runs_moved.add_metric([group.name], group.runs_handed_back)
            if group.spec.autoscale is not None:
                autoscale.add_metric([group.name], group.desired)
        yield from (replicas, desired, restarts, exits, activities, activity_seconds, durations, workflow_tasks)
        yield from (handed_back, refused, runs_moved, autoscale)

    def _replicas(self) -> Iterator[Metric]:
        view = self.view
        labels = ["group", "replica"]
        ready = GaugeMetricFamily("pipelex_pool_replica_ready", "1 when the replica is READY.", labels=labels)
        rss = GaugeMetricFamily(
            "pipelex_pool_replica_resident_memory_bytes", "Resident memory of the replica's process.", labels=labels
        )
        cpu = CounterMetricFamily(
            "pipelex_pool_replica_cpu_seconds",
            "User and system CPU time of the replica's current process (restarts from 0 with the process).",
            labels=labels,
        )
        inflight = GaugeMetricFamily(
            "pipelex_pool_replica_inflight_attempts", "Activity attempts the replica runs now.", labels=labels
        )
        for group in view.all_groups():
            for handle in group.handles:
                names = [group.name, str(handle.replica)]
                ready.add_metric(names, int(handle.state is ProcState.READY))
                info = view.info.get(handle)
                if handle.pid is None or info is None:
                    continue
                if info.usage is not None:
                    rss.add_metric(names, info.usage.rss_bytes)
                    cpu.add_metric(names, info.usage.cpu_seconds)
                if group.spec is not None:
                    inflight.add_metric(names, len(info.inflight))
        yield from (ready, rss, cpu, inflight)

    def _queues(self) -> Iterator[Metric]:
        """Backlog and pollers as Temporal last described them; nothing while Temporal does not answer (a stale
        value would read as a current one)."""
        labels = ["queue", "type"]
        backlog = GaugeMetricFamily(
            "pipelex_pool_queue_backlog", "Approximate tasks waiting in the queue (root partition).", labels=labels
        )
        age = GaugeMetricFamily(
            "pipelex_pool_queue_backlog_age_seconds", "Age of the oldest task waiting in the queue.", labels=labels
        )
        pollers = GaugeMetricFamily(
            "pipelex_pool_queue_pollers",
            "Pollers on the queue: this pool's live replicas (owner=pool), its fleet's other pools' (owner=fleet), "
            "anyone else seen within 75 s (owner=foreign).",
            labels=[*labels, "owner"],
        )
        if not self.view.watch.error:
            for (queue, queue_type), queue_view in sorted(
                self.view.watch.views.items(), key=lambda kv: (kv[0][0], kv[0][1].name)
            ):
                if queue_view.seen_at is None:
                    continue
                names = [queue, queue_type.name.lower()]
                backlog.add_metric(names, queue_view.stats.backlog)
                age.add_metric(names, queue_view.stats.backlog_age_s)
                owners = pollers_by_owner(self.view, self.view.watch.fleet, queue_view)
                pollers.add_metric([*names, "pool"], len(owners.own))
                pollers.add_metric([*names, "fleet"], len(owners.fleet))
                pollers.add_metric([*names, "foreign"], len(owners.foreign))
        yield from (backlog, age, pollers)


def pool_registry(view: PoolView) -> CollectorRegistry:
    """A registry with the pool's collector and the supervisor's own process metrics (process_*)."""
    from prometheus_client import ProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(PoolCollector(view))
    ProcessCollector(registry=registry)
    return registry
