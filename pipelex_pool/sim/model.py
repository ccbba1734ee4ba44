"""Inputs and results of the simulated pipe runs (a load model, not real LLM calls)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SimStep:
    """One simulated activity call: what it is, where it routes, and what it costs.

    `latency_s` is waited (like a remote API call), `cpu_s` is burnt on a thread, `memory_mb` is allocated and
    held for the step, `failure_rate` is the chance that an attempt raises a retryable error.
    """

    activity: str
    handle: str | None = None
    latency_s: float = 0.1
    cpu_s: float = 0.0
    memory_mb: int = 0
    failure_rate: float = 0.0


@dataclass
class PipeRunInput:
    run_id: str
    steps: list[SimStep] = field(default_factory=list)
    pipe_code: str = "sim_pipe"
    parallel: bool = False


@dataclass
class StepResult:
    activity: str
    task_queue: str
    attempt: int
    worker_identity: str
    duration_s: float
    resumed_from_s: float = 0.0  # progress (seconds of latency) a retry took over from the attempt before


@dataclass
class PipeRunResult:
    run_id: str
    steps: list[StepResult] = field(default_factory=list)
