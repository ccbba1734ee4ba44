"""Activity routing as Pipelex does it: task queue by handle -> default -> default_task_queue, then
timeouts and retry policy layered baseline -> queue_options[queue] -> handle_options[handle].

This module is passed through the workflow sandbox, so the router worker installs its table once and the
sandboxed WfPipeRun reads the same object.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import timedelta

from pipelex_pool.topology.temporal_schema import RetryPolicyOverlay, TemporalSection


@dataclass(frozen=True)
class RetrySpec:
    initial_interval: timedelta
    backoff_coefficient: float
    maximum_interval: timedelta | None  # None: unlimited
    maximum_attempts: int  # 0: unlimited
    non_retryable_error_types: tuple[str, ...] = ()

    def overlaid(self, overlay: RetryPolicyOverlay | None) -> RetrySpec:
        if overlay is None:
            return self
        spec = self
        if overlay.initial_interval is not None:
            spec = replace(spec, initial_interval=overlay.initial_interval)
        if overlay.backoff_coefficient is not None:
            spec = replace(spec, backoff_coefficient=overlay.backoff_coefficient)
        if overlay.maximum_interval is not None:
            spec = replace(spec, maximum_interval=_interval(overlay.maximum_interval))
        if overlay.maximum_attempts is not None:
            spec = replace(spec, maximum_attempts=_attempts(overlay.maximum_attempts))
        types = spec.non_retryable_error_types
        if overlay.non_retryable_error_types is not None:
            types = tuple(overlay.non_retryable_error_types)
        types += tuple(t for t in overlay.non_retryable_error_types_extra if t not in types)
        return replace(spec, non_retryable_error_types=types)


def _interval(value: timedelta | str) -> timedelta | None:
    return None if value == "unlimited" else value  # type: ignore[return-value]


def _attempts(value: int | str) -> int:
    return 0 if value == "unlimited" else int(value)


@dataclass(frozen=True)
class StepRouting:
    """Everything `workflow.execute_activity` needs for one step."""

    task_queue: str
    start_to_close_timeout: timedelta
    schedule_to_close_timeout: timedelta | None
    schedule_to_start_timeout: timedelta | None
    heartbeat_timeout: timedelta | None
    retry: RetrySpec


@dataclass(frozen=True)
class RoutingTable:
    temporal: TemporalSection
    cache: dict[tuple[str, str | None], StepRouting] = field(default_factory=dict, compare=False)

    def resolve(self, activity: str, handle: str | None = None) -> StepRouting:
        key = (activity, handle)
        if key not in self.cache:
            self.cache[key] = resolve_step(self.temporal, activity, handle)
        return self.cache[key]


def resolve_step(temporal: TemporalSection, activity: str, handle: str | None) -> StepRouting:
    worker_config = temporal.worker_config
    route = worker_config.activity_queues.get(activity)
    queue = temporal.default_task_queue
    handle_options = None
    if route is not None:
        queue = route.by_handle.get(handle, route.default) if handle else route.default
        handle_options = route.handle_options.get(handle) if handle else None
    base = worker_config.retry_policy_config
    retry = RetrySpec(
        initial_interval=base.initial_interval,
        backoff_coefficient=base.backoff_coefficient,
        maximum_interval=_interval(base.maximum_interval),
        maximum_attempts=_attempts(base.maximum_attempts),
        non_retryable_error_types=tuple(base.non_retryable_error_types),
    )
    start_to_close = worker_config.default_activity_start_to_close_timeout
    schedule_to_close = schedule_to_start = None
    heartbeat = worker_config.default_activity_heartbeat_timeout
    options = temporal.queue_options.get(queue)
    if options is not None:
        start_to_close = options.start_to_close_timeout or start_to_close
        schedule_to_close = options.schedule_to_close_timeout
        schedule_to_start = options.schedule_to_start_timeout
        heartbeat = options.heartbeat_timeout or heartbeat
        retry = retry.overlaid(options.retry_policy_config)
    if handle_options is not None:
        start_to_close = handle_options.start_to_close_timeout or start_to_close
        retry = retry.overlaid(handle_options.retry_policy_config)
    return StepRouting(queue, start_to_close, schedule_to_close, schedule_to_start, heartbeat, retry)


_installed: RoutingTable | None = None


def install(table: RoutingTable) -> None:
    """Called once by the worker process before it starts polling."""
    global _installed
    _installed = table


def installed() -> RoutingTable:
    if _installed is None:
        raise RuntimeError("no routing table installed: WfPipeRun runs only in a pipelex-pool worker")
    return _installed
