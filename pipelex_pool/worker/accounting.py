"""Task accounting inside a worker: activities started, completed and failed with their durations, and
workflow runs executed. The child reports the counts to its supervisor over its notify socket.

This module is passed through the workflow sandbox, so the workflow interceptor (built inside the sandbox)
and the worker process share one set of counters.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

from temporalio import worker

NOTIFY_KEY = "X_PIPELEX_TASKS"


@dataclass
class TaskCounts:
    activities_started: int = 0
    activities_completed: int = 0
    activities_failed: int = 0
    activity_seconds: float = 0.0  # summed over finished activities
    workflow_runs_started: int = 0  # workflow executions run here (a replay after cache eviction counts again)
    workflow_runs_completed: int = 0
    workflow_runs_failed: int = 0

    def to_notify(self) -> str:
        return f"{NOTIFY_KEY}={json.dumps(asdict(self), separators=(',', ':'))}"

    @classmethod
    def from_notify(cls, value: str) -> TaskCounts | None:
        try:
            data = json.loads(value)
            return cls(**{key: data[key] for key in cls.__dataclass_fields__ if key in data})
        except (ValueError, TypeError):
            return None

    def __add__(self, other: TaskCounts) -> TaskCounts:
        return TaskCounts(**{k: getattr(self, k) + getattr(other, k) for k in self.__dataclass_fields__})


COUNTS = TaskCounts()


class _ActivityCounter(worker.ActivityInboundInterceptor):
    async def execute_activity(self, input: worker.ExecuteActivityInput) -> Any:
        COUNTS.activities_started += 1
        started = time.monotonic()
        try:
            result = await super().execute_activity(input)
        except BaseException:
            COUNTS.activities_failed += 1
            raise
        finally:
            COUNTS.activity_seconds += time.monotonic() - started
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
