"""A worker's task counts (activities started, completed and failed with their durations, workflow tasks and runs),
as the worker keeps them (worker/accounting.py) and its supervisor reads them from its notify reports: plain data,
nothing of temporalio (the supervisor does not load the worker's side of the SDK)."""

from __future__ import annotations

import json
from bisect import bisect_left
from dataclasses import asdict, dataclass, field
from typing import Any

from pipelex_pool.contract import TASKS_KEY

# Upper bounds (seconds) of the activity duration histogram: LLM calls and image generation take seconds to minutes.
ACTIVITY_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)


@dataclass
class TaskCounts:
    activities_started: int = 0
    activities_completed: int = 0
    activities_failed: int = 0
    activity_seconds: float = 0.0  # summed over finished activities
    workflow_tasks_completed: int = 0  # workflow tasks (activations) this worker processed
    workflow_tasks_failed: int = 0  # ... that failed (the workflow code raised; Temporal retries the task)
    workflow_task_seconds: float = 0.0  # time spent running workflow code for them
    workflow_runs_started: int = 0  # workflow executions run here (a replay after cache eviction counts again)
    workflow_runs_completed: int = 0
    workflow_runs_failed: int = 0
    # finished activities by duration: how many took at most ACTIVITY_BUCKETS[i] (not cumulative; +Inf is the rest)
    activity_buckets: list[int] = field(default_factory=lambda: [0] * len(ACTIVITY_BUCKETS))

    def observe_activity(self, seconds: float) -> None:
        self.activity_seconds += seconds
        index = bisect_left(ACTIVITY_BUCKETS, seconds)
        if index < len(ACTIVITY_BUCKETS):
            self.activity_buckets[index] += 1

    def to_notify(self) -> str:
        return f"{TASKS_KEY}={json.dumps(asdict(self), separators=(',', ':'))}"

    @classmethod
    def from_notify(cls, value: str) -> TaskCounts | None:
        try:
            data = json.loads(value)
            return cls(**{key: data[key] for key in cls.__dataclass_fields__ if key in data})
        except (ValueError, TypeError):
            return None

    def __add__(self, other: TaskCounts) -> TaskCounts:
        summed: dict[str, Any] = {}
        for key in self.__dataclass_fields__:
            mine, theirs = getattr(self, key), getattr(other, key)
            if isinstance(mine, list):  # a report from an older worker may not have it
                theirs = theirs if isinstance(theirs, list) and len(theirs) == len(mine) else [0] * len(mine)
                summed[key] = [a + b for a, b in zip(mine, theirs, strict=True)]
            else:
                summed[key] = mine + theirs
        return TaskCounts(**summed)
