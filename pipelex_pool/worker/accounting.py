"""Task accounting inside a worker: activities started, completed and failed with their durations, workflow
tasks processed (each activation of a workflow, timed, a failed one counted apart) and workflow runs executed
(the counts themselves: worker/counts.py). The child reports the counts to its supervisor over its notify socket.

This module is passed through the workflow sandbox, so the workflow interceptor (built inside the sandbox)
and the worker process share one set of counters.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import temporalio.activity
import temporalio.converter
import temporalio.workflow
from temporalio import worker
from temporalio.bridge.proto.workflow_activation import WorkflowActivation
from temporalio.bridge.proto.workflow_completion import WorkflowActivationCompletion

from pipelex_pool.worker import inflight
from pipelex_pool.worker.cached_runs import RUNS, Run
from pipelex_pool.worker.counts import TaskCounts

COUNTS = TaskCounts()
_WORKFLOW_TASKS_LOCK = threading.Lock()  # workflow tasks run on a thread pool


class _ActivityCounter(worker.ActivityInboundInterceptor):
    async def execute_activity(self, input: worker.ExecuteActivityInput) -> Any:
        COUNTS.activities_started += 1
        started = time.monotonic()
        key = inflight.LEDGER.started(inflight.Attempt.from_info(temporalio.activity.info()))
        try:
            result = await super().execute_activity(input)
        except BaseException:
            COUNTS.activities_failed += 1
            raise
        finally:
            inflight.LEDGER.finished(key)
            COUNTS.observe_activity(time.monotonic() - started)
        COUNTS.activities_completed += 1
        return result


class _WorkflowCounter(worker.WorkflowInboundInterceptor):
    async def execute_workflow(self, input: worker.ExecuteWorkflowInput) -> Any:
        COUNTS.workflow_runs_started += 1
        try:
            result = await super().execute_workflow(input)
        except BaseException:
            COUNTS.workflow_runs_failed += 1
            raise
        COUNTS.workflow_runs_completed += 1
        return result


class AccountingInterceptor(worker.Interceptor):
    def intercept_activity(self, next: worker.ActivityInboundInterceptor) -> worker.ActivityInboundInterceptor:
        return _ActivityCounter(next)

    def workflow_interceptor_class(
        self, input: worker.WorkflowInterceptorClassInput
    ) -> type[worker.WorkflowInboundInterceptor] | None:
        return _WorkflowCounter


class CountingWorkflowRunner(worker.WorkflowRunner):
    """Wraps the worker's workflow runner to count and time every workflow task (one activation each).

    A cache eviction is an activation too, but not a workflow task: it is passed through uncounted."""

    def __init__(self, inner: worker.WorkflowRunner) -> None:
        self._inner = inner

    def prepare_workflow(self, defn: temporalio.workflow._Definition) -> None:
        self._inner.prepare_workflow(defn)

    def create_instance(self, det: worker.WorkflowInstanceDetails) -> worker.WorkflowInstance:
        run = (det.info.workflow_id, det.info.run_id)
        instance = _CountingInstance(self._inner.create_instance(det), run)
        RUNS.cache(run)  # its next workflow tasks go to this worker's sticky queue: the supervisor must know
        return instance

    def set_worker_level_failure_exception_types(self, types: Sequence[type[BaseException]]) -> None:
        self._inner.set_worker_level_failure_exception_types(types)


class _CountingInstance(worker.WorkflowInstance):
    def __init__(self, inner: worker.WorkflowInstance, run: Run) -> None:
        self._inner = inner
        self._run = run

    def activate(self, act: WorkflowActivation) -> WorkflowActivationCompletion:
        if act.jobs and all(job.WhichOneof("variant") == "remove_from_cache" for job in act.jobs):
            RUNS.evict(self._run)
            return self._inner.activate(act)
        started = time.monotonic()
        completion = self._inner.activate(act)
        elapsed = time.monotonic() - started
        with _WORKFLOW_TASKS_LOCK:
            if completion.HasField("failed"):
                COUNTS.workflow_tasks_failed += 1
            else:
                COUNTS.workflow_tasks_completed += 1
            COUNTS.workflow_task_seconds += elapsed
        return completion

    def get_serialization_context(self, command_info: Any) -> temporalio.converter.SerializationContext | None:
        return self._inner.get_serialization_context(command_info)

    def get_external_store_context(self, command_info: Any) -> Any:
        return self._inner.get_external_store_context(command_info)

    def get_info(self) -> temporalio.workflow.Info:
        return self._inner.get_info()

    def get_thread_id(self) -> int | None:
        return self._inner.get_thread_id()
